"""nnsight adapter (default): wraps the Hugging Face model in ``nnsight.modeling.transformers.TransformersModel``.

The wrapper adds no hooks to the user's model outside a trace, so nothing needs restoring:
steering exists only inside the trace that applies it.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from ..sites import Point, Site
from .base import ModelAdapter, Steer


class NNsightAdapter(ModelAdapter):
    """`ModelAdapter` over nnsight 0.8 (``TransformersModel``); supports ``remote`` NDIF runs."""

    backend_name = "nnsight"
    kv_option_scoring = True
    kv_generation_sharing = True
    backend_packages = ("nnsight",)

    def __init__(self, hf_model: Any, tokenizer: Any, **kwargs: Any) -> None:
        from nnsight.modeling.transformers import TransformersModel

        super().__init__(hf_model, tokenizer, **kwargs)
        self.nn = TransformersModel(hf_model, tokenizer=tokenizer)
        self._layers = self._find_layers()

    def _find_layers(self) -> Any:
        # Decoder-only models put their blocks at model.model.layers (Llama, Gemma, Qwen, ...)
        # or model.transformer.h (GPT-2 style).
        inner = getattr(self.nn, "model", None)
        if inner is not None and hasattr(inner, "layers"):
            return inner.layers
        if hasattr(self.nn, "transformer") and hasattr(self.nn.transformer, "h"):
            return self.nn.transformer.h
        raise NotImplementedError(f"nnsight adapter: cannot find the blocks of {type(self.hf_model)}")

    def _read(self, site: Site) -> Any:
        block = self._layers[site.layer]
        if site.point == Point.RESID_PRE:
            return block.input
        if site.point == Point.RESID_POST:
            return block.output
        if site.point == Point.ATTN_OUT:
            return block.self_attn.output[0]
        return block.mlp.output

    def _write(self, site: Site, value: Any) -> None:
        block = self._layers[site.layer]
        # Assign a new tensor instead of editing in place: an in-place edit of a block's input
        # would also change the saved output of the block before it.
        if site.point == Point.RESID_PRE:
            block.input = value
        elif site.point == Point.RESID_POST:
            block.output = value
        elif site.point == Point.ATTN_OUT:
            block.self_attn.output = (value, *block.self_attn.output[1:])
        else:
            block.mlp.output = value

    def _apply(self, site: Site, steers: list[Steer], phase: str, masks: dict[int, Any]) -> None:
        for k, st in enumerate(steers):
            if st.site != site or (st.positions != "all" and st.positions != phase and phase != "mixed"):
                continue
            current = self._read(site)
            delta = st.delta(current)
            mask = masks.get(k) if phase == "mixed" else None
            self._write(site, current + (delta if mask is None else delta * mask.to(current.dtype)))

    def _forward(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        sites: list[Site],
        prompt_lens: torch.Tensor,
        *,
        want_logits: bool,
    ) -> tuple[dict[Site, torch.Tensor], torch.Tensor | None]:
        steers = list(self._steers)
        masks = {k: self._steer_mask(s, prompt_lens, ids.shape[1]) for k, s in enumerate(steers)}
        wanted = set(sites)
        todo = sorted(wanted | {s.site for s in steers}, key=lambda s: s.order)
        saved: dict[Site, Any] = {}
        with self.nn.trace(input_ids=ids, attention_mask=mask) as tracer:
            for site in todo:
                self._apply(site, steers, "mixed", masks)
                if site in wanted:
                    saved[site] = self._read(site).save()
            if want_logits:
                logits = self.nn.output.logits.save()
            else:
                # Nothing after the last requested site is needed: skip the rest of the model.
                tracer.stop()
        return saved, (logits if want_logits else None)

    def _generate_ids(
        self, ids: torch.Tensor, mask: torch.Tensor, gen_kwargs: dict[str, Any]
    ) -> torch.Tensor:
        steers = list(self._steers)
        if not steers:
            with self.nn.generate(input_ids=ids, attention_mask=mask, **gen_kwargs) as tracer:
                out = tracer.result.save()
            return out
        n = gen_kwargs["max_new_tokens"]
        sites = sorted({s.site for s in steers}, key=lambda s: s.order)
        # One iteration per forward pass: step 0 is the prompt, later steps are the generated
        # tokens. A bare edit outside this loop would touch the prompt only. When every row ends
        # early, the loop is cut short and nothing after it runs (nnsight's documented behaviour),
        # so the tokens are read inside the loop from the streamer, which receives the prompt,
        # then each new token, before the next forward pass; one extra step reads the last token.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*was never reached.*")
            with self.nn.generate(input_ids=ids, attention_mask=mask, **gen_kwargs) as tracer:
                toks = list().save()  # type: ignore[attr-defined]  # nnsight gives every object .save()
                for step in tracer.iter[: n + 1]:
                    toks.append(self.nn.generator.streamer.output)
                    phase = "prompt" if step == 0 else "response"
                    for site in sites:
                        self._apply(site, steers, phase, {})
        new = [t.reshape(ids.shape[0], -1).to(ids.device) for t in toks[1:]]
        return torch.cat([ids, *new], dim=1) if new else ids
