"""personascope: audit how open language models represent and act out personas.

Heavy dependencies (torch, transformers, nnsight, transformer_lens) load lazily on first use, so
``import personascope`` is fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.3.0"

_LAZY = {
    "load_model": "personascope.models",
    "DEFAULT_MODEL": "personascope.models",
    "ALIASES": "personascope.models",
    "Site": "personascope.sites",
    "Point": "personascope.sites",
    "Position": "personascope.sites",
    "ModelInfo": "personascope.records",
    "Provenance": "personascope.records",
    "ActivationSet": "personascope.store",
    "collect": "personascope.store",
    "activations": "personascope.store",
    "Steer": "personascope.backends.base",
    "ModelAdapter": "personascope.backends.base",
    "format_chat": "personascope.chat",
    "PersonascopeError": "personascope.errors",
    "ModelNotFoundError": "personascope.errors",
    "UsageError": "personascope.errors",
    "DataError": "personascope.errors",
}

__all__ = sorted([*_LAZY, "__version__", "register_display"])

if TYPE_CHECKING:
    from .backends.base import ModelAdapter, Steer
    from .chat import format_chat
    from .errors import DataError, ModelNotFoundError, PersonascopeError, UsageError
    from .models import ALIASES, DEFAULT_MODEL, load_model
    from .records import ModelInfo, Provenance
    from .sites import Point, Position, Site
    from .store import ActivationSet, activations, collect


#: Records shown as HTML in Jupyter: (module, class) -> the `personascope.reports` function that renders them.
_HTML_DISPLAY = {
    ("personascope.results", "AuditResult"): "render_audit_fragment",
    ("personascope.results", "RunResults"): "render_run_fragment",
}


def register_display(shell: Any = None) -> bool:
    """Show personascope's records as HTML in IPython/Jupyter (done on import when a kernel runs).

    The records stay free of rendering code (`personascope.reports` renders them and imports
    nothing back): the hook is registered by class name, so nothing is imported until a record is
    displayed. Returns whether a shell was found.
    """
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return False
        shell = get_ipython()
    if shell is None:
        return False
    html = shell.display_formatter.formatters["text/html"]
    for (module, cls), fn in _HTML_DISPLAY.items():
        html.for_type_by_name(module, cls, _renderer(fn))
    return True


def _renderer(name: str) -> Any:
    def render(obj: Any) -> str:
        return getattr(importlib.import_module("personascope.reports"), name)(obj)

    return render


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'personascope' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


# Only when IPython is already imported (a kernel or shell runs): a plain script pays nothing.
if "IPython" in __import__("sys").modules:
    register_display()
