"""The flags that several commands share, as argparse parent parsers, and the helpers that read them.

Every command that loads a model takes the same ``--model --backend --device --dtype --batch-size``
and ``--quiet`` flags (and ``--judge ...`` where it judges text), with the same names and defaults.
Every command but ``serve-judge`` takes ``--json``: stdout is then one JSON document (what the
command produced) and every message meant for a person goes to stderr (`say`, `emit`).
``audit`` takes them too, but unset they fall back to the config file's values, so its parents are
built with ``from_config=True``: defaults of None, and help that says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..judges.factory import JUDGE_KINDS, JudgeSpec
from ..models import BACKENDS, DEFAULT_MODEL

if TYPE_CHECKING:
    from ..backends.base import ModelAdapter

Subparsers = argparse._SubParsersAction  # argparse has no public name for the type of add_subparsers()

# The library's defaults (`load_model`, `RunConfig`); tests/test_cli_options.py checks that they agree.
MODEL_DEFAULTS: dict[str, Any] = {"model": DEFAULT_MODEL, "backend": "nnsight", "device": "auto", "dtype": "auto",
                                  "batch_size": "auto"}
# The judge's defaults are `JudgeSpec`'s (a run's judge is the factory's either way).
JUDGE_DEFAULTS: dict[str, Any] = {"judge": JudgeSpec.model_fields["kind"].default, "judge_model": None,
                                  "judge_url": None, "judge_api_key_env": JudgeSpec.model_fields["api_key_env"].default}
VECTOR_HELP = ("a vector: .safetensors from 'vector extract', a persona_vectors .pt (row r -> layer r-1) "
               "or a llama.cpp/repeng control-vector .gguf")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """The help formatter of every command: each option's help ends with its default, where it has one.

    Options without a default to show (None, off switches, empty lists) keep their help as written;
    a help that names its default itself (``%(default)s`` or a "default:" note) is left alone too.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        default = action.default
        if default is None or default is False or default == [] or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def batch_size_arg(text: str) -> int | str:
    """The argparse type of ``--batch-size``: ``auto`` or an integer of at least 1."""
    if text == "auto":
        return "auto"
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc}; give a count of at least 1 or 'auto'") from None


def positive_int(text: str) -> int:
    """The argparse type of counts and sizes: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not at least 1")
    return value


def add_command(sub: Subparsers, name: str, help_text: str, parents: Sequence[argparse.ArgumentParser] = (),
                description: str | None = None) -> argparse.ArgumentParser:
    """The parser of a new subcommand, with the shared help formatter and ``parents``' flags."""
    return sub.add_parser(name, help=help_text, description=description or help_text, parents=list(parents),
                          formatter_class=HelpFormatter)


def _add(p: argparse.ArgumentParser, *flags: str, default: Any, help_text: str, from_config: bool,
         **kw: Any) -> None:
    if from_config:
        shown = default if default is not None else "unset"
        p.add_argument(*flags, default=None, help=f"{help_text} (default: the config's, else {shown})", **kw)
    else:
        p.add_argument(*flags, default=default, help=help_text, **kw)


def _add_runtime(p: argparse.ArgumentParser, from_config: bool) -> None:
    d = MODEL_DEFAULTS
    _add(p, "--backend", default=d["backend"], choices=BACKENDS, from_config=from_config,
         help_text="activation backend")
    _add(p, "--device", default=d["device"], from_config=from_config,
         help_text="auto (a GPU when one is visible), cpu, cuda, cuda:1, ...")
    _add(p, "--dtype", default=d["dtype"], from_config=from_config,
         help_text="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16")
    _add(p, "--batch-size", default=d["batch_size"], type=batch_size_arg, metavar="N|auto", from_config=from_config,
         help_text="prompts per forward pass (auto: from free GPU memory, 16 on CPU)")
    _add(p, "--device-map", default=None, from_config=from_config, metavar="MAP",
         help_text="'auto' spreads a large model over every visible GPU (accelerate); --device is then ignored")


def out_option(default: str | None = None, *, what: str, required: bool = False,
               from_config: bool = False) -> argparse.ArgumentParser:
    """The parent parser of ``--out DIR``: the output folder (``what`` says what goes in it)."""
    p = argparse.ArgumentParser(add_help=False)
    if from_config:
        _add(p, "--out", default=default, help_text=f"output folder: {what}", from_config=True, metavar="DIR")
    else:
        p.add_argument("--out", default=default, required=required, metavar="DIR", help=f"output folder: {what}")
    return p


def check_out_dir(out: str | Path, flag: str = "--out") -> Path:
    """The output folder ``out``, checked to be creatable and writable before any model loads.

    Raises:
        UsageError: ``out`` is a file, lies under a file, or its nearest existing folder is not
            writable (found now, not after minutes of model work).
    """
    path = Path(out)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "is a file" if existing == path else f"is under the file {existing}"
        raise UsageError(f"{flag} {out}: {where}; give a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {out}: cannot write in {existing} (permission denied); give a writable folder")
    return path


@dataclass(frozen=True)
class SharedOptions:
    """The parent parsers that give commands the same flags with the same names and defaults.

    Attributes:
        runtime: ``--backend --device --dtype --batch-size``: how a model is loaded and batched.
        model: ``--model`` and the flags of ``runtime``.
        quiet: ``--quiet``: no progress bars (model loading included).
        judge: ``--judge --judge-model --judge-url --judge-api-key-env``: the judge of generated text.
        json: ``--json``: stdout is one JSON document; messages go to stderr.
        from_config: The defaults are None (``audit``: unset flags keep the config's values).
    """

    runtime: argparse.ArgumentParser
    model: argparse.ArgumentParser
    quiet: argparse.ArgumentParser
    judge: argparse.ArgumentParser
    json: argparse.ArgumentParser
    from_config: bool = False

    @classmethod
    def build(cls, *, from_config: bool = False) -> SharedOptions:
        """The shared parents; ``from_config`` gives them None defaults for config-driven commands."""
        runtime = argparse.ArgumentParser(add_help=False)
        _add_runtime(runtime, from_config)
        model = argparse.ArgumentParser(add_help=False)
        _add(model, "--model", default=MODEL_DEFAULTS["model"], from_config=from_config,
             help_text="alias, Hugging Face id, local folder or .gguf file")
        _add_runtime(model, from_config)
        quiet = argparse.ArgumentParser(add_help=False)
        quiet.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        j = JUDGE_DEFAULTS
        judge = argparse.ArgumentParser(add_help=False)
        _add(judge, "--judge", default=j["judge"], choices=JUDGE_KINDS, from_config=from_config,
             help_text="judge of generated text: the subject model's likelihoods (contrast), its answers to "
                       "rubric questions (logprob), an OpenAI-compatible server (http) or none (rules only)")
        _add(judge, "--judge-model", default=j["judge_model"], metavar="MODEL", from_config=from_config,
             help_text="judge model: a local alias or path (unset: the subject model), or the http server's "
                       "model name")
        _add(judge, "--judge-url", default=j["judge_url"], metavar="URL", from_config=from_config,
             help_text="for --judge http: the server's base URL, e.g. http://127.0.0.1:8000/v1")
        _add(judge, "--judge-api-key-env", default=j["judge_api_key_env"], metavar="VAR", from_config=from_config,
             help_text="for --judge http: the environment variable holding the API key")
        return cls(runtime=runtime, model=model, quiet=quiet, judge=judge, json=json_option(),
                   from_config=from_config)


def json_option() -> argparse.ArgumentParser:
    """The parent parser of ``--json``, the same on every command."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--json", action="store_true",
                   help="print one JSON document on stdout (what the command produced); messages go to stderr")
    return p


def say(args: argparse.Namespace, text: str = "") -> None:
    """Print a message for a person: on stdout, or on stderr under ``--json`` (stdout is the JSON then)."""
    print(text, file=sys.stderr if getattr(args, "json", False) else sys.stdout)


def emit(args: argparse.Namespace, data: Any) -> None:
    """Print ``data`` as the command's JSON document on stdout, if ``--json`` was given."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=1, default=str))


@contextmanager
def quiet_loading(quiet: bool) -> Iterator[None]:
    """Silence every progress bar while the block runs, if ``quiet``: ours, transformers' and any library's.

    ``transformers`` (loading weights) has its own switch; every other tqdm bar (a library's, or
    one a caller forgot to disable) honours ``TQDM_DISABLE``, which tqdm reads per bar.
    """
    if not quiet:
        yield
        return
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    saved = os.environ.get("TQDM_DISABLE")
    hf_logging.disable_progress_bar()
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        # tests call main() in one process: leave the global settings as they were
        if saved is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = saved
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_model(args: argparse.Namespace, spec: str | None = None) -> ModelAdapter:
    """The model that the shared model flags of ``args`` describe (``spec`` instead of ``--model``, if given)."""
    from ..models import load_model as load

    with quiet_loading(getattr(args, "quiet", False)):
        model = load(spec or args.model, backend=args.backend, device=args.device, dtype=args.dtype,
                     device_map=getattr(args, "device_map", None), batch_size=args.batch_size)
    if args.batch_size == "auto":
        args.batch_size = model.batch_size  # the command's own batches follow the size chosen for the model
    return model


def judge_spec(args: argparse.Namespace) -> JudgeSpec:
    """The `JudgeSpec` that the shared judge flags of ``args`` describe (batches as large as the model's)."""
    # "auto" leaves the judge's batch unset: a run gives it the subject model's resolved size.
    batch = {"batch_size": args.batch_size} if isinstance(args.batch_size, int) else {}
    return JudgeSpec(kind=args.judge, model=args.judge_model, base_url=args.judge_url,
                     api_key_env=args.judge_api_key_env, **batch)


def judge_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The judge flags of ``args`` that were given, as fields of the config's ``judge`` table."""
    given = {"kind": args.judge, "model": args.judge_model, "base_url": args.judge_url,
             "api_key_env": args.judge_api_key_env}
    return {k: v for k, v in given.items() if v is not None}


__all__ = ["JUDGE_DEFAULTS", "MODEL_DEFAULTS", "VECTOR_HELP", "HelpFormatter", "SharedOptions", "Subparsers",
           "add_command", "check_out_dir", "emit", "json_option", "judge_overrides", "judge_spec", "load_model",
           "out_option", "positive_int", "quiet_loading", "say"]
