from collections import Counter

import pytest
from conftest import SHARED_DATA

from personascope.data import builtin_personas_dir, load_persona_statements, load_prompts, read_jsonl
from personascope.errors import DataError


def test_read_jsonl_skips_blank_lines(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert [r["a"] for r in read_jsonl(p)] == [1, 2]


@pytest.mark.parametrize(
    ("text", "needle"),
    [("", "no records"), ('{"a":1}\n[1,2]\n', ":2: expected a JSON object"), ('{"a":1}\n{"a":\n', ":2: invalid JSON")],
)
def test_read_jsonl_errors_name_file_and_line(tmp_path, text, needle):
    p = tmp_path / "bad.jsonl"
    p.write_text(text)
    with pytest.raises(DataError, match="bad.jsonl") as exc:
        read_jsonl(p)
    assert needle in str(exc.value)


def test_load_prompts_renders_chat_records(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"text": "raw"}\n{"user": "u", "system": "s", "label": "x"}\n')
    seen = []

    def render(messages, user=None, system=None):
        seen.append((messages, user, system))
        return f"[{system}]{user}"

    recs = load_prompts(p, render)
    assert [r.text for r in recs] == ["raw", "[s]u"]
    assert recs[1].label == "x" and recs[0].label is None


def test_builtin_persona_set_is_well_formed():
    stmts = load_persona_statements()
    pos = Counter(s.persona for s in stmts if s.positive)
    personas = {p for p in pos if p != "neutral"}
    assert len(personas) >= 8
    assert all(pos[p] >= 60 for p in personas)
    assert pos["neutral"] >= 60
    texts = [s.statement.lower() for s in stmts]
    assert len(texts) == len(set(texts)), "duplicate statements in the built-in set"
    assert (builtin_personas_dir() / "README.md").exists()


def test_persona_filter_and_unknown_persona():
    got = load_persona_statements(personas=["liberal", "conservative"])
    assert {s.persona for s in got} == {"liberal", "conservative"}
    with pytest.raises(DataError, match="available"):
        load_persona_statements(personas=["martian"])


@pytest.mark.skipif(not (SHARED_DATA / "anthropic-persona").exists(), reason="shared data not present")
def test_reads_anthropic_persona_files():
    folder = SHARED_DATA / "anthropic-persona"
    stmts = load_persona_statements(folder, personas=["extraversion"])
    assert len(stmts) == 1000
    share_pos = sum(s.positive for s in stmts) / len(stmts)
    assert 0.2 < share_pos < 0.8  # both matching and non-matching statements are present
