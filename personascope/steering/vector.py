"""`PersonaVector`: one direction per layer, with provenance; save/load, GGUF control vectors, steering.

A persona vector holds ``directions[layer] -> [d_model]`` for one or more layers (layer i = the
output of block i). It is a value: scaling, negation and addition return new vectors. Files are
safetensors + a JSON sidecar (no pickle), or llama.cpp control-vector GGUF so users can steer in
llama.cpp and Ollama.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from ..errors import DataError, UsageError
from ..records import ModelInfo, now_iso
from ..sites import Site

if TYPE_CHECKING:
    from ..backends.base import ModelAdapter

FORMAT = "personascope.PersonaVector"
# persona_vectors file suffix -> our read position.
_PV_KINDS = {"response_avg": "response_mean", "prompt_avg": "prompt_mean", "prompt_last": "last"}


@dataclass
class PersonaVector:
    """Trait directions per layer plus how they were made.

    Attributes:
        name: Trait or persona name.
        directions: ``{layer: tensor [d_model]}`` (float32, CPU).
        model: `ModelInfo` of the model the vector was extracted from (None for imported files).
        method: How it was computed (``mean_diff:response_avg``, ``pca``, ``gguf-import`` ...).
        meta: Anything else worth keeping (trait spec hash, data hash, pairs kept, seed, ...).
    """

    name: str
    directions: dict[int, torch.Tensor]
    model: ModelInfo | None = None
    method: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.directions:
            raise UsageError("A PersonaVector needs at least one layer")
        dims = {tuple(v.shape) for v in self.directions.values()}
        if len(dims) != 1 or len(next(iter(dims))) != 1:
            raise UsageError(f"All directions must be 1-D of one size; got shapes {sorted(dims)}")
        self.directions = {int(k): v.detach().to("cpu", torch.float32) for k, v in sorted(self.directions.items())}

    # ------------------------------------------------------------------ value semantics
    @property
    def layers(self) -> list[int]:
        """Layers that have a direction."""
        return list(self.directions)

    @property
    def d_model(self) -> int:
        """Width of the directions."""
        return int(next(iter(self.directions.values())).shape[0])

    def __getitem__(self, layer: int) -> torch.Tensor:
        if layer not in self.directions:
            raise UsageError(f"No direction at layer {layer}; this vector has layers {self.layers}")
        return self.directions[layer]

    def _map(self, fn: Any, method: str) -> PersonaVector:
        return PersonaVector(self.name, {k: fn(v) for k, v in self.directions.items()}, self.model,
                             method or self.method, dict(self.meta))

    def __mul__(self, c: float) -> PersonaVector:
        return self._map(lambda v: v * float(c), "")

    __rmul__ = __mul__

    def __neg__(self) -> PersonaVector:
        return self * -1.0

    def __add__(self, other: PersonaVector) -> PersonaVector:
        if not isinstance(other, PersonaVector):
            return NotImplemented
        if other.d_model != self.d_model:
            raise UsageError(f"Cannot add vectors of width {self.d_model} and {other.d_model}")
        keys = sorted(set(self.directions) | set(other.directions))
        zero = torch.zeros(self.d_model)
        dirs = {k: self.directions.get(k, zero) + other.directions.get(k, zero) for k in keys}
        return PersonaVector(f"{self.name}+{other.name}", dirs, self.model, "sum", {})

    def __sub__(self, other: PersonaVector) -> PersonaVector:
        return self + (-other)

    def unit(self) -> PersonaVector:
        """The same directions scaled to norm 1 per layer."""
        return self._map(lambda v: v / v.norm().clamp_min(1e-12), "")

    def at(self, layer: int) -> PersonaVector:
        """A vector with only ``layer``."""
        return PersonaVector(self.name, {layer: self[layer]}, self.model, self.method, dict(self.meta))

    def at_layers(self, layers: Any) -> PersonaVector:
        """A vector with only the given layers (those it has)."""
        keep = {k: v for k, v in self.directions.items() if k in set(layers)}
        if not keep:
            raise UsageError(f"None of the layers {list(layers)} are in this vector ({self.layers})")
        return PersonaVector(self.name, keep, self.model, self.method, dict(self.meta))

    def __repr__(self) -> str:
        src = self.model.short if self.model else "unknown model"
        return f"PersonaVector({self.name!r}, layers={self.layers[:6]}{'...' if len(self.layers) > 6 else ''}, " \
               f"d={self.d_model}, method={self.method!r}, from={src})"

    # ------------------------------------------------------------------ compatibility
    def check_model(self, model: ModelAdapter, *, force: bool = False) -> None:
        """Raise `UsageError` if ``model`` cannot take this vector (width, layers, fingerprint)."""
        if self.d_model != model.d_model:
            raise UsageError(
                f"Vector {self.name!r} has width {self.d_model} but the model has d_model {model.d_model}"
            )
        bad = [k for k in self.layers if not 0 <= k < model.n_layers]
        if bad:
            raise UsageError(f"Vector layers {bad} do not exist in a model with {model.n_layers} layers")
        if not force and self.model is not None and self.model.fingerprint != model.info.fingerprint:
            raise UsageError(
                f"Vector {self.name!r} was extracted from {self.model.short}, not {model.info.short}; "
                "pass force=True to use it anyway"
            )

    # ------------------------------------------------------------------ steering
    @contextlib.contextmanager
    def apply(
        self,
        model: ModelAdapter,
        coeff: float = 1.0,
        layer: int | None = None,
        positions: str = "all",
        *,
        force: bool = False,
    ) -> Iterator[ModelAdapter]:
        """Steer ``model`` with ``coeff`` times this vector at ``layer`` (default: all its layers).

        Every forward pass inside the block is steered (prompt and every generated token, as
        ``positions`` says); the model is restored on exit, also after an exception.
        """
        from ..backends.base import Steer

        self.check_model(model, force=force)
        layers = self.layers if layer is None else [layer]
        steers = [Steer(Site(k), self[k], coeff, positions) for k in layers]
        with model.steer(steers):
            yield model

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write ``path.safetensors`` and ``path.json``; returns the tensor path."""
        base = Path(path)
        if base.suffix in (".safetensors", ".json"):
            base = base.with_suffix("")
        base.parent.mkdir(parents=True, exist_ok=True)
        # Appended, not with_suffix: a name with a dot ("v1.2") must not lose its last part.
        st = base.with_name(base.name + ".safetensors")
        tmp = st.with_name(st.name + f".tmp{os.getpid()}")
        save_file({f"direction.{k}": v.contiguous() for k, v in self.directions.items()}, str(tmp),
                  metadata={"format": FORMAT})
        os.replace(tmp, st)
        meta = {"format": FORMAT, "name": self.name, "method": self.method, "layers": self.layers,
                "d_model": self.d_model, "model": self.model.model_dump(mode="json") if self.model else None,
                "meta": self.meta, "saved": now_iso()}
        base.with_name(base.name + ".json").write_text(json.dumps(meta, indent=1, default=str))
        return st

    @classmethod
    def load(cls, path: str | Path) -> PersonaVector:
        """Read a vector written by `save`, or a ``.pt`` / ``.gguf`` file from another tool.

        ``.pt`` files are persona_vectors' ``[n_layers + 1, d_model]`` tensors (see
        `from_persona_vectors_pt`: row r becomes our layer r - 1); ``.gguf`` files are llama.cpp /
        repeng control vectors (see `from_gguf`). A missing or damaged file raises `DataError`.
        """
        suffix = Path(path).suffix.lower()
        if suffix == ".pt":
            return cls.from_persona_vectors_pt(path)
        if suffix == ".gguf":
            return cls.from_gguf(path)
        base = Path(path)
        if base.suffix in (".safetensors", ".json"):
            base = base.with_suffix("")
        try:
            meta = json.loads(base.with_name(base.name + ".json").read_bytes().decode("utf-8"))
            tensors = load_file(str(base.with_name(base.name + ".safetensors")))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type on damage
            raise DataError(f"Cannot read persona vector {base}: {' '.join(str(exc).split())}") from exc
        sidecar = base.with_name(base.name + ".json")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DataError(f"{sidecar} is not a personascope persona vector sidecar")
        # The sidecar may be hand-edited or damaged: every field it gives is checked, so a bad one is
        # a one-line DataError naming the file, not a KeyError or TypeError from deep inside.
        try:
            if not isinstance(meta.get("name"), str):
                raise ValueError("field 'name' must be a string")
            if not isinstance(meta.get("method", ""), str) or not isinstance(meta.get("meta", {}), dict):
                raise ValueError("field 'method' must be a string and 'meta' an object")
            dirs = {}
            for k, v in tensors.items():
                prefix, _, idx = k.partition(".")
                if prefix != "direction" or not idx.isdigit():
                    raise ValueError(f"tensor {k!r} is not named direction.<layer>")
                dirs[int(idx)] = v
            model = ModelInfo.model_validate(meta["model"]) if meta.get("model") else None
            return cls(meta["name"], dirs, model, meta.get("method", ""), meta.get("meta", {}))
        except (ValueError, TypeError, KeyError, UsageError) as exc:  # pydantic's ValidationError is a ValueError
            raise DataError(f"Malformed persona vector {sidecar}: {' '.join(str(exc).split())[:300]}") from None

    # persona_vectors (Chen et al. 2025, github.com/safety-research/persona_vectors) files
    @classmethod
    def from_persona_vectors_pt(cls, path: str | Path, name: str | None = None) -> PersonaVector:
        """Import a persona_vectors ``{trait}_{response_avg,prompt_avg,prompt_last}_diff.pt`` file.

        The file is one float tensor ``[n_layers + 1, d_model]`` indexed like Hugging Face
        ``hidden_states``: row 0 is the embedding output and row r (r >= 1) the output of block
        r - 1. Our layer i is the raw output of block i, so **row r becomes our layer r - 1** (their
        "layer 20" is our layer 19; their steering code adds ``vector[layer]`` at block
        ``layer - 1`` too). Row 0 has no block and is dropped; its values go to
        ``meta["embedding_row"]`` so `to_persona_vectors_pt` can write the file back unchanged. The
        last row is, in Hugging Face, the output of the final norm, not the raw last block: it is
        kept as our last layer, and ``meta["last_row_normed"]`` says so.

        The file is read with ``torch.load(weights_only=True)``: no code in it can run.

        Args:
            path: The ``.pt`` file.
            name: Vector name (default: the trait, i.e. the file stem without the ``_*_diff`` suffix).

        Raises:
            DataError: Unreadable file, not a tensor, or not a 2-D float tensor with >= 2 rows
                (the message names the file and the expected shape).
        """
        p = Path(path)
        expected = "one float tensor of shape [n_layers + 1, d_model] (row 0 = embeddings)"
        try:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises pickle, OS and runtime errors alike
            raise DataError(f"Cannot read persona_vectors file {p} (expected {expected}): {exc}") from exc
        if not isinstance(obj, torch.Tensor):
            raise DataError(f"{p} holds a {type(obj).__name__}, not a tensor; expected {expected}")
        if obj.ndim != 2 or obj.shape[0] < 2 or not obj.is_floating_point():
            raise DataError(f"{p} holds a {obj.dtype} tensor of shape {list(obj.shape)}; expected {expected}")
        stem, kind = p.stem, ""
        for suffix, position in _PV_KINDS.items():
            if stem.endswith(f"_{suffix}_diff"):
                stem, kind = stem[: -len(f"_{suffix}_diff")], position
                break
        x = obj.detach().to(torch.float32)
        dirs = {r - 1: x[r] for r in range(1, x.shape[0])}
        meta = {"source": str(p), "format": "persona_vectors.pt", "rows": int(x.shape[0]),
                "layer_shift": "row r -> layer r-1; row 0 (embeddings) dropped",
                "embedding_row": x[0].tolist(), "last_row_normed": True, "n_layers": int(x.shape[0]) - 1}
        if kind:
            meta["position"] = kind
        return cls(name or stem, dirs, None, f"persona_vectors:{kind or 'diff'}", meta)

    def to_persona_vectors_pt(self, path: str | Path, *, n_layers: int | None = None) -> Path:
        """Write a persona_vectors-style ``.pt`` tensor ``[n_layers + 1, d_model]`` (layer i -> row i + 1).

        Row 0 (the embeddings) is ``meta["embedding_row"]`` when the vector was imported with
        `from_persona_vectors_pt` (so a round trip is exact) and zeros otherwise; layers this vector
        lacks are zero rows. ``n_layers`` defaults to the source model's depth, the imported
        file's, or the highest layer + 1.
        """
        if n_layers is None:
            n_layers = (self.model.n_layers if self.model is not None
                        else int(self.meta.get("n_layers", max(self.layers) + 1)))
        if max(self.layers) >= n_layers or min(self.layers) < 0:
            raise UsageError(f"Layers {self.layers} do not fit n_layers={n_layers}")
        out = torch.zeros(n_layers + 1, self.d_model, dtype=torch.float32)
        row0 = self.meta.get("embedding_row")
        if isinstance(row0, list) and len(row0) == self.d_model:
            out[0] = torch.tensor(row0, dtype=torch.float32)
        for k, v in self.directions.items():
            out[k + 1] = v
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(out, str(path))
        return path

    def to_gguf(self, path: str | Path, *, model_hint: str = "llama") -> Path:
        """Export as a llama.cpp control vector (arch ``controlvector``, tensors ``direction.{i}``).

        llama.cpp adds ``direction.{i}`` to the output of block ``i`` (0-based) and never controls
        block 0, so our layer i maps to ``direction.{i}`` and a layer-0 direction is refused.
        """
        import gguf
        import numpy as np

        if 0 in self.directions:
            raise UsageError("llama.cpp control vectors cannot steer layer 0; drop it with .at()/other layers")
        path = Path(path)
        writer = gguf.GGUFWriter(str(path), "controlvector")
        writer.add_string("controlvector.model_hint", model_hint)
        writer.add_uint32("controlvector.layer_count", len(self.directions))
        for k, v in self.directions.items():
            writer.add_tensor(f"direction.{k}", v.numpy().astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path

    @classmethod
    def from_gguf(cls, path: str | Path, name: str | None = None) -> PersonaVector:
        """Import a llama.cpp/repeng control-vector GGUF (``direction.{i}`` -> our layer i).

        Both tools index by decoder block: llama.cpp adds ``direction.{i}`` to the output of block
        i (it refuses ``direction.0``), and repeng writes ``direction.{layer}`` for the block index
        ``layer`` it read from ``hidden_states[layer + 1]`` and steers at ``model.layers[layer]``
        (negative ``hidden_layers`` are first turned into ``n_layers + layer``). So no shift is
        needed: ``direction.{i}`` is our layer i. ``controlvector.model_hint`` goes to
        ``meta["model_hint"]``.
        """
        import gguf

        try:
            reader = gguf.GGUFReader(str(path))
        except (OSError, ValueError) as exc:
            raise DataError(f"Cannot read GGUF {path}: {exc}") from exc
        arch = reader.fields.get("general.architecture")
        arch_s = bytes(arch.parts[arch.data[0]]).decode() if arch is not None else ""
        if arch_s != "controlvector":
            raise DataError(f"{path} is a GGUF of architecture {arch_s!r}, not a control vector")
        dirs: dict[int, torch.Tensor] = {}
        for t in reader.tensors:
            if not t.name.startswith("direction."):
                continue
            idx = t.name.split(".")[1]
            if not idx.isdigit():
                raise DataError(f"{path}: tensor {t.name!r} is not named direction.<block index>")
            dirs[int(idx)] = torch.tensor(t.data.copy(), dtype=torch.float32).reshape(-1)
        if not dirs:
            raise DataError(f"{path} has no direction.N tensors")
        meta: dict[str, Any] = {"source": str(path)}
        hint = reader.fields.get("controlvector.model_hint")
        if hint is not None:
            meta["model_hint"] = bytes(hint.parts[hint.data[0]]).decode(errors="replace")
        return cls(name or Path(path).stem, dirs, None, "gguf-import", meta)


def safe_file_name(name: str, default: str = "vector") -> str:
    """A file name made from ``name``: only ``[A-Za-z0-9._-]``, no leading or trailing dot, at most 100 characters.

    Separators and every other character become ``_`` and leading/trailing dots and underscores are
    dropped, so ``"../../escape"`` gives ``"escape"`` and ``"/tmp/abs"`` gives ``"tmp_abs"``: a name
    from a trait file can never point outside the folder it is joined to.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")[:100].strip("._")
    return safe or default


def path_inside(folder: str | Path, name: str) -> Path:
    """``folder / safe_file_name(name)``, checked to lie inside ``folder`` after resolving links.

    Raises:
        UsageError: The resolved path is outside ``folder`` (e.g. a symbolic link in it points away).
    """
    root = Path(folder).resolve()
    path = (root / safe_file_name(name)).resolve()
    if not path.is_relative_to(root) or path == root:
        raise UsageError(f"Refusing to write {path}: it is outside the output folder {root}")
    return path


def vectors_from_dict(name: str, directions: Mapping[int, Any], **kw: Any) -> PersonaVector:
    """Build a `PersonaVector` from arrays or tensors keyed by layer."""
    return PersonaVector(name, {int(k): torch.as_tensor(v, dtype=torch.float32) for k, v in directions.items()}, **kw)
