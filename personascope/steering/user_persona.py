"""User-persona vectors and the refusal direction ("Who's asking?", papers.md §3).

- `user_persona_vector`: contrastive activation addition (CAA) from yes/no questions about the
  user: the mean activation at the answer token when the assistant answers "Yes" minus when it
  answers "No", per layer.
- `refusal_direction`: mean last-prompt-token activation on harmful minus harmless requests
  (Arditi et al. 2024), per layer.
- `predict_refusal_shift`: cosine(user-persona vector, refusal direction) per layer, which the
  paper reports predicts each persona's effect on refusal before any generation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..data import load_named_json
from ..errors import DataError
from ..records import stable_hash
from ..sites import Position
from ..store import collect
from .extract import mean_diff
from .vector import PersonaVector

if TYPE_CHECKING:
    from ..backends.base import ModelAdapter


def _data_dir() -> Path:
    return Path(str(resources.files("personascope") / "data" / "user_personas"))


@dataclass(frozen=True)
class UserPersona:
    """A user persona: yes/no questions about the user that a "Yes" affirms."""

    name: str
    description: str
    polarity: str
    questions: tuple[str, ...]


def builtin_user_personas() -> list[str]:
    """Names of the built-in user personas (the neutral control is ``coffee``)."""
    return sorted(p.stem for p in _data_dir().glob("*.json") if p.stem != "refusal")


def load_user_persona(name_or_path: str | Path) -> UserPersona:
    """A built-in user persona by name, or a JSON file with ``name`` and ``questions``."""
    data, path = load_named_json(name_or_path, _data_dir(), "user persona", builtin_user_personas())
    try:
        return UserPersona(data["name"], data.get("description", ""), data.get("polarity", ""),
                           tuple(data["questions"]))
    except (KeyError, TypeError) as exc:
        raise DataError(f"{path}: missing or bad field {exc}; needs 'name' and 'questions'") from exc


def refusal_prompts() -> tuple[list[str], list[str]]:
    """The built-in mild harmful and matched harmless requests."""
    data = json.loads((_data_dir() / "refusal.json").read_text(encoding="utf-8"))
    return list(data["harmful"]), list(data["harmless"])


def user_persona_vector(
    model: ModelAdapter, persona: UserPersona | str, *, n_questions: int | None = None,
    batch_size: int | None = None, progress: bool = False,
) -> PersonaVector:
    """CAA vector of a user persona: answer-token activation for "Yes" minus "No", all layers."""
    up = load_user_persona(persona) if isinstance(persona, str) else persona
    qs = list(up.questions[:n_questions])
    prompts = [model.format_chat(user=q + " Answer Yes or No.") for q in qs]
    sites = model.sites("all")
    # The answer is a single token in most vocabularies, so response_mean is its activation.
    yes = collect(model, prompts, sites, [Position.RESPONSE_MEAN], responses=["Yes"] * len(qs),
                  batch_size=batch_size, progress=progress, method="caa:yes")[Position.RESPONSE_MEAN]
    no = collect(model, prompts, sites, [Position.RESPONSE_MEAN], responses=["No"] * len(qs),
                 batch_size=batch_size, progress=progress, method="caa:no")[Position.RESPONSE_MEAN]
    v = mean_diff(yes, no, name=f"user:{up.name}")
    v.method = "caa:answer_token"
    v.meta.update({"persona": up.name, "polarity": up.polarity, "questions_hash": stable_hash(qs)[:16]})
    return v


def refusal_direction(
    model: ModelAdapter, harmful: list[str] | None = None, harmless: list[str] | None = None,
    *, batch_size: int | None = None, progress: bool = False,
) -> PersonaVector:
    """Refusal direction: mean last-prompt-token activation, harmful minus harmless, all layers."""
    if harmful is None or harmless is None:
        harmful, harmless = refusal_prompts()
    sites = model.sites("all")
    a = collect(model, [model.format_chat(user=h) for h in harmful], sites, [Position.LAST],
                batch_size=batch_size, progress=progress, method="refusal:harmful")[Position.LAST]
    b = collect(model, [model.format_chat(user=h) for h in harmless], sites, [Position.LAST],
                batch_size=batch_size, progress=progress, method="refusal:harmless")[Position.LAST]
    v = mean_diff(a, b, name="refusal")
    v.method = "mean_diff:last_prompt_token"
    return v


def predict_refusal_shift(persona: PersonaVector, refusal: PersonaVector) -> dict[int, float]:
    """Cosine(user-persona vector, refusal direction) per shared layer.

    Positive: adding the persona vector pushes activations toward refusal (predicted more
    refusals); negative: toward compliance.
    """
    layers = sorted(set(persona.layers) & set(refusal.layers))
    if not layers:
        raise DataError("The persona vector and the refusal direction share no layers")
    return {k: float(torch.nn.functional.cosine_similarity(persona[k], refusal[k], dim=0)) for k in layers}
