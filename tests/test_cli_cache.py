"""``personascope cache info|clear`` on a cache folder of its own (never the user's)."""

import json

import pytest

from personascope.cli import main
from personascope.config import CACHE_KINDS


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("PERSONASCOPE_CACHE", str(root))
    (root / "activations" / "ab").mkdir(parents=True)
    (root / "activations" / "ab" / "x.safetensors").write_bytes(b"a" * 1000)
    (root / "activations" / "y.json").write_bytes(b"b" * 24)
    (root / "judgements").mkdir()
    (root / "judgements" / "r.json").write_bytes(b"c" * 300)
    (root / "fingerprints.json").write_text("{}")
    return root


def _info(capsys):
    assert main(["cache", "info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    return data, {r["kind"]: r for r in data["kinds"]}


def test_info_counts_bytes_and_files_per_kind(cache, capsys):
    data, rows = _info(capsys)
    assert data["root"] == str(cache) and list(rows) == list(CACHE_KINDS)
    assert (rows["activations"]["bytes"], rows["activations"]["files"]) == (1024, 2)
    assert (rows["judgements"]["bytes"], rows["fingerprints"]["bytes"], rows["models"]["bytes"]) == (300, 2, 0)
    assert main(["cache", "info"]) == 0
    text = capsys.readouterr().out
    assert "activations" in text and "total" in text


def test_clear_deletes_only_the_named_kinds(cache, capsys):
    assert main(["cache", "clear", "activations", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"cleared": ["activations"], "bytes": 1024}
    assert not (cache / "activations").exists() and (cache / "judgements" / "r.json").exists()
    assert main(["cache", "clear", "--all"]) == 0
    assert "freed" in capsys.readouterr().out
    _, rows = _info(capsys)
    assert sum(r["bytes"] for r in rows.values()) == 0


@pytest.mark.parametrize(("argv", "says"), [(["clear"], "needs kinds or --all"),
                                            (["clear", "models", "--all"], "not both"),
                                            (["clear", "bogus"], "Unknown cache kind(s) 'bogus'"),
                                            (["info", "models"], "takes no kinds")])
def test_bad_cache_requests_are_one_line_errors_and_delete_nothing(cache, capsys, argv, says):
    assert main(["cache", *argv]) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert says in err
    assert (cache / "activations" / "ab" / "x.safetensors").exists()
