"""Backend adapters: the only code in personascope that imports transformer_lens or nnsight.

`create_adapter` is the single factory; each backend module is imported only when it is used, so
``import personascope`` stays fast.
"""

from __future__ import annotations

from typing import Any

from ..errors import UsageError
from .base import Captured, ModelAdapter, Steer

__all__ = ["Captured", "ModelAdapter", "Steer", "create_adapter"]


def create_adapter(backend: str, hf_model: Any, tokenizer: Any, **kwargs: Any) -> ModelAdapter:
    """Wrap a loaded Hugging Face model in the adapter for ``backend``."""
    if backend == "nnsight":
        from .nnsight_backend import NNsightAdapter

        return NNsightAdapter(hf_model, tokenizer, **kwargs)
    if backend == "transformer_lens":
        from .tl_backend import TransformerLensAdapter

        return TransformerLensAdapter(hf_model, tokenizer, **kwargs)
    raise UsageError(f"Unknown backend {backend!r}; allowed: nnsight, transformer_lens")
