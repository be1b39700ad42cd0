"""The notebooks run top to bottom on the embedded model (as a user would in Jupyter)."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, capsys):
    nb = json.loads(path.read_text())
    namespace: dict = {}
    code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code_cells
    for cell in code_cells:
        exec(compile("".join(cell["source"]), f"{path.name}", "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out
    assert "steered:" in out and "plain:" in out
    rows = namespace["rows"]
    # Personas are well above chance somewhere in the model (4 classes: chance 0.25).
    assert max(r["accuracy"] for r in rows) > 0.5
