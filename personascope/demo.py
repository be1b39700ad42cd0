"""``make demo``: capture persona activations on the embedded model and summarize them per layer.

Until the full audit lands this is the richest end-to-end job: built-in persona statements as
system messages, last-token ``resid_post`` at every layer from one pass per batch, then a
cross-validated probe per layer against chance and a shuffled-label control. Writes
``activations.safetensors``/``.json``, ``layer_summary.json`` and a self-contained ``report.html``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from .data import load_persona_statements
from .probes.layerwise import layer_separability
from .records import now_iso, stable_hash
from .reports.svg import line_chart
from .sites import Position
from .store import collect

DEMO_PERSONAS = (
    "utilitarian", "deontologist", "moral-nihilist", "virtue-ethicist",
    "conservative", "liberal", "extravert", "neurotic",
)


def run_demo(
    out_dir: str | Path,
    *,
    model_spec: str = "smollm2-135m-instruct",
    backend: str = "nnsight",
    per_persona: int = 40,
    seed: int = 0,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Run the demo job and write its outputs to ``out_dir``; returns the summary dict."""
    from .models import load_model

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    statements = [s for s in load_persona_statements(personas=DEMO_PERSONAS) if s.positive]
    rng = np.random.default_rng(seed)
    chosen = []
    for persona in DEMO_PERSONAS:
        items = [s for s in statements if s.persona == persona]
        idx = rng.permutation(len(items))[:per_persona]
        chosen.extend(items[i] for i in sorted(idx))
    model = load_model(model_spec, backend=backend)
    # The paper's framing: the statement is the system message; read the last prompt token.
    prompts = [model.format_chat(user="What do you think?", system=s.statement) for s in chosen]
    labels = [s.persona for s in chosen]
    acts = collect(model, prompts, model.sites("all"), [Position.LAST], labels=labels,
                   batch_size=batch_size, method="demo:persona-statement-system")[Position.LAST]
    acts.save(out / "activations")
    rows = layer_separability(acts.acts.numpy(), np.asarray(labels), acts.layers, seed=seed)
    best = max(rows, key=lambda r: r["selectivity"])
    summary = {
        "created": now_iso(),
        "model": model.info.model_dump(mode="json"),
        "method": "5-fold CV logistic-regression probe per layer, last prompt token, resid_post",
        "framing": "persona statement as system message; user turn 'What do you think?'",
        "personas": dict(Counter(labels)),
        "data_hash": stable_hash([s.statement for s in chosen]),
        "seed": seed,
        "layers": rows,
        "best_layer": best,
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "layer_summary.json").write_text(json.dumps(summary, indent=1))
    (out / "report.html").write_text(_html(summary), encoding="utf-8")
    return summary


def format_table(rows: list[dict[str, float]]) -> str:
    """Plain-text per-layer table for the terminal."""
    lines = ["layer  accuracy  control  selectivity  fisher"]
    for r in rows:
        lines.append(
            f"{r['layer']:>5}  {r['accuracy']:8.3f}  {r['control_accuracy']:7.3f}  "
            f"{r['selectivity']:11.3f}  {r['fisher']:6.3f}"
        )
    return "\n".join(lines)


def _html(summary: dict[str, Any]) -> str:
    rows = summary["layers"]
    x = [r["layer"] for r in rows]
    chart = line_chart(
        x,
        {
            "probe accuracy": [r["accuracy"] for r in rows],
            "shuffled-label control": [r["control_accuracy"] for r in rows],
            "chance": [r["chance"] for r in rows],
        },
        title="Persona separability by layer", xlabel="layer (output of block)", ylabel="accuracy",
        y_range=(0.0, 1.0),
    )
    table = "".join(
        f"<tr><td>{r['layer']}</td><td>{r['accuracy']:.3f}</td><td>{r['control_accuracy']:.3f}</td>"
        f"<td>{r['selectivity']:.3f}</td><td>{r['fisher']:.3f}</td></tr>"
        for r in rows
    )
    m = summary["model"]
    best = summary["best_layer"]
    personas = ", ".join(f"{escape(k)} ({v})" for k, v in summary["personas"].items())
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>personascope demo: persona separability</title>
<style>body{{font-family:system-ui,sans-serif;max-width:900px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}
code{{background:#f4f4f4;padding:0 3px}}</style></head><body>
<h1>Persona separability by layer</h1>
<p>Model <code>{escape(m['id'])}</code> (fingerprint <code>{escape(m['fingerprint'][:16])}</code>,
{m['n_layers']} layers, d_model {m['d_model']}, {escape(m['dtype'])}, backend {escape(m['backend'])}).
Personas: {personas}.</p>
<p><b>Best layer {best['layer']}</b>: probe accuracy {best['accuracy']:.3f} vs shuffled-label control
{best['control_accuracy']:.3f} (chance {best['chance']:.3f}).</p>
{chart}
<h2>Per layer</h2><table><tr><th>layer</th><th>accuracy</th><th>control</th><th>selectivity</th>
<th>fisher ratio</th></tr>{table}</table>
<h2>Method</h2><p>{escape(summary['method'])}; {escape(summary['framing'])}. Seed {summary['seed']},
data hash <code>{escape(summary['data_hash'][:16])}</code>, created {escape(summary['created'])}.</p>
</body></html>"""
