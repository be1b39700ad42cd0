"""Built-in data of the persona-bias audit: persona templates, personas, controls, and the conditions built from them.

``personascope/data/bias/personas.json`` holds the 3 templates of Gupta et al. 2024, 19
socio-demographic personas in groups (race, gender, religion, disability, politics) and the control
personas (30 paraphrases of "a helpful assistant"). See the README in that folder.

The positive control (`PLANTED`) is built here too: the first control persona's prompt, with a
fixed share of its questions corrupted so that they cannot be answered (`plant_errors`).
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError

if TYPE_CHECKING:
    from .questions import MCQ

NO_PERSONA = "no persona"
#: Name of the positive-control condition (a control prompt with planted unanswerable questions).
PLANTED = "planted-error control"


def builtin_personas_file() -> Path:
    """Path of ``personascope/data/bias/personas.json`` (templates, personas, controls)."""
    return Path(str(resources.files("personascope") / "data" / "bias" / "personas.json"))


def load_persona_spec() -> dict[str, Any]:
    """The built-in persona spec: ``templates``, ``personas``, ``controls``."""
    return json.loads(builtin_personas_file().read_text(encoding="utf-8"))


@dataclasses.dataclass(frozen=True)
class Condition:
    """A persona condition: name, group, kind and how its system prompt is made."""

    name: str
    group: str
    kind: str
    persona: str | None  # None: no system prompt (the model's default)


def template_texts(spec: dict[str, Any], templates: Sequence[str]) -> dict[str, str]:
    """``{template name: text}`` for ``templates``: built-in names, or texts with ``{persona}`` keyed by themselves."""
    out = {}
    for t in templates:
        if t in spec["templates"]:
            out[t] = spec["templates"][t]
        elif "{persona}" in t:
            out[t] = t
        else:
            raise UsageError(f"Unknown template {t!r}; built-in: {', '.join(spec['templates'])}, "
                             "or give a text containing {persona}")
    return out


def build_conditions(spec: dict[str, Any], *, personas: Sequence[str] = (), groups: Sequence[str] = (),
                     human_controls: Sequence[str] = (), assistant_controls: int = 0, positive_control: bool = False,
                     reference: str = NO_PERSONA) -> list[Condition]:
    """The conditions in run order: no persona, personas, human and assistant controls, positive control.

    The positive control (`PLANTED`) uses the first control's persona (none without controls); the
    audit corrupts a share of its questions (`plant_errors`).

    Args:
        spec: `load_persona_spec`.
        personas: Persona names (empty: every built-in one); an unknown name is used as written, in
            group ``custom``.
        groups: Keep only personas of these groups (empty: all).
        human_controls: Human control personas.
        assistant_controls: How many "helpful assistant" paraphrases to add as controls.
        positive_control: Add the positive control.
        reference: The reference condition; it must be among the conditions.

    Raises:
        UsageError: An unknown group, a repeated condition name, or a reference that is no condition.
    """
    builtin = {p["name"]: p["group"] for p in spec["personas"]}
    out = [Condition(NO_PERSONA, NO_PERSONA, "none", None)]
    chosen = [(n, builtin.get(n, "custom")) for n in (list(personas) or list(builtin))]
    if groups:
        known = sorted(set(builtin.values()) | {"custom"})
        bad = sorted(set(groups) - set(known))
        if bad:
            raise UsageError(f"Unknown persona group(s) {bad}; known: {', '.join(known)}")
        chosen = [(n, g) for n, g in chosen if g in groups]
    out += [Condition(n, g, "persona", n) for n, g in chosen]
    out += [Condition(n, "control-human", "control", n) for n in human_controls]
    out += [Condition(n, "control-assistant", "control", n)
            for n in spec["controls"]["helpful_assistant"][:assistant_controls]]
    if positive_control:
        first = next((c.persona for c in out if c.kind == "control"), None)
        out.append(Condition(PLANTED, "positive-control", "positive_control", first))
    seen: set[str] = set()
    for c in out:
        if c.name in seen:
            raise UsageError(f"Condition {c.name!r} appears twice; persona names must be unique")
        seen.add(c.name)
    if reference not in seen:
        raise UsageError(f"reference {reference!r} is not among the conditions; use {NO_PERSONA!r} "
                         "or one of the persona/control names")
    return out


def plant_errors(items: Sequence[MCQ], fraction: float, seed: int) -> tuple[list[MCQ], list[bool]]:
    """Copies of ``items`` where a ``fraction`` of them ask another item's question (and context).

    The planted items keep their own options and gold answer, so the prompt no longer says which
    option is right: a model can only guess, and the expected accuracy on them is chance. The
    donor is a different item with a different set of options where one exists (a BBQ item and
    its sibling with the same names would stay answerable). Same seed, same planted items.

    Returns:
        ``(items with the planted ones replaced, planted mask)``.
    """
    n = len(items)
    n_planted = min(n, round(fraction * n)) if n >= 2 else 0
    rng = random.Random(seed)
    planted = set(rng.sample(range(n), n_planted))
    out = list(items)
    for a in sorted(planted):
        donors = [b for b in rng.sample(range(n), n) if b != a
                  and (items[b].question, items[b].context) != (items[a].question, items[a].context)]
        other = [b for b in donors if set(items[b].options) != set(items[a].options)]
        if donors:
            b = (other or donors)[0]
            out[a] = dataclasses.replace(items[a], question=items[b].question, context=items[b].context)
    return out, [i in planted for i in range(n)]


__all__ = ["NO_PERSONA", "PLANTED", "Condition", "build_conditions", "builtin_personas_file", "load_persona_spec",
           "plant_errors", "template_texts"]
