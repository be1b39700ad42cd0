"""``personascope vector extract|steer|monitor|flag`` and ``personascope flag``: persona vectors and their uses."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .exits import ExitCode
from .options import (
    VECTOR_HELP,
    SharedOptions,
    Subparsers,
    add_command,
    check_out_dir,
    emit,
    judge_spec,
    load_model,
    out_option,
    positive_int,
    say,
)

if TYPE_CHECKING:
    import numpy as np

    from ..backends.base import ModelAdapter
    from ..steering.vector import PersonaVector


def register(sub: Subparsers, shared: SharedOptions) -> None:
    """Add the ``vector`` command (with its actions) and the top-level ``flag`` command to ``sub``."""
    model = [shared.model, shared.quiet, shared.json]
    p = add_command(sub, "vector", "persona vectors: extract, steer, monitor, flag")
    p.set_defaults(handler=run_vector_without_action)
    vsub = p.add_subparsers(dest="vector_command", metavar="ACTION")

    q = add_command(vsub, "extract", "extract a persona vector with the persona-vectors recipe",
                    parents=[*model, shared.judge,
                             out_option(what="<trait>.safetensors/.json (+ .gguf)", required=True)])
    q.add_argument("--trait", help="built-in trait name (evil, sycophantic, hallucinating, impolite, ...)")
    q.add_argument("--trait-file", help="a trait JSON file instead of --trait: our schema or persona_vectors' "
                   "trait_data_extract/<trait>.json (auto-detected)")
    q.add_argument("--n-questions", type=positive_int, metavar="N",
                   help="first N extraction questions (default: all)")
    q.add_argument("--max-new-tokens", type=positive_int, default=48, metavar="N",
                   help="length of the generated answers that are judged")
    q.add_argument("--gguf", action="store_true", help="also export a llama.cpp control vector")
    q.set_defaults(handler=run_extract)

    q = add_command(vsub, "steer", "generate with a persona vector added at one layer", parents=model)
    q.add_argument("--vector", required=True, help=VECTOR_HELP)
    q.add_argument("--layer", type=int, required=True, help="layer whose output the vector is added to")
    q.add_argument("--coeff", type=float, default=4.0, help="multiple of the vector to add (negative: away)")
    q.add_argument("--prompt", required=True, help="user message")
    q.add_argument("--system", help="optional system message")
    q.add_argument("--max-new-tokens", type=positive_int, default=64, metavar="N", help="length of each answer")
    q.add_argument("--force", action="store_true", help="use a vector from another model fingerprint")
    q.set_defaults(handler=run_steer)

    q = add_command(vsub, "monitor", "projection of each prompt's last token on a vector (JSON + PNG)",
                    parents=[*model, out_option(what="monitor.json, monitor.png", required=True)])
    q.add_argument("--vector", required=True, help=VECTOR_HELP)
    q.add_argument("--layer", type=int, required=True, help="layer whose output is projected")
    q.add_argument("--prompts", required=True, help="JSONL prompts (text | messages | user [+ system], label)")
    q.add_argument("--force", action="store_true", help="use a vector from another model fingerprint")
    q.set_defaults(handler=run_monitor)

    q = add_command(vsub, "flag", "rank (prompt, response) training samples by projection difference",
                    parents=[*model, out_option(what="flags.json, flags.png", required=True)])
    q.add_argument("--vector", required=True, help=VECTOR_HELP)
    q.add_argument("--layer", type=int, required=True, help="layer whose output is projected")
    q.add_argument("--data", required=True, help="JSONL with a prompt field (text | messages | user) and 'response'")
    q.add_argument("--max-new-tokens", type=positive_int, default=64, metavar="N",
                   help="length of the model's own responses")
    q.add_argument("--top", type=positive_int, default=20, metavar="N", help="samples to print")
    q.add_argument("--force", action="store_true", help="use a vector from another model fingerprint")
    q.set_defaults(handler=run_vector_flag)

    p = add_command(sub, "flag", "rank fine-tuning samples by how far they push the model along a trait",
                    parents=[*model, out_option("flag_out", what="flags.json")])
    p.add_argument("--data", required=True, help="JSONL/JSON/parquet: 'messages' ending with the answer, or "
                                                 "prompt + response")
    p.add_argument("--trait", default="sycophantic", help="built-in trait name or trait file")
    p.add_argument("--vector", default=None, help="a vector from 'vector extract' instead of extracting")
    p.add_argument("--layer", type=int, default=None, help="layer (default: where the vector separates best)")
    p.add_argument("--max-new-tokens", type=positive_int, default=48, metavar="N",
                   help="length of the model's own answers")
    p.add_argument("--top", type=positive_int, default=10, metavar="N", help="samples to print")
    p.set_defaults(handler=run_flag)


def run_vector_without_action(args: argparse.Namespace) -> int:
    """``personascope vector`` alone: a usage error that lists the actions."""
    from ..errors import UsageError

    raise UsageError("personascope vector needs an action: extract, steer, monitor or flag")


def run_extract(args: argparse.Namespace) -> int:
    """``personascope vector extract``: a persona vector per layer from judged contrastive pairs."""
    from ..errors import UsageError
    from ..judges.factory import make_judge
    from ..steering.traits import extract_persona_vector, is_trait_path, load_trait
    from ..steering.vector import path_inside, safe_file_name

    if bool(args.trait) == bool(args.trait_file):
        raise UsageError("vector extract needs exactly one of --trait NAME or --trait-file PATH")
    if args.trait and is_trait_path(args.trait):
        # --trait only takes built-in names, so a name can never be turned into a path to any file.
        raise UsageError(f"--trait takes a built-in trait name, not a path ({args.trait!r}); "
                         "pass a trait file with --trait-file PATH")
    spec = load_trait(args.trait or Path(args.trait_file))
    # The output names come from the trait's (possibly untrusted) name: made safe, then checked to
    # stay inside --out before any model work, so a bad name fails fast and nothing lands elsewhere.
    out = check_out_dir(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = safe_file_name(spec.name)
    base = path_inside(out, stem)
    for suffix in (".safetensors", ".json", ".gguf"):
        path_inside(out, stem + suffix)
    model = load_model(args)
    judge = make_judge(judge_spec(args), model)
    ex = extract_persona_vector(model, spec, judge=judge, n_questions=args.n_questions,
                                max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                                progress=not args.quiet)
    path = ex.vector.save(base)
    say(args, f"{spec.name}: kept {ex.kept}/{ex.total} pairs ({ex.note}); vector at {path}")
    norms = {k: round(float(v.norm()), 2) for k, v in ex.vector.directions.items()}
    say(args, f"norm per layer: {norms}")
    gguf = None
    if args.gguf:
        gguf = ex.vector.at_layers(range(1, model.n_layers)).to_gguf(base.with_name(stem + ".gguf"))
        say(args, f"llama.cpp control vector: {gguf}")
    emit(args, {"trait": spec.name, "kept": ex.kept, "total": ex.total, "note": ex.note, "vector": str(path),
                "norms": norms, "gguf": str(gguf) if gguf is not None else None})
    return ExitCode.OK


def run_steer(args: argparse.Namespace) -> int:
    """``personascope vector steer``: the same prompt answered without and with the vector added."""
    from ..steering.vector import PersonaVector

    vec = PersonaVector.load(args.vector)
    model = load_model(args)
    prompt = [model.format_chat(user=args.prompt, system=args.system)]
    plain = model.generate(prompt, args.max_new_tokens, progress=False)[0]
    say(args, f"unsteered: {plain}")
    with vec.apply(model, args.coeff, args.layer, force=args.force):
        steered = model.generate(prompt, args.max_new_tokens, progress=False)[0]
    say(args, f"steered (layer {args.layer}, coeff {args.coeff:+}): {steered}")
    emit(args, {"vector": str(args.vector), "layer": args.layer, "coeff": args.coeff, "prompt": args.prompt,
                "system": args.system, "unsteered": plain, "steered": steered})
    return ExitCode.OK


def _histogram_png(values: Sequence[float] | np.ndarray, path: Path, title: str, xlabel: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.2), dpi=110)
    ax = fig.add_subplot()
    ax.hist(list(values), bins=min(30, max(5, len(values) // 3)), color="#1f77b4")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("samples")
    fig.tight_layout()
    fig.savefig(path)


def _vector_meta(args: argparse.Namespace, src: str) -> tuple[PersonaVector, ModelAdapter, dict[str, Any], Path]:
    """The vector, the model it was checked against, the provenance of the output and the output folder."""
    from ..steering.vector import PersonaVector

    vec = PersonaVector.load(args.vector)
    model = load_model(args)
    vec.check_model(model, force=args.force)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"vector": str(args.vector), "vector_name": vec.name, "layer": args.layer,
            "model": model.info.model_dump(mode="json"), "source": str(src)}
    return vec, model, meta, out


def run_monitor(args: argparse.Namespace) -> int:
    """``personascope vector monitor``: each prompt's last-token projection on the vector (JSON + histogram)."""
    from ..data import check_prompt_file, load_prompts
    from ..steering.monitor import monitor

    check_prompt_file(args.prompts)  # fail on a bad file before spending time on the model
    vec, model, meta, out = _vector_meta(args, args.prompts)
    prompts = load_prompts(args.prompts, model.format_chat)
    scores = monitor(model, [p.text for p in prompts], vec, args.layer, batch_size=args.batch_size,
                     progress=not args.quiet)["last"]
    rows = [{"index": i, "label": p.label, "projection": float(s)}
            for i, (p, s) in enumerate(zip(prompts, scores, strict=True))]
    (out / "monitor.json").write_text(json.dumps({**meta, "position": "last", "scores": rows}, indent=1))
    _histogram_png(scores, out / "monitor.png", f"Projection on {vec.name} (layer {args.layer})",
                   "projection of the last prompt token")
    say(args, f"mean projection {scores.mean():+.3f} over {len(scores)} prompts; wrote {out / 'monitor.json'}")
    emit(args, {"mean_projection": float(scores.mean()), "n": len(scores), "result": str(out / "monitor.json"),
                "figure": str(out / "monitor.png")})
    return ExitCode.OK


def run_vector_flag(args: argparse.Namespace) -> int:
    """``personascope vector flag``: (prompt, response) samples ranked by projection difference to own answers."""
    from ..data import check_prompt_file, load_prompts
    from ..errors import DataError
    from ..steering.monitor import flag_dataset

    records = check_prompt_file(args.data)
    bad = [i for i, r in enumerate(records, 1) if not isinstance(r.get("response"), str)]
    if bad:
        raise DataError(f"{args.data}: record {bad[0]}: no 'response' string; flag needs (prompt, response) pairs")
    vec, model, meta, out = _vector_meta(args, args.data)
    texts = [p.text for p in load_prompts(args.data, model.format_chat)]
    responses = [str(r["response"]) for r in records]
    res = flag_dataset(model, texts, responses, vec, args.layer, max_new_tokens=args.max_new_tokens,
                       batch_size=args.batch_size, progress=not args.quiet)
    ranked: list[dict[str, Any]] = [
        {"index": i, "score": s, "response": responses[i][:300], "own_response": res.own_responses[i][:300]}
        for i, s in res.top(len(responses))]
    (out / "flags.json").write_text(json.dumps({**meta, "dataset_score": res.dataset_score, "ranked": ranked},
                                               indent=1, ensure_ascii=False))
    _histogram_png(res.scores, out / "flags.png", f"Projection difference on {vec.name} (layer {args.layer})",
                   "sample minus own response, projected")
    say(args, f"dataset score {res.dataset_score:+.3f} (mean projection difference); top samples:")
    for row in ranked[: args.top]:
        say(args, f"  #{row['index']:<5} {row['score']:+8.3f}  {row['response'][:80]!r}")
    emit(args, {"dataset_score": res.dataset_score, "top": ranked[: args.top], "result": str(out / "flags.json"),
                "figure": str(out / "flags.png")})
    return ExitCode.OK


def run_flag(args: argparse.Namespace) -> int:
    """``personascope flag``: rank training samples by projection difference on a trait vector."""
    from ..steering.compare import flag_training_data
    from ..steering.vector import PersonaVector

    vec = PersonaVector.load(args.vector) if args.vector else None
    model = load_model(args)
    if vec is not None:
        vec.check_model(model)
    res = flag_training_data(model, args.data, args.trait, vector=vec, layer=args.layer,
                             max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                             progress=not args.quiet)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res["model"] = model.info.model_dump(mode="json")
    res["source"] = str(args.data)
    (out / "flags.json").write_text(json.dumps(res, indent=1, ensure_ascii=False))
    auroc = f"; AUROC {res['auroc']:.3f} for label trait={res['trait']!r}" if res["auroc"] is not None else ""
    say(args, f"{res['n']} samples, trait {res['trait']!r}, layer {res['layer']}: dataset score "
              f"{res['dataset_score']:+.3f}{auroc}")
    for row in res["ranked"][: args.top]:
        say(args, f"  #{row['index']:<5d} {row['score']:+8.3f}  {row['user'][:60]!r} -> {row['response'][:80]!r}")
    say(args, f"wrote {out / 'flags.json'}")
    emit(args, {k: v for k, v in res.items() if k not in ("ranked", "model")} | {
        "top": res["ranked"][: args.top], "result": str(out / "flags.json")})
    return ExitCode.OK
