"""Errors that personascope raises for bad input; each message names the fix."""

from __future__ import annotations


class PersonascopeError(Exception):
    """Base class of every error a user can fix; the CLI prints it as one line, exit code 2."""


class ModelNotFoundError(PersonascopeError):
    """The requested model is not available locally; the message says how to get it."""


class UsageError(PersonascopeError, ValueError):
    """An argument is out of range or malformed (bad layer index, unknown point, ...)."""


class DataError(PersonascopeError, ValueError):
    """An input file is empty or malformed; the message names the file and line."""


class MissingExtraError(UsageError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""
