"""The key/value-cache fast path of `ModelAdapter.option_logprobs` (Hugging Face models only)."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..chat import encode
from ..errors import UsageError

if TYPE_CHECKING:
    from .base import ModelAdapter


def kv_option_logprobs(
    model: ModelAdapter, prompts: Sequence[str], options: Sequence[Sequence[str]], batch_size: int, progress: bool
) -> list[np.ndarray]:
    """Sum log-probability of each option after its prompt, reusing the prompt's key/value cache.

    Runs each batch's common token prefix once, each prompt's remainder once, and only the option
    tokens per option (Hugging Face causal LM with a ``Cache`` object; no steering). Same numbers
    as `ModelAdapter.logprobs` on every (prompt, option) pair, up to float rounding.
    """
    tok, hf, dev = model.tokenizer, model.hf_model, model.device
    params = inspect.signature(hf.forward).parameters
    cache_kw = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5.x
    keep_kw = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    p_ids = [encode(tok, p) for p in prompts]
    o_ids = [[encode(tok, o, is_continuation=True) for o in opts] for opts in options]
    for i, (p, opts) in enumerate(zip(p_ids, o_ids, strict=True)):
        if not p:
            raise UsageError(f"Prompt {i} is empty after tokenization")
        if any(not o for o in opts):
            raise UsageError(f"Prompt {i}: an option is empty after tokenization")
    out = [np.zeros(len(o), dtype=np.float64) for o in o_ids]

    def run(ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: Any, last_only: bool) -> Any:
        kw: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "use_cache": True}
        if cache is not None:
            kw[cache_kw] = cache
        if last_only:
            kw.update(keep_kw)
        return hf(**kw)

    def cache_of(res: Any) -> Any:
        c = getattr(res, "cache", None)
        return c if c is not None else res.past_key_values

    with torch.inference_mode(), tqdm(total=len(prompts), desc="options", disable=not progress, leave=False) as bar:
        for start in range(0, len(prompts), batch_size):
            idx = list(range(start, min(start + batch_size, len(prompts))))
            seqs = [p_ids[i] for i in idx]
            # Common token prefix of the batch (the persona's system turn), at least one token
            # short of the shortest prompt so that every row has a remainder to run.
            common = 0
            limit = min(len(s) for s in seqs) - 1
            while common < limit and all(s[common] == seqs[0][common] for s in seqs):
                common += 1
            b = len(idx)
            cache = None
            if common:
                pre = torch.tensor([seqs[0][:common]], dtype=torch.long, device=dev)
                res = run(pre, torch.ones_like(pre), torch.arange(common, device=dev)[None], None, True)
                cache = cache_of(res)
                cache.reorder_cache(torch.zeros(b, dtype=torch.long, device=dev))
            # Remainders, left-padded after the prefix so that every row's last token sits in the
            # last column (only its logits are computed); pads are masked out and the position
            # ids of the real tokens continue after the prefix.
            rest = [s[common:] for s in seqs]
            lens = torch.tensor([len(r) for r in rest])
            width = int(lens.max())
            ids = torch.full((b, width), pad, dtype=torch.long)
            rmask = torch.zeros((b, width), dtype=torch.long)
            pos = torch.zeros((b, width), dtype=torch.long)
            for j, rem in enumerate(rest):
                ids[j, width - len(rem) :] = torch.tensor(rem)
                rmask[j, width - len(rem) :] = 1
                pos[j, width - len(rem) :] = common + torch.arange(len(rem))
            full_mask = torch.cat([torch.ones((b, common), dtype=torch.long), rmask], 1)
            res = run(ids.to(dev), full_mask.to(dev), pos.to(dev), cache, True)
            cache = cache_of(res)
            first_lp = torch.log_softmax(res.logits[:, -1].float(), dim=-1).cpu()
            # Options: one row per (prompt, option) with the cache repeated row-wise. Only the
            # tokens before each option's last one are run: their logits score the rest.
            rows = [(j, k) for j, i in enumerate(idx) for k in range(len(o_ids[i]))]
            o_width = max(len(o_ids[idx[j]][k]) for j, k in rows)
            if o_width > 1:
                oid = torch.full((len(rows), o_width - 1), pad, dtype=torch.long)
                omask = torch.zeros((len(rows), o_width - 1), dtype=torch.long)
                for r, (j, k) in enumerate(rows):
                    o = o_ids[idx[j]][k][:-1]
                    if o:
                        oid[r, : len(o)] = torch.tensor(o)
                        omask[r, : len(o)] = 1
                beam = torch.tensor([j for j, _ in rows], dtype=torch.long)
                cache.reorder_cache(beam.to(dev))
                o_mask = torch.cat([full_mask[beam], omask], 1).to(dev)
                o_pos = (common + lens[beam])[:, None] + torch.arange(o_width - 1)[None]
                res2 = run(oid.to(dev), o_mask, o_pos.to(dev), cache, False)
                lp2 = torch.log_softmax(res2.logits.float(), dim=-1).cpu()
            for r, (j, k) in enumerate(rows):
                o = o_ids[idx[j]][k]
                total = float(first_lp[j, o[0]])
                for t in range(1, len(o)):
                    total += float(lp2[r, t - 1, o[t]])
                out[idx[j]][k] = total
            bar.update(b)
    return out
