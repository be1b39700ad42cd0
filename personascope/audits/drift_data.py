"""Built-in data of the out-of-character drift audit: Big-Five personas, task prompts, conversation scripts.

The files live in ``personascope/data/drift/``: ``bigfive.json`` (per trait: a description, the
high / low / neutral persona prompts, the judge's contrast pair, questionnaire items and anchor
sentences), ``tasks.json`` (essay and post prompts, the questionnaire template, the persona-vector
questions) and ``conversations.json`` (the neutral, off-topic and adversarial user turns).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..data import read_json_object
from ..errors import DataError, UsageError
from .drift_metrics import LEVELS

if TYPE_CHECKING:
    from ..judges.base import Rubric

TASKS = ("questionnaire", "essay", "post")
SCRIPTS = ("pressure", "neutral")  # positive control, negative control


def data_dir() -> Path:
    """Folder of the audit's built-in data (personas, tasks, conversation scripts)."""
    return Path(str(resources.files("personascope") / "data" / "drift"))


def _read(name: str) -> dict[str, Any]:
    return read_json_object(data_dir() / name, "the drift audit's data file")


def load_data() -> dict[str, Any]:
    """The built-in Big-Five personas, tasks and conversation scripts, checked."""
    data = {"bigfive": _read("bigfive.json"), "tasks": _read("tasks.json"),
            "conversations": _read("conversations.json")}
    for trait, spec in data["bigfive"].get("traits", {}).items():
        for key in ("description", "personas", "judge", "questionnaire", "anchors"):
            if key not in spec:
                raise DataError(f"drift data bigfive.json: trait {trait!r} lacks {key!r}")
    return data


@dataclass(frozen=True)
class Persona:
    """A persona to audit: a system prompt scored on one Big-Five trait at a target level."""

    name: str
    system: str
    trait: str
    level: str


def build_personas(data: dict[str, Any], traits: Sequence[str], levels: Sequence[str],
                   custom: Sequence[Any] = ()) -> list[Persona]:
    """Built-in personas (every trait x level), then the ``custom`` ones, checked.

    Args:
        data: `load_data`.
        traits: Built-in traits to use.
        levels: Levels of each built-in trait.
        custom: Extra personas, each ``[name, system prompt, trait, level]`` or a dict with those keys
            (``description`` is accepted for ``system``).

    Raises:
        UsageError: An unknown trait or level, a malformed custom persona, no persona, or a repeated name.
    """
    known = data["bigfive"]["traits"]
    unknown = [t for t in traits if t not in known]
    if unknown:
        raise UsageError(f"Unknown traits {unknown}; built-in: {', '.join(known)}")
    out = [Persona(f"{t}-{lv}", known[t]["personas"][lv], t, lv) for t in traits for lv in levels]
    for i, spec in enumerate(custom):
        if isinstance(spec, Mapping):
            fields = [spec.get(k) for k in ("name", "system", "trait", "level")]
            if fields[1] is None:
                fields[1] = spec.get("description")
        elif isinstance(spec, Sequence) and not isinstance(spec, str) and len(spec) == 4:
            fields = list(spec)
        else:
            fields = []
        if len(fields) != 4 or not all(isinstance(f, str) and f.strip() for f in fields):
            raise UsageError(f"custom_personas[{i}] must be [name, system prompt, trait, level] or a dict "
                             f"with keys name, system, trait, level; got {spec!r}")
        name, system, trait, level = (str(f) for f in fields)
        if trait not in known:
            raise UsageError(f"custom persona {name!r}: unknown trait {trait!r}; use one of {', '.join(known)}")
        if level not in LEVELS:
            raise UsageError(f"custom persona {name!r}: level must be one of {', '.join(LEVELS)}")
        out.append(Persona(name, system, trait, level))
    names = [p.name for p in out]
    if not out:
        raise UsageError("No personas: give traits (built-in personas) or custom_personas")
    if len(set(names)) != len(names):
        raise UsageError(f"Persona names must be unique; got {names}")
    return out


def task_prompts(data: dict[str, Any], trait: str, task: str, n: int) -> list[str]:
    """The first ``n`` prompts of ``task`` (questionnaire: the items of ``trait`` in the template)."""
    tasks = data["tasks"]
    if task == "questionnaire":
        items = data["bigfive"]["traits"][trait]["questionnaire"]
        prompts = [tasks["questionnaire_template"].format(item=it) for it in items]
    else:
        prompts = list(tasks["tasks"][task])
    if n > len(prompts):
        raise UsageError(f"n_prompts={n} but task {task!r} has {len(prompts)} prompts "
                         f"(for trait {trait}); lower n_prompts")
    return prompts[:n]


def trait_rubric(data: dict[str, Any], trait: str) -> Rubric:
    """The 1-5 rubric of ``trait`` (rubric question for model judges, contrast pair for `ContrastJudge`)."""
    from ..judges.rubrics import TRAIT_1_5

    spec = data["bigfive"]["traits"][trait]
    return TRAIT_1_5.model_copy(update={
        "name": f"bigfive:{trait}",
        "contrast": (spec["judge"]["high"], spec["judge"]["low"]),
        "description": f"How strongly a sentence shows {spec['description']}, 1-5.",
    })


def conversation_scripts(data: dict[str, Any], turns: int) -> dict[str, list[str]]:
    """The user turns of each script: ``pressure`` (neutral, off-topic, then "drop the act") and ``neutral``.

    The pressure script gives a third of the turns each to off-topic and adversarial phases, the
    rest (first) to neutral ones.

    Raises:
        UsageError: A script has fewer than ``turns`` turns.
    """
    phases = data["conversations"]["phases"]
    n_off = n_adv = turns // 3
    n_neu = turns - n_off - n_adv
    scripts = {"pressure": phases["neutral"][:n_neu] + phases["off_topic"][:n_off] + phases["adversarial"][:n_adv],
               "neutral": phases["neutral"][:turns]}
    for name, user in scripts.items():
        if len(user) < turns:
            raise UsageError(f"turns={turns} is more than the {name!r} script provides ({len(user)}); lower turns")
    return scripts


__all__ = ["SCRIPTS", "TASKS", "Persona", "build_personas", "conversation_scripts", "data_dir", "load_data",
           "task_prompts", "trait_rubric"]
