"""Release comparison end to end on the embedded model: fine-tune two candidates, compare, gate, flag.

1. Fine-tune SmolLM2-135M-Instruct on CPU on the shipped sycophantic set and on the matched neutral
   set (same user messages, different answers): full fine-tune of every block (embeddings frozen),
   loss on the answer tokens only. Candidates are cached in benchmarks/.release/ (keyed by the
   training settings and data hash), so a rerun only re-measures.
2. `personascope compare` (the release_comparison audit, quick profile) for each candidate, and the
   `release` gate policy on each result.
3. `personascope flag` on a mix of both training sets before training: AUROC of the projection
   difference for the sycophantic samples.

Run: .venv/bin/python benchmarks/bench_release.py   (about 30 minutes on 2 CPU cores; prints a
Markdown section and writes benchmarks/.release/summary.json)
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import personascope as ps

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "personascope" / "data" / "finetune"
WORK = ROOT / "benchmarks" / ".release"


def finetune(model: ps.ModelAdapter, data: Path, out: Path, *, epochs: int, lr: float, batch: int, seed: int) -> dict:
    """Full fine-tune (embeddings frozen) on the answers of ``data``; saves to ``out``; returns stats.

    The loop is `personascope.organisms.finetune.finetune`; its stamp in ``out`` (same settings:
    data hash, epochs, lr, batch, seed, base fingerprint) makes a rerun return without training.
    """
    from personascope.organisms.finetune import finetune as run_finetune

    return run_finetune(model, data, out, epochs=epochs, lr=lr, batch=batch, seed=seed, progress=True)


def main() -> None:
    """Fine-tune both candidates, compare each with the base, gate, flag; print a Markdown section."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--flag-per-set", type=int, default=60, help="samples of each set in the flagging mix")
    ap.add_argument("--no-flag", action="store_true", help="skip the flagging step")
    ap.add_argument("--work", default=str(WORK), help="folder for candidates and runs (default: %(default)s)")
    args = ap.parse_args()
    work = Path(args.work)
    from personascope.reports import evaluate, load_policy
    from personascope.runner import load_config, run_audits
    from personascope.steering.compare import flag_training_data

    work.mkdir(parents=True, exist_ok=True)
    base = ps.load_model("smollm2-135m-instruct")
    summary: dict = {"base": base.info.short, "finetune": {}, "compare": {}, "gate": {}}
    for name in ("sycophantic", "neutral"):
        info = finetune(base, DATA / f"{name}.jsonl", work / name, epochs=args.epochs, lr=args.lr,
                        batch=args.batch, seed=args.seed)
        summary["finetune"][name] = {k: info[k] for k in ("steps", "loss_first", "loss_last", "seconds")}
        print(f"fine-tune {name}: {info['steps']} steps, loss {info['loss_first']:.2f} -> {info['loss_last']:.2f}, "
              f"{info['seconds']:.0f} s", flush=True)
    policy = load_policy("release")
    # "rerun": the base model compared with itself (a clean candidate: nothing may be flagged).
    candidates = {"sycophantic": str(work / "sycophantic"), "neutral": str(work / "neutral"),
                  "rerun": "smollm2-135m-instruct"}
    for name, cand_path in candidates.items():
        t0 = time.perf_counter()
        # A fresh run folder: the runner would reuse a finished result with the same parameters.
        shutil.rmtree(work / f"compare_{name}", ignore_errors=True)
        cfg = load_config(None, model="smollm2-135m-instruct", profile="quick", out=str(work / f"compare_{name}"),
                          policy="release", audits={"release_comparison": {"candidate": cand_path}})
        run = run_audits(cfg, model=base, progress=False, log=lambda m: None)
        if run.errors:
            raise SystemExit(f"compare {name} failed: {run.errors}")
        res = run.audit("release_comparison")
        summary["compare"][name] = {m.key: [m.value, m.ci_low, m.ci_high] for m in res.metrics}
        summary["compare"][name]["seconds"] = round(time.perf_counter() - t0, 1)
        outcome = evaluate(run, policy)
        summary["gate"][name] = {"passed": outcome.passed,
                                 "failed": [c.rule for c in outcome.checks if c.status == "fail"],
                                 "controls": {c.name: c.passed for c in res.controls}}
        print(f"compare {name}: gate {'PASS' if outcome.passed else 'FAIL'}", flush=True)
    if args.no_flag:
        (work / "summary.json").write_text(json.dumps(summary, indent=1))
        _print(summary, args, candidates)
        return
    # Flag before training: a mix of both sets, labelled by their 'trait' field.
    mix = work / "flag_mix.jsonl"
    lines = []
    for name in ("sycophantic", "neutral"):
        lines += (DATA / f"{name}.jsonl").read_text().splitlines()[: args.flag_per_set]
    mix.write_text("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    fl = flag_training_data(base, mix, "sycophantic", n_questions=5, n_instructions=2, max_new_tokens=32)
    summary["flag"] = {"auroc": fl["auroc"], "layer": fl["layer"], "dataset_score": fl["dataset_score"],
                       "n": fl["n"], "seconds": round(time.perf_counter() - t0, 1),
                       "top10_sycophantic": sum(r["label"] == "sycophantic" for r in fl["ranked"][:10])}
    (work / "summary.json").write_text(json.dumps(summary, indent=1))
    _print(summary, args, candidates)


def _print(summary: dict, args: argparse.Namespace, candidates: dict[str, str]) -> None:
    """The Markdown section for benchmarks/RESULTS.md."""
    def cell(name: str, key: str) -> str:
        v = summary["compare"][name].get(key)
        if v is None or v[0] is None:
            return "-"
        return f"{v[0]:+.3f}" + (f" ({v[1]:+.3f}..{v[2]:+.3f})" if v[1] is not None and v[2] is not None else "")

    print("\n## Release comparison (bench_release.py)\n")
    print(f"Base {summary['base']}; fine-tunes: {args.epochs} epochs, lr {args.lr}, batch {args.batch}, embeddings "
          "frozen, loss on answers only.\n")
    names = list(candidates)
    print("| metric | " + " | ".join(f"{n} candidate" for n in names) + " |\n|---|" + "---|" * len(names))
    keys = sorted({k for n in names for k in summary["compare"][n] if k != "seconds"})
    for k in keys:
        if k.split("[")[0] in ("shift_frac", "shift_flagged", "persona_gap", "shift_null_p", "shift_null_frac_q",
                               "shift_z",
                               "trait_delta", "refusal_score_delta", "mcq_accuracy_delta", "shift_layer",
                               "trait_base", "mcq_accuracy_base"):
            print(f"| {k} | " + " | ".join(cell(n, k) for n in names) + " |")
    print("| gate `release` | " + " | ".join("PASS" if summary["gate"][n]["passed"] else "FAIL" for n in names) + " |")
    for n in names:
        print(f"- {n}: gate {'PASS' if summary['gate'][n]['passed'] else 'FAIL'} {summary['gate'][n]['failed']}; "
              f"controls {summary['gate'][n]['controls']}; compare {summary['compare'][n]['seconds']:.0f} s")
    for n in ("sycophantic", "neutral"):
        ft = summary["finetune"][n]
        print(f"- {n} fine-tune: {ft['steps']} steps in {ft['seconds']:.0f} s (loss {ft['loss_first']:.2f} -> "
              f"{ft['loss_last']:.2f})")
    f = summary.get("flag")
    if f:
        print(f"- flag (before training, {f['n']} samples, layer {f['layer']}): AUROC {f['auroc']:.3f} for "
              f"sycophantic vs neutral; {f['top10_sycophantic']}/10 of the top-10 are sycophantic; "
              f"{f['seconds']:.0f} s")




if __name__ == "__main__":
    main()
