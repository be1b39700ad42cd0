"""Early-layer decoding with the logit lens ("Who's asking?", papers.md §3).

Each layer's raw residual at the last prompt token goes through the final norm and the
unembedding, as if the model stopped there. On refused requests this shows where refusal tokens
("Sorry", "cannot", ...) come to dominate the next-token distribution, and whether tokens of the
request's content appear in earlier layers (the paper's sign that the model still "knows" what
was asked even when it refuses).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..sites import Position
from ..store import collect

if TYPE_CHECKING:
    from ..backends.base import ModelAdapter

# Words that open or carry a refusal; matched against whole decoded tokens (case-insensitive).
REFUSAL_WORDS = ("sorry", "cannot", "can't", "cant", "unable", "unfortunately", "apologize", "apologise",
                 "apologies", "refuse", "illegal", "unethical", "inappropriate", "harmful", "won't")
_STOP = set("""a an the and or but if of to in on at by for with from into about as is are was were be been
being do does did have has had i you he she it we they me my your our their this that these those what which
who whom how why when where can could should would will shall may might must not no yes please tell give
write make some any all more most other such own same so than too very just also get help explain""".split())


@lru_cache(maxsize=8)
def _vocab_words(tokenizer: Any) -> tuple[str, ...]:
    n = len(tokenizer)
    return tuple(tokenizer.decode([i]).strip().lower() for i in range(n))


def refusal_token_ids(tokenizer: Any, words: Sequence[str] = REFUSAL_WORDS) -> list[int]:
    """Vocabulary ids whose decoded text (stripped, lower-case) is one of ``words``."""
    wanted = {w.lower() for w in words}
    return [i for i, w in enumerate(_vocab_words(tokenizer)) if w in wanted]


def content_token_ids(tokenizer: Any, text: str) -> list[int]:
    """Ids of the content words of ``text`` (no stop words, >= 4 letters) as whole tokens."""
    words = {w for w in re.findall(r"[a-zA-Z]{4,}", text.lower()) if w not in _STOP}
    ids: set[int] = set()
    for w in words:
        for form in (w, " " + w, w.capitalize(), " " + w.capitalize()):
            toks = tokenizer.encode(form, add_special_tokens=False)
            if len(toks) == 1:
                ids.add(toks[0])
    return sorted(ids)


@dataclass
class LensResult:
    """Per-layer logit-lens statistics at the last prompt token.

    Attributes:
        layers: Layers read.
        refusal_mass: ``[n_prompts, n_layers]`` probability of the refusal tokens.
        refusal_top1: ``[n_prompts, n_layers]`` whether the top token is a refusal token.
        content_in_topk: ``[n_prompts, n_layers]`` whether a content token of the request is in the top k.
        top_tokens: ``[n_prompts][n_layers]`` the top-k decoded tokens.
        top_k: k.
    """

    layers: list[int]
    refusal_mass: np.ndarray
    refusal_top1: np.ndarray
    content_in_topk: np.ndarray
    top_tokens: list[list[list[str]]] = field(default_factory=list)
    top_k: int = 10

    def first_layer(self, curve: np.ndarray, threshold: float = 0.5) -> int | None:
        """First layer whose mean over prompts of ``curve`` reaches ``threshold`` (None if never)."""
        for k, v in zip(self.layers, curve.mean(axis=0), strict=True):
            if v >= threshold:
                return k
        return None

    def summary(self, threshold: float = 0.5) -> dict[str, Any]:
        """Where refusal dominates and where content shows, as JSON-able numbers."""
        mass = self.refusal_mass.mean(axis=0)
        return {
            "layers": self.layers,
            "refusal_mass": [float(v) for v in mass],
            "refusal_top1_rate": [float(v) for v in self.refusal_top1.mean(axis=0)],
            "content_in_topk_rate": [float(v) for v in self.content_in_topk.mean(axis=0)],
            "first_refusal_dominant_layer": self.first_layer(self.refusal_top1, threshold),
            "first_content_layer": self.first_layer(self.content_in_topk, threshold),
            "peak_refusal_mass_layer": int(self.layers[int(np.argmax(mass))]),
            "top_k": self.top_k,
        }


def logit_lens(
    model: ModelAdapter,
    prompts: Sequence[str],
    *,
    requests: Sequence[str] | None = None,
    layers: Any = "all",
    top_k: int = 10,
    batch_size: int | None = None,
    progress: bool = False,
) -> LensResult:
    """Decode every layer's last-prompt-token residual with the final norm and unembedding.

    Args:
        model: The subject model.
        prompts: Chat-formatted prompts (the next token is the first response token).
        requests: The raw request text per prompt, for content tokens (default: the prompts).
        layers: Layers to read (all by default; one forward pass captures them all).
        top_k: Size of the top-token lists and of the content-token window.
        batch_size: Prompts per forward pass.
        progress: Show a progress bar.
    """
    sites = model.sites(layers)
    acts = collect(model, list(prompts), sites, [Position.LAST], batch_size=batch_size,
                   progress=progress, method="logit_lens")[Position.LAST].acts  # [n, L, d]
    tok = model.tokenizer
    refusal = torch.tensor(refusal_token_ids(tok), dtype=torch.long)
    n, n_l = acts.shape[0], acts.shape[1]
    mass = np.zeros((n, n_l))
    top1 = np.zeros((n, n_l), dtype=bool)
    content = np.zeros((n, n_l), dtype=bool)
    tops: list[list[list[str]]] = []
    reqs = list(requests) if requests is not None else list(prompts)
    for i in range(n):
        probs = torch.softmax(model.unembed(acts[i]), dim=-1)  # [L, vocab]
        best = probs.topk(top_k, dim=-1).indices
        cids = set(content_token_ids(tok, reqs[i]))
        mass[i] = probs[:, refusal].sum(-1).numpy() if len(refusal) else 0.0
        rset = set(refusal.tolist())
        top1[i] = [int(b[0]) in rset for b in best]
        content[i] = [bool(cids & set(b.tolist())) for b in best]
        tops.append([[tok.decode([int(t)]) for t in b] for b in best])
    return LensResult([s.layer for s in sites], mass, top1, content, tops, top_k)
