"""Optional extras: a missing package of an extra is one line naming the pip command; nothing else is masked."""

import tomllib
from pathlib import Path

import pytest

from personascope.cli.exits import ExitCode, exit_code_for
from personascope.errors import MissingExtraError
from personascope.extras import EXTRAS, check_extra, install_hint, missing, requires

REPO = Path(__file__).resolve().parents[1]


def test_a_missing_module_of_the_extra_names_the_install_command():
    with pytest.raises(MissingExtraError) as info, requires("pii", "PII detection"):
        raise ModuleNotFoundError("No module named 'presidio_analyzer'", name="presidio_analyzer")
    msg = str(info.value)
    assert msg == ("PII detection needs presidio_analyzer, which is not installed: "
                   "pip install 'personascope[pii]'")
    assert exit_code_for(info.value) == ExitCode.USAGE and "\n" not in msg


def test_another_missing_module_is_not_blamed_on_the_extra():
    with pytest.raises(ModuleNotFoundError) as info, requires("pii", "PII detection"):
        raise ModuleNotFoundError("No module named 'regex'", name="regex")
    assert not isinstance(info.value, MissingExtraError)


def test_check_extra_finds_modules_without_importing_them(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "transformer_lens"
                        else real(name, *a))
    assert missing("tl") == "transformer_lens"
    with pytest.raises(MissingExtraError, match=r"pip install 'personascope\[tl\]'"):
        check_extra("tl", "the transformer_lens backend")
    assert missing("pii") is None  # installed in the test environment


def test_the_extras_table_matches_pyproject():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (everything,) = extras["all"]  # "personascope[tl,pii,...]"
    assert set(EXTRAS) == set(everything.split("[")[1].rstrip("]").split(","))
    assert set(EXTRAS) < set(extras)
    assert install_hint("tl") == "pip install 'personascope[tl]'"
