"""The adapter protocol every layer above the backends uses, with the shared batching logic.

A backend implements two primitives: one forward pass that returns the requested sites (and
optionally logits) with steering applied, and greedy/sampled generation with steering on every
generated token. Tokenization, padding, pooling, batching and ordering live here, once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..chat import encode, format_chat
from ..errors import UsageError
from ..records import ModelInfo, package_versions
from ..sites import Point, Position, Site, make_sites, parse_layers, parse_point, parse_position

STEER_POSITIONS = ("all", "prompt", "response")
#: What an audit may need from a model (`personascope.audits.base.Audit.needs`); a local adapter offers
#: all of them, a served model (`personascope.backends.served.ServedModel`) generation and maybe log-probs.
CAPABILITIES = frozenset({"generate", "logprobs", "activations", "steering"})


def capabilities(model: object) -> frozenset[str]:
    """What ``model`` (an adapter, cached or served) offers of `CAPABILITIES`."""
    caps = getattr(model, "capabilities", None)
    return frozenset(caps) if caps is not None else CAPABILITIES


@dataclass(frozen=True)
class Steer:
    """Add ``coeff * vector`` at ``site`` on the chosen token positions of every forward pass.

    ``positions``: ``"all"``; ``"prompt"`` (prompt tokens only); ``"response"`` (tokens after
    the prompt: every generated token, or the continuation tokens in a scored forward pass).

    With ``cap`` set the edit is a floor instead of an addition (activation capping): every
    token's projection on the unit ``vector`` is raised to at least ``cap`` and left alone when
    it is already there; ``coeff`` must then stay 1. A ceiling is the floor of ``-vector`` at ``-cap``.
    """

    site: Site
    vector: torch.Tensor
    coeff: float = 1.0
    positions: str = "all"
    cap: float | None = None

    def __post_init__(self) -> None:
        if self.positions not in STEER_POSITIONS:
            raise UsageError(
                f"Unknown steering positions {self.positions!r}; allowed: {', '.join(STEER_POSITIONS)}"
            )
        if self.cap is not None and (self.coeff != 1.0 or not math.isfinite(self.cap)):
            raise UsageError(f"A capping Steer takes a finite cap and coeff 1; got cap={self.cap}, coeff={self.coeff}")
        if self.cap is not None and float(self.vector.float().norm()) == 0.0:
            raise UsageError("A capping Steer needs a non-zero direction")

    def delta(self, like: torch.Tensor) -> torch.Tensor:
        """What to add to ``like`` (``[..., d_model]``), on its device and in its dtype.

        A plain steer adds the same vector everywhere; a cap adds, per token, the part of the unit
        vector that lifts the projection to ``cap`` (zero where it is already at least ``cap``).
        """
        if self.cap is None:
            return (self.coeff * self.vector).to(device=like.device, dtype=like.dtype)
        # Computed in float32 so a bf16 model is floored at the cap, not at a rounded projection.
        u = self.vector.to(device=like.device, dtype=torch.float32)
        u = u / u.norm()
        lift = (self.cap - like.float() @ u).clamp_min(0.0)
        return (lift.unsqueeze(-1) * u).to(like.dtype)


@dataclass
class Captured:
    """Activations pooled at one position: ``acts[row, site, d]`` plus where each row came from."""

    position: Position
    sites: list[Site]
    acts: torch.Tensor
    row_sample: np.ndarray  # index of the prompt each row belongs to
    row_token: np.ndarray  # token index of the row (-1 for pooled positions)
    n_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


@dataclass
class _Encoded:
    ids: list[int]
    prompt_len: int


#: Shortest shared token prefix worth a separate pass (a chat template's header alone is shorter).
MIN_SHARED_PREFIX = 8


def common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Tokens every sequence starts with, at most one short of the shortest (each keeps a remainder)."""
    first, limit = seqs[0], min(len(s) for s in seqs) - 1
    n = 0
    while n < limit and all(s[n] == first[n] for s in seqs):
        n += 1
    return n


#: Generation without an explicit batch size: tokens (prompt + new) per row of the adapter's
#: ``batch_size`` that one batch may hold, and rows per batch at most (per row of ``batch_size``).
#: Each decode step costs about the same for 16 rows as for 32 on CPU, so fuller batches finish
#: sooner (benchmarks/RESULTS.md); the budget keeps long prompts (memories, conversations) small.
GEN_TOKENS_PER_ROW = 256
GEN_ROWS_FACTOR = 4


def chunk_order(order: Sequence[int], size: int, lengths: Sequence[int] | None = None,
                budget: int | None = None) -> list[list[int]]:
    """``order`` cut into batches: ``size`` rows each, or with ``budget`` as many as fit it.

    With a budget, each batch takes the next rows while it has at most ``size`` rows and its row
    count times its longest ``lengths`` stays within ``budget`` (one row at least). A small last
    batch is evened out with the one before when the first half still fits the budget, since a
    decode step costs nearly the same for few rows as for many.
    """
    order = list(order)
    if budget is None or lengths is None or not order:
        return [order[k : k + size] for k in range(0, len(order), size)]
    batches: list[list[int]] = [[]]
    width = 0
    for i in order:
        w = max(width, lengths[i])
        if batches[-1] and (len(batches[-1]) + 1 > size or (len(batches[-1]) + 1) * w > budget):
            batches.append([])
            w = lengths[i]
        batches[-1].append(i)
        width = w
    if len(batches) > 1:
        both = batches[-2] + batches[-1]
        half = -(-len(both) // 2)
        if half * max(lengths[i] for i in both[:half]) <= budget and half <= size:
            batches[-2:] = [both[:half], both[half:]]
    return batches


def prefix_batches(seqs: Sequence[Sequence[int]], size: int, *, budget: int | None = None,
                   extra: int = 0) -> list[list[int]]:
    """Batches of at most ``size`` indices that compute the fewest tokens with a shared prefix each.

    Two orders are costed, each batch as its shared prefix once plus every row padded to the
    longest remainder: by length, longest first (the least padding), and by token content (rows
    with a common system prompt, memory or earlier turns side by side). The cheaper one is used.
    ``budget`` and ``extra`` (tokens each row adds, e.g. new tokens) size batches as `chunk_order`.
    """
    def cost(batches: list[list[int]]) -> int:
        total = 0
        for idx in batches:
            rows = [seqs[i] for i in idx]
            c = common_prefix(rows) if len(rows) > 1 else 0
            c = c if c >= MIN_SHARED_PREFIX else 0
            total += c + len(rows) * (max(len(r) for r in rows) - c)
        return total

    lengths = [len(q) + extra for q in seqs]

    def chunk(order: list[int]) -> list[list[int]]:
        return chunk_order(order, size, lengths, budget)

    by_length = chunk(sorted(range(len(seqs)), key=lambda i: -len(seqs[i])))
    by_content = chunk(sorted(range(len(seqs)), key=lambda i: (list(seqs[i]), i)))
    return by_content if cost(by_content) < cost(by_length) else by_length


class ModelAdapter(ABC):
    """A loaded model behind one interface, whichever library hooks it.

    Never changes the user's model outside a ``with`` block: steering is registered for the
    duration of `steer` (or one call) and removed in ``finally``.
    """

    backend_name: str = ""
    #: The forward pass is the Hugging Face model itself, so `option_logprobs` may drive its key/value
    #: cache directly (TransformerLens computes slightly different logits: it scores pairs in full).
    kv_option_scoring: bool = False
    backend_packages: tuple[str, ...] = ()
    #: Unsteered generation computes the token prefix a batch shares once (see `generate`) on a
    #: backend that generates with the Hugging Face model and can hand it a prefilled cache.
    kv_generation_sharing: bool = False
    #: Prefix sharing in generation and scoring; set False to compare with the unshared path.
    share_prefixes: bool = True

    def __init__(
        self,
        hf_model: Any,
        tokenizer: Any,
        *,
        model_id: str = "",
        source: str = "",
        fingerprint: str = "",
        fingerprint_method: str = "sha256",
        batch_size: int = 16,
    ) -> None:
        self.hf_model = hf_model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        cfg = hf_model.config
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        self.n_layers: int = int(text_cfg.num_hidden_layers)
        self.d_model: int = int(text_cfg.hidden_size)
        self._steers: list[Steer] = []
        self._info = ModelInfo(
            id=model_id,
            source=source,
            fingerprint=fingerprint,
            fingerprint_method=fingerprint_method,
            architecture=(cfg.architectures or [type(hf_model).__name__])[0],
            n_layers=self.n_layers,
            d_model=self.d_model,
            dtype=str(self.dtype).replace("torch.", ""),
            device=str(self.device),
            backend=self.backend_name,
            versions=package_versions("torch", "transformers", *self.backend_packages),
        )

    # ------------------------------------------------------------------ identity
    @property
    def info(self) -> ModelInfo:
        """`ModelInfo` of this model (fingerprint, shape, dtype, backend, versions)."""
        return self._info

    @property
    def device(self) -> torch.device:
        """Device of the input embeddings (where inputs are sent)."""
        return self.hf_model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype."""
        return self.hf_model.get_input_embeddings().weight.dtype

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.info.short}, layers={self.n_layers}, "
            f"d_model={self.d_model}, dtype={self.info.dtype}, device={self.info.device})"
        )

    @property
    def capabilities(self) -> frozenset[str]:
        """Everything in `CAPABILITIES`: local weights give generation, log-probs, activations and steering."""
        return CAPABILITIES

    # ------------------------------------------------------------------ text helpers
    def format_chat(
        self,
        messages: Sequence[dict[str, str]] | None = None,
        *,
        user: str | None = None,
        system: str | None = None,
        add_generation_prompt: bool = True,
    ) -> str:
        """Render a conversation with this model's chat template (persona = system message)."""
        return format_chat(
            self.tokenizer, messages, user=user, system=system,
            add_generation_prompt=add_generation_prompt,
        )

    def sites(self, layers: Any = "all", points: Sequence[str | Point] = ("resid_post",)) -> list[Site]:
        """Sites for a layer spec (validated against this model) and points."""
        return make_sites(parse_layers(layers, self.n_layers), [parse_point(p) for p in points])

    def _check_sites(self, sites: Sequence[Site] | None) -> list[Site]:
        if sites is None:
            return self.sites("all")
        out = []
        for s in sites:
            s = s if isinstance(s, Site) else Site.parse(str(s)) if not isinstance(s, int) else Site(s)
            parse_layers([s.layer], self.n_layers)
            out.append(Site(s.layer % self.n_layers, s.point))
        return sorted(set(out), key=lambda s: s.order)

    def _encode(self, prompts: Sequence[str], responses: Sequence[str] | None) -> list[_Encoded]:
        if isinstance(prompts, str):
            raise UsageError("prompts must be a list of strings, not one string")
        if responses is not None and len(responses) != len(prompts):
            raise UsageError(
                f"{len(prompts)} prompts but {len(responses)} responses: pass one response per prompt"
            )
        out = []
        for i, p in enumerate(prompts):
            ids = encode(self.tokenizer, p)
            if not ids:
                raise UsageError(f"Prompt {i} is empty after tokenization")
            n = len(ids)
            if responses is not None:
                ids = ids + encode(self.tokenizer, responses[i], is_continuation=True)
            out.append(_Encoded(ids, n))
        return out

    def _pad(self, batch: Sequence[list[int]], side: str) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(x) for x in batch)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, x in enumerate(batch):
            sl = slice(0, len(x)) if side == "right" else slice(width - len(x), width)
            ids[i, sl] = torch.tensor(x, dtype=torch.long)
            mask[i, sl] = 1
        return ids.to(self.device), mask.to(self.device)

    @staticmethod
    def _batches(order: Sequence[int], size: int) -> Iterator[list[int]]:
        for start in range(0, len(order), size):
            yield list(order[start : start + size])

    def _steer_mask(
        self, steer: Steer, prompt_lens: torch.Tensor, width: int
    ) -> torch.Tensor | None:
        """Token mask ``[b, t, 1]`` for a right-padded scored pass, or None for all positions."""
        if steer.positions == "all":
            return None
        idx = torch.arange(width, device=prompt_lens.device)[None, :]
        is_prompt = idx < prompt_lens[:, None]
        mask = is_prompt if steer.positions == "prompt" else ~is_prompt
        return mask[..., None]

    # ------------------------------------------------------------------ capture
    def activations(
        self,
        prompts: Sequence[str],
        sites: Sequence[Site] | None = None,
        positions: str | Position | Sequence[str | Position] = Position.LAST,
        *,
        responses: Sequence[str] | None = None,
        batch_size: int | None = None,
        progress: bool = True,
    ) -> dict[Position, Captured]:
        """Capture activations at ``sites`` for each prompt, pooled at each of ``positions``.

        All sites and positions come from one forward pass per batch. Batches are right-padded,
        which gives the same activations as running prompts one by one (causal attention never
        looks at the padding after a token).

        Args:
            prompts: Prompt texts (already chat-formatted; see `format_chat`).
            sites: Places to read; default every layer's ``resid_post``.
            positions: One or several of ``last``, ``prompt_mean``, ``response_mean``, ``all``.
            responses: Optional response text per prompt, appended after the prompt (needed for
                ``response_mean``; ``last`` still means the last prompt token).
            batch_size: Prompts per forward pass (default: the adapter's).
            progress: Show a progress bar.

        Returns:
            ``{position: Captured}`` with float32 CPU tensors.

        """
        site_list = self._check_sites(sites)
        pos_list = (
            [parse_position(positions)]
            if isinstance(positions, str | Position)
            else [parse_position(p) for p in positions]
        )
        if Position.RESPONSE_MEAN in pos_list and responses is None:
            raise UsageError("position 'response_mean' needs responses=[...] (one per prompt)")
        enc = self._encode(prompts, responses)
        n = len(enc)
        pooled: dict[Position, torch.Tensor] = {
            p: torch.empty((n, len(site_list), self.d_model), dtype=torch.float32)
            for p in pos_list if p != Position.ALL
        }
        all_rows: list[tuple[int, torch.Tensor]] = []
        n_tokens = np.array([len(e.ids) for e in enc], dtype=np.int64)
        # Longest first: similar lengths share a batch, so little compute goes to padding.
        order = sorted(range(n), key=lambda i: -len(enc[i].ids))
        bs = batch_size or self.batch_size
        with torch.inference_mode(), tqdm(
            total=n, desc=f"capture[{self.backend_name}]", disable=not progress, leave=False
        ) as bar:
            for idx in self._batches(order, bs):
                ids, mask = self._pad([enc[i].ids for i in idx], "right")
                plens = torch.tensor([enc[i].prompt_len for i in idx], device=ids.device)
                acts, _ = self._forward(ids, mask, site_list, plens, want_logits=False)
                stacked = torch.stack([acts[s] for s in site_list], dim=2).float()  # [b, t, S, d]
                for j, i in enumerate(idx):
                    p_len, t_len = enc[i].prompt_len, len(enc[i].ids)
                    row = stacked[j]
                    for pos in pos_list:
                        if pos == Position.LAST:
                            pooled[pos][i] = row[p_len - 1].cpu()
                        elif pos == Position.PROMPT_MEAN:
                            pooled[pos][i] = row[:p_len].mean(0).cpu()
                        elif pos == Position.RESPONSE_MEAN:
                            if t_len == p_len:
                                raise UsageError(f"Response {i} is empty: response_mean needs tokens")
                            pooled[pos][i] = row[p_len:t_len].mean(0).cpu()
                        else:
                            all_rows.append((i, row[:t_len].cpu().clone()))
                bar.update(len(idx))
        out: dict[Position, Captured] = {}
        for pos in pos_list:
            if pos == Position.ALL:
                all_rows.sort(key=lambda r: r[0])
                every = torch.cat([r[1] for r in all_rows], 0)
                row_sample = np.concatenate([np.full(len(r[1]), r[0]) for r in all_rows])
                row_token = np.concatenate([np.arange(len(r[1])) for r in all_rows])
                out[pos] = Captured(pos, site_list, every, row_sample, row_token, n_tokens)
            else:
                out[pos] = Captured(
                    pos, site_list, pooled[pos], np.arange(n), np.full(n, -1), n_tokens
                )
        return out

    # ------------------------------------------------------------------ scoring
    def logprobs(
        self,
        prompts: Sequence[str],
        continuations: Sequence[str],
        *,
        reduce: str = "sum",
        batch_size: int | None = None,
        progress: bool = False,
    ) -> np.ndarray:
        """Log-probability of each continuation given its prompt (active steering applies).

        Args:
            prompts: Prompt texts.
            continuations: One continuation per prompt (tokenized without special tokens).
            reduce: ``"sum"`` (total log-prob) or ``"mean"`` (per token).
            batch_size: Pairs per forward pass.
            progress: Show a progress bar.

        Returns:
            Float64 array of shape ``[n]``.

        """
        if reduce not in ("sum", "mean"):
            raise UsageError(f"Unknown reduce {reduce!r}; allowed: sum, mean")
        enc = self._encode(prompts, continuations)
        out = np.zeros(len(enc), dtype=np.float64)
        for i, e in enumerate(enc):
            if len(e.ids) == e.prompt_len:
                raise UsageError(f"Continuation {i} is empty")
        for idx, ids, _, logits, off in self._logit_batches(enc, batch_size, "logprobs", progress, share=True):
            logp = torch.log_softmax(logits.float(), dim=-1)
            for j, i in enumerate(idx):
                p_len, t_len = enc[i].prompt_len, len(enc[i].ids)
                targets = ids[j, p_len - off : t_len - off]
                lp = logp[j, p_len - 1 - off : t_len - 1 - off].gather(-1, targets[:, None]).sum()
                out[i] = lp.item() / (1 if reduce == "sum" else t_len - p_len)
        return out

    def token_logprobs(
        self, ids: Sequence[Sequence[int]], *, batch_size: int | None = None, progress: bool = False
    ) -> list[np.ndarray]:
        """Log-probability of every token given the ones before it (``nan`` for the first), per id list.

        What an OpenAI-style ``/completions`` call with ``echo`` and ``logprobs`` returns for its
        prompt (`personascope.judges.server` serves it; active steering applies).
        """
        enc = []
        for i, x in enumerate(ids):
            if not x:
                raise UsageError(f"Token list {i} is empty")
            enc.append(_Encoded([int(t) for t in x], len(x)))
        out: list[np.ndarray] = [np.empty(0)] * len(enc)
        for idx, tok, _, logits, _ in self._logit_batches(enc, batch_size, "token-logprobs", progress):
            logp = torch.log_softmax(logits.float(), dim=-1)
            for j, i in enumerate(idx):
                n = len(enc[i].ids)
                lp = logp[j, : n - 1].gather(-1, tok[j, 1:n, None])[:, 0].double().cpu().numpy()
                out[i] = np.concatenate([[np.nan], lp])
        return out

    def _logit_batches(
        self, enc: list[_Encoded], batch_size: int | None, desc: str, progress: bool, *, share: bool = False
    ) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor, int]]:
        """Right-padded forward passes with logits: yields ``(indices, ids, prompt_lens, logits, offset)``.

        ``ids`` and ``logits`` start at token ``offset`` of every row: with ``share`` (and no steering,
        on a ``kv_option_scoring`` backend) a token prefix all rows of a batch share, within their
        prompts, runs once and only the rest is run and returned; otherwise ``offset`` is 0.
        """
        size = batch_size or self.batch_size
        share = share and self.share_prefixes and self.kv_option_scoring and not self._steers
        batches = (prefix_batches([e.ids[: e.prompt_len] for e in enc], size) if share else
                   list(self._batches(sorted(range(len(enc)), key=lambda i: -len(enc[i].ids)), size)))
        with torch.inference_mode(), tqdm(total=len(enc), desc=desc, disable=not progress, leave=False) as bar:
            for idx in batches:
                plens = torch.tensor([enc[i].prompt_len for i in idx], device=self.device)
                common = common_prefix([enc[i].ids[: enc[i].prompt_len] for i in idx]) if share else 0
                if common >= MIN_SHARED_PREFIX:
                    ids, logits = self._shared_logits([enc[i].ids for i in idx], common)
                    yield idx, ids, plens, logits, common
                else:
                    ids, mask = self._pad([enc[i].ids for i in idx], "right")
                    _, full = self._forward(ids, mask, [], plens, want_logits=True)
                    assert full is not None  # asked for with want_logits
                    yield idx, ids, plens, full, 0
                bar.update(len(idx))

    def _shared_logits(self, seqs: list[list[int]], common: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of ``seqs`` after their shared first ``common`` tokens, which run once.

        Returns the right-padded remainders ``[b, w]`` and their logits ``[b, w, vocab]``; the
        position ids continue after the prefix, as in one pass over the whole sequence.
        """
        dev, b = self.device, len(seqs)
        _, cache = self._prefix_cache(seqs[0][:common], b)
        rest, mask = self._pad([s[common:] for s in seqs], "right")
        full_mask = torch.cat([torch.ones((b, common), dtype=torch.long, device=dev), mask], 1)
        pos = common + torch.arange(rest.shape[1], device=dev)[None].expand(b, -1)
        out = self.hf_model(input_ids=rest, attention_mask=full_mask, position_ids=pos, use_cache=True,
                            **{self._cache_kwarg(): cache})
        return rest, out.logits

    def next_token_logprobs(
        self, prompts: Sequence[str], *, batch_size: int | None = None, progress: bool = False
    ) -> torch.Tensor:
        """Log-softmax over the vocabulary for the token after each prompt (active steering applies).

        Returns:
            Float32 CPU tensor ``[n, vocab]``.
        """
        enc = self._encode(prompts, None)
        out: torch.Tensor | None = None
        for idx, _, plens, logits, off in self._logit_batches(enc, batch_size, "next-token", progress, share=True):
            last = logits[torch.arange(len(idx), device=logits.device), plens - 1 - off].float()
            logp = torch.log_softmax(last, dim=-1).cpu()
            if out is None:
                out = torch.empty((len(enc), logp.shape[-1]), dtype=torch.float32)
            out[idx] = logp
        assert out is not None
        return out

    def option_logprobs(
        self,
        prompts: Sequence[str],
        options: Sequence[Sequence[str]],
        *,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> list[np.ndarray]:
        """Sum log-probability of each option continuation after its prompt: one array per prompt.

        Same numbers as `logprobs` on every (prompt, option) pair. Without active steering, on a
        backend whose forward pass is the Hugging Face model itself (``kv_option_scoring``), each
        prompt is run once and its key/value cache reused for the options; keep prompts that share a
        prefix (one persona) next to each other to benefit. Otherwise every pair is scored in full.

        Args:
            prompts: Prompt texts (chat-formatted, ending where the option text starts).
            options: Option continuations per prompt (include the leading space).
            batch_size: Prompts per forward pass (default: the adapter's).
            progress: Show a progress bar.
        """
        if len(prompts) != len(options):
            raise UsageError(f"{len(prompts)} prompts but {len(options)} option lists")
        if not prompts:
            return []
        if self.kv_option_scoring and not self._steers:
            from .options import kv_option_logprobs

            try:
                return kv_option_logprobs(self, prompts, options, batch_size or self.batch_size, progress)
            except (TypeError, AttributeError, NotImplementedError, RuntimeError, ValueError):
                pass  # an architecture or cache the fast path cannot drive: score pair by pair below
        flat_p = [p for p, opts in zip(prompts, options, strict=True) for _ in opts]
        flat_c = [c for opts in options for c in opts]
        scores = self.logprobs(flat_p, flat_c, batch_size=batch_size, progress=progress)
        out, k = [], 0
        for opts in options:
            out.append(np.asarray(scores[k : k + len(opts)], dtype=np.float64))
            k += len(opts)
        return out

    def next_token_scores(
        self, prompts: Sequence[str], token_ids: Sequence[Sequence[int]], *, batch_size: int | None = None,
        progress: bool = False,
    ) -> list[np.ndarray]:
        """Log-probability of chosen next tokens after each prompt: ``token_ids[i]`` scored after ``prompts[i]``."""
        if len(prompts) != len(token_ids):
            raise UsageError(f"{len(prompts)} prompts but {len(token_ids)} token id lists")
        if not prompts:
            return []
        logp = self.next_token_logprobs(prompts, batch_size=batch_size, progress=progress)
        return [logp[i, list(ids)].double().numpy() for i, ids in enumerate(token_ids)]

    # ------------------------------------------------------------------ unembedding
    def _final_norm(self) -> Any:
        dec = self.hf_model.get_decoder() if hasattr(self.hf_model, "get_decoder") else None
        for owner in (dec, getattr(self.hf_model, "model", None), self.hf_model):
            for name in ("norm", "final_layernorm", "ln_f", "final_norm"):
                mod = getattr(owner, name, None) if owner is not None else None
                if isinstance(mod, torch.nn.Module):
                    return mod
        raise UsageError(f"Cannot find the final norm of {type(self.hf_model).__name__}; the logit lens needs it")

    def unembed(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits of raw residual states ``[..., d_model]``: final norm, then the unembedding (logit lens).

        At the last layer this equals the model's own logits, because layer ``n-1`` is the block
        output before the final norm.
        """
        head = self.hf_model.get_output_embeddings()
        norm = self._final_norm()
        p = next(head.parameters())
        with torch.inference_mode():
            logits = head(norm(hidden.to(device=p.device, dtype=p.dtype)))
            softcap = getattr(getattr(self.hf_model.config, "get_text_config", lambda: None)() or
                              self.hf_model.config, "final_logit_softcapping", None)
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
        return logits.float().cpu()

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 64,
        *,
        steer: Steer | Sequence[Steer] | None = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        seed: int | None = None,
        batch_size: int | None = None,
        progress: bool = True,
    ) -> list[str]:
        """Generate a response per prompt; greedy by default, steering every generated token.

        Args:
            prompts: Prompt texts (chat-formatted).
            max_new_tokens: Tokens to generate at most (stops early at end of turn).
            steer: Steering for this call, on top of any active `steer` block.
            do_sample: Sample instead of greedy decoding.
            temperature: Sampling temperature.
            seed: Seed for sampling (same seed, same text).
            batch_size: Prompts per batch (left-padded); None: batches by a token budget
                (``GEN_TOKENS_PER_ROW`` x the adapter's ``batch_size`` tokens, prompt + new).
            progress: Show a progress bar.

        Returns:
            The decoded new text for each prompt, special tokens removed.

        """
        extra = [] if steer is None else [steer] if isinstance(steer, Steer) else list(steer)
        enc = self._encode(prompts, None)
        texts: list[str] = [""] * len(enc)
        # No batch size given: batches by a token budget (prompt + new tokens), see GEN_TOKENS_PER_ROW.
        size = batch_size or GEN_ROWS_FACTOR * self.batch_size
        budget = None if batch_size else GEN_TOKENS_PER_ROW * self.batch_size
        # A steer may act on prompt positions only, which a cache computed without it would miss:
        # only unsteered generation shares prefixes.
        share = self.share_prefixes and self.kv_generation_sharing and not extra and not self._steers
        batches = (prefix_batches([e.ids for e in enc], size, budget=budget, extra=max_new_tokens) if share else
                   chunk_order(sorted(range(len(enc)), key=lambda i: -len(enc[i].ids)), size,
                               [len(e.ids) + max_new_tokens for e in enc], budget))
        eos = self._eos_ids()
        gen_kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample}
        if do_sample:
            gen_kwargs["temperature"] = temperature
            gen_kwargs["top_k"] = 0
        gen_kwargs["pad_token_id"] = self.tokenizer.pad_token_id
        gen_kwargs["eos_token_id"] = eos
        # Seeded sampling draws from torch's global generator (transformers offers no other), so the
        # state is forked and restored: the user's global RNG is never reseeded by a call here.
        on_cuda = self.device.type == "cuda"
        forked = (torch.random.fork_rng(devices=[self.device.index or 0] if on_cuda else [],
                                        device_type="cuda" if on_cuda else "cpu")
                  if seed is not None else contextlib.nullcontext())
        with forked, self.steer(extra), torch.inference_mode(), tqdm(
            total=len(enc), desc=f"generate[{self.backend_name}]", disable=not progress, leave=False
        ) as bar:
            for b, idx in enumerate(batches):
                if seed is not None:
                    torch.manual_seed(seed + b)
                seqs = [enc[i].ids for i in idx]
                common = common_prefix(seqs) if share else 0
                if common >= MIN_SHARED_PREFIX:
                    ids, mask, cache = self._shared_prefix(seqs, common)
                    out = self._generate_ids(ids, mask, {**gen_kwargs, self._cache_kwarg(): cache})
                else:
                    ids, mask = self._pad(seqs, "left")
                    out = self._generate_ids(ids, mask, gen_kwargs)
                new = out[:, ids.shape[1] :].tolist()
                for j, i in enumerate(idx):
                    toks = new[j]
                    for k, t in enumerate(toks):
                        if t in eos:
                            toks = toks[:k]
                            break
                    texts[i] = self.tokenizer.decode(toks, skip_special_tokens=True)
                bar.update(len(idx))
        return texts

    def _cache_kwarg(self) -> str:
        """The name under which this transformers version takes a key/value cache (``cache`` since 5.x)."""
        import inspect

        return "cache" if "cache" in inspect.signature(self.hf_model.forward).parameters else "past_key_values"

    def _shared_prefix(self, seqs: list[list[int]], common: int) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Inputs for generating ``seqs`` whose first ``common`` tokens agree, and the prefix's cache.

        The prefix runs once (batch of one) and its cache is repeated for every row. Each row's
        remainder is left-padded after the prefix, so pads sit between prefix and remainder: they
        are masked out and, as generate derives position ids from the attention mask, the real
        tokens keep the positions they have unshared.
        """
        dev, b = self.device, len(seqs)
        pre, cache = self._prefix_cache(seqs[0][:common], b)
        rest, mask_rest = self._pad([s[common:] for s in seqs], "left")
        ids = torch.cat([pre.expand(b, -1), rest], 1)
        mask = torch.cat([torch.ones((b, common), dtype=torch.long, device=dev), mask_rest], 1)
        return ids, mask, cache

    def _prefix_cache(self, prefix: list[int], rows: int) -> tuple[torch.Tensor, Any]:
        """``prefix`` as a ``[1, n]`` tensor and its key/value cache, computed once and repeated ``rows`` times."""
        import inspect

        pre = torch.tensor([prefix], dtype=torch.long, device=self.device)
        keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(self.hf_model.forward).parameters else {}
        with self._prefill_context():
            res = self.hf_model(input_ids=pre, attention_mask=torch.ones_like(pre), use_cache=True, **keep)
        cache = getattr(res, "cache", None) or res.past_key_values
        cache.reorder_cache(torch.zeros(rows, dtype=torch.long, device=self.device))
        return pre, cache

    def _prefill_context(self) -> Any:
        """Context in which a forward of ``hf_model`` fills a key/value cache as `_generate_ids` reads it."""
        return contextlib.nullcontext()

    def _eos_ids(self) -> list[int]:
        ids: set[int] = set()
        cfg_eos = getattr(self.hf_model.generation_config, "eos_token_id", None)
        if isinstance(cfg_eos, int):
            ids.add(cfg_eos)
        elif cfg_eos:
            ids.update(cfg_eos)
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        # Chat models end a turn with a template token that is not always the tokenizer's eos.
        for tok in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>"):
            tid = self.tokenizer.convert_tokens_to_ids(tok)
            if isinstance(tid, int) and tid != self.tokenizer.unk_token_id:
                ids.add(tid)
        return sorted(ids)

    # ------------------------------------------------------------------ steering
    @contextlib.contextmanager
    def steer(
        self,
        vector: torch.Tensor | Steer | Sequence[Steer],
        layer: int | Site | None = None,
        coeff: float = 1.0,
        positions: str = "all",
    ) -> Iterator[ModelAdapter]:
        """Add a vector at a site on every forward pass inside the block; removed in ``finally``.

        Args:
            vector: A ``[d_model]`` tensor, a `Steer`, or a list of `Steer`.
            layer: Block index or `Site` (required for a bare tensor).
            coeff: Multiplier of the vector.
            positions: ``all``, ``prompt`` or ``response``.

        Yields:
            This adapter, steered.

        """
        if isinstance(vector, Steer):
            new = [vector]
        elif isinstance(vector, torch.Tensor):
            if layer is None:
                raise UsageError("steer(vector, layer=...) needs a layer or Site for a bare vector")
            site = layer if isinstance(layer, Site) else Site(int(layer))
            new = [Steer(site, vector, coeff, positions)]
        else:
            new = list(vector)
        for s in new:
            parse_layers([s.site.layer], self.n_layers)
            if s.vector.shape != (self.d_model,):
                raise UsageError(
                    f"Steering vector has shape {tuple(s.vector.shape)}; this model needs ({self.d_model},)"
                )
        before = list(self._steers)
        self._steers = before + [dataclasses.replace(s, site=Site(s.site.layer % self.n_layers, s.site.point))
                                 for s in new]
        try:
            yield self
        finally:
            self._steers = before

    @property
    def active_steers(self) -> tuple[Steer, ...]:
        """The steering in force now (from enclosing `steer` blocks), innermost last."""
        return tuple(self._steers)

    # ------------------------------------------------------------------ backend primitives
    @abstractmethod
    def _forward(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        sites: list[Site],
        prompt_lens: torch.Tensor,
        *,
        want_logits: bool,
    ) -> tuple[dict[Site, torch.Tensor], torch.Tensor | None]:
        """One right-padded forward pass with active steering; returns ``{site: [b, t, d]}``."""

    @abstractmethod
    def _generate_ids(
        self, ids: torch.Tensor, mask: torch.Tensor, gen_kwargs: dict[str, Any]
    ) -> torch.Tensor:
        """Left-padded generation with active steering on the prompt pass and every new token."""
