"""``personascope judge-check`` (each judge's agreement on labelled sets) and ``serve-judge`` (a judge endpoint)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .exits import ExitCode
from .options import JUDGE_DEFAULTS, SharedOptions, Subparsers, add_command, emit, load_model, positive_int, say

if TYPE_CHECKING:
    from ..judges.base import Judge

CHECK_JUDGES = ("rules", "tfidf", "logprob", "contrast", "http")


def register(sub: Subparsers, shared: SharedOptions) -> None:
    """Add the ``judge-check`` and ``serve-judge`` commands to ``sub``."""
    p = add_command(sub, "judge-check", "measure each judge's agreement on the shipped labelled sets",
                    parents=[shared.model, shared.quiet, shared.json])
    p.add_argument("--judges", default="rules,tfidf,logprob,contrast",
                   help=f"comma list of {', '.join(CHECK_JUDGES)}")
    p.add_argument("--sets", default="refusal,trait,leak", help="comma list of refusal, trait, leak")
    # The names of the shared --judge-* flags, and the older names the README shows.
    p.add_argument("--judge-url", "--base-url", dest="judge_url", metavar="URL",
                   help="for --judges http: the server's base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--judge-model", "--http-model", dest="judge_model", default="judge", metavar="MODEL",
                   help="for --judges http: the server's model name")
    p.add_argument("--judge-api-key-env", "--api-key-env", dest="judge_api_key_env", metavar="VAR",
                   default=JUDGE_DEFAULTS["judge_api_key_env"], help="env var holding the HTTP judge's key")
    p.add_argument("--json-out", dest="json_out", metavar="FILE", help="also write the results as JSON to this file")
    p.set_defaults(handler=run_judge_check)

    p = add_command(sub, "serve-judge", "serve a local model over an OpenAI-compatible API (judge or audit subject)",
                    parents=[shared.model, shared.quiet])
    p.add_argument("--host", default="127.0.0.1", help="bind address (loopback only unless changed)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (0 picks a free one)")
    p.add_argument("--max-batch", type=positive_int, default=16, metavar="N",
                   help="most concurrent requests run as one model batch (1: one at a time; default 16)")
    p.set_defaults(handler=run_serve_judge)


def run_judge_check(args: argparse.Namespace) -> int:
    """``personascope judge-check``: each chosen judge on each labelled set it applies to."""
    from ..errors import UsageError
    from ..judges.check import CHECK_SETS, format_check, judge_check
    from ..judges.factory import JudgeSpec, make_judge

    kinds = [k.strip() for k in args.judges.split(",") if k.strip()]
    bad = [k for k in kinds if k not in CHECK_JUDGES]
    if bad:
        raise UsageError(f"Unknown judge {bad[0]!r}; allowed: {', '.join(CHECK_JUDGES)}")
    sets = [x.strip() for x in args.sets.split(",") if x.strip()]
    if any(x not in CHECK_SETS for x in sets):
        raise UsageError(f"Unknown set in {args.sets!r}; allowed: {', '.join(CHECK_SETS)}")
    if "http" in kinds and not args.judge_url:
        raise UsageError("--judges http needs --judge-url, e.g. http://127.0.0.1:8000/v1")
    judges: list[Judge] = []
    if "rules" in kinds:
        from ..judges.rules import RefusalJudge, ValueMatchJudge

        judges += [RefusalJudge(), ValueMatchJudge()]
    if "tfidf" in kinds:
        from ..judges.similarity import SimilarityJudge

        judges.append(SimilarityJudge())
    model_kinds = [k for k in ("logprob", "contrast") if k in kinds]
    model = load_model(args) if model_kinds else None
    # The model judges come from the one judge factory, like every other judge of a run.
    for kind in model_kinds:
        assert model is not None  # loaded above for model judges
        made = make_judge(JudgeSpec(kind=kind, batch_size=args.batch_size), model)
        if made is not None:
            judges.append(made)
    if "http" in kinds:
        spec = JudgeSpec(kind="http", model=args.judge_model, base_url=args.judge_url,
                         api_key_env=args.judge_api_key_env)
        made = make_judge(spec, model)  # type: ignore[arg-type]  # an http judge needs no local model
        if made is not None:
            judges.append(made)
    results = []
    unusable: list[str] = []
    for judge in judges:
        own = getattr(judge, "check_sets", None)
        use = [x for x in sets if not own or x in own]
        if not use:
            continue
        res = judge_check(judge, use)
        results.append(res)
        say(args, format_check(res) + "\n")
        if res.unusable:
            unusable.append(f"{res.judge.kind} judge {res.judge.name}: no valid rating; first error: "
                            f"{res.first_error}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps([r.model_dump(mode="json") for r in results], indent=1))
        say(args, f"Wrote {args.json_out}")
    emit(args, {"results": [r.model_dump(mode="json") for r in results], "unusable": unusable})
    # A judge that rated nothing is a failure to measure, not a weak result: say why and fail.
    for line in unusable:
        print(f"error: {line}", file=sys.stderr)
    return ExitCode.FAIL if unusable else ExitCode.OK


def run_serve_judge(args: argparse.Namespace) -> int:
    """``personascope serve-judge``: the model behind an OpenAI-compatible API until Ctrl-C."""
    from ..judges.server import serve

    serve(load_model(args), host=args.host, port=args.port, model_name=args.model, max_batch=args.max_batch)
    return ExitCode.OK
