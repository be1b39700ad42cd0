"""``personascope list audits|params AUDIT|traits|personas|user-personas|policies|models|organisms``.

What a user would otherwise learn from error messages: every audit with its one-line purpose, every
parameter of an audit with its default, quick-profile value and meaning, and the built-in traits,
persona sets, user personas, gate policies, model aliases and model organisms. ``--json`` prints
the same rows as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
from typing import Any

from ..errors import UsageError
from .exits import ExitCode
from .options import SharedOptions, Subparsers, add_command

KINDS = ("audits", "params", "traits", "personas", "user-personas", "policies", "models", "organisms")


def register(sub: Subparsers, shared: SharedOptions) -> None:
    """Add the ``list`` command to ``sub``."""
    p = add_command(sub, "list", "list audits, an audit's parameters, traits, personas, policies, models, organisms",
                    description="List what personascope ships: audits (with one line each), the parameters of one "
                                "audit (default, quick-profile value, meaning), built-in traits, persona statement "
                                "sets, user personas, gate policies, model aliases and model organisms.",
                    parents=[shared.json])
    p.add_argument("what", choices=KINDS, help="what to list")
    p.add_argument("name", nargs="?", help="the audit whose parameters to list (with 'params')")
    p.set_defaults(handler=run_list)


def attribute_docs(cls: type) -> dict[str, str]:
    """``{attribute: text}`` from the ``Attributes:`` sections of ``cls``'s and its bases' docstrings.

    A subclass's text wins over its base's (an audit documents its own fields; ``seed`` is the base's).
    """
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if "__doc__" in vars(klass) and klass.__doc__:
            out.update(_own_attribute_docs(inspect.cleandoc(klass.__doc__)))
    return out


def _own_attribute_docs(doc: str) -> dict[str, str]:
    """``{attribute: text}`` of one docstring's ``Attributes:`` section (continuation lines joined)."""
    out: dict[str, str] = {}
    inside, current = False, ""
    for line in doc.splitlines():
        if line.strip() == "Attributes:":
            inside = True
            continue
        if not inside:
            continue
        if line and not line.startswith(" "):
            break  # the next section
        m = re.match(r"^ {4}(\w+)(?: \([^)]*\))?: (.*)$", line)
        if m:
            current = m.group(1)
            out[current] = m.group(2).strip()
        elif current and line.strip():
            out[current] += " " + line.strip()
    return out


def _audits() -> list[dict[str, Any]]:
    from ..audits import get_audit
    from ..catalog import CATALOG

    rows = []
    for e in CATALOG:
        cls = get_audit(e.name)
        rows.append({"name": e.name, "short": list(e.short), "default": e.default, "kind": cls.kind,
                     "title": cls.title})
    return rows


def _params(name: str | None) -> list[dict[str, Any]]:
    from ..audits import get_audit
    from ..catalog import canonical

    if not name:
        raise UsageError("'personascope list params' needs an audit: e.g. 'personascope list params bias' "
                         "(see 'personascope list audits')")
    cls = get_audit(canonical(name))
    docs = attribute_docs(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        quick = cls.QUICK.get(f.name, default)
        rows.append({"name": f.name, "default": _plain(default), "quick": _plain(quick),
                     "description": docs.get(f.name, "")})
    return rows


def _plain(value: Any) -> Any:
    """JSON-friendly value (tuples as lists)."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _traits() -> list[dict[str, Any]]:
    from ..steering.traits import builtin_traits, load_trait

    return [{"name": t, "description": load_trait(t).description} for t in builtin_traits()]


def _personas() -> list[dict[str, Any]]:
    from ..data import builtin_personas_dir, read_jsonl

    rows = []
    for p in sorted(builtin_personas_dir().glob("*.jsonl")):
        rows.append({"name": p.stem, "statements": len(read_jsonl(p))})
    return rows


def _user_personas() -> list[dict[str, Any]]:
    from ..steering.user_persona import builtin_user_personas, load_user_persona

    rows = []
    for n in builtin_user_personas():
        up = load_user_persona(n)
        rows.append({"name": n, "polarity": up.polarity, "description": up.description})
    return rows


def _policies() -> list[dict[str, Any]]:
    from ..reports.gate import builtin_policies, load_policy

    rows = []
    for n in builtin_policies():
        pol = load_policy(n)
        rows.append({"name": n, "rules": len(pol.rule), "description": pol.policy.description})
    return rows


def _models() -> list[dict[str, Any]]:
    from ..models import model_status

    return [{"name": r["alias"], "installed": r["installed"], "optional": r["optional"],
             "description": r["description"]} for r in model_status()]


def _organisms() -> list[dict[str, Any]]:
    from ..organisms import describe

    return [{"audit": r["audit"], "kind": r["kind"], "strengths": r["strengths"], "unit": r["unit"],
             **({"sets": r["sets"]} if "sets" in r else {}), "defect": r["defect"]} for r in describe()]


def run_list(args: argparse.Namespace) -> int:
    """``personascope list WHAT [NAME]``: one line per row (or ``--json``)."""
    if args.name and args.what != "params":
        raise UsageError(f"'personascope list {args.what}' takes no name; only 'list params AUDIT' does")
    rows = {"audits": _audits, "traits": _traits, "personas": _personas, "user-personas": _user_personas,
            "policies": _policies, "models": _models, "organisms": _organisms}.get(args.what)
    data = _params(args.name) if args.what == "params" else rows()  # type: ignore[misc]
    if args.json:
        print(json.dumps(data, indent=1))
        return ExitCode.OK
    for r in data:
        print(_line(args.what, r))
    return ExitCode.OK


def _line(what: str, r: dict[str, Any]) -> str:
    if what == "audits":
        short = f" ({', '.join(r['short'])})" if r["short"] else ""
        extra = "" if r["default"] else " [not in the default run]"
        return f"{r['name']}{short}: {r['kind']}{extra}\n    {r['title']}"
    if what == "params":
        quick = f", quick {json.dumps(r['quick'])}" if r["quick"] != r["default"] else ""
        return f"{r['name']} = {json.dumps(r['default'])}{quick}\n    {r['description']}"
    if what == "personas":
        return f"{r['name']}: {r['statements']} statements"
    if what == "policies":
        return f"{r['name']}: {r['rules']} rules\n    {r['description']}"
    if what == "models":
        state = "installed" if r["installed"] else "not installed"
        return f"{r['name']}: {state}{' [optional]' if r['optional'] else ''}\n    {r['description']}"
    if what == "organisms":
        sets = f" ({', '.join(r['sets'])})" if r.get("sets") else ""
        grid = ", ".join(f"{s:g}" for s in r["strengths"])
        return f"{r['audit']} {r['kind']}{sets}: strengths {grid} ({r['unit']})\n    {r['defect']}"
    tag = f" [{r['polarity']}]" if r.get("polarity") else ""
    return f"{r['name']}{tag}\n    {r['description']}"


__all__ = ["KINDS", "attribute_docs", "register", "run_list"]
