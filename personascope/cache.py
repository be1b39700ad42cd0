"""The caching adapter: every model call an audit makes goes through an on-disk, content-addressed cache.

`CachingAdapter` wraps a `ModelAdapter` (without changing it) and answers ``generate``,
``logprobs``, ``option_logprobs`` and ``next_token_scores`` from ``$PERSONASCOPE_CACHE/calls``
when the same call was made before: same model weights (fingerprint), dtype, backend, active
steering (by vector content), inputs and decoding parameters. Work is written in chunks as soon
as each chunk finishes, so a run interrupted by Ctrl-C or a crash redoes no finished model work.
Each entry stores a SHA-256 of its values; an entry that fails the check (edited, truncated) is
warned about, removed and recomputed. Activations are cached by `personascope.store.collect`.
Every other attribute is the wrapped adapter's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import cache_dir
from .records import stable_hash

if TYPE_CHECKING:
    from .backends.base import ModelAdapter

#: Bump when a change would make cached call results differ from fresh ones (2: checksummed entries).
CALL_CACHE_VERSION = 2
#: The key version of cached generations (2: checksummed entries; version-1 files are never read).
GENERATION_CACHE_VERSION = 2


class CachingAdapter:
    """A `ModelAdapter` whose scoring and generation calls are cached on disk (see the module docstring).

    Args:
        model: The adapter to wrap (never modified).
        root: Cache folder (default ``$PERSONASCOPE_CACHE/calls``).
        chunk_size: Inputs per cache entry (an interrupted call loses at most one chunk).
    """

    def __init__(self, model: ModelAdapter, *, root: str | Path | None = None, chunk_size: int = 64,
                 generations: str | Path | None = None) -> None:
        self._inner = model
        self._root = Path(root) if root is not None else cache_dir() / "calls"
        # Generations keep their own folder (the layout of personascope 0.1 caches).
        self._generations = Path(generations) if generations is not None else cache_dir() / "generations"
        self._chunk_size = chunk_size
        #: Model calls answered from the cache / computed, by method (for tests and benchmarks).
        self.hits: dict[str, int] = {}
        self.misses: dict[str, int] = {}

    @classmethod
    def wrap(cls, model: Any, **kw: Any) -> Any:
        """``model`` behind a caching adapter (returned as is when it already has one)."""
        return model if isinstance(model, CachingAdapter) else cls(model, **kw)

    @property
    def inner(self) -> ModelAdapter:
        """The wrapped adapter."""
        return self._inner

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes not found on the wrapper: the adapter's own (info, tokenizer, ...).
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return f"CachingAdapter({self._inner!r})"

    # ------------------------------------------------------------------ steering
    @contextlib.contextmanager
    def steer(self, *args: Any, **kw: Any) -> Iterator[CachingAdapter]:
        """`ModelAdapter.steer` on the wrapped adapter; yields this wrapper, so calls inside stay cached."""
        with self._inner.steer(*args, **kw):
            yield self

    # ------------------------------------------------------------------ cached calls
    def generate(self, prompts: Sequence[str], max_new_tokens: int = 64, *, steer: Any = None,
                 do_sample: bool = False, temperature: float = 1.0, seed: int | None = None,
                 batch_size: int | None = None, progress: bool = True, chunk_size: int | None = None) -> list[str]:
        """`ModelAdapter.generate`, cached by chunk of prompts.

        The key covers the model fingerprint, dtype, backend, prompts, decoding parameters and every
        active steering vector (by content hash), so a steered generation never reuses plain text.
        Sampled chunks get the seed ``seed + chunk start``, so a chunk's text does not depend on the
        chunks before it.
        """
        prompts = list(prompts)
        if not prompts:
            return []
        self._generations.mkdir(parents=True, exist_ok=True)
        size = chunk_size or self._chunk_size
        info = self._inner.info
        sig = steer_signature(self._inner, steer)
        out: list[str] = []
        for start in range(0, len(prompts), size):
            chunk = prompts[start : start + size]
            key = stable_hash({
                "v": GENERATION_CACHE_VERSION, "model": info.fingerprint, "dtype": info.dtype, "backend": info.backend,
                "prompts": chunk, "max_new_tokens": max_new_tokens, "do_sample": do_sample,
                "temperature": temperature if do_sample else None,
                "seed": (seed + start) if (do_sample and seed is not None) else None, "steer": sig,
            })[:40]
            path = self._generations / f"{key}.json"
            got = _read(path, len(chunk))
            if got is None:
                got = self._inner.generate(chunk, max_new_tokens, steer=steer, do_sample=do_sample,
                                           temperature=temperature, seed=(seed + start) if seed is not None else None,
                                           batch_size=batch_size, progress=progress)
                _write(path, got)
                self.misses["generate"] = self.misses.get("generate", 0) + len(chunk)
            else:
                self.hits["generate"] = self.hits.get("generate", 0) + len(chunk)
            out.extend(str(t) for t in got)
        return out

    def logprobs(self, prompts: Sequence[str], continuations: Sequence[str], *, reduce: str = "sum",
                 batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """`ModelAdapter.logprobs`, cached by chunk."""
        pairs = list(zip(prompts, continuations, strict=True))
        out = self._cached("logprobs", pairs, {"reduce": reduce},
                           lambda chunk: self._inner.logprobs([p for p, _ in chunk], [c for _, c in chunk],
                                                              reduce=reduce, batch_size=batch_size,
                                                              progress=progress).tolist())
        return np.asarray(out, dtype=np.float64)

    def option_logprobs(self, prompts: Sequence[str], options: Sequence[Sequence[str]], *,
                        batch_size: int | None = None, progress: bool = False) -> list[np.ndarray]:
        """`ModelAdapter.option_logprobs`, cached by chunk of prompts."""
        pairs = [(p, list(o)) for p, o in zip(prompts, options, strict=True)]
        out = self._cached("option_logprobs", pairs, {},
                           lambda chunk: [v.tolist() for v in self._inner.option_logprobs(
                               [p for p, _ in chunk], [o for _, o in chunk], batch_size=batch_size,
                               progress=progress)])
        return [np.asarray(v, dtype=np.float64) for v in out]

    def next_token_scores(self, prompts: Sequence[str], token_ids: Sequence[Sequence[int]], *,
                          batch_size: int | None = None, progress: bool = False) -> list[np.ndarray]:
        """`ModelAdapter.next_token_scores`, cached by chunk of prompts."""
        pairs = [(p, [int(t) for t in ids]) for p, ids in zip(prompts, token_ids, strict=True)]
        out = self._cached("next_token_scores", pairs, {},
                           lambda chunk: [v.tolist() for v in self._inner.next_token_scores(
                               [p for p, _ in chunk], [t for _, t in chunk], batch_size=batch_size,
                               progress=progress)])
        return [np.asarray(v, dtype=np.float64) for v in out]

    # ------------------------------------------------------------------ the cache
    def _cached(self, method: str, inputs: list[Any], params: dict[str, Any],
                compute: Callable[[list[Any]], list[Any]]) -> list[Any]:
        """Answer ``compute(inputs)`` chunk by chunk from the cache, computing and saving the misses."""
        if not inputs:
            return []
        self._root.mkdir(parents=True, exist_ok=True)
        info = self._inner.info
        base = {"v": CALL_CACHE_VERSION, "method": method, "model": info.fingerprint, "dtype": info.dtype,
                "backend": info.backend, "steer": steer_signature(self._inner, None), "params": params}
        out: list[Any] = []
        for start in range(0, len(inputs), self._chunk_size):
            chunk = inputs[start : start + self._chunk_size]
            path = self._root / f"{stable_hash({**base, 'inputs': chunk})[:40]}.json"
            got = _read(path, len(chunk))
            if got is None:
                got = compute(chunk)
                _write(path, got)
                self.misses[method] = self.misses.get(method, 0) + len(chunk)
            else:
                self.hits[method] = self.hits.get(method, 0) + len(chunk)
            out.extend(got)
        return out


def steer_signature(model: ModelAdapter, extra: Any) -> list[Any]:
    """The active steering of ``model`` plus ``extra`` as JSON (vectors by content hash), for cache keys."""
    from .backends.base import Steer

    steers = list(model.active_steers)
    if extra is not None:
        steers += [extra] if isinstance(extra, Steer) else list(extra)
    # A cap enters the key only when set, so the keys of plain steers cached before caps existed hold.
    return [{"site": str(s.site), "coeff": float(s.coeff), "positions": s.positions,
             "vector": hashlib.sha256(s.vector.detach().float().cpu().numpy().tobytes()).hexdigest()[:24],
             **({"cap": float(s.cap)} if s.cap is not None else {})}
            for s in steers]


def checksum(values: Any) -> str:
    """SHA-256 of the JSON text of ``values`` (the checksum stored with every cache entry)."""
    # json.dumps is deterministic for the lists, strings and numbers cached here, and floats
    # round-trip exactly, so a value read back hashes to the same digest as the value written.
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode("utf-8")).hexdigest()


def _read(path: Path, n: int) -> list[Any] | None:
    """The ``n`` values cached at ``path``, or None (a missing or bad entry; a bad one is warned about and removed).

    An entry is ``{"sha256": ..., "values": [...]}``. Anything else (a hand-edited text, a
    truncated file, a plain JSON list written by an older version without checksum) is a miss:
    cached model output that cannot be verified must not reach a report.
    """
    if not path.exists():
        return None
    try:
        got = json.loads(path.read_bytes().decode("utf-8"))
        values = got["values"]
        ok = (isinstance(values, list) and len(values) == n and isinstance(got.get("sha256"), str)
              and got["sha256"] == checksum(values))
    except (OSError, ValueError, KeyError, TypeError):  # UnicodeDecodeError is a ValueError
        ok = False
    if not ok:
        warnings.warn(f"Corrupt or unverifiable cache entry {path}: removed and recomputed", stacklevel=3)
        path.unlink(missing_ok=True)
        return None
    return values


def _write(path: Path, values: list[Any]) -> None:
    # Through a temporary file: a crash mid-write leaves no half entry to be read back.
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"sha256": checksum(values), "values": values}), encoding="utf-8")
    os.replace(tmp, path)


__all__ = ["CALL_CACHE_VERSION", "GENERATION_CACHE_VERSION", "CachingAdapter", "checksum"]
