"""``personascope localize``: the layers where personas separate, from probes per layer."""

from __future__ import annotations

import argparse
from pathlib import Path

from .exits import ExitCode
from .options import SharedOptions, Subparsers, add_command, emit, load_model, out_option, positive_int, say


def register(sub: Subparsers, shared: SharedOptions) -> None:
    """Add the ``localize`` command to ``sub``."""
    p = add_command(sub, "localize", "find the layers where personas separate (probes per layer)",
                    parents=[shared.model, shared.quiet, shared.json,
                             out_option(what="localization.json + PNG/SVG figures", required=True)])
    p.add_argument("--personas", default="builtin",
                   help="'builtin', a folder of persona JSONL files, or one file")
    p.add_argument("--names", help="comma list of persona names to use (default: all in the source but neutral)")
    p.add_argument("--framing", default="system", choices=["system", "user", "says"],
                   help="the persona statement as the system message, as the user turn, or as 'You are a person who "
                        "says: ...'")
    p.add_argument("--position", default="last", choices=["last", "prompt_mean"],
                   help="token position whose activations the probes read")
    p.add_argument("--n-per-persona", type=positive_int, default=60, metavar="N", help="statements per persona")
    p.add_argument("--probes", default="logreg,extratrees", help="comma list of logreg, extratrees")
    p.add_argument("--seed", type=int, default=0, help="seed of the statement sample and the probe folds")
    p.set_defaults(handler=run_localize)


def run_localize(args: argparse.Namespace) -> int:
    """``personascope localize``: probe accuracy, selectivity and silhouette per layer, the band, figures."""
    from ..data import builtin_personas_dir, load_persona_statements
    from ..probes.localize import localize

    source = None if args.personas == "builtin" else Path(args.personas)
    if source is not None and not source.exists():
        from ..errors import DataError

        raise DataError(f"{source}: no such persona file or folder")
    available = sorted({s.persona for s in load_persona_statements(source)})
    names = [n.strip() for n in args.names.split(",")] if args.names else [
        n for n in available if n != "neutral"
    ]
    model = load_model(args)
    res = localize(
        model, names, source=source or builtin_personas_dir(), framing=args.framing,
        position=args.position, n_per_persona=args.n_per_persona, seed=args.seed,
        probes=[p.strip() for p in args.probes.split(",") if p.strip()], batch_size=args.batch_size,
        progress=not args.quiet,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "localization.json").write_text(res.model_dump_json(indent=1))
    figures = res.save_plots(out)
    say(args, "layer  probe acc (95% CI)       control  selectivity  silhouette")
    for r in res.layers:
        say(args, f"{r.layer:>5}  {r.accuracy:.3f} ({r.accuracy_ci[0]:.2f}-{r.accuracy_ci[1]:.2f})     "
              f"{r.control_accuracy:.3f}   {r.selectivity:11.3f}  {r.silhouette:10.3f}")
    lo, hi = res.band
    say(args, f"\nBest layer {res.best_layer}; personas separate in layers {lo}-{hi} "
          f"({res.band_fraction[0]:.2f}-{res.band_fraction[1]:.2f} of depth)")
    say(args, f"Wrote {out.resolve() / 'localization.json'}")
    for path in figures:
        say(args, f"      {Path(path).resolve()}")
    emit(args, {"result": str(out.resolve() / "localization.json"),
                "figures": [str(Path(f).resolve()) for f in figures], **res.model_dump(mode="json")})
    return ExitCode.OK
