"""One audit run: a validated config, the audits it names, resumable results, the report.

``personascope audit --config audit.toml`` and `run_audits` go through here. Each finished audit
is saved to ``OUT/audits/<name>.json`` at once; a rerun with the same model and parameters reuses
it, and cached activations/generations make an interrupted audit continue where it stopped.
"""

from __future__ import annotations

import time
import tomllib
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import catalog
from .audits import REGISTRY, get_audit
from .audits.base import PROFILES
from .errors import DataError, PersonascopeError, UsageError
from .judges.factory import JudgeSpec, make_judge
from .records import now_iso, package_versions, stable_hash
from .results import AuditResult, RunResults, samples_path, write_samples

if TYPE_CHECKING:
    from .backends.base import ModelAdapter
    from .judges.base import Judge

# Short names for the command line and the default audits, from the one audit table.
ALIASES = dict(catalog.ALIASES)
QUICK_AUDITS = catalog.DEFAULT_AUDITS


def _default_audits() -> dict[str, dict[str, Any]]:
    """``{audit: {}}`` for every audit of the default run (its own parameters from the profile)."""
    return {a: {} for a in QUICK_AUDITS}


#: The run's judge as written under ``[judge]`` in ``audit.toml`` (see `personascope.judges.factory`).
JudgeConfig = JudgeSpec


class RunConfig(BaseModel):
    """An audit run, as written in ``audit.toml``."""

    model_config = ConfigDict(extra="forbid")

    name: str = "personascope audit"
    model: str = "smollm2-135m-instruct"
    backend: Literal["nnsight", "transformer_lens"] = "nnsight"
    device: str = "auto"
    dtype: str = "auto"
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="Prompts per forward pass; auto: from free GPU memory, 16 on CPU.")
    device_map: str | None = Field(None, description="'auto' spreads a large model over every visible GPU.")
    profile: Literal["quick", "full"] = "quick"
    seed: int = Field(0, ge=0)
    out: str = "personascope_out"
    policy: str | None = Field(None, description="Gate policy (name or TOML path) shown in the report.")
    baseline: str | None = Field(None, description="A previous results.json: its value and the change stand beside "
                                                   "each metric of the report; with a policy, regressions are gated.")
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    served_model: str | None = Field(None, description="With model = an http(s) API root: the model's name there.")
    tokenizer: str | None = Field(None, description="Served model: alias/folder/.gguf with its chat template; "
                                                    "prompts go to /completions and log-prob audits can run.")
    system_prompt_file: str | None = Field(None, description="Served model: the deployment's system prompt "
                                                             "(a text file); every persona is layered after it.")
    concurrency: int = Field(4, ge=1, description="Served model: requests in flight at most.")
    audits: dict[str, dict[str, Any]] = Field(default_factory=lambda: _default_audits())

    def audit_objects(self) -> list[Any]:
        """Build every audit (profile defaults + params); errors name the audit and key."""
        out = []
        for name, params in self.audits.items():
            name = ALIASES.get(name, name)
            cls = get_audit(name)
            params = dict(params or {})
            params.setdefault("seed", self.seed)
            out.append(cls.from_params(params, self.profile))
        return out


def check_audit_extras(audits: list[Any]) -> None:
    """Raise `MissingExtraError` before any model work when an audit (or one a validity run audits) lacks its extra."""
    from .extras import check_extra

    for audit in audits:
        names = [audit.name, *(getattr(audit, "audits", ()) if audit.name == "validity" else ())]
        for name in names:
            entry = catalog.BY_NAME.get(catalog.canonical(name))  # an audit registered by a user has no row
            for extra in entry.extras if entry is not None else ():
                check_extra(extra, f"the {name} audit")


def _pydantic_message(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        allowed = err.get("ctx", {}).get("expected")
        parts.append(f"{loc}: {msg}" + (f" (allowed: {allowed})" if allowed else ""))
    return f"{source}: " + "; ".join(parts) + f". Allowed top-level keys: {', '.join(RunConfig.model_fields)}"


def load_config(path: str | Path | None = None, **overrides: Any) -> RunConfig:
    """Read ``audit.toml`` (optional) and apply overrides (None values are ignored)."""
    data: dict[str, Any] = {}
    source = "command line"
    if path is not None:
        p = Path(path)
        if not p.exists() and str(path) in ("quick", "full"):
            from importlib import resources

            p = Path(str(resources.files("personascope") / "data" / "configs" / f"{path}.toml"))
        source = str(p)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"Cannot read config {p}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise UsageError(f"Cannot read config {p}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{p} is not valid TOML: {exc}") from exc
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise UsageError(_pydantic_message(exc, source)) from exc
    unknown = [a for a in cfg.audits if ALIASES.get(a, a) not in REGISTRY]
    if unknown:
        raise UsageError(f"{source}: unknown audit {unknown[0]!r}; known: {', '.join(REGISTRY)} "
                         f"(short names: {', '.join(ALIASES)})")
    if cfg.profile not in PROFILES:  # pragma: no cover - Literal already checks
        raise UsageError(f"profile must be one of {PROFILES}")
    # Every audit's parameters (types, ranges) and the built-in data they name, before a model loads.
    for audit in cfg.audit_objects():
        try:
            audit.validate()
        except PersonascopeError as exc:
            raise UsageError(f"{source}: audit {audit.name!r}: {exc}") from None
    if cfg.policy:  # read now: a bad policy must not wait for the end of the run to be found
        from .reports import load_policy

        load_policy(cfg.policy)
    return cfg


def config_hash(config: dict[str, Any]) -> str:
    """Hash of a run's config without ``out``: the same run written to another folder has the same hash."""
    return stable_hash({k: v for k, v in config.items() if k != "out"})[:16]


def reuse_key(audit: Any, model: ModelAdapter, judge: Judge | None) -> dict[str, Any]:
    """What must match for a finished result to be reused: parameters, model, judge and personascope version."""
    return {"params_hash": audit.params_hash, "model": model.info.fingerprint,
            "judge": audit.judge_record(judge).model_dump(mode="json"),
            "personascope": package_versions()["personascope"]}


def _result_key(old: AuditResult, audit: Any) -> dict[str, Any]:
    from .results import JudgeRecord

    return {"params_hash": old.params_hash, "model": old.model.fingerprint if old.model else None,
            "judge": (old.judge or JudgeRecord()).model_copy(update={"details": {}, "rules": []}).model_dump(
                mode="json"),
            "personascope": old.versions.get("personascope")}


def _keep_earlier(run: RunResults, out: Path, ran: set[str], model: ModelAdapter, log: Any) -> None:
    """Add the finished results of audits this run did not name from ``out/audits`` (same model only)."""
    kept, other = [], []
    for path in sorted((out / "audits").glob("*.json")):
        if path.stem in ran or path.stem in run.errors:
            continue
        try:
            old = AuditResult.load(path)
        except DataError as exc:
            log(f"[{path.stem}] earlier result not kept: {exc}")
            continue
        if old.model is None or old.model.fingerprint != model.info.fingerprint:
            other.append(old.audit)
            continue
        run.audits.append(old)
        kept.append(old.audit)
    if kept:
        log(f"kept earlier results of {', '.join(kept)} from {out} (--fresh: this run's audits only)")
    if other:
        log(f"not kept: earlier results of {', '.join(other)} in {out} were made on another model")
    run.audits.sort(key=lambda a: catalog.ORDER.get(a.audit, len(catalog.ORDER)))


def audit_cost(name: str) -> float:
    """The weight of audit ``name`` in the run's progress bar: its catalog ``cost`` (quick-profile seconds)."""
    entry = catalog.BY_NAME.get(catalog.canonical(name))
    return entry.cost if entry is not None else 60.0


def run_bar(audits: list[Any], progress: bool) -> Any:
    """The run's overall progress bar: audits weighted by their expected time, so the ETA reads in time.

    Each audit's own steps show in the bars below it; in Jupyter (with the ``notebook`` extra) these
    are ipywidgets bars (``tqdm.auto``).
    """
    from tqdm.auto import tqdm

    return tqdm(total=sum(audit_cost(a.name) for a in audits), disable=not progress, desc="personascope run",
                bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}] {postfix}")


def _run_one(audit: Any, run: RunResults, out: Path, model: ModelAdapter, judge: Judge | None, cfg: RunConfig, *,
             fresh: bool, progress: bool, log: Any, raise_errors: bool) -> None:
    """Run (or reuse) one audit of ``run``: its result joins ``run.audits``, or its error ``run.errors``."""
    path = out / "audits" / f"{audit.name}.json"
    err_path = path.with_suffix(".error.txt")
    result: AuditResult | None = None
    if path.exists() and not fresh:
        try:
            old = AuditResult.load(path)
            # Same parameters, model, judge and personascope version (a new version may measure differently).
            if _result_key(old, audit) == reuse_key(audit, model, judge):
                result = old
                log(f"[{audit.name}] finished earlier, reusing {path}")
        except DataError:
            pass
    lacking = audit.missing_capabilities(model) if result is None else []
    if lacking:
        run.errors[audit.name] = (f"skipped: needs {', '.join(lacking)} from the model; {model.info.id} is served "
                                  "over HTTP (text and log-probs only): run it on local weights")
        log(f"[{audit.name}] skipped: needs {', '.join(lacking)} (a served model)")
        return
    if result is None and judge is None and audit.judge_required:
        run.errors[audit.name] = (f"skipped: needs a model judge ({audit.judge_use}); the run has --judge none")
        log(f"[{audit.name}] skipped: needs a model judge")
        return
    if result is None:
        log(f"[{audit.name}] running ({cfg.profile} profile) ...")
        try:
            result = audit.run(model, judge=judge, progress=progress)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one broken audit must not lose the others
            err_path.write_text(traceback.format_exc(), encoding="utf-8")
            if raise_errors:
                raise
            run.errors[audit.name] = f"{type(exc).__name__}: {exc} (traceback: {err_path})"
            log(f"[{audit.name}] FAILED: {exc}")
            return
        if result.samples:  # every scored item, beside the result (the report links its examples here)
            write_samples(samples_path(out, audit.name), result.samples)
            result.samples_file = samples_path(".", audit.name).as_posix()
        result.save(path)
        err_path.unlink(missing_ok=True)
        log(f"[{audit.name}] done in {result.timings['total']:.0f} s, risk: {result.risk}")
    run.audits.append(result)


def run_audits(
    cfg: RunConfig, *, model: ModelAdapter | None = None, progress: bool = True, log: Any = print,
    raise_errors: bool = False, fresh: bool = False,
) -> RunResults:
    """Run every audit of ``cfg``, saving each result as it finishes; write results.json and report.html.

    An audit that fails is recorded in ``errors`` (the traceback goes to ``OUT/audits/<name>.error.txt``)
    and the run goes on, unless ``raise_errors`` (then its exception propagates, typed); finished audits
    are reused on a rerun with the same parameters, model, judge and personascope version.

    Results accumulate in ``cfg.out``: finished results of *other* audits already in ``OUT/audits`` (made
    on the same model) are kept in results.json, so ``audit bias --out d`` then ``audit leakage --out d``
    gives both. ``fresh``: this run's audits only, none reused (the files on disk are left as they are).
    """
    from .backends.base import capabilities
    from .backends.served import is_url
    from .extras import check_extra
    from .models import BACKEND_EXTRAS, load_model, load_served
    from .reports import write_report

    out = Path(cfg.out)
    audits = cfg.audit_objects()
    base = RunResults.load(cfg.baseline) if cfg.baseline else None  # a bad file fails before any model work
    check_audit_extras(audits)
    served = model is None and is_url(cfg.model)
    system_prompt = None
    if served and cfg.system_prompt_file:
        try:
            system_prompt = Path(cfg.system_prompt_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"Cannot read the system prompt file {cfg.system_prompt_file}: {exc.strerror}; "
                             "give a text file (--system-prompt-file)") from None
    if served and not cfg.served_model:
        raise UsageError(f"{cfg.model} is a served model: name it with --served-model NAME (GET /v1/models)")
    if model is None and not served and cfg.backend in BACKEND_EXTRAS:
        check_extra(BACKEND_EXTRAS[cfg.backend], f"the {cfg.backend} backend")
    (out / "audits").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    started = now_iso()
    if served:
        log(f"auditing {cfg.served_model} served at {cfg.model} ...")
        model = load_served(cfg.model, cfg.served_model, tokenizer=cfg.tokenizer, system_prompt=system_prompt,
                            concurrency=cfg.concurrency,
                            batch_size=cfg.batch_size if isinstance(cfg.batch_size, int) else 16)
    elif model is None:
        log(f"loading {cfg.model} ({cfg.backend}) ...")
        model = load_model(cfg.model, cfg.backend, device=cfg.device, dtype=cfg.dtype, device_map=cfg.device_map,
                           batch_size=cfg.batch_size)
    spec = cfg.judge
    if cfg.batch_size == "auto" and "batch_size" not in spec.model_fields_set:
        spec = spec.model_copy(update={"batch_size": model.batch_size})  # the judge batches like the model
    # A judge on the subject model's likelihoods needs them; the logprob judge reads the full next-token
    # distribution, which only local weights give.
    need = {"contrast": "logprobs", "logprob": "activations"}.get(spec.kind)
    if need and not spec.model and need not in capabilities(model):
        log(f"no model judge: the {spec.kind} judge needs the subject model's log-probs, which {model.info.id} "
            "does not give here (set judge.model to a local alias, or use --judge http)")
        spec = spec.model_copy(update={"kind": "none"})
    judge = make_judge(spec, model, progress=progress)
    config = cfg.model_dump(mode="json")
    run = RunResults(name=cfg.name, model=model.info, profile=cfg.profile, seed=cfg.seed, config=config,
                     config_hash=config_hash(config), started=started)
    gate = None
    bar = run_bar(audits, progress)
    try:
        for i, audit in enumerate(audits, 1):
            bar.set_postfix_str(f"{audit.name} ({i}/{len(audits)})")
            _run_one(audit, run, out, model, judge, cfg, fresh=fresh, progress=progress, log=log,
                     raise_errors=raise_errors)
            bar.update(audit_cost(audit.name))
    finally:
        bar.close()
    if not fresh:
        _keep_earlier(run, out, {a.name for a in audits}, model, log)
    run.finished = now_iso()
    run.wall_time_s = round(time.perf_counter() - t0, 1)
    if cfg.policy:
        from .reports import evaluate, load_policy

        gate = evaluate(run, load_policy(cfg.policy), base, cfg.baseline)
    write_report(run, out, gate, base)
    return run
