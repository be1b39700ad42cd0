"""TransformerLens 4.x adapter: ``TransformerBridge.boot_transformers(path, hf_model=..., tokenizer=...)``.

Booting a bridge replaces the blocks of the model it is given, so the adapter boots it on a deep
copy whenever the model object came from the user; models loaded by `load_model` are owned by
the adapter. Hooks exist only inside ``bridge.hooks(...)`` blocks, which remove them on exit.
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
from collections.abc import Iterator
from typing import Any

import torch

from ..extras import requires
from ..sites import Point, Site
from .base import ModelAdapter, Steer

_HOOKS = {
    Point.RESID_PRE: "blocks.{}.hook_in",
    Point.RESID_POST: "blocks.{}.hook_out",
    Point.ATTN_OUT: "blocks.{}.attn.hook_out",
    Point.MLP_OUT: "blocks.{}.mlp.hook_out",
}


def hook_name(site: Site) -> str:
    """TransformerLens bridge hook name of a `Site`."""
    return _HOOKS[site.point].format(site.layer)


class TransformerLensAdapter(ModelAdapter):
    """`ModelAdapter` over a TransformerLens 4.x ``TransformerBridge``."""

    backend_name = "transformer_lens"
    backend_packages = ("transformer-lens",)
    # Generation runs the bridge's blocks inside the Hugging Face model (`_generate_ids`), so a
    # prefix cache filled through them (`_prefill_context`) is the one generate would fill.
    kv_generation_sharing = True

    def __init__(self, hf_model: Any, tokenizer: Any, **kwargs: Any) -> None:
        with requires("tl", "the transformer_lens backend"):
            from transformer_lens.model_bridge import TransformerBridge

        if kwargs.get("source") == "<in-memory>":
            hf_model = copy.deepcopy(hf_model)
        if not getattr(hf_model.config, "architectures", None):
            # Configs converted from GGUF carry no architectures list; TL picks its adapter from it.
            hf_model.config.architectures = [type(hf_model).__name__]
        super().__init__(hf_model, tokenizer, **kwargs)
        # boot_transformers reads the architecture from hf_model.config; the name is only a label.
        name = kwargs.get("source") or getattr(hf_model.config, "_name_or_path", "") or tempfile.gettempdir()
        self.bridge = TransformerBridge.boot_transformers(
            name, hf_model=hf_model, tokenizer=tokenizer, device=str(self.device), dtype=self.dtype
        )

    def _hooks(self, steers: list[Steer], prompt_lens: torch.Tensor | None, width: int) -> list:
        """TL hook list; ``prompt_lens=None`` means generation with prompt width ``width``."""
        hooks = []
        for st in steers:
            mask = None if prompt_lens is None else self._steer_mask(st, prompt_lens, width)
            hooks.append((hook_name(st.site), _make_hook(st, mask, prompt_width=width)))
        return hooks

    def _forward(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        sites: list[Site],
        prompt_lens: torch.Tensor,
        *,
        want_logits: bool,
    ) -> tuple[dict[Site, torch.Tensor], torch.Tensor | None]:
        hooks = self._hooks(list(self._steers), prompt_lens, ids.shape[1])
        saved: dict[Site, torch.Tensor] = {}
        last = max(sites, key=lambda s: s.order) if sites else None
        # Capture hooks come after the steering hooks, so a steered site is read after the edit.
        # The last one ends the pass when no logits are needed: TL's stop_at_layer cannot stop
        # after the final block, so with it the final norm and LM head would still run.
        for site in sites:
            hooks.append((hook_name(site), _capture_hook(saved, site, stop=site == last and not want_logits)))
        logits = None
        with self.bridge.hooks(fwd_hooks=hooks):
            try:
                logits = self.bridge(ids, attention_mask=mask, return_type="logits")
            except _StopForward:
                pass
        return {s: saved[s] for s in sites}, logits

    def _generate_ids(
        self, ids: torch.Tensor, mask: torch.Tensor, gen_kwargs: dict[str, Any]
    ) -> torch.Tensor:
        steers = list(self._steers)
        kwargs = dict(gen_kwargs)
        if any(st.positions != "all" for st in steers):
            # The hook tells prompt from response columns by position in the full sequence, so
            # every pass must see the whole sequence: no KV cache.
            kwargs["use_cache"] = False
        hooks = self._hooks(steers, None, ids.shape[1])
        handles = self._alias_kv_cache()
        try:
            with self.bridge.hooks(fwd_hooks=hooks):
                # The bridge's blocks run inside the wrapped model, so Hugging Face's generate
                # (same left-padding and stopping as the nnsight adapter) passes through TL's hooks.
                hf: Any = self.bridge.original_model  # the wrapped Hugging Face model
                return hf.generate(input_ids=ids, attention_mask=mask, **kwargs)
        finally:
            for h in handles:
                h.remove()

    @contextlib.contextmanager
    def _prefill_context(self) -> Iterator[None]:
        """The cache aliasing of `_generate_ids`, for a prefix filled before generation."""
        handles = self._alias_kv_cache()
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _alias_kv_cache(self) -> list:
        """Pass the KV cache to the bridge's attention under the name it reads.

        transformers 5 hands the cache to attention as ``cache=``; TransformerLens 4.3's attention
        bridges read only ``past_key_values`` (or ``layer_past``) and otherwise skip the cache, so
        every cached decoding step attended to its own token alone and generation ignored the
        prompt. Removed after each generate call.
        """
        from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

        return [
            m.register_forward_pre_hook(_alias_cache_kwarg, with_kwargs=True)
            for m in self.bridge.original_model.modules()
            if isinstance(m, AttentionBridge)
        ]


def _alias_cache_kwarg(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
        kwargs = {**kwargs, "past_key_values": kwargs["cache"]}
    return args, kwargs


class _StopForward(Exception):
    """Raised by the last capture hook to end a forward pass early."""


def _capture_hook(saved: dict[Site, torch.Tensor], site: Site, *, stop: bool) -> Any:
    def hook(x: torch.Tensor, hook: Any = None) -> torch.Tensor:
        saved[site] = x
        if stop:
            raise _StopForward
        return x

    return hook


def _make_hook(steer: Steer, mask: torch.Tensor | None, *, prompt_width: int) -> Any:
    def hook(x: torch.Tensor, hook: Any = None) -> torch.Tensor:
        delta = steer.delta(x)
        if mask is not None:  # scored pass: mask over the right-padded batch
            return x + delta * mask.to(x.dtype)
        if steer.positions == "all":
            return x + delta
        # Uncached generation: columns < prompt_width are the (left-padded) prompt.
        is_prompt = torch.arange(x.shape[1], device=x.device) < prompt_width
        keep = is_prompt if steer.positions == "prompt" else ~is_prompt
        return x + delta * keep[None, :, None].to(x.dtype)

    return hook
