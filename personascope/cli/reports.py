"""``personascope report`` (re-render a report) and ``personascope gate`` (a policy's verdict as exit code)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .exits import ExitCode
from .options import SharedOptions, Subparsers, add_command, emit, out_option, say


def register(sub: Subparsers, shared: SharedOptions) -> None:
    """Add the ``report`` and ``gate`` commands to ``sub`` (neither loads a model)."""
    p = add_command(sub, "report", "re-render report.html from results.json (no model needed)",
                    parents=[out_option(what="report.html (default: next to results.json)"), shared.json])
    p.add_argument("results", help="results.json or its folder")
    p.add_argument("--policy", default=None, help="also show the gate verdict of this policy")
    p.add_argument("--baseline", default=None, metavar="RESULTS",
                   help="a previous results.json: its value and the change beside each metric (and, with --policy, "
                        "regressions gated)")
    p.set_defaults(handler=run_report)

    codes = f"exit {ExitCode.OK} pass, {ExitCode.FAIL} fail, {ExitCode.USAGE} usage error"
    p = add_command(sub, "gate", f"check results.json against a policy; {codes}",
                    description=f"Check results.json against a policy: {codes} (bad policy or results file).",
                    parents=[shared.json])
    p.add_argument("results", help="results.json or its folder")
    p.add_argument("--policy", default="default", help="policy TOML file or built-in name")
    p.add_argument("--baseline", default=None, help="previous results.json: fail on regressions")
    p.add_argument("--junit", default=None, metavar="FILE", help="write JUnit XML here")
    p.add_argument("-v", "--verbose", action="store_true", help="list every check, not only failures")
    p.set_defaults(handler=run_gate)


def run_report(args: argparse.Namespace) -> int:
    """``personascope report``: report.html from a results file, with a policy's verdict if one is named."""
    from ..reports import RunResults, evaluate, load_policy, write_report

    run = RunResults.load(args.results)
    src = Path(args.results)
    src_dir = src if src.is_dir() else src.parent
    out = Path(args.out) if args.out else src_dir
    for a in run.audits:  # the per-sample files stay where the run wrote them: link to them from the new folder
        if a.samples_file and out.resolve() != src_dir.resolve():
            a.samples_file = Path(os.path.relpath(src_dir.resolve() / a.samples_file, out.resolve())).as_posix()
    base = RunResults.load(args.baseline) if args.baseline else None
    gate = evaluate(run, load_policy(args.policy), base, args.baseline) if args.policy else None
    _, report = write_report(run, out, gate, base)
    say(args, f"wrote {report}")
    emit(args, {"report": str(report), "gate": gate.model_dump(mode="json") | {"passed": gate.passed}
                if gate is not None else None})
    return ExitCode.OK


def run_gate(args: argparse.Namespace) -> int:
    """``personascope gate``: the verdict of a policy on a results file, as the exit code."""
    from ..reports import gate_main

    return ExitCode(gate_main(args.results, args.policy, junit_path=args.junit, baseline_path=args.baseline,
                              verbose=args.verbose, json_out=args.json))
