"""Localize persona representations by layer (scikit-learn probes over `ActivationSet`).

`localize(model, personas)` captures persona statements and measures, per layer, probe accuracy
against chance and a shuffled-label control, cluster geometry, a layer band, CKA across layers
and the overlap between personas; `localize_activations(acts)` does the measuring alone.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "localize": ".localize",
    "localize_activations": ".localize",
    "LocalizationResult": ".localize",
    "linear_probe": ".layerwise",
    "layer_separability": ".layerwise",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'personascope.probes' has no attribute {name!r}")
