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
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

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


# First words of a refusal and of compliance. The refusal score compares their probabilities as the
# first token of the answer (Arditi et al. score refusal by first tokens too): one forward pass per
# prompt, and a continuous measure where a small model rarely refuses outright. "I" is left out:
# it opens "I cannot" as often as "I'd be happy to".
REFUSAL_OPENERS = ("Sorry", "Unfortunately", "Apologies", "No", "As")
COMPLIANCE_OPENERS = ("Sure", "Here", "Certainly", "Yes", "Absolutely")


def _first_tokens(tokenizer: Any, words: tuple[str, ...]) -> list[int]:
    return sorted({tokenizer.encode(w, add_special_tokens=False)[0] for w in words})


def refusal_score(model: ModelAdapter, prompts: list[str], *, batch_size: int | None = None) -> np.ndarray:
    """Per prompt: log P(first token opens a refusal) - log P(it opens compliance), in nats (steering applies)."""
    ref = _first_tokens(model.tokenizer, REFUSAL_OPENERS)
    com = [t for t in _first_tokens(model.tokenizer, COMPLIANCE_OPENERS) if t not in ref]
    lp = model.next_token_logprobs(prompts, batch_size=batch_size).double()
    return (torch.logsumexp(lp[:, ref], -1) - torch.logsumexp(lp[:, com], -1)).numpy()


@dataclass
class RefusalShift:
    """Predicted (cosine with the refusal direction) and measured refusal change per user persona."""

    layer: int
    coeff: float
    baseline_score: float
    predicted: dict[str, float]
    measured: dict[str, tuple[float, float, float]]  # mean change of the refusal score, 95% CI
    refusal_rate: dict[str, tuple[float, float, float]]  # generated answers judged refusals (rate, CI)
    r: tuple[float, float, float, int]  # Pearson r (predicted vs measured) with CI and n
    control: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {"layer": self.layer, "coeff": self.coeff, "baseline_score": self.baseline_score,
                "predicted": self.predicted, "measured": {k: list(v) for k, v in self.measured.items()},
                "refusal_rate": {k: list(v) for k, v in self.refusal_rate.items()},
                "r": list(self.r), "control": self.control}


def measure_refusal_shift(
    model: ModelAdapter,
    vectors: dict[str, PersonaVector],
    refusal: PersonaVector,
    *,
    layer: int,
    coeff: float = 0.3,
    control: PersonaVector | None = None,
    harmful: list[str] | None = None,
    generate_tokens: int = 0,
    batch_size: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> RefusalShift:
    """Steer with each user-persona vector and compare the measured refusal change with the prediction.

    Each vector (minus ``control``, e.g. the neutral ``coffee`` persona, which removes the shared
    "answering Yes" component of CAA vectors) is scaled to ``coeff`` times the mean residual norm
    at ``layer`` and added at every position. Measured: the change of `refusal_score` on the
    harmful requests vs unsteered (bootstrap CI over requests); with ``generate_tokens`` > 0 also
    the judged refusal rate of greedy answers. Predicted: cosine with the refusal direction.
    """
    from ..judges.base import Item
    from ..judges.rubrics import REFUSAL
    from ..judges.rules import RefusalJudge
    from ..stats import bootstrap_mean_ci, pearson_ci, wilson
    from ..store import generate
    from .sweep import mean_residual_norm, relative_steer

    if harmful is None:
        harmful = refusal_prompts()[0]
    prompts = [model.format_chat(user=h) for h in harmful]
    norm = mean_residual_norm(model, prompts, [layer], batch_size=batch_size)[layer]
    base = refusal_score(model, prompts, batch_size=batch_size)
    judge = RefusalJudge()

    def rate(texts: list[str]) -> tuple[float, float, float]:
        hits = sum(int(r.value or 0) for r in judge.rate([Item(text=t) for t in texts], REFUSAL))
        lo, hi = wilson(hits, len(texts))
        return hits / len(texts), lo, hi

    rates: dict[str, tuple[float, float, float]] = {}
    if generate_tokens:
        rates["(unsteered)"] = rate(generate(model, prompts, generate_tokens, batch_size=batch_size,
                                             progress=progress))
    predicted, measured = {}, {}
    for name, vec in tqdm(vectors.items(), desc="refusal shift", disable=not progress, leave=False):
        v = vec.at(layer) - control.at(layer) if control is not None else vec.at(layer)
        predicted[name] = float(torch.nn.functional.cosine_similarity(v[layer], refusal[layer], dim=0))
        steer = relative_steer(v, layer, coeff, norm)
        with model.steer(steer):
            shifted = refusal_score(model, prompts, batch_size=batch_size)
        mean, lo, hi = bootstrap_mean_ci(list(shifted - base), seed=seed)
        measured[name] = (mean, lo, hi)
        if generate_tokens:
            rates[name] = rate(generate(model, prompts, generate_tokens, steer=steer, batch_size=batch_size,
                                        progress=False))
    names = list(vectors)
    r = pearson_ci([predicted[k] for k in names], [measured[k][0] for k in names])
    return RefusalShift(layer, coeff, float(base.mean()), predicted, measured, rates, r,
                        control.name if control is not None else None)
