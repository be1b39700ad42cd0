"""ActivationSet files and collect(): exact round trips, damage detection, the per-chunk cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from personascope.chat import encode
from personascope.errors import DataError, UsageError
from personascope.records import ModelInfo, Provenance
from personascope.sites import Point, Position, Site
from personascope.store import ActivationSet, collect

PROMPTS = [
    "Hi",
    "Tell me about the sea, the wind and the old lighthouse keeper who lived there",
    "Why?",
    "A medium length prompt about parrots",
    "x",
]


@pytest.fixture(scope="module")
def prompts(tiny_nn) -> list[str]:
    return [tiny_nn.format_chat(user=p, system="You are a pirate." if i % 2 else None)
            for i, p in enumerate(PROMPTS)]


def _info() -> ModelInfo:
    return ModelInfo(id="toy", source="/toy", fingerprint="ab" * 32, n_layers=4, d_model=8,
                     dtype="float32", device="cpu", backend="nnsight")


def _toy_set() -> ActivationSet:
    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(7, 3, 8, generator=gen)
    sites = [Site(0), Site(2, Point.MLP_OUT), Site(3, Point.RESID_PRE)]
    prov = Provenance(model=_info(), method="test", sites=[str(s) for s in sites], position="all",
                      data_hash="cd" * 32, n_items=3, seed=7, extra={"note": "ünïcode", "k": [1, 2]})
    return ActivationSet(acts, sites, Position.ALL, prov, labels=["a", "b", "c"],
                         row_sample=np.array([0, 0, 1, 1, 1, 2, 2]),
                         row_token=np.array([0, 1, 0, 1, 2, 0, 1]))


def _assert_same_set(a: ActivationSet, b: ActivationSet) -> None:
    assert torch.equal(a.acts, b.acts)
    assert a.acts.dtype == b.acts.dtype
    assert a.sites == b.sites
    assert a.position == b.position
    assert a.labels == b.labels
    assert np.array_equal(a.row_sample, b.row_sample)
    assert np.array_equal(a.row_token, b.row_token)


def _entries(root: Path) -> set[str]:
    return {p.name for p in root.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------------- files
@pytest.mark.parametrize("name", ["set", "set.safetensors", "set.json"])
def test_save_load_exact_round_trip(tmp_path: Path, name: str) -> None:
    original = _toy_set()
    st_path = original.save(tmp_path / "sub" / name)
    assert st_path == tmp_path / "sub" / "set.safetensors"
    assert (tmp_path / "sub" / "set.json").exists()
    loaded = ActivationSet.load(tmp_path / "sub" / name)
    _assert_same_set(original, loaded)
    assert loaded.provenance == original.provenance
    assert loaded.provenance.model == original.provenance.model
    assert list(loaded.row_labels) == ["a", "a", "b", "b", "b", "c", "c"]
    assert np.array_equal(loaded.at(Site(2, Point.MLP_OUT)), original.acts[:, 1].numpy())
    assert not list((tmp_path / "sub").glob("*.tmp*"))  # atomic writes leave no temp files


def test_pooled_set_defaults_and_site_lookup() -> None:
    prov = Provenance(model=_info(), method="test")
    s = ActivationSet(torch.zeros(4, 2, 8), [Site(1), Site(3)], Position.LAST, prov)
    assert np.array_equal(s.row_sample, np.arange(4))
    assert np.array_equal(s.row_token, np.full(4, -1))
    assert s.layers == [1, 3] and len(s) == 4 and s.row_labels is None
    assert s.site_index(3) == 1
    with pytest.raises(UsageError) as err:
        s.site_index(2)
    assert "1.resid_post" in str(err.value) and "3.resid_post" in str(err.value)


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
@pytest.mark.parametrize("verify", [True, False])
def test_damaged_tensor_file_raises_data_error(tmp_path: Path, damage: str, verify: bool) -> None:
    st_path = _toy_set().save(tmp_path / "set")
    data = bytearray(st_path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[10] ^= 0xFF  # inside the JSON header
    else:
        data = bytearray(b"not a safetensors file at all")
    st_path.write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        ActivationSet.load(tmp_path / "set", verify=verify)
    assert "set" in str(err.value)


def test_flipped_tensor_byte_caught_by_checksum(tmp_path: Path) -> None:
    st_path = _toy_set().save(tmp_path / "set")
    data = bytearray(st_path.read_bytes())
    data[-3] ^= 0x01  # inside the tensor data: the file still parses
    st_path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum"):
        ActivationSet.load(tmp_path / "set")


@pytest.mark.parametrize("damage", ["missing_json", "bad_json", "missing_tensor", "no_key"])
def test_damaged_sidecar_raises_data_error(tmp_path: Path, damage: str) -> None:
    _toy_set().save(tmp_path / "set")
    js, st = tmp_path / "set.json", tmp_path / "set.safetensors"
    if damage == "missing_json":
        js.unlink()
    elif damage == "bad_json":
        js.write_text(js.read_text()[:40])
    elif damage == "missing_tensor":
        st.unlink()
    else:
        meta = json.loads(js.read_text())
        del meta["sites"]
        js.write_text(json.dumps(meta))
    with pytest.raises(DataError):
        ActivationSet.load(tmp_path / "set")


# ---------------------------------------------------------------------------------- collect
def _count_forwards(adapter, monkeypatch, *, fail_after: int | None = None) -> list[int]:
    calls: list[int] = []
    real = adapter._forward

    def counting(*args, **kwargs):
        calls.append(1)
        if fail_after is not None and len(calls) > fail_after:
            raise AssertionError("unexpected forward pass: the cache should have answered")
        return real(*args, **kwargs)

    monkeypatch.setattr(adapter, "_forward", counting)
    return calls


def test_second_collect_does_no_forward_pass(tiny_nn, prompts, tmp_path: Path, monkeypatch) -> None:
    sites = tiny_nn.sites([0, 2], points=["resid_post", "mlp_out"])
    calls = _count_forwards(tiny_nn, monkeypatch, fail_after=1)
    first = collect(tiny_nn, prompts, sites, ["last", "all"], cache=tmp_path, batch_size=8,
                    progress=False)
    assert len(calls) == 1
    assert _entries(tmp_path)  # written to the folder given as cache=
    labels = [f"p{i}" for i in range(len(prompts))]
    second = collect(tiny_nn, prompts, sites, ["last", "all"], cache=tmp_path, batch_size=8,
                     progress=False, labels=labels)
    assert len(calls) == 1
    for pos in first:
        assert torch.equal(first[pos].acts, second[pos].acts)
        assert np.array_equal(first[pos].row_sample, second[pos].row_sample)
        assert np.array_equal(first[pos].row_token, second[pos].row_token)
        assert second[pos].provenance.data_hash == first[pos].provenance.data_hash
    assert second[Position.LAST].labels == labels
    # Any change to the request misses the cache.
    with pytest.raises(AssertionError, match="unexpected forward"):
        collect(tiny_nn, prompts[:-1], sites, ["last", "all"], cache=tmp_path, progress=False)


def test_cache_env_var_is_the_default_root(tiny_nn, prompts, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PERSONASCOPE_CACHE", str(tmp_path))
    calls = _count_forwards(tiny_nn, monkeypatch, fail_after=1)
    a = collect(tiny_nn, prompts[:2], tiny_nn.sites([1]), "last", progress=False)
    b = collect(tiny_nn, prompts[:2], tiny_nn.sites([1]), "last", progress=False)
    assert len(calls) == 1
    assert torch.equal(a[Position.LAST].acts, b[Position.LAST].acts)
    assert _entries(tmp_path / "activations")


@pytest.mark.parametrize("victim", ["safetensors", "json"])
def test_corrupt_cache_entry_warns_and_recomputes(
    tiny_nn, prompts, tmp_path: Path, monkeypatch, victim: str
) -> None:
    sites = tiny_nn.sites([1, 3])
    first = collect(tiny_nn, prompts, sites, "prompt_mean", cache=tmp_path, progress=False)
    files = sorted(tmp_path.glob(f"*.{victim}"))
    assert len(files) == 1
    data = bytearray(files[0].read_bytes())
    files[0].write_bytes(bytes(data[: len(data) // 2]))
    calls = _count_forwards(tiny_nn, monkeypatch)
    with pytest.warns(UserWarning, match="[Cc]orrupt"):
        again = collect(tiny_nn, prompts, sites, "prompt_mean", cache=tmp_path, progress=False)
    assert len(calls) == 1
    assert torch.equal(first[Position.PROMPT_MEAN].acts, again[Position.PROMPT_MEAN].acts)
    # The entry was rewritten: the next call is served from the cache without a warning.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third = collect(tiny_nn, prompts, sites, "prompt_mean", cache=tmp_path, progress=False)
    assert len(calls) == 1
    assert torch.equal(first[Position.PROMPT_MEAN].acts, third[Position.PROMPT_MEAN].acts)


def test_chunked_equals_unchunked(tiny_nn, prompts, tmp_path: Path) -> None:
    sites = tiny_nn.sites("all", points=["resid_pre", "resid_post"])
    positions = ["last", "prompt_mean", "all"]
    whole = collect(tiny_nn, prompts, sites, positions, cache=False, progress=False)
    chunked = collect(tiny_nn, prompts, sites, positions, cache=tmp_path, chunk_size=2,
                      batch_size=2, progress=False)
    assert len(list(tmp_path.glob("*.json"))) == 3 * len(positions)  # ceil(5 / 2) chunks
    for pos in whole:
        a, b = whole[pos], chunked[pos]
        assert a.acts.shape == b.acts.shape
        assert torch.allclose(a.acts, b.acts, atol=1e-5, rtol=0)
        assert np.array_equal(a.row_sample, b.row_sample)
        assert np.array_equal(a.row_token, b.row_token)
        assert b.provenance.n_items == len(prompts)
        assert b.provenance.data_hash == a.provenance.data_hash
    # Resumed from the chunk cache, the combined result is the same again.
    resumed = collect(tiny_nn, prompts, sites, positions, cache=tmp_path, chunk_size=2, progress=False)
    for pos in whole:
        assert torch.equal(resumed[pos].acts, chunked[pos].acts)
        assert np.array_equal(resumed[pos].row_sample, chunked[pos].row_sample)


def test_position_all_rows_map_back_to_prompts(tiny_nn, prompts) -> None:
    sites = tiny_nn.sites([0, 3])
    got = collect(tiny_nn, prompts, sites, ["all", "last", "prompt_mean"], cache=False,
                  labels=[f"L{i}" for i in range(len(prompts))], progress=False)
    rows = got[Position.ALL]
    n_tokens = [len(encode(tiny_nn.tokenizer, p)) for p in prompts]
    assert len(rows) == sum(n_tokens)
    assert np.array_equal(np.bincount(rows.row_sample, minlength=len(prompts)), n_tokens)
    assert list(rows.row_labels) == [f"L{i}" for i, n in enumerate(n_tokens) for _ in range(n)]
    for i, n in enumerate(n_tokens):
        mine = np.flatnonzero(rows.row_sample == i)
        assert np.array_equal(rows.row_token[mine], np.arange(n))
        block = rows.acts[mine]
        assert torch.allclose(block[-1], got[Position.LAST].acts[i], atol=1e-6)
        assert torch.allclose(block.mean(0), got[Position.PROMPT_MEAN].acts[i], atol=1e-5)
        # The same rows as capturing that prompt alone.
        alone = tiny_nn.activations([prompts[i]], sites, "all", progress=False)[Position.ALL]
        assert torch.allclose(block, alone.acts, atol=1e-5)


def test_steered_collect_is_cached_under_its_steering_only(tiny_nn, prompts, tmp_path: Path, monkeypatch) -> None:
    sites = tiny_nn.sites([0, 1])
    v = torch.randn(tiny_nn.d_model, generator=torch.Generator().manual_seed(3))
    plain = collect(tiny_nn, prompts, sites, "last", cache=tmp_path, progress=False)
    written = _entries(tmp_path)
    # A steered collect with a warm unsteered cache: computed (never served the plain values), then kept.
    calls = _count_forwards(tiny_nn, monkeypatch)
    with tiny_nn.steer(v, layer=1, coeff=2.0):
        steered = collect(tiny_nn, prompts, sites, "last", cache=tmp_path, progress=False)
    assert len(calls) == 1
    assert len({e.split("-")[0] for e in _entries(tmp_path) - written}) == 1  # one new entry (two files)
    diff = steered[Position.LAST].acts - plain[Position.LAST].acts
    assert torch.allclose(diff[:, 1], (2.0 * v).expand(len(prompts), -1), atol=1e-4)
    assert diff[:, 0].abs().max().item() == 0.0
    # The same steering again: served, no forward pass (a resumed run does not redo it).
    with tiny_nn.steer(v, layer=1, coeff=2.0):
        again = collect(tiny_nn, prompts, sites, "last", cache=tmp_path, progress=False)
    assert len(calls) == 1
    assert torch.equal(again[Position.LAST].acts, steered[Position.LAST].acts)
    # Another coefficient, or a cap on the same vector, is another entry: computed, not served.
    with tiny_nn.steer(v, layer=1, coeff=3.0):
        other = collect(tiny_nn, prompts, sites, "last", cache=tmp_path, progress=False)
    assert len(calls) == 2
    assert torch.allclose(other[Position.LAST].acts[:, 1] - plain[Position.LAST].acts[:, 1],
                          (3.0 * v).expand(len(prompts), -1), atol=1e-4)
    # After the blocks the cached unsteered values come back.
    back = collect(tiny_nn, prompts, sites, "last", cache=tmp_path, progress=False)
    assert len(calls) == 2
    assert torch.equal(back[Position.LAST].acts, plain[Position.LAST].acts)


def test_cache_key_separates_backends(tiny_nn, tiny_tl, prompts, tmp_path: Path) -> None:
    collect(tiny_nn, prompts[:2], tiny_nn.sites([1]), "last", cache=tmp_path, progress=False)
    n = len(_entries(tmp_path))
    collect(tiny_tl, prompts[:2], tiny_tl.sites([1]), "last", cache=tmp_path, progress=False)
    assert len(_entries(tmp_path)) == 2 * n


def test_collect_input_errors(tiny_nn, prompts) -> None:
    with pytest.raises(UsageError, match="at least one"):
        collect(tiny_nn, [], cache=False, progress=False)
    with pytest.raises(UsageError, match="labels"):
        collect(tiny_nn, prompts, labels=["a"], cache=False, progress=False)
    with pytest.raises(UsageError, match="response_mean"):
        collect(tiny_nn, prompts, positions="response_mean", cache=False, progress=False)
    with pytest.raises(UsageError, match="allowed"):
        collect(tiny_nn, prompts, positions="middle", cache=False, progress=False)
    with pytest.raises(UsageError, match="0..3"):
        collect(tiny_nn, prompts, sites=[Site(4)], cache=False, progress=False)
    with pytest.raises(UsageError, match="list of strings"):
        tiny_nn.activations(prompts[0], progress=False)


def test_response_mean_reads_response_tokens(tiny_nn, prompts) -> None:
    responses = ["Arr, the sea!", " Aye", " Parrots", " Nay, matey", " Ho"]
    sites = tiny_nn.sites([2])
    got = collect(tiny_nn, prompts, sites, ["response_mean", "last", "all"], responses=responses,
                  cache=False, progress=False)
    rows = got[Position.ALL]
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        n_p = len(encode(tiny_nn.tokenizer, p))
        n_r = len(encode(tiny_nn.tokenizer, r, is_continuation=True))
        mine = np.flatnonzero(rows.row_sample == i)
        assert len(mine) == n_p + n_r
        assert torch.allclose(rows.acts[mine[n_p:]].mean(0), got[Position.RESPONSE_MEAN].acts[i],
                              atol=1e-5)
        # "last" is still the last prompt token, not the last response token.
        assert torch.allclose(rows.acts[mine[n_p - 1]], got[Position.LAST].acts[i], atol=1e-6)


def test_activations_helper(tiny_nn, prompts) -> None:
    from personascope.store import activations

    s = activations(tiny_nn, prompts, layers="1,3", position="prompt_mean", cache=False,
                    progress=False)
    assert s.sites == [Site(1), Site(3)]
    assert s.acts.shape == (len(prompts), 2, tiny_nn.d_model)
    assert s.position is Position.PROMPT_MEAN
    assert s.provenance.model == tiny_nn.info


def test_package_level_activations_is_the_function() -> None:
    import subprocess
    import sys

    # The store module must not share a name with a package-level function: importing a
    # submodule sets the package attribute of that name.
    code = ("import personascope as ps\n"
            "from personascope.store import collect\n"
            "assert callable(ps.activations), type(ps.activations)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-500:]
