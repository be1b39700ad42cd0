"""Execute the notebooks at tiny sizes and save them with their outputs, so that GitHub shows them run.

    .venv/bin/python notebooks/execute.py            # every notebook (a few minutes on 2 CPU cores)
    .venv/bin/python notebooks/execute.py 03_audits  # one

Each notebook runs top to bottom in a fresh Jupyter kernel on the embedded model with
``PERSONASCOPE_NOTEBOOK_SIZE=tiny`` (what the test suite runs), progress bars off (widgets do not
render on GitHub) and its output folder in a temporary directory, whose path is written as
``notebook_out`` in the saved outputs. Run metadata that changes on every run (timings, kernel
session) is dropped, so a re-execution changes the file only where an output changed.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WIDGET = "application/vnd.jupyter.widget-view+json"


def execute(path: Path) -> None:
    """Run the notebook at ``path`` and write it back with its outputs."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        env = {"PERSONASCOPE_NOTEBOOK_SIZE": "tiny", "PERSONASCOPE_NOTEBOOK_OUT": str(out), "TQDM_DISABLE": "1"}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # the kernel inherits this process's environment
        try:
            nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                    resources={"metadata": {"path": tmp}}).execute()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        # Local paths say nothing to a reader and would differ on every machine.
        replace = [(str(out), "notebook_out"), (tmp, "."), (str(ROOT), ".")]

        def clean(text: str) -> str:
            for old, new in replace:
                text = text.replace(old, new)
            return text

        for cell in nb.cells:
            cell.get("metadata", {}).pop("execution", None)
            # Progress bars in Jupyter are ipywidgets (tqdm.notebook ignores TQDM_DISABLE); GitHub
            # cannot render them, and a finished bar says nothing, so they are not saved.
            if "outputs" in cell:
                cell["outputs"] = [o for o in cell["outputs"] if WIDGET not in o.get("data", {})]
            for o in cell.get("outputs", []):
                if "text" in o:
                    o["text"] = clean(o["text"])
                for kind, value in o.get("data", {}).items():
                    if isinstance(value, str):
                        o["data"][kind] = clean(value)
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, path)


def main(names: list[str]) -> int:
    """Execute the named notebooks (stems), or all of them."""
    paths = sorted(HERE.glob("*.ipynb"))
    if names:
        paths = [p for p in paths if p.stem in names or p.name in names]
    for path in paths:
        print(f"executing {path.name} ...", flush=True)
        execute(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
