"""``personascope models`` (the built-in aliases) and ``personascope capture`` (activations of a prompt file)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .exits import ExitCode
from .options import SharedOptions, Subparsers, add_command, emit, load_model, out_option, say


def register(sub: Subparsers, shared: SharedOptions) -> None:
    """Add the ``models`` and ``capture`` commands to ``sub``."""
    p = add_command(sub, "models", "list built-in model aliases, whether installed, size", parents=[shared.json])
    p.set_defaults(handler=run_models)

    p = add_command(sub, "capture", "capture activations for a JSONL prompt file",
                    parents=[shared.model, shared.quiet, shared.json,
                             out_option(what="activations-<position>.safetensors (+ .json)", required=True)])
    p.add_argument("--prompts", required=True, help="JSONL: 'text' | 'messages' | 'user'(+'system'), optional 'label'")
    p.add_argument("--layers", default="all", help="all, 12, 0-5, 1,3,-1")
    p.add_argument("--points", default="resid_post", help="comma list of resid_pre, attn_out, mlp_out, resid_post")
    p.add_argument("--positions", default="last", help="comma list of last, prompt_mean, all")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the activation cache")
    p.set_defaults(handler=run_capture)


def run_models(args: argparse.Namespace) -> int:
    """``personascope models``: one row per alias (installed or how to install, size, description)."""
    from ..models import model_status

    rows = model_status()
    if args.json:
        print(json.dumps(rows, indent=1))
        return ExitCode.OK
    for r in rows:
        state = f"installed, {r['size_mb']} MB" if r["installed"] else f"not installed ({r['install']})"
        opt = " [optional]" if r["optional"] else ""
        print(f"{r['alias']:<24} {state}{opt}\n    {r['description']}")
    return ExitCode.OK


def run_capture(args: argparse.Namespace) -> int:
    """``personascope capture``: activations of every prompt at the chosen sites, one file per position."""
    from ..data import check_prompt_file, load_prompts
    from ..sites import parse_point, parse_position
    from ..store import collect

    check_prompt_file(args.prompts)  # fail on a bad file before spending time on the model
    positions = [parse_position(p.strip()) for p in args.positions.split(",") if p.strip()]
    points = [p.strip() for p in args.points.split(",") if p.strip()]
    for p in points:
        parse_point(p)
    model = load_model(args)
    records = load_prompts(args.prompts, model.format_chat)
    sites = model.sites(args.layers, points)
    labels = [r.label for r in records]
    sets = collect(
        model, [r.text for r in records], sites, positions,
        labels=[lab or "" for lab in labels] if any(lab is not None for lab in labels) else None,
        batch_size=args.batch_size, cache=not args.no_cache, progress=not args.quiet,
    )
    out = Path(args.out)
    written = []
    for pos, aset in sets.items():
        path = aset.save(out / f"activations-{pos.value}")
        say(args, f"{pos.value}: {len(aset)} rows x {len(aset.sites)} sites x {aset.acts.shape[-1]} -> {path}")
        written.append({"position": pos.value, "rows": len(aset), "sites": [str(s) for s in aset.sites],
                        "d_model": int(aset.acts.shape[-1]), "path": str(path)})
    emit(args, {"sets": written})
    return ExitCode.OK
