"""The ``personascope`` command line: `build_parser` and `main`; the commands live in one module per group.

- `models` — ``models``, ``capture``;
- `probes` — ``localize``;
- `vector` — ``vector extract|steer|monitor|flag``, ``flag``;
- `axis` — ``axis fit|monitor|cap`` (the assistant axis);
- `judges` — ``judge-check``, ``serve-judge``;
- `audit` — ``audit``, ``compare``, ``demo``;
- `reports` — ``report``, ``gate``;
- `cachecmd` — ``cache info|clear``;
- `listing` — ``list audits|params AUDIT|traits|personas|user-personas|policies|models|organisms``;
- `options` — the shared flags (parent parsers) and the helpers that read them;
- `exits` — `ExitCode` and the exception types that map to each code.

Heavy imports (torch, transformers) happen inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__
from . import audit, axis, cachecmd, judges, listing, models, probes, reports, vector
from .exits import EXIT_CODES, ExitCode, exit_code_for
from .options import HelpFormatter, SharedOptions, quiet_loading


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``personascope`` and every subcommand (each sets ``handler`` in its namespace)."""
    parser = argparse.ArgumentParser(
        prog="personascope",
        description="Audit how open language models represent and act out personas.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"personascope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    shared = SharedOptions.build()
    models.register(sub, shared)
    probes.register(sub, shared)
    vector.register(sub, shared)
    axis.register(sub, shared)
    judges.register(sub, shared)
    audit.register(sub, shared, SharedOptions.build(from_config=True))
    reports.register(sub, shared)
    listing.register(sub, shared)
    cachecmd.register(sub, shared)
    return parser


def _detach_stdout() -> None:
    """Point stdout at the null device, so that the interpreter's last flush cannot fail on a closed pipe.

    The recipe of the Python docs (signal module, "Note on SIGPIPE"). A stdout without a file
    descriptor (pytest's capture) has nothing to flush at exit, so it is left alone.
    """
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _report(exc: BaseException) -> None:
    """Say on stderr, in one line, why the command stopped (nothing for a closed stdout)."""
    if isinstance(exc, BrokenPipeError):
        _detach_stdout()
    elif isinstance(exc, KeyboardInterrupt):
        print("personascope: interrupted; finished chunks are cached, rerun to resume", file=sys.stderr)
    else:
        print(f"personascope: error: {exc}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``personascope`` command: runs one subcommand and returns its `ExitCode`.

    Exceptions map to exit codes by type (`personascope.cli.exits.EXIT_CODES`): errors the user can
    fix are one line on stderr and `ExitCode.USAGE`; Ctrl-C is `ExitCode.INTERRUPTED`; a reader
    that closed stdout (``| head``) ends the command quietly. Any other exception is a bug and raises.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return ExitCode.USAGE
    try:
        # --quiet silences every progress bar of the command, libraries' included (model loading, ...).
        with quiet_loading(getattr(args, "quiet", False)):
            code = handler(args)
        sys.stdout.flush()  # a closed pipe fails here, inside the handler below, not at interpreter exit
        return code
    except BaseException as exc:
        code = exit_code_for(exc)
        if code is None:
            raise
        _report(exc)
        return code


__all__ = ["EXIT_CODES", "ExitCode", "build_parser", "main"]
