"""`personascope audit`: config validation, a resumable run, results.json + report.html, report and gate."""

import json

import pytest

from personascope.cli import main
from personascope.errors import UsageError
from personascope.runner import load_config


def test_config_errors_name_the_key_and_allowed_values(tmp_path):
    bad = tmp_path / "a.toml"
    bad.write_text('modle = "x"\n')
    with pytest.raises(UsageError, match="modle: unknown key.*Allowed top-level keys"):
        load_config(bad)
    bad.write_text('profile = "medium"\n')
    with pytest.raises(UsageError, match="profile.*'quick' or 'full'"):
        load_config(bad)
    bad.write_text("[audits.bias_audit]\n")
    with pytest.raises(UsageError, match="unknown audit 'bias_audit'"):
        load_config(bad)
    bad.write_text("[audits.persona_localization]\nn_per_persons = 3\n")
    with pytest.raises(UsageError, match="n_per_persons.*allowed: .*n_per_persona"):
        load_config(bad)
    assert load_config("quick").profile == "quick" and load_config("full").profile == "full"
    assert set(load_config("quick").audits) == set(load_config("full").audits)


def test_cli_config_error_is_exit_2(tmp_path, capsys):
    assert main(["audit", "bias", "--param", "bias.no_such=1", "--out", str(tmp_path)]) == 2
    assert "no_such" in capsys.readouterr().err


def test_audit_run_resumes_and_reports(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PERSONASCOPE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    args = ["audit", "localization", "--model", str(tiny_model_dir), "--profile", "quick", "--quiet",
            "--param", "localization.n_per_persona=6", "--param", 'localization.personas=["liberal", "neurotic"]',
            "--param", "localization.folds=2", "--policy", "default", "--out", str(out)]
    assert main(args) == 0
    first = capsys.readouterr()
    assert "running" in first.err and (out / "report.html").exists() and (out / "audits" /
                                                                         "persona_localization.json").exists()
    results = json.loads((out / "results.json").read_text())
    assert [a["audit"] for a in results["audits"]] == ["persona_localization"]
    assert results["config"]["audits"]["persona_localization"]["n_per_persona"] == 6
    # A second run reuses the finished audit instead of recomputing it.
    assert main(args) == 0
    assert "finished earlier, reusing" in capsys.readouterr().err
    # Re-rendering from JSON alone gives the same bytes.
    html = (out / "report.html").read_bytes()
    assert main(["report", str(out / "results.json"), "--policy", "default"]) == 0
    assert (out / "report.html").read_bytes() == html
    # The gate reads it: missing audits fail the default policy (exit 1) and produce JUnit XML.
    junit = tmp_path / "gate.xml"
    assert main(["gate", str(out / "results.json"), "--policy", "default", "--junit", str(junit)]) == 1
    assert junit.read_text().startswith("<?xml")
    policy = tmp_path / "p.toml"
    policy.write_text('[[rule]]\naudit = "persona_localization"\nmetric = "best_accuracy"\nmin = 0.0\n')
    assert main(["gate", str(out), "--policy", str(policy)]) == 0
    assert main(["gate", str(out), "--policy", str(tmp_path / "missing.toml")]) == 2
