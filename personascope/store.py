"""Activation collection with provenance and a content-addressed on-disk cache.

`collect` runs a model adapter over prompts and returns `ActivationSet` objects (one per read
position, all from the same forward passes). Results are cached per chunk of prompts under
``$PERSONASCOPE_CACHE/activations``, keyed by model fingerprint, prompts, responses, sites,
positions, dtype, backend and `CACHE_VERSION`, so a second or resumed run does no forward pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .cache import steer_signature
from .config import cache_dir
from .errors import DataError, UsageError
from .records import ModelInfo, Provenance, stable_hash
from .sites import Position, Site, parse_position

if TYPE_CHECKING:
    from .backends.base import ModelAdapter

# Bump when a change would make cached activations differ from freshly computed ones.
CACHE_VERSION = 1


@dataclass
class ActivationSet:
    """Activations ``acts[row, site, d]`` with labels and provenance.

    For pooled positions there is one row per prompt; for ``position="all"`` one row per token,
    with ``row_sample`` naming the prompt and ``row_token`` the token index of each row.
    """

    acts: torch.Tensor
    sites: list[Site]
    position: Position
    provenance: Provenance
    labels: list[str] | None = None
    row_sample: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    row_token: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        if self.row_sample.size == 0:
            self.row_sample = np.arange(self.acts.shape[0])
            self.row_token = np.full(self.acts.shape[0], -1)

    def __len__(self) -> int:
        return int(self.acts.shape[0])

    def __repr__(self) -> str:
        return (
            f"ActivationSet(rows={len(self)}, sites={len(self.sites)}, d={self.acts.shape[-1]}, "
            f"position={self.position.value}, model={self.provenance.model.short})"
        )

    @property
    def layers(self) -> list[int]:
        """Layer of each site, in site order."""
        return [s.layer for s in self.sites]

    def site_index(self, site: Site | int) -> int:
        """Column of ``site`` (an int means that layer's ``resid_post``)."""
        site = Site(site) if isinstance(site, int) else site
        try:
            return self.sites.index(site)
        except ValueError:
            have = ", ".join(str(s) for s in self.sites)
            raise UsageError(f"Site {site} was not captured; this set has: {have}") from None

    def at(self, site: Site | int) -> np.ndarray:
        """``[rows, d]`` float32 numpy array at one site (ready for scikit-learn)."""
        return self.acts[:, self.site_index(site)].numpy()

    @property
    def row_labels(self) -> np.ndarray | None:
        """Label of each row (the label of its prompt), or None."""
        if self.labels is None:
            return None
        return np.asarray(self.labels, dtype=object)[self.row_sample]

    def save(self, path: str | Path) -> Path:
        """Write ``path.safetensors`` and the JSON sidecar ``path.json``; returns the tensor path."""
        base = Path(path)
        if base.suffix in (".safetensors", ".json"):
            base = base.with_suffix("")
        base.parent.mkdir(parents=True, exist_ok=True)
        tensors = {
            "acts": self.acts.contiguous(),
            "row_sample": torch.from_numpy(np.asarray(self.row_sample, dtype=np.int64)),
            "row_token": torch.from_numpy(np.asarray(self.row_token, dtype=np.int64)),
        }
        st_path = base.with_suffix(".safetensors")
        tmp = st_path.with_name(st_path.name + f".tmp{os.getpid()}")
        save_file(tensors, str(tmp), metadata={"format": "personascope.ActivationSet"})
        digest = _file_sha256(tmp)
        os.replace(tmp, st_path)
        meta = {
            "format": "personascope.ActivationSet",
            "version": CACHE_VERSION,
            "sites": [str(s) for s in self.sites],
            "position": self.position.value,
            "labels": self.labels,
            "provenance": self.provenance.model_dump(mode="json"),
            "tensor_file": st_path.name,
            "tensor_sha256": digest,
        }
        js = base.with_suffix(".json")
        tmpj = js.with_name(js.name + f".tmp{os.getpid()}")
        tmpj.write_text(json.dumps(meta, indent=1))
        os.replace(tmpj, js)
        return st_path

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True) -> ActivationSet:
        """Load a set written by `save`; a damaged file raises `DataError`."""
        base = Path(path)
        if base.suffix in (".safetensors", ".json"):
            base = base.with_suffix("")
        js, st_path = base.with_suffix(".json"), base.with_suffix(".safetensors")
        try:
            meta = json.loads(js.read_text())
            if verify and _file_sha256(st_path) != meta["tensor_sha256"]:
                raise DataError(f"{st_path} does not match its checksum in {js.name}")
            tensors = load_file(str(st_path))
            return cls(
                acts=tensors["acts"],
                sites=[Site.parse(s) for s in meta["sites"]],
                position=Position(meta["position"]),
                provenance=Provenance.model_validate(meta["provenance"]),
                labels=meta.get("labels"),
                row_sample=tensors["row_sample"].numpy(),
                row_token=tensors["row_token"].numpy(),
            )
        except DataError:
            raise
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
            # SafetensorError (a truncated or garbled tensor file) is not an OSError/ValueError.
            raise DataError(f"Cannot read activation set {base}: {exc}") from exc


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def data_hash(prompts: Sequence[str], responses: Sequence[str] | None = None) -> str:
    """Hash of the exact input texts."""
    return stable_hash({"prompts": list(prompts), "responses": list(responses or [])})


def cache_key(
    info: ModelInfo,
    prompts: Sequence[str],
    responses: Sequence[str] | None,
    sites: Sequence[Site],
    positions: Sequence[Position],
    steers: Sequence[Any] = (),
) -> str:
    """Content address of one capture request (``steers``: the active steering's signature, if any)."""
    return stable_hash({
        "v": CACHE_VERSION,
        "model": info.fingerprint,
        "dtype": info.dtype,
        "backend": info.backend,
        "data": data_hash(prompts, responses),
        "sites": [str(s) for s in sites],
        "positions": [p.value for p in positions],
        # Only when steered, so the keys of unsteered captures are those written before steers had keys.
        **({"steers": list(steers)} if steers else {}),
    })[:40]


def collect(
    model: ModelAdapter,
    prompts: Sequence[str],
    sites: Sequence[Site] | None = None,
    positions: str | Position | Sequence[str | Position] = Position.LAST,
    *,
    labels: Sequence[str] | None = None,
    responses: Sequence[str] | None = None,
    batch_size: int | None = None,
    cache: bool | str | Path = True,
    chunk_size: int = 256,
    progress: bool = True,
    method: str = "capture",
) -> dict[Position, ActivationSet]:
    """Capture activations with provenance and caching.

    Args:
        model: A loaded `ModelAdapter` (see `personascope.load_model`).
        prompts: Prompt texts (already chat-formatted).
        sites: Sites to read; default every layer's ``resid_post``.
        positions: One or several read positions; all come from the same forward passes.
        labels: Optional label per prompt, stored with the set.
        responses: Optional response text per prompt (for ``response_mean``).
        batch_size: Prompts per forward pass.
        cache: True for ``$PERSONASCOPE_CACHE/activations``, a folder, or False.
        chunk_size: Prompts per cache entry; an interrupted run resumes at the last whole chunk.
        progress: Show progress bars.
        method: Recorded in the provenance.

    Returns:
        ``{position: ActivationSet}``.

    """
    if len(prompts) == 0:
        raise UsageError("No prompts to capture: pass at least one prompt")
    if labels is not None and len(labels) != len(prompts):
        raise UsageError(f"{len(prompts)} prompts but {len(labels)} labels")
    site_list = model._check_sites(sites)
    pos_list = (
        [parse_position(positions)]
        if isinstance(positions, str | Position)
        else [parse_position(p) for p in positions]
    )
    # Steered activations are keyed by the steering (vector hash, coeff, positions, cap), so they never
    # mix with unsteered ones and a resumed run does not recompute them.
    steers = steer_signature(model, None) if model.active_steers else []
    root: Path | None = None
    if cache:
        root = cache_dir() / "activations" if cache is True else Path(cache)
        root.mkdir(parents=True, exist_ok=True)
    parts: list[tuple[int, dict[Position, ActivationSet]]] = []
    for start in range(0, len(prompts), chunk_size):
        chunk = list(prompts[start : start + chunk_size])
        resp = list(responses[start : start + chunk_size]) if responses is not None else None
        key = cache_key(model.info, chunk, resp, site_list, pos_list, steers)
        got = _cache_get(root, key, pos_list) if root else None
        if got is None:
            captured = model.activations(
                chunk, site_list, pos_list, responses=resp, batch_size=batch_size, progress=progress
            )
            got = {}
            for pos, cap in captured.items():
                prov = Provenance(
                    model=model.info, method=method, sites=[str(s) for s in site_list],
                    position=pos.value, data_hash=data_hash(chunk, resp), n_items=len(chunk),
                )
                got[pos] = ActivationSet(cap.acts, site_list, pos, prov, None,
                                         cap.row_sample, cap.row_token)
                if root:
                    got[pos].save(root / f"{key}-{pos.value}")
        parts.append((len(chunk), got))
    out: dict[Position, ActivationSet] = {}
    for pos in pos_list:
        pieces = [p[pos] for _, p in parts]
        offsets = np.cumsum([0] + [n for n, _ in parts])
        prov = Provenance(
            model=model.info, method=method, sites=[str(s) for s in site_list],
            position=pos.value, data_hash=data_hash(prompts, responses), n_items=len(prompts),
        )
        out[pos] = ActivationSet(
            acts=torch.cat([p.acts for p in pieces], 0),
            sites=site_list,
            position=pos,
            provenance=prov,
            labels=list(labels) if labels is not None else None,
            row_sample=np.concatenate([p.row_sample + off for p, off in zip(pieces, offsets, strict=False)]),
            row_token=np.concatenate([p.row_token for p in pieces]),
        )
    return out


def _cache_get(root: Path, key: str, positions: Sequence[Position]) -> dict[Position, ActivationSet] | None:
    out = {}
    for pos in positions:
        base = root / f"{key}-{pos.value}"
        if not base.with_suffix(".json").exists():
            return None
        try:
            out[pos] = ActivationSet.load(base)
        except DataError as exc:
            warnings.warn(f"Corrupt activation cache entry, recomputing: {exc}", stacklevel=3)
            for suffix in (".json", ".safetensors"):
                base.with_suffix(suffix).unlink(missing_ok=True)
            return None
    return out


def activations(
    model: ModelAdapter,
    prompts: Sequence[str],
    layers: Any = "all",
    position: str | Position = Position.LAST,
    **kwargs: Any,
) -> ActivationSet:
    """One `ActivationSet` of ``resid_post`` at ``layers`` and one position (see `collect`)."""
    pos = parse_position(position)
    return collect(model, prompts, model.sites(layers), [pos], **kwargs)[pos]


def generate(
    model: ModelAdapter,
    prompts: Sequence[str],
    max_new_tokens: int = 64,
    *,
    steer: Any = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    seed: int | None = None,
    batch_size: int | None = None,
    cache: bool | str | Path = True,
    chunk_size: int = 64,
    progress: bool = True,
) -> list[str]:
    """`ModelAdapter.generate` with a content-addressed cache, so an interrupted audit resumes.

    The same as `personascope.cache.CachingAdapter.generate` (see there); ``cache=False`` calls
    the model directly, a path keeps the entries in that folder.
    """
    from .cache import CachingAdapter

    if not cache:
        inner = model.inner if isinstance(model, CachingAdapter) else model
        return inner.generate(prompts, max_new_tokens, steer=steer, do_sample=do_sample, temperature=temperature,
                              seed=seed, batch_size=batch_size, progress=progress)
    adapter = CachingAdapter.wrap(model) if cache is True else CachingAdapter(
        model.inner if isinstance(model, CachingAdapter) else model, generations=Path(cache))
    return adapter.generate(prompts, max_new_tokens, steer=steer, do_sample=do_sample, temperature=temperature,
                            seed=seed, batch_size=batch_size, progress=progress, chunk_size=chunk_size)
