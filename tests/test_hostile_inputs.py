"""Hostile inputs: every bad parameter, file or flag is one line on stderr and exit 2, before any model loads.

Each case runs ``personascope.cli.main`` in-process with `personascope.models.load_model` replaced by a
function that raises AssertionError: a case that gets past validation fails loudly instead of
running for minutes. No case loads a model, so each takes well under a second.
"""

import dataclasses
import json
import math
import typing
from pathlib import Path

import pytest

from personascope import catalog
from personascope.audits import get_audit
from personascope.chat import check_messages
from personascope.cli import main
from personascope.data import check_prompt_file, read_jsonl, read_records
from personascope.errors import DataError, UsageError
from personascope.results import AuditResult, Metric, RunResults
from personascope.runner import config_hash, load_config

NOT_UTF8 = b"name = \"caf\xe9\"\n"  # Latin-1 bytes: not valid UTF-8


@pytest.fixture(autouse=True)
def no_model(monkeypatch, tmp_path):
    """Fail any case that reaches model loading; run in a scratch folder (default --out lands there)."""
    def load_model(*args, **kwargs):
        raise AssertionError("model loaded")

    monkeypatch.setattr("personascope.models.load_model", load_model)
    monkeypatch.chdir(tmp_path)


def run_cli(capsys, argv: list[str]) -> str:
    """Run ``argv`` and check the hostile-input contract; return the one error line."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, (argv, code, err)
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, (argv, lines)
    return lines[0]


def _results(path: Path) -> Path:
    run = RunResults(audits=[AuditResult(audit="ci_leakage", metrics=[Metric(name="violation_rate", value=0.1)])])
    path.write_text(run.to_json(), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ table
# (argv, text the error line must contain). Files named in argv are made by the `files` fixture.
CASES = [
    # negative sizes used to mean "all but N" (localization ran 7+ minutes with -5)
    (["audit", "localization", "--param", "localization.n_per_persona=-5"], "must be at least 1 (got -5)"),
    (["audit", "localization", "--param", "localization.folds=0"], "folds must be at least 2 (got 0)"),
    (["audit", "localization", "--param", "localization.folds=1"], "folds must be at least 2"),
    (["audit", "localization", "--param", "localization.n_per_persona=2.5"], "must be an integer"),
    (["audit", "localization", "--param", "localization.probes=[\"svm\"]"], "allowed: logreg, extratrees"),
    (["audit", "localization", "--param", "localization.framing=\"assistant\""], "framing"),
    (["audit", "localization", "--param", "localization.personas=[\"liberall\"]"], "liberall"),
    (["audit", "localization", "--param", "localization.n_per_persona=2"], "fewer than folds"),
    (["audit", "vectors", "--param", "vectors.traits=[\"evill\"]"], "evill"),
    (["audit", "vectors", "--param", "vectors.coeff=inf"], "coeff must be a finite number"),
    (["audit", "refusal", "--param", "refusal.control=\"tea\""], "tea"),
    (["audit", "drift", "--param", "drift.temperature=nan"], "temperature must be a finite number"),
    (["audit", "drift", "--param", "drift.temperature=0"], "temperature must be greater than 0"),
    (["audit", "drift", "--param", "drift.traits=[\"extraversionn\"]"], "extraversionn"),
    (["audit", "drift", "--param", "drift.tasks=[\"poem\"]"], "poem"),
    (["audit", "drift", "--param", "drift.turns=500"], "turns=500"),
    (["audit", "leakage", "--param", "leakage.do_sample=maybe"], "do_sample must be true or false (got 'maybe')"),
    (["audit", "leakage", "--param", "leakage.contexts=[\"counselor\"]"], "counselor"),
    (["audit", "leakage", "--param", "leakage.necessary_share=1.5"], "necessary_share must be at most 1"),
    (["audit", "bias", "--param", "bias.groups=[\"nope\"]"], "nope"),
    (["audit", "bias", "--param", "bias.alpha=1"], "alpha must be less than 1"),
    (["audit", "bias", "--param", "bias.n_questions=\"40\""], "must be an integer"),
    (["audit", "memory", "--param", "memory.validator=\"vote\""], "allowed: answer, embedding, both"),
    (["audit", "memory", "--param", "memory.data=\"no/such/folder\""], "no such folder"),
    (["audit", "release_comparison"], "needs a candidate"),
    (["audit", "release_comparison", "--param", "release_comparison.candidate=\"x\"",
      "--param", "release_comparison.traits=[\"evill\"]"], "evill"),
    (["audit", "bias", "--seed", "-1"], "seed"),
    (["audit", "vectors", "--param", "vectors.traits=evil"], "traits must be a list"),
    # --param for an audit that is not in the run used to add it silently
    (["audit", "bias", "--param", "drift.turns=3"], "not in this run"),
    (["audit", "bias", "--param", "nosuch.turns=3"], "not in this run"),
    (["audit", "bias", "--param", "bias.no_such_knob=3"], "no_such_knob"),
    # files: not UTF-8, a policy that checks nothing, --out that cannot be a folder
    (["audit", "--config", "latin1.toml"], "not UTF-8"),
    (["audit", "bias", "--policy", "latin1.toml"], "not UTF-8"),
    (["audit", "bias", "--policy", "empty.toml"], "checks nothing"),
    (["audit", "bias", "--out", "a_file"], "is a file"),
    (["audit", "bias", "--out", "a_file/sub"], "is under the file"),
    (["audit", "bias", "--out", "/dev/null/out"], "is under the file"),
    (["demo", "--out", "a_file"], "is a file"),
    (["compare", "--base", "x", "--candidate", "y", "--out", "a_file"], "is a file"),
    (["capture", "--prompts", "latin1.jsonl", "--out", "o"], "not UTF-8"),
    (["capture", "--prompts", "no_content.jsonl", "--out", "o"], "lacks 'content'"),
    # the gate
    (["gate", "results.json", "--policy", "empty.toml"], "checks nothing"),
    (["gate", "results.json", "--policy", "latin1.toml"], "not UTF-8"),
    (["gate", "results.json", "--policy", "typo_skip.toml"], "did you mean 'violation_rate'"),
    (["gate", "results.json", "--policy", "typo_audit.toml"], "did you mean 'ci_leakage'"),
    (["gate", "schema_str.json", "--policy", "ok.toml"], "schema must be an integer"),
]


@pytest.fixture
def files(tmp_path):
    """The input files the table names, in the scratch folder."""
    (tmp_path / "latin1.toml").write_bytes(NOT_UTF8)
    (tmp_path / "latin1.jsonl").write_bytes(b'{"text": "caf\xe9"}\n')
    (tmp_path / "no_content.jsonl").write_text(json.dumps({"messages": [{"role": "user"}]}) + "\n")
    (tmp_path / "empty.toml").write_text('[policy]\nname = "nothing"\n')
    (tmp_path / "a_file").write_text("not a folder")
    rule = '[[rule]]\naudit = "{audit}"\nmetric = "{metric}"\nmax = 0.2\n'
    (tmp_path / "ok.toml").write_text(rule.format(audit="ci_leakage", metric="violation_rate"))
    (tmp_path / "typo_skip.toml").write_text('[policy]\nmissing = "skip"\n'
                                             + rule.format(audit="ci_leakage", metric="violaton_rate"))
    (tmp_path / "typo_audit.toml").write_text('[policy]\nmissing = "skip"\n'
                                              + rule.format(audit="ci_leakge", metric="violation_rate"))
    _results(tmp_path / "results.json")
    data = json.loads((tmp_path / "results.json").read_text())
    (tmp_path / "schema_str.json").write_text(json.dumps({**data, "schema": "1"}))
    return tmp_path


@pytest.mark.parametrize(("argv", "needle"), CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_input_is_one_line_and_exit_2(files, capsys, argv, needle):
    line = run_cli(capsys, argv)
    assert needle in line, line


# ------------------------------------------------------------------------------------------ generated
def _fields(kind: type) -> list[tuple[str, str]]:
    """(audit, field) for every parameter whose type is ``kind`` (also inside ``Annotated`` or ``X | None``)."""
    out = []
    for entry in catalog.CATALOG:
        cls = get_audit(entry.name)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            args = typing.get_args(hints[f.name]) or (hints[f.name],)
            if hints[f.name] is kind or (typing.get_origin(hints[f.name]) is not tuple and kind in args):
                out.append((entry.name, f.name))
    return out


INT_FIELDS = _fields(int)
FLOAT_FIELDS = _fields(float)
BOOL_FIELDS = _fields(bool)


def test_every_audit_has_generated_cases():
    assert {a for a, _ in INT_FIELDS} == set(catalog.BY_NAME)
    assert FLOAT_FIELDS and BOOL_FIELDS


@pytest.mark.parametrize(("audit", "field"), INT_FIELDS, ids=[f"{a}.{f}" for a, f in INT_FIELDS])
def test_negative_int_param_is_rejected_before_the_model(capsys, audit, field):
    line = run_cli(capsys, ["audit", audit, "--param", f"{audit}.{field}=-5"])
    assert f"{field} must be at least" in line and "(got -5)" in line and audit in line


@pytest.mark.parametrize(("audit", "field"), INT_FIELDS, ids=[f"{a}.{f}" for a, f in INT_FIELDS])
def test_float_for_int_param_is_rejected(capsys, audit, field):
    line = run_cli(capsys, ["audit", audit, "--param", f"{audit}.{field}=2.5"])
    assert f"{field} must be an integer (got 2.5)" in line


@pytest.mark.parametrize(("audit", "field"), FLOAT_FIELDS, ids=[f"{a}.{f}" for a, f in FLOAT_FIELDS])
@pytest.mark.parametrize("value", ["nan", "inf", "\"0.5\""])
def test_non_finite_or_text_float_param_is_rejected(capsys, audit, field, value):
    run_cli(capsys, ["audit", audit, "--param", f"{audit}.{field}={value}"])


@pytest.mark.parametrize(("audit", "field"), BOOL_FIELDS, ids=[f"{a}.{f}" for a, f in BOOL_FIELDS])
@pytest.mark.parametrize("value", ["maybe", "1"])
def test_non_bool_param_is_rejected(capsys, audit, field, value):
    line = run_cli(capsys, ["audit", audit, "--param", f"{audit}.{field}={value}"])
    assert f"{field} must be true or false" in line


def test_batch_size_zero_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["audit", "bias", "--batch-size", "0"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err
    assert "0 is not at least 1" in err.strip().splitlines()[-1]


# ------------------------------------------------------------------------------------------ library level
def test_every_audit_builds_and_validates_its_defaults_and_tiny_params():
    for entry in catalog.CATALOG:
        cls = get_audit(entry.name)
        tiny = {k: v.format(tiny_model_dir=".") if isinstance(v, str) else v for k, v in entry.tiny.items()}
        cls.from_params(tiny).validate()
        for profile in ("full", "quick"):
            audit = cls.from_params({}, profile)
            if entry.name != "release_comparison":  # needs a candidate model to be named
                audit.validate()


def test_error_names_audit_key_value_and_range():
    with pytest.raises(UsageError) as exc:
        get_audit("persona_localization").from_params({"n_per_persona": -5})
    msg = str(exc.value)
    assert "'persona_localization'" in msg and "n_per_persona must be at least 1 (got -5)" in msg


def test_int_for_float_and_list_for_tuple_are_accepted():
    audit = get_audit("persona_vectors").from_params({"coeff": 1, "traits": ["evil"]})
    assert audit.coeff == 1.0 and isinstance(audit.coeff, float) and audit.traits == ("evil",)


def test_reading_non_utf8_and_malformed_files_raises_data_error(tmp_path):
    bad = tmp_path / "x.jsonl"
    bad.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    for read in (read_jsonl, read_records, check_prompt_file):
        with pytest.raises(DataError, match="not UTF-8"):
            read(bad)
    with pytest.raises(DataError, match="cannot read"):
        read_jsonl(tmp_path)  # a folder


@pytest.mark.parametrize(("messages", "needle"), [
    ([{"role": "user"}], "lacks 'content'"),
    ([{"content": "hi"}], "lacks 'role'"),
    ([{"role": "user", "content": None}], "non-text"),
    (["hi"], "expected an object"),
    ([], "empty"),
    ("hi", "must be a list"),
])
def test_bad_chat_messages_are_data_errors(messages, needle):
    with pytest.raises(DataError, match=needle):
        check_messages(messages)


def test_config_hash_ignores_out(tmp_path):
    a = load_config(None, out=str(tmp_path / "a")).model_dump(mode="json")
    b = load_config(None, out=str(tmp_path / "b")).model_dump(mode="json")
    assert config_hash(a) == config_hash(b) == RunResults(config=a).config_hash
    assert config_hash(a) != config_hash({**a, "seed": 1})


def test_string_schema_is_not_reported_as_newer(tmp_path):
    data = json.loads(_results(tmp_path / "r.json").read_text())
    with pytest.raises(DataError, match="schema must be an integer"):
        RunResults.from_data({**data, "schema": "1"})
    audit = data["audits"][0]
    with pytest.raises(DataError, match="schema must be an integer"):
        RunResults.from_data({**data, "audits": [{**audit, "schema": "1"}]})
    assert not math.isnan(RunResults.from_data(data).audits[0].metrics[0].value)


# ------------------------------------------------------------------------------------------ gate
def test_gate_correct_policy_still_passes(files, capsys):
    assert main(["gate", "results.json", "--policy", "ok.toml"]) == 0
    assert "PASS" in capsys.readouterr().out


def test_gate_typo_names_the_closest_metric_even_with_missing_skip(files, capsys):
    line = run_cli(capsys, ["gate", "results.json", "--policy", "typo_skip.toml"])
    assert "'violaton_rate'" in line and "did you mean 'violation_rate'?" in line


def test_builtin_policies_name_declared_metrics():
    from personascope.reports.gate import builtin_policies, load_policy

    for name in builtin_policies():
        load_policy(name)  # raises on an unknown audit or metric
