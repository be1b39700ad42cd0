"""Localize persona representations by layer (scikit-learn probes over `ActivationSet`).

`localize(model, personas)` captures persona statements and measures, per layer, probe accuracy
against chance and a shuffled-label control, cluster geometry, a layer band, CKA across layers
and the overlap between personas; `localize_activations(acts)` does the measuring alone.
"""

# Imported eagerly: a lazy ``__getattr__`` would be shadowed by the submodule ``localize`` as soon as
# it is imported, and ``from personascope.probes import localize`` would give the module. The
# package loads only when used; ``import personascope`` does not import it.
from .localize import LocalizationResult, localize, localize_activations
from .metrics import linear_probe

__all__ = ["LocalizationResult", "linear_probe", "localize", "localize_activations"]
