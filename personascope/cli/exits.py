"""Exit codes of the ``personascope`` command and the exception types that map to them."""

from __future__ import annotations

import signal
from enum import IntEnum

from ..errors import DataError, ModelNotFoundError, PersonascopeError, UsageError


class ExitCode(IntEnum):
    """The exit status of a ``personascope`` command.

    Attributes:
        OK: The command did its work (``gate``/``compare``: the verdict is PASS).
        FAIL: The work ran but its verdict is FAIL, or an audit of the run failed.
        USAGE: A bad argument, input file or model the user can fix (argparse uses 2 as well).
        INTERRUPTED: Ctrl-C (128 + SIGINT, as a shell reports it); finished work is cached.
        BROKEN_PIPE: The reader of stdout went away (``personascope models | head -1``); 128 +
            SIGPIPE, what a shell reports for a tool that the closed pipe stopped.
    """

    OK = 0
    FAIL = 1
    USAGE = 2
    INTERRUPTED = 128 + signal.SIGINT
    BROKEN_PIPE = 128 + 13  # SIGPIPE; the signal module has no SIGPIPE on Windows


# Looked up along the exception's MRO, so the most specific entry wins. Every error a user can
# fix is a PersonascopeError; the subclasses are listed to make the table the one place to look.
EXIT_CODES: dict[type[BaseException], ExitCode] = {
    UsageError: ExitCode.USAGE,
    DataError: ExitCode.USAGE,
    ModelNotFoundError: ExitCode.USAGE,
    PersonascopeError: ExitCode.USAGE,
    KeyboardInterrupt: ExitCode.INTERRUPTED,
    BrokenPipeError: ExitCode.BROKEN_PIPE,
}


def exit_code_for(exc: BaseException) -> ExitCode | None:
    """The exit code of a command that raised ``exc``, or None for an unexpected error (a bug: let it raise)."""
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return None


__all__ = ["EXIT_CODES", "ExitCode", "exit_code_for"]
