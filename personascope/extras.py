"""The optional parts of personascope (pip extras) and the one-line error when one is missing.

``pip install personascope`` brings what every audit needs (torch, transformers, nnsight); the
extras bring what only some features use. A feature imports its optional package inside
`requires`, which turns a missing package of that extra into a `MissingExtraError` (exit 2 on the
command line) naming the ``pip install`` that fixes it, and leaves every other import error alone.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import MissingExtraError

#: extra -> the top-level modules it provides (what an ``import`` inside `requires` may miss).
EXTRAS: dict[str, tuple[str, ...]] = {
    "tl": ("transformer_lens",),
    "pii": ("presidio_analyzer", "spacy", "tldextract"),
    "datasets": ("datasets",),
    "notebook": ("ipykernel", "ipywidgets"),
}


def install_hint(extra: str) -> str:
    """The pip command that installs ``extra``."""
    return f"pip install 'personascope[{extra}]'"


@contextmanager
def requires(extra: str, feature: str) -> Iterator[None]:
    """Import the optional packages of ``extra`` inside this block; a missing one is a `MissingExtraError`.

    Args:
        extra: A key of `EXTRAS`.
        feature: What needs it, for the message (e.g. ``"the transformer_lens backend"``).

    Raises:
        MissingExtraError: A module of ``extra`` is not installed; the message names the pip command.
    """
    if extra not in EXTRAS:
        raise KeyError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")
    try:
        yield
    except ModuleNotFoundError as exc:
        # Only a module this extra provides: a broken install of something else is not "install the extra".
        root = (exc.name or "").split(".")[0]
        if root not in EXTRAS[extra]:
            raise
        raise MissingExtraError(f"{feature} needs {root}, which is not installed: {install_hint(extra)}") from exc


def missing(extra: str) -> str | None:
    """The first module of ``extra`` that is not installed (found without importing it), or None."""
    for module in EXTRAS[extra]:
        if importlib.util.find_spec(module) is None:
            return module
    return None


def check_extra(extra: str, feature: str) -> None:
    """Raise `MissingExtraError` now, before any model work, when ``extra`` is not installed.

    Raises:
        MissingExtraError: A module of ``extra`` is missing; the message names the pip command.
    """
    module = missing(extra)
    if module is not None:
        raise MissingExtraError(f"{feature} needs {module}, which is not installed: {install_hint(extra)}")


__all__ = ["EXTRAS", "check_extra", "install_hint", "missing", "requires"]
