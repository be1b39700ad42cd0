"""Benchmark shared prefixes: each audit's quick profile with and without prefix sharing (issue #22).

For each audit named in ``--audits``, the embedded model runs the audit's quick profile twice in
one process, first with ``share_prefixes=False`` (the unshared path), then with ``True``, each
with an empty cache folder (nothing reused) and the default judge. Reported per run: wall time,
tokens computed (counted at the input embeddings: every forward pass embeds the tokens it runs,
generation and scoring alike) and whether every metric value is identical between the two runs.

Run: ``.venv/bin/python benchmarks/bench_prefix.py --audits ci_leakage,ooc_drift --write``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_capture import machine_info  # noqa: E402
from bench_generate import write_section  # noqa: E402

import personascope as ps  # noqa: E402
from personascope.runner import load_config, run_audits  # noqa: E402

MODEL = "smollm2-135m-instruct"
START, END = "<!-- bench_prefix:start -->", "<!-- bench_prefix:end -->"


@contextlib.contextmanager
def counting(model: Any) -> Any:
    """Count the tokens every forward pass embeds while the block runs."""
    seen = [0]

    def hook(mod: Any, args: Any, out: Any) -> None:
        seen[0] += args[0].numel()

    handle = model.hf_model.get_input_embeddings().register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def run_once(model: Any, audit: str, share: bool) -> tuple[float, int, dict[tuple[str, str | None], Any]]:
    """(seconds, tokens computed, metric values) of ``audit``'s quick profile, nothing cached."""
    model.share_prefixes = share
    with tempfile.TemporaryDirectory() as tmp:
        old = os.environ.get("PERSONASCOPE_CACHE")
        os.environ["PERSONASCOPE_CACHE"] = str(Path(tmp) / "cache")
        try:
            cfg = load_config(None, audits={audit: {}}, out=str(Path(tmp) / "out"), profile="quick")
            with counting(model) as n:
                t0 = time.perf_counter()
                run = run_audits(cfg, model=model, progress=False, log=lambda m: None)
                secs = time.perf_counter() - t0
        finally:
            if old is None:
                os.environ.pop("PERSONASCOPE_CACHE", None)
            else:
                os.environ["PERSONASCOPE_CACHE"] = old
    if audit in run.errors:
        raise RuntimeError(f"{audit}: {run.errors[audit]}")
    return secs, n[0], {(m.name, m.group): m.value for m in run.audit(audit).metrics}


def main(argv: list[str] | None = None) -> None:
    """Run the audits both ways; print (and with ``--write`` store) the section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audits", default="ci_leakage,ooc_drift", help="comma list of audit names")
    parser.add_argument("--shared-first", action="store_true", help="run the shared path first (order effects)")
    parser.add_argument("--write", action="store_true", help="replace this benchmark's section of RESULTS.md")
    args = parser.parse_args(argv)
    model = ps.load_model(MODEL)
    rows = []
    for audit in args.audits.split(","):
        if args.shared_first:
            on = run_once(model, audit, True)
            off = run_once(model, audit, False)
        else:
            off = run_once(model, audit, False)
            on = run_once(model, audit, True)
        same = off[2] == on[2]
        differ = sorted(k for k in off[2] if off[2].get(k) != on[2].get(k))
        rows.append((audit, off, on, same, differ))
        print(f"{audit}: unshared {off[0]:.1f} s {off[1]} tokens; shared {on[0]:.1f} s {on[1]} tokens; "
              f"metrics identical: {same} {differ[:5]}", flush=True)
    info = machine_info()
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [START, "## Shared prefixes per audit (bench_prefix.py; issue #22)", "",
             f"- Date: {now}; {info['nproc']} cores ({info['cpu']}), CPU, fp32; {info['versions']}",
             f"- Command: `python benchmarks/bench_prefix.py {' '.join(argv or sys.argv[1:])}`".rstrip(),
             f"- Workload: {MODEL}, each audit's quick profile, default judge, an empty cache per run; "
             f"{'shared run first, then unshared' if args.shared_first else 'unshared run first, then shared'}, "
             "in one process.", "",
             "| audit | unshared s | shared s | time ratio | unshared tokens | shared tokens | token ratio | "
             "metrics identical |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for audit, off, on, same, differ in rows:
        lines.append(f"| {audit} | {off[0]:.1f} | {on[0]:.1f} | {on[0] / off[0]:.2f} | {off[1]} | {on[1]} | "
                     f"{on[1] / off[1]:.2f} | {'yes' if same else 'no: ' + ', '.join(map(str, differ[:4]))} |")
    lines.append(END)
    section = "\n".join(lines)
    print("\n" + section)
    if args.write:
        print(f"wrote {write_section(section, START, END)}")


if __name__ == "__main__":
    main()
