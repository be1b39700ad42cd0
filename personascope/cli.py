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


VECTOR_HELP = ("a vector: .safetensors from 'vector extract', a persona_vectors .pt (row r -> layer r-1) "
               "or a llama.cpp/repeng control-vector .gguf")


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

    p = sub.add_parser("localize", help="find the layers where personas separate (probes per layer)")
    _add_model_args(p)
    p.add_argument("--personas", default="builtin",
                   help="'builtin', a folder of persona JSONL files, or one file (default: %(default)s)")
    p.add_argument("--names", help="comma list of persona names to use (default: all in the source)")
    p.add_argument("--framing", default="system", choices=["system", "user", "says"])
    p.add_argument("--position", default="last", choices=["last", "prompt_mean"])
    p.add_argument("--n-per-persona", type=int, default=60)
    p.add_argument("--probes", default="logreg,extratrees", help="comma list of logreg, extratrees")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder (localization.json + PNG/SVG figures)")

    p = sub.add_parser("vector", help="persona vectors: extract, steer, monitor, flag")
    vsub = p.add_subparsers(dest="vector_command", metavar="ACTION")
    q = vsub.add_parser("extract", help="extract a persona vector with the persona-vectors recipe")
    _add_model_args(q)
    q.add_argument("--trait", help="built-in trait name (evil, sycophantic, hallucinating, impolite, ...)")
    q.add_argument("--trait-file", help="a trait JSON file instead of --trait: our schema or persona_vectors' "
                   "trait_data_extract/<trait>.json (auto-detected)")
    q.add_argument("--judge", default="contrast", choices=["none", "contrast", "logprob"],
                   help="filters pairs by judged trait/coherence; 'none' keeps all (default: %(default)s)")
    q.add_argument("--n-questions", type=int, help="first N extraction questions (default: all)")
    q.add_argument("--max-new-tokens", type=int, default=48)
    q.add_argument("--out", required=True, help="output folder: <trait>.safetensors/.json (+ .gguf)")
    q.add_argument("--gguf", action="store_true", help="also export a llama.cpp control vector")
    q = vsub.add_parser("steer", help="generate with a persona vector added at one layer")
    _add_model_args(q)
    q.add_argument("--vector", required=True, help=VECTOR_HELP)
    q.add_argument("--layer", type=int, required=True)
    q.add_argument("--coeff", type=float, default=4.0)
    q.add_argument("--prompt", required=True, help="user message")
    q.add_argument("--system", help="optional system message")
    q.add_argument("--max-new-tokens", type=int, default=64)
    q.add_argument("--force", action="store_true", help="use a vector from another model fingerprint")

    q = vsub.add_parser("monitor", help="projection of each prompt's last token on a vector (JSON + PNG)")
    _add_model_args(q)
    q.add_argument("--vector", required=True, help=VECTOR_HELP)
    q.add_argument("--layer", type=int, required=True)
    q.add_argument("--prompts", required=True, help="JSONL prompts (text | messages | user [+ system], label)")
    q.add_argument("--out", required=True, help="output folder: monitor.json, monitor.png")
    q.add_argument("--force", action="store_true", help="use a vector from another model fingerprint")
    q = vsub.add_parser("flag", help="rank (prompt, response) training samples by projection difference")
    _add_model_args(q)
    q.add_argument("--vector", required=True, help=VECTOR_HELP)
    q.add_argument("--layer", type=int, required=True)
    q.add_argument("--data", required=True, help="JSONL with a prompt field (text | messages | user) and 'response'")
    q.add_argument("--max-new-tokens", type=int, default=64, help="length of the model's own responses")
    q.add_argument("--top", type=int, default=20, help="samples to print")
    q.add_argument("--out", required=True, help="output folder: flags.json, flags.png")
    q.add_argument("--force", action="store_true", help="use a vector from another model fingerprint")

    p = sub.add_parser("judge-check", help="measure each judge's agreement on the shipped labelled sets")
    _add_model_args(p)
    p.add_argument("--judges", default="rules,tfidf,logprob,contrast",
                   help="comma list of rules, tfidf, logprob, contrast, http (default: %(default)s)")
    p.add_argument("--sets", default="refusal,trait,leak", help="comma list of refusal, trait, leak")
    p.add_argument("--base-url", help="for --judges http: e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--http-model", default="judge", help="for --judges http: the server's model name")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="env var holding the HTTP judge's key")
    p.add_argument("--json", dest="json_out", help="also write the results as JSON to this file")

    p = sub.add_parser("serve-judge", help="serve a local model as an OpenAI-compatible judge endpoint")
    _add_model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)

    p = sub.add_parser("audit", help="run audits and write results.json + report.html (resumable)")
    p.add_argument("audits", nargs="*", metavar="AUDIT",
                   help="audits to run (default: those of the config; short names: bias, drift, leakage, memory, "
                        "localization, vectors, refusal)")
    p.add_argument("--config", help="audit.toml (model, profile, judge, audits and their parameters)")
    p.add_argument("--model", default=None, help="alias, Hugging Face id, local folder or .gguf file")
    p.add_argument("--backend", default=None, choices=["nnsight", "transformer_lens"])
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--profile", default=None, choices=["quick", "full"], help="time budget profile")
    p.add_argument("--judge", default=None, choices=["contrast", "logprob", "http", "none"])
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--policy", default=None, help="gate policy shown in the report (name or TOML file)")
    p.add_argument("--param", action="append", default=[], metavar="AUDIT.KEY=VALUE",
                   help="override one audit parameter (VALUE is TOML: 3, 0.5, true, \"text\", [1, 2])")
    p.add_argument("--out", default=None, help="output folder (default: the config's, else personascope_out)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("compare", help="release comparison: persona shifts from a base model to a candidate")
    p.add_argument("--base", required=True, help="the base model: alias, Hugging Face id, local folder or .gguf")
    p.add_argument("--candidate", required=True, help="the release candidate (same architecture, e.g. a fine-tune)")
    p.add_argument("--traits", default=None, help="comma list of trait names or trait files (default: the profile's)")
    p.add_argument("--vector-dir", default=None, help="folder of vectors from 'vector extract' (default: extract)")
    p.add_argument("--data", default=None, help="fine-tuning data to flag (JSONL with messages or prompt/response)")
    p.add_argument("--backend", default=None, choices=["nnsight", "transformer_lens"])
    p.add_argument("--profile", default="quick", choices=["quick", "full"], help="sizes (default: %(default)s)")
    p.add_argument("--judge", default=None, choices=["contrast", "logprob", "http", "none"])
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="any release_comparison parameter, e.g. --param judge_questions=0 (repeatable)")
    p.add_argument("--policy", default="release", help="gate policy for the verdict (default: %(default)s)")
    p.add_argument("--out", default="compare_out", help="output folder (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("flag", help="rank fine-tuning samples by how far they push the model along a trait")
    _add_model_args(p)
    p.add_argument("--data", required=True, help="JSONL/JSON/parquet: 'messages' ending with the answer, or "
                                                 "prompt + response")
    p.add_argument("--trait", default="sycophantic", help="built-in trait name or trait file (default: %(default)s)")
    p.add_argument("--vector", default=None, help="a vector from 'vector extract' instead of extracting")
    p.add_argument("--layer", type=int, default=None, help="layer (default: where the vector separates best)")
    p.add_argument("--max-new-tokens", type=int, default=48, help="length of the model's own answers")
    p.add_argument("--top", type=int, default=10, help="samples to print")
    p.add_argument("--out", default="flag_out", help="output folder: flags.json (default: %(default)s)")

    p = sub.add_parser("report", help="re-render report.html from results.json (no model needed)")
    p.add_argument("results", help="results.json or its folder")
    p.add_argument("--out", default=None, help="folder for report.html (default: next to results.json)")
    p.add_argument("--policy", default=None, help="also show the gate verdict of this policy")

    p = sub.add_parser("gate", help="check results.json against a policy; exit 0 pass, 1 fail, 2 usage error")
    p.add_argument("results", help="results.json or its folder")
    p.add_argument("--policy", default="default", help="policy TOML file or built-in name (default: %(default)s)")
    p.add_argument("--baseline", default=None, help="previous results.json: fail on regressions")
    p.add_argument("--junit", default=None, help="write JUnit XML here")
    p.add_argument("-v", "--verbose", action="store_true", help="list every check, not only failures")

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
        commands = {"models": _models, "capture": _capture, "demo": _demo, "localize": _localize,
                    "vector": _vector,
                    "judge-check": _judge_check, "serve-judge": _serve_judge, "audit": _audit,
                    "compare": _compare, "flag": _flag, "report": _report, "gate": _gate}
        return commands[args.command](args)
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
    from .data import check_prompt_file, load_prompts
    from .sites import parse_point, parse_position
    from .store import collect

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


def _localize(args: argparse.Namespace) -> int:
    from .data import builtin_personas_dir, load_persona_statements
    from .probes.localize import localize

    source = None if args.personas == "builtin" else Path(args.personas)
    if source is not None and not source.exists():
        from .errors import DataError

        raise DataError(f"{source}: no such persona file or folder")
    available = sorted({s.persona for s in load_persona_statements(source)})
    names = [n.strip() for n in args.names.split(",")] if args.names else [
        n for n in available if n != "neutral"
    ]
    model = _load(args)
    res = localize(
        model, names, source=source or builtin_personas_dir(), framing=args.framing,
        position=args.position, n_per_persona=args.n_per_persona, seed=args.seed,
        probes=[p.strip() for p in args.probes.split(",") if p.strip()], batch_size=args.batch_size,
        progress=True,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "localization.json").write_text(res.model_dump_json(indent=1))
    figures = res.save_plots(out)
    print("layer  probe acc (95% CI)       control  selectivity  silhouette")
    for r in res.layers:
        print(f"{r.layer:>5}  {r.accuracy:.3f} ({r.accuracy_ci[0]:.2f}-{r.accuracy_ci[1]:.2f})     "
              f"{r.control_accuracy:.3f}   {r.selectivity:11.3f}  {r.silhouette:10.3f}")
    lo, hi = res.band
    print(f"\nBest layer {res.best_layer}; personas separate in layers {lo}-{hi} "
          f"({res.band_fraction[0]:.2f}-{res.band_fraction[1]:.2f} of depth)")
    print(f"Wrote {out.resolve() / 'localization.json'}")
    for path in figures:
        print(f"      {Path(path).resolve()}")
    return 0


def _vector(args: argparse.Namespace) -> int:
    from .errors import UsageError

    if args.vector_command == "extract":
        from .steering.traits import extract_persona_vector, load_trait

        if bool(args.trait) == bool(args.trait_file):
            raise UsageError("vector extract needs exactly one of --trait NAME or --trait-file PATH")
        spec = load_trait(args.trait or args.trait_file)
        model = _load(args)
        judge = None
        if args.judge == "contrast":
            from .judges.contrast import ContrastJudge

            judge = ContrastJudge(model)
        elif args.judge == "logprob":
            from .judges.logprob import LogProbJudge

            judge = LogProbJudge(model)
        ex = extract_persona_vector(model, spec, judge=judge, n_questions=args.n_questions,
                                    max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
        out = Path(args.out)
        path = ex.vector.save(out / spec.name)
        print(f"{spec.name}: kept {ex.kept}/{ex.total} pairs ({ex.note}); vector at {path}")
        norms = {k: round(float(v.norm()), 2) for k, v in ex.vector.directions.items()}
        print("norm per layer:", norms)
        if args.gguf:
            print("llama.cpp control vector:", ex.vector.at_layers(range(1, model.n_layers)).to_gguf(
                out / f"{spec.name}.gguf"))
        return 0
    if args.vector_command == "steer":
        from .steering.vector import PersonaVector

        vec = PersonaVector.load(args.vector)
        model = _load(args)
        prompt = [model.format_chat(user=args.prompt, system=args.system)]
        print("unsteered:", model.generate(prompt, args.max_new_tokens, progress=False)[0])
        with vec.apply(model, args.coeff, args.layer, force=args.force):
            print(f"steered (layer {args.layer}, coeff {args.coeff:+}):",
                  model.generate(prompt, args.max_new_tokens, progress=False)[0])
        return 0
    if args.vector_command in ("monitor", "flag"):
        return _vector_monitor_flag(args)
    raise UsageError("personascope vector needs an action: extract, steer, monitor or flag")


def _histogram_png(values: Sequence[float], path: Path, title: str, xlabel: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.2), dpi=110)
    ax = fig.add_subplot()
    ax.hist(list(values), bins=min(30, max(5, len(values) // 3)), color="#1f77b4")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("samples")
    fig.tight_layout()
    fig.savefig(path)


def _vector_monitor_flag(args: argparse.Namespace) -> int:
    from .data import check_prompt_file, load_prompts
    from .errors import DataError
    from .steering.monitor import flag_dataset, monitor
    from .steering.vector import PersonaVector

    vec = PersonaVector.load(args.vector)
    src = args.prompts if args.vector_command == "monitor" else args.data
    records = check_prompt_file(src)
    if args.vector_command == "flag":
        bad = [i for i, r in enumerate(records, 1) if not isinstance(r.get("response"), str)]
        if bad:
            raise DataError(f"{src}: record {bad[0]}: no 'response' string; flag needs (prompt, response) pairs")
    model = _load(args)
    vec.check_model(model, force=args.force)
    prompts = load_prompts(src, model.format_chat)
    texts = [p.text for p in prompts]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"vector": str(args.vector), "vector_name": vec.name, "layer": args.layer,
            "model": model.info.model_dump(mode="json"), "source": str(src)}
    if args.vector_command == "monitor":
        scores = monitor(model, texts, vec, args.layer, batch_size=args.batch_size, progress=True)["last"]
        rows = [{"index": i, "label": p.label, "projection": float(s)} for i, (p, s) in enumerate(zip(prompts, scores,
                                                                                                     strict=True))]
        (out / "monitor.json").write_text(json.dumps({**meta, "position": "last", "scores": rows}, indent=1))
        _histogram_png(scores, out / "monitor.png", f"Projection on {vec.name} (layer {args.layer})",
                       "projection of the last prompt token")
        print(f"mean projection {scores.mean():+.3f} over {len(scores)} prompts; wrote {out / 'monitor.json'}")
        return 0
    responses = [str(r["response"]) for r in records]
    res = flag_dataset(model, texts, responses, vec, args.layer, max_new_tokens=args.max_new_tokens,
                       batch_size=args.batch_size, progress=True)
    ranked = [{"index": i, "score": s, "response": responses[i][:300], "own_response": res.own_responses[i][:300]}
              for i, s in res.top(len(responses))]
    (out / "flags.json").write_text(json.dumps({**meta, "dataset_score": res.dataset_score, "ranked": ranked},
                                               indent=1, ensure_ascii=False))
    _histogram_png(res.scores, out / "flags.png", f"Projection difference on {vec.name} (layer {args.layer})",
                   "sample minus own response, projected")
    print(f"dataset score {res.dataset_score:+.3f} (mean projection difference); top samples:")
    for row in ranked[: args.top]:
        print(f"  #{row['index']:<5} {row['score']:+8.3f}  {row['response'][:80]!r}")
    return 0


def _judge_check(args: argparse.Namespace) -> int:
    from .errors import UsageError
    from .judges.check import CHECK_SETS, format_check, judge_check

    kinds = [k.strip() for k in args.judges.split(",") if k.strip()]
    allowed = ("rules", "tfidf", "logprob", "contrast", "http")
    bad = [k for k in kinds if k not in allowed]
    if bad:
        raise UsageError(f"Unknown judge {bad[0]!r}; allowed: {', '.join(allowed)}")
    sets = [x.strip() for x in args.sets.split(",") if x.strip()]
    if any(x not in CHECK_SETS for x in sets):
        raise UsageError(f"Unknown set in {args.sets!r}; allowed: {', '.join(CHECK_SETS)}")
    if "http" in kinds and not args.base_url:
        raise UsageError("--judges http needs --base-url, e.g. http://127.0.0.1:8000/v1")
    judges: list = []
    if "rules" in kinds:
        from .judges.rules import RefusalJudge, ValueMatchJudge

        judges += [RefusalJudge(), ValueMatchJudge()]
    if "tfidf" in kinds:
        from .judges.similarity import SimilarityJudge

        judges.append(SimilarityJudge())
    if "logprob" in kinds or "contrast" in kinds:
        model = _load(args)
        if "logprob" in kinds:
            from .judges.logprob import LogProbJudge

            judges.append(LogProbJudge(model, batch_size=args.batch_size))
        if "contrast" in kinds:
            from .judges.contrast import ContrastJudge

            judges.append(ContrastJudge(model, batch_size=args.batch_size))
    if "http" in kinds:
        from .judges.http import HTTPJudge

        judges.append(HTTPJudge(args.base_url, args.http_model, api_key_env=args.api_key_env))
    results = []
    for judge in judges:
        own = getattr(judge, "check_sets", None)
        use = [x for x in sets if not own or x in own]
        if not use:
            continue
        res = judge_check(judge, use)
        results.append(res)
        print(format_check(res) + "\n")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps([r.model_dump(mode="json") for r in results], indent=1))
        print(f"Wrote {args.json_out}")
    return 0


def _serve_judge(args: argparse.Namespace) -> int:
    from .judges.server import serve

    serve(_load(args), host=args.host, port=args.port, model_name=args.model)
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



def _audit(args: argparse.Namespace) -> int:
    import tomllib

    from .errors import UsageError
    from .runner import ALIASES, load_config, run_audits

    overrides = {"model": args.model, "backend": args.backend, "device": args.device, "dtype": args.dtype,
                 "profile": args.profile, "seed": args.seed, "policy": args.policy, "out": args.out}
    cfg = load_config(args.config, **overrides)
    if args.judge:
        cfg.judge.kind = args.judge
    if args.audits:
        names = [ALIASES.get(a, a) for a in args.audits]
        cfg.audits = {n: cfg.audits.get(n, {}) for n in names}
    for item in args.param:
        key, sep, value = item.partition("=")
        audit, dot, name = key.partition(".")
        if not sep or not dot:
            raise UsageError(f"--param {item!r}: use AUDIT.KEY=VALUE, e.g. bias.n_questions=40")
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value  # a bare word is a string
        cfg.audits.setdefault(ALIASES.get(audit, audit), {})[name] = parsed
    cfg = load_config(None, **cfg.model_dump())  # validate the overridden config as a whole
    run = run_audits(cfg, progress=not args.quiet, log=lambda m: print(m, file=sys.stderr))
    out = Path(cfg.out)
    print(f"wrote {out / 'results.json'} and {out / 'report.html'} (risk: {run.risk}, {run.wall_time_s:.0f} s)")
    if run.errors:
        print(f"{len(run.errors)} audit(s) failed: {', '.join(run.errors)}; see the report", file=sys.stderr)
        return 1
    return 0


def _compare(args: argparse.Namespace) -> int:
    """``personascope compare``: a run of the release_comparison audit on the base, with a gate verdict."""
    import tomllib

    from .errors import UsageError
    from .reports import evaluate, load_policy
    from .runner import load_config, run_audits

    params: dict = {"candidate": args.candidate}
    if args.traits:
        params["traits"] = [t.strip() for t in args.traits.split(",") if t.strip()]
    if args.vector_dir:
        params["vector_dir"] = args.vector_dir
    if args.data:
        params["data"] = args.data
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--param {item!r}: use KEY=VALUE, e.g. judge_questions=0")
        try:
            params[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            params[key] = value
    from .models import resolve

    policy = load_policy(args.policy)  # fail early on a bad policy or a missing model, before any model loads
    resolve(args.base)
    resolve(args.candidate)
    cfg = load_config(None, model=args.base, backend=args.backend, profile=args.profile, out=args.out,
                      policy=args.policy, name=f"release comparison: {args.base} -> {args.candidate}",
                      audits={"release_comparison": params})
    if args.judge:
        cfg.judge.kind = args.judge
    run = run_audits(cfg, progress=not args.quiet, log=lambda m: print(m, file=sys.stderr))
    out = Path(cfg.out)
    if run.errors:
        msg = run.errors["release_comparison"]
        print(f"personascope: error: {msg}", file=sys.stderr)
        # Bad input (e.g. models of different architectures) is a usage error, like everywhere else.
        return EXIT_USAGE if msg.split(":")[0] in ("UsageError", "DataError", "ModelNotFoundError") else 1
    res = run.audit("release_comparison")
    for m in res.metrics:
        if m.name in ("shift_frac", "trait_delta", "refusal_score_delta", "mcq_accuracy_delta", "flag_auroc"):
            has_ci = m.ci_low is not None and m.ci_high is not None
            ci = f" (95% CI {m.ci_low:+.3f}..{m.ci_high:+.3f})" if has_ci else ""
            print(f"{m.key:32s} {m.value:+.3f}{ci}" if m.value is not None else f"{m.key:32s} -")
    outcome = evaluate(run, policy)
    print(outcome.to_text())
    print(f"wrote {out / 'results.json'} and {out / 'report.html'}; gate it in CI with: "
          f"personascope gate {out / 'results.json'} --policy {args.policy}")
    return 0


def _flag(args: argparse.Namespace) -> int:
    """``personascope flag``: rank training samples by projection difference on a trait vector."""
    from .steering.compare import flag_training_data
    from .steering.vector import PersonaVector

    vec = PersonaVector.load(args.vector) if args.vector else None
    model = _load(args)
    if vec is not None:
        vec.check_model(model)
    res = flag_training_data(model, args.data, args.trait, vector=vec, layer=args.layer,
                             max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, progress=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res["model"] = model.info.model_dump(mode="json")
    res["source"] = str(args.data)
    (out / "flags.json").write_text(json.dumps(res, indent=1, ensure_ascii=False))
    auroc = f"; AUROC {res['auroc']:.3f} for label trait={res['trait']!r}" if res["auroc"] is not None else ""
    print(f"{res['n']} samples, trait {res['trait']!r}, layer {res['layer']}: dataset score "
          f"{res['dataset_score']:+.3f}{auroc}")
    for row in res["ranked"][: args.top]:
        print(f"  #{row['index']:<5d} {row['score']:+8.3f}  {row['user'][:60]!r} -> {row['response'][:80]!r}")
    print(f"wrote {out / 'flags.json'}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .reports import RunResults, evaluate, load_policy, write_report

    run = RunResults.load(args.results)
    src = Path(args.results)
    out = Path(args.out) if args.out else (src if src.is_dir() else src.parent)
    gate = evaluate(run, load_policy(args.policy)) if args.policy else None
    _, report = write_report(run, out, gate)
    print(f"wrote {report}")
    return 0


def _gate(args: argparse.Namespace) -> int:
    from .reports import gate_main

    return gate_main(args.results, args.policy, junit_path=args.junit, baseline_path=args.baseline,
                     verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
