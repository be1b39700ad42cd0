"""`OrganismAdapter`: a view of a model adapter with an organism's defect planted, the model untouched.

Every call goes to the wrapped adapter through its public methods. A prompt organism rewrites the
conversation in `OrganismAdapter.format_chat`; a steering organism marks the prompts whose
conversation matches its condition there, and runs the model calls for those prompts inside the
adapter's own `ModelAdapter.steer` block (restored on exit), the others unsteered, in the order
given. The view has its own fingerprint (the model's plus the organism's), so the generation and
activation caches never mix an organism with its clean model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UsageError

if TYPE_CHECKING:
    from ..backends.base import ModelAdapter, Steer
    from ..records import ModelInfo
    from .base import Condition, Organism


class OrganismAdapter:
    """``model`` as the organism ``organism`` (a view; ``model`` is never changed).

    Args:
        model: The subject model's adapter.
        organism: The organism (its ``rewrite`` is applied to conversations when it has one).
        steer: A steering vector added on the prompts of matching conversations (steering organisms).
        condition: Which conversations are steered (None with ``steer``: all).
    """

    def __init__(self, model: ModelAdapter, organism: Organism, *, steer: Steer | None = None,
                 condition: Condition | None = None) -> None:
        self._model = model
        self.organism = organism
        self._steer = steer
        self._condition = condition
        self._marked: set[str] = set()
        from ..cache import CachingAdapter

        # Model calls go through the clean model's own cache: a prompt the organism leaves alone is
        # computed once for the clean control and every organism, and a steered one is keyed by its
        # steering vector (the cache's key covers the active steers).
        self._calls = CachingAdapter.wrap(model)
        base = model.info
        self._info = base.model_copy(update={"fingerprint": f"{base.fingerprint}+organism-{organism.fingerprint}"})

    # ------------------------------------------------------------------ identity
    @property
    def info(self) -> ModelInfo:
        """The model's info with an organism-specific fingerprint."""
        return self._info

    @property
    def inner(self) -> ModelAdapter:
        """The wrapped (unchanged) adapter."""
        return self._model

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes the view does not define (tokenizer, n_layers, d_model, sites, and
        # the store's site check); never for the view's own state, which would recurse before __init__.
        if name in ("_model", "_steer", "_condition", "_marked", "_info", "_calls"):
            raise AttributeError(name)
        return getattr(self._model, name)

    def __repr__(self) -> str:
        return f"OrganismAdapter({self._model!r}, {self.organism.label})"

    # ------------------------------------------------------------------ conversations
    def format_chat(self, messages: Sequence[dict[str, str]] | None = None, *, user: str | None = None,
                    system: str | None = None, add_generation_prompt: bool = True) -> str:
        """The model's ``format_chat`` of the conversation as the organism sees it."""
        from ..chat import to_messages

        msgs = [dict(m) for m in (messages if messages is not None else to_messages(user, system))]
        rewrite = getattr(self.organism, "rewrite", None)
        if rewrite is not None:
            msgs = rewrite(msgs)
        text = self._model.format_chat(messages=msgs, add_generation_prompt=add_generation_prompt)
        if self._steer is not None and self._condition is not None and not self._condition.always \
                and self._condition.matches(msgs, salt=f"steer:{self.organism.seed}"):
            self._marked.add(text)
        return text

    def steered(self, prompt: str) -> bool:
        """Whether the organism's steering applies to ``prompt`` (a formatted conversation, maybe extended)."""
        if self._steer is None:
            return False
        if self._condition is None or self._condition.always:
            return True
        return prompt in self._marked or any(prompt.startswith(m) for m in self._marked)

    # ------------------------------------------------------------------ steering
    @contextlib.contextmanager
    def steer(self, *args: Any, **kw: Any) -> Iterator[OrganismAdapter]:
        """`ModelAdapter.steer` on the wrapped adapter; yields this view."""
        with self._model.steer(*args, **kw):
            yield self

    # ------------------------------------------------------------------ model calls
    def _split(self, prompts: Sequence[str], call: Callable[[list[int]], list[Any]]) -> list[Any]:
        """``call(indices)`` for the steered and the plain prompts separately, results in prompt order."""
        flags = [self.steered(p) for p in prompts]
        out: list[Any] = [None] * len(prompts)
        for want in (True, False):
            idx = [i for i, f in enumerate(flags) if f is want]
            if not idx:
                continue
            ctx = self._calls.steer(self._steer) if want and self._steer is not None else contextlib.nullcontext()
            with ctx:
                got = call(idx)
            for i, v in zip(idx, got, strict=True):
                out[i] = v
        return out

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 64, **kw: Any) -> list[str]:
        """`ModelAdapter.generate` with the organism's steering on matching prompts."""
        prompts = list(prompts)
        seed = kw.pop("seed", None)
        flags = [self.steered(p) for p in prompts]
        if seed is not None and self._steer is not None and any(flags) and not all(flags):
            # Sampling with a seed draws per batch; splitting the batch would change which draws a
            # prompt gets, so a split sampled call is refused instead of silently differing. A batch
            # that is all steered or all plain is one call, as without the organism.
            if kw.get("do_sample"):
                raise UsageError("A conditional steering organism cannot split a seeded sampled batch; "
                                 "generate greedily or steer every prompt")
        return self._split(prompts, lambda idx: list(self._calls.generate([prompts[i] for i in idx], max_new_tokens,
                                                                           seed=seed, **kw)))

    def logprobs(self, prompts: Sequence[str], continuations: Sequence[str], **kw: Any) -> np.ndarray:
        """`ModelAdapter.logprobs` with the organism's steering on matching prompts."""
        prompts, conts = list(prompts), list(continuations)
        got = self._split(prompts, lambda idx: list(self._calls.logprobs([prompts[i] for i in idx],
                                                                          [conts[i] for i in idx], **kw)))
        return np.asarray(got, dtype=np.float64)

    def option_logprobs(self, prompts: Sequence[str], options: Sequence[Sequence[str]], **kw: Any) -> list[np.ndarray]:
        """`ModelAdapter.option_logprobs` with the organism's steering on matching prompts."""
        prompts, opts = list(prompts), [list(o) for o in options]
        return self._split(prompts, lambda idx: list(self._calls.option_logprobs([prompts[i] for i in idx],
                                                                                  [opts[i] for i in idx], **kw)))

    def next_token_scores(self, prompts: Sequence[str], token_ids: Sequence[Sequence[int]],
                          **kw: Any) -> list[np.ndarray]:
        """`ModelAdapter.next_token_scores` with the organism's steering on matching prompts."""
        prompts, ids = list(prompts), [list(t) for t in token_ids]
        return self._split(prompts, lambda idx: list(self._calls.next_token_scores([prompts[i] for i in idx],
                                                                                    [ids[i] for i in idx], **kw)))

    def next_token_logprobs(self, prompts: Sequence[str], **kw: Any) -> Any:
        """`ModelAdapter.next_token_logprobs` with the organism's steering on matching prompts."""
        import torch

        prompts = list(prompts)
        rows = self._split(prompts, lambda idx: list(self._model.next_token_logprobs([prompts[i] for i in idx], **kw)))
        return torch.stack(rows) if rows else torch.zeros(0)

    def activations(self, prompts: Sequence[str], sites: Any = None, positions: Any = None, **kw: Any) -> Any:
        """`ModelAdapter.activations` with the organism's steering on matching prompts (rows in prompt order)."""
        import torch

        from ..sites import Position

        prompts = list(prompts)
        positions = Position.LAST if positions is None else positions
        responses = kw.pop("responses", None)
        flags = [self.steered(p) for p in prompts]
        if all(flags) or not any(flags):
            ctx = self._model.steer(self._steer) if any(flags) and self._steer is not None \
                else contextlib.nullcontext()
            with ctx:
                return self._model.activations(prompts, sites, positions, responses=responses, **kw)
        parts = []
        for want in (True, False):
            idx = [i for i, f in enumerate(flags) if f is want]
            ctx = self._model.steer(self._steer) if want and self._steer is not None else contextlib.nullcontext()
            with ctx:
                got = self._model.activations([prompts[i] for i in idx], sites, positions,
                                              responses=[responses[i] for i in idx] if responses else None, **kw)
            parts.append((np.asarray(idx), got))
        merged = {}
        for pos in parts[0][1]:
            caps = [(idx, got[pos]) for idx, got in parts]
            sample = np.concatenate([idx[c.row_sample] for idx, c in caps])
            token = np.concatenate([c.row_token for _, c in caps])
            acts = torch.cat([c.acts for _, c in caps])
            order = np.lexsort((np.arange(sample.size), sample))  # by prompt, rows of a prompt in their order
            n_tokens = np.zeros(len(prompts), dtype=np.int64)
            for at, c in caps:
                if c.n_tokens.size == at.size:
                    n_tokens[at] = c.n_tokens
            first = caps[0][1]
            merged[pos] = type(first)(first.position, first.sites, acts[torch.as_tensor(order)], sample[order],
                                      token[order], n_tokens)
        return merged


__all__ = ["OrganismAdapter"]
