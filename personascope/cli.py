"""The ``personascope`` command line. Heavy imports happen inside the subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import PersonascopeError

EXIT_USAGE = 2


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="alias, Hugging Face id, local folder or .gguf file (default: %(default)s)")
    p.add_argument("--backend", default="nnsight", choices=["nnsight", "transformer_lens"])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16")
    p.add_argument("--batch-size", type=int, default=16)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="personascope",
        description="Audit how open language models represent and act out personas.",
    )
    parser.add_argument("--version", action="version", version=f"personascope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("models", help="list built-in model aliases, whether installed, size")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("capture", help="capture activations for a JSONL prompt file")
    _add_model_args(p)
    p.add_argument("--prompts", required=True, help="JSONL: 'text' | 'messages' | 'user'(+'system'), optional 'label'")
    p.add_argument("--layers", default="all", help="all, 12, 0-5, 1,3,-1 (default: all)")
    p.add_argument("--points", default="resid_post", help="comma list of resid_pre, attn_out, mlp_out, resid_post")
    p.add_argument("--positions", default="last", help="comma list of last, prompt_mean, all")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the activation cache")

    p = sub.add_parser("demo", help="run the demo job on the embedded model and write a report")
    _add_model_args(p)
    p.add_argument("--out", default="demo_out", help="output folder (default: %(default)s)")
    p.add_argument("--per-persona", type=int, default=40, help="statements per persona")
    p.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for usage and input errors)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return {"models": _models, "capture": _capture, "demo": _demo}[args.command](args)
    except PersonascopeError as exc:
        print(f"personascope: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("personascope: interrupted; finished chunks are cached, rerun to resume", file=sys.stderr)
        return 130


def _models(args: argparse.Namespace) -> int:
    from .models import model_status

    rows = model_status()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        state = f"installed, {r['size_mb']} MB" if r["installed"] else f"not installed ({r['install']})"
        opt = " [optional]" if r["optional"] else ""
        print(f"{r['alias']:<24} {state}{opt}\n    {r['description']}")
    return 0


def _load(args: argparse.Namespace):  # noqa: ANN202 - returns a ModelAdapter, imported lazily
    from .models import load_model

    return load_model(args.model, backend=args.backend, device=args.device, dtype=args.dtype,
                      batch_size=args.batch_size)


def _capture(args: argparse.Namespace) -> int:
    from .store import collect
    from .data import check_prompt_file, load_prompts
    from .sites import parse_point, parse_position

    check_prompt_file(args.prompts)  # fail on a bad file before spending time on the model
    positions = [parse_position(p.strip()) for p in args.positions.split(",") if p.strip()]
    points = [p.strip() for p in args.points.split(",") if p.strip()]
    for p in points:
        parse_point(p)
    model = _load(args)
    records = load_prompts(args.prompts, model.format_chat)
    sites = model.sites(args.layers, points)
    labels = [r.label for r in records]
    sets = collect(
        model, [r.text for r in records], sites, positions,
        labels=[lab or "" for lab in labels] if any(lab is not None for lab in labels) else None,
        batch_size=args.batch_size, cache=not args.no_cache,
    )
    out = Path(args.out)
    for pos, aset in sets.items():
        path = aset.save(out / f"activations-{pos.value}")
        print(f"{pos.value}: {len(aset)} rows x {len(aset.sites)} sites x {aset.acts.shape[-1]} -> {path}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import format_table, run_demo

    summary = run_demo(args.out, model_spec=args.model, backend=args.backend,
                       per_persona=args.per_persona, seed=args.seed, batch_size=args.batch_size)
    print(format_table(summary["layers"]))
    best = summary["best_layer"]
    print(f"\nBest layer {best['layer']}: accuracy {best['accuracy']:.3f} "
          f"(control {best['control_accuracy']:.3f}, chance {best['chance']:.3f})")
    out = Path(args.out).resolve()
    print(f"\nWrote {out / 'report.html'}\n      {out / 'layer_summary.json'}\n"
          f"      {out / 'activations.safetensors'} (+ .json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
