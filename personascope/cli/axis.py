"""``personascope axis fit|monitor|cap``: the assistant axis, drift along it per turn, and capping."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from .exits import ExitCode
from .options import (
    SharedOptions,
    Subparsers,
    add_command,
    check_out_dir,
    emit,
    load_model,
    out_option,
    positive_int,
    say,
)


def _percentile(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 100.0:
        raise argparse.ArgumentTypeError(f"a percentile is in [0, 100], got {text}")
    return value


def register(sub: Subparsers, shared: SharedOptions) -> None:
    """Add the ``axis`` command and its actions to ``sub``."""
    model = [shared.model, shared.quiet, shared.json]
    p = add_command(sub, "axis", "the assistant axis: fit it, monitor drift per turn, cap activations")
    p.set_defaults(handler=run_axis_without_action)
    asub = p.add_subparsers(dest="axis_command", metavar="ACTION")

    q = add_command(asub, "fit", "fit the assistant axis from built-in (or your) roles, with its nulls",
                    parents=[*model, out_option(what="axis.safetensors/.json, axis.roles.safetensors, "
                                                     "axis_report.json", required=True)])
    q.add_argument("--roles", default="builtin", help="'builtin' or a role file (schema: data/roles/README.md)")
    q.add_argument("--n-roles", type=positive_int, metavar="N", help="roles to use (default: all)")
    q.add_argument("--n-questions", type=positive_int, metavar="N", help="questions to use (default: all)")
    q.add_argument("--max-new-tokens", type=positive_int, default=48, metavar="N", help="length of each answer")
    q.add_argument("--seed", type=int, default=0, help="seed of the question split and the nulls")
    q.set_defaults(handler=run_fit)

    q = add_command(asub, "monitor", "projection on the axis per assistant turn of chat transcripts",
                    parents=[*model, out_option(what="drift.json (per turn), drift_turns.jsonl", required=True)])
    q.add_argument("--axis", required=True, help="an axis written by 'axis fit' (path without suffix)")
    q.add_argument("--conversations", required=True,
                   help="JSONL/JSON transcripts ({'messages': [...], 'id': ...} per record), or 'builtin' to "
                        "generate the built-in conversations with the model")
    q.add_argument("--layer", type=int, help="layer to read (default: the axis' monitoring layer)")
    q.add_argument("--force", action="store_true", help="use an axis fit on another model fingerprint")
    q.set_defaults(handler=run_monitor)

    q = add_command(asub, "cap", "answer a prompt with and without activation capping on the axis", parents=model)
    q.add_argument("--axis", required=True, help="an axis written by 'axis fit'")
    q.add_argument("--prompt", required=True, help="user message")
    q.add_argument("--system", help="optional system message")
    q.add_argument("--percentile", type=_percentile, default=25.0,
                   help="floor: this percentile of default-assistant token projections")
    q.add_argument("--layers", type=int, nargs="+", help="layers to cap (default: the axis' band)")
    q.add_argument("--max-new-tokens", type=positive_int, default=64, metavar="N", help="length of each answer")
    q.add_argument("--force", action="store_true", help="use an axis fit on another model fingerprint")
    q.set_defaults(handler=run_cap)


def run_axis_without_action(args: argparse.Namespace) -> int:
    """``personascope axis`` alone: a usage error that lists the actions."""
    from ..errors import UsageError

    raise UsageError("personascope axis needs an action: fit, monitor or cap")


def run_fit(args: argparse.Namespace) -> int:
    """``personascope axis fit``: the axis per layer, its PCA, nulls and capping calibration."""
    from ..steering.axis import assistant_axis, load_roles

    roles = load_roles(args.roles)  # a bad role file fails before the model loads
    out = check_out_dir(args.out)
    model = load_model(args)
    axis = assistant_axis(model, roles, n_roles=args.n_roles, n_questions=args.n_questions,
                          max_new_tokens=args.max_new_tokens, seed=args.seed, batch_size=args.batch_size,
                          progress=not args.quiet)
    out.mkdir(parents=True, exist_ok=True)
    path = axis.save(out / "axis")
    (out / "axis_report.json").write_text(json.dumps(axis.report, indent=1))
    row = next(r for r in axis.report["per_layer"] if r["layer"] == axis.layer)
    say(args, f"axis at {path} ({len(axis.role_names)} roles); monitoring layer {axis.layer}, "
              f"capping band {axis.default_band()}")
    say(args, f"layer {axis.layer}: held-out AUROC {row['auc_eval']:.3f} "
              f"[{row['auc_eval_ci'][0]:.3f}, {row['auc_eval_ci'][1]:.3f}] vs shuffled labels "
              f"q95 {row['auc_shuffled']['q95']:.3f}; |cos(PC1, axis)| {row['cos_pc1']:.2f} vs random q95 "
              f"{row['cos_random_q95']:.2f}, shuffled p {row['cos_shuffled']['p']:.3f}")
    emit(args, {"axis": str(path), "layer": axis.layer, "band": axis.default_band(), "report": axis.report})
    return ExitCode.OK


def run_monitor(args: argparse.Namespace) -> int:
    """``personascope axis monitor``: per-turn projections, their velocity and the turns that move them."""
    from ..steering.axis import AssistantAxis, builtin_scripts, converse, read_conversations

    axis = AssistantAxis.load(args.axis)
    builtin = args.conversations == "builtin"
    if not builtin:
        read_conversations(args.conversations)  # a bad file fails before the model loads
    out = check_out_dir(args.out)
    model = load_model(args)
    axis.vector.check_model(model, force=args.force)
    if builtin:
        scripts = builtin_scripts()
        convs = converse(model, [s["turns"] for s in scripts.values()], max_new_tokens=48,
                         batch_size=args.batch_size, progress=not args.quiet, ids=list(scripts))
        trace = axis.monitor(model, convs, layer=args.layer, batch_size=args.batch_size, progress=not args.quiet)
    else:
        trace = axis.monitor(model, args.conversations, layer=args.layer, batch_size=args.batch_size,
                             progress=not args.quiet)
    out.mkdir(parents=True, exist_ok=True)
    norm = trace.normalized()
    per_conv = [{"id": cid, "turns": len(p), "first": _f(p[0]) if len(p) else None,
                 "last": _f(p[-1]) if len(p) else None, "normalized_last": _f(n[-1]) if len(n) else None}
                for cid, p, n in zip(trace.ids, trace.projections, norm, strict=True)]
    doc: dict[str, Any] = {"axis": str(args.axis), "layer": trace.layer, "source": str(args.conversations),
           "model": model.info.model_dump(mode="json"), "reference": trace.assistant_reference,
           "per_turn": trace.per_turn(), "movers": trace.movers(10), "conversations": per_conv}
    (out / "drift.json").write_text(json.dumps(doc, indent=1))
    with (out / "drift_turns.jsonl").open("w", encoding="utf-8") as fh:
        for rec in trace.to_records():
            fh.write(json.dumps(rec) + "\n")
    for row in doc["per_turn"]:
        say(args, f"turn {row['turn']}: {row['mean']:.3f} [{row['lo']:.3f}, {row['hi']:.3f}] (n={row['n']})")
    for mv in doc["movers"][:3]:
        say(args, f"largest fall: {mv['id']} turn {mv['turn']} ({mv['change']:+.3f}) after: {mv['user'][:80]!r}")
    say(args, f"written: {out / 'drift.json'}, {out / 'drift_turns.jsonl'}")
    emit(args, doc)
    return ExitCode.OK


def _f(x: float) -> float | None:
    return float(x) if math.isfinite(float(x)) else None


def run_cap(args: argparse.Namespace) -> int:
    """``personascope axis cap``: the same prompt answered plain and with the projection floored."""
    from ..steering.axis import AssistantAxis

    axis = AssistantAxis.load(Path(args.axis))
    model = load_model(args)
    prompt = [model.format_chat(user=args.prompt, system=args.system)]
    plain = model.generate(prompt, args.max_new_tokens, progress=False)[0]
    with axis.cap(model, args.layers, args.percentile, force=args.force):
        capped = model.generate(prompt, args.max_new_tokens, progress=False)[0]
    layers = args.layers or axis.default_band()
    say(args, f"plain: {plain}")
    say(args, f"capped (layers {layers}, p{args.percentile:g}): {capped}")
    emit(args, {"axis": str(args.axis), "layers": layers, "percentile": args.percentile, "prompt": args.prompt,
                "system": args.system, "plain": plain, "capped": capped})
    return ExitCode.OK
