"""Layer/coefficient sweep: steer each layer at several strengths, rate trait and coherence, pick a layer.

Coefficients are relative to the mean residual-stream norm at the steered layer: ``coeff=0.5``
adds a vector half as long as a typical residual there, so one coefficient means the same push at
every layer and on every model (raw coefficients do not transfer: residual norms grow with depth).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import UsageError
from ..sites import Position, Site
from ..stats import bootstrap_mean_ci, finite
from ..store import collect, generate
from .traits import TraitSpec, load_trait
from .vector import PersonaVector

if TYPE_CHECKING:
    from ..backends.base import ModelAdapter, Steer
    from ..judges.base import Judge


def mean_residual_norm(model: ModelAdapter, prompts: Sequence[str], layers: Sequence[int],
                       *, batch_size: int | None = None) -> dict[int, float]:
    """Mean L2 norm of the residual (block output) over prompt tokens, per layer.

    The first token is left out: its residual is an attention sink whose norm is many times
    that of any other token and would dominate the mean.
    """
    sets = collect(model, list(prompts), model.sites(list(layers)), [Position.ALL], batch_size=batch_size,
                   progress=False, method="residual_norm")[Position.ALL]
    keep = torch.as_tensor(sets.row_token > 0)
    norms = sets.acts[keep].norm(dim=-1)  # [rows, n_layers]
    return {k: float(norms[:, j].mean()) for j, k in enumerate(layers)}


def relative_steer(vector: PersonaVector, layer: int, coeff: float, norm: float, positions: str = "all") -> Steer:
    """A `Steer` adding ``coeff * norm`` along the unit direction of ``vector`` at ``layer``."""
    from ..backends.base import Steer

    v = vector[layer]
    return Steer(Site(layer), v / v.norm().clamp_min(1e-12), coeff * norm, positions)


def fluency(model: ModelAdapter, prompts: Sequence[str], responses: Sequence[str],
            *, batch_size: int | None = None) -> np.ndarray:
    """Mean log-probability per token of each response under the (unsteered) model, in nats.

    A coherence proxy that needs no judge: steering too hard produces text the model itself finds
    unlikely. Empty responses get NaN.
    """
    idx = [i for i, r in enumerate(responses) if r.strip()]
    out = np.full(len(responses), np.nan)
    if idx:
        out[idx] = model.logprobs([prompts[i] for i in idx], [responses[i] for i in idx], reduce="mean",
                                  batch_size=batch_size)
    return out


def split_questions(spec: TraitSpec, n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Two disjoint question sets of up to ``n`` each: one to choose a layer on, one to report on.

    Drawn from the trait's evaluation questions (shuffled by ``seed``); extraction questions fill in
    only when there are fewer than ``2 n`` evaluation questions (then the report says so).
    """
    from ..stats import rng

    pool = list(dict.fromkeys(spec.evaluation_questions))
    order = rng(seed, "split_questions", spec.name).permutation(len(pool))
    pool = [pool[i] for i in order]
    extra = [q for q in dict.fromkeys(spec.extraction_questions) if q not in pool]
    pool += extra
    return pool[:n], pool[n: 2 * n]


def judged_trait(model: ModelAdapter, spec: TraitSpec, questions: Sequence[str], judge: Judge, *,
                 steer: Steer | None = None, max_new_tokens: int = 40, batch_size: int | None = None
                 ) -> tuple[np.ndarray, list[str]]:
    """Greedy answers to ``questions`` (steered when ``steer`` is given) and their judged trait (NaN = invalid)."""
    from ..judges.base import Item
    from ..judges.rubrics import TRAIT

    prompts = [model.format_chat(user=q) for q in questions]
    texts = generate(model, prompts, max_new_tokens, steer=steer, batch_size=batch_size, progress=False)
    rated = judge.rate([Item(text=t, question=q, target=spec.description) for t, q in zip(texts, questions,
                                                                                          strict=True)], TRAIT)
    return np.array([r.value if r.valid and r.value is not None else math.nan for r in rated], dtype=float), texts


def random_unit_directions(d: int, k: int, seed: int) -> torch.Tensor:
    """``k`` random unit directions in ``d`` dimensions (isotropic, seeded), ``[k, d]`` float32."""
    from ..stats import rng

    g = torch.from_numpy(rng(seed, "random_directions").standard_normal((k, d))).float()
    return g / g.norm(dim=1, keepdim=True)


@dataclass
class SweepResult:
    """Trait and coherence per (layer, coefficient), with bootstrap CIs and the chosen layer.

    Arrays are ``[n_layers, n_coeffs]``; ``coeffs`` include 0 (unsteered) so each curve has its baseline.
    """

    trait: str
    layers: list[int]
    coeffs: list[float]
    trait_mean: np.ndarray
    trait_lo: np.ndarray
    trait_hi: np.ndarray
    coherence_mean: np.ndarray
    coherence_lo: np.ndarray
    coherence_hi: np.ndarray
    coherence_kind: str
    norms: dict[int, float]
    chosen_layer: int | None
    judge: dict[str, Any] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    #: Every judged generation: layer, coeff, index, question, response, trait (None when invalid).
    samples: list[dict[str, Any]] = field(default_factory=list)

    def effect(self, layer: int) -> float:
        """Trait score at the largest positive coefficient minus unsteered (coefficient 0).

        Not "+c minus -c": pushing hard against a trait makes small models incoherent, and judges
        tend to rate incoherent text as somewhat trait-like, which would hide a real effect.
        """
        j = self.layers.index(layer)
        return float(self.trait_mean[j, -1] - self.trait_mean[j, self.coeffs.index(0.0)])

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        def arr(a: np.ndarray) -> list[list[float | None]]:
            return [[finite(v, 4) for v in row] for row in a]
        return {"trait": self.trait, "layers": self.layers, "coeffs": self.coeffs,
                "trait_mean": arr(self.trait_mean), "trait_lo": arr(self.trait_lo), "trait_hi": arr(self.trait_hi),
                "coherence_mean": arr(self.coherence_mean), "coherence_lo": arr(self.coherence_lo),
                "coherence_hi": arr(self.coherence_hi), "coherence_kind": self.coherence_kind,
                "norms": {str(k): v for k, v in self.norms.items()}, "chosen_layer": self.chosen_layer,
                "effects": {str(k): self.effect(k) for k in self.layers}, "judge": self.judge}

    def plots(self) -> list[Any]:
        """Trait and coherence curves against the coefficient, one line per layer (report `Plot` data)."""
        from ..results import Plot, Series

        def series(mean: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> list[Series]:
            def clean(v: np.ndarray) -> list[float | None]:
                return [finite(x) for x in v]
            return [Series(label=f"layer {k}", x=list(self.coeffs), y=clean(mean[j]), lo=clean(lo[j]),
                           hi=clean(hi[j])) for j, k in enumerate(self.layers)]
        return [
            Plot(title=f"{self.trait}: trait score vs steering coefficient", x_label="coefficient (x residual norm)",
                 y_label="trait score (0-100)", series=series(self.trait_mean, self.trait_lo, self.trait_hi)),
            Plot(title=f"{self.trait}: coherence vs steering coefficient", x_label="coefficient (x residual norm)",
                 y_label=self.coherence_kind, series=series(self.coherence_mean, self.coherence_lo, self.coherence_hi)),
        ]


def sweep(
    model: ModelAdapter,
    vector: PersonaVector,
    trait: TraitSpec | str,
    *,
    judge: Judge,
    layers: Sequence[int] | None = None,
    coeffs: Sequence[float] = (-0.4, -0.2, 0.0, 0.2, 0.4),
    n_questions: int = 8,
    questions: Sequence[str] | None = None,
    max_new_tokens: int = 40,
    max_fluency_drop: float = 1.0,
    positions: str = "all",
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = True,
) -> SweepResult:
    """Steer at each layer and coefficient, rate the answers to the trait's evaluation questions.

    Args:
        model: Subject model.
        vector: Persona vector with directions at ``layers``.
        trait: The trait spec (its evaluation questions and description are used).
        judge: Rates trait expression 0-100 (e.g. `ContrastJudge` on a small model). When it can also
            rate coherence, that is used; otherwise coherence is `fluency` (nats/token).
        layers: Layers to sweep (default: 5 evenly spaced over the middle of the model).
        coeffs: Strengths relative to the mean residual norm; 0 is added if missing.
        n_questions: Evaluation questions to use (extraction questions fill in if there are few).
        questions: The questions to sweep on (overrides ``n_questions``): the selection split of
            `split_questions`, so that the chosen layer is reported on questions it was not chosen on.
        max_new_tokens: Response length.
        max_fluency_drop: The chosen layer is the one with the largest trait effect among those
            whose coherence at the largest coefficient stays within this drop from baseline
            (nats/token for fluency; x10 points for a 0-100 coherence judge).
        positions: Steered positions (``all``, ``prompt``, ``response``).
        seed: Recorded; decoding is greedy.
        batch_size: Prompts per batch.
        progress: Show a progress bar.
    """
    from ..judges.base import Item
    from ..judges.rubrics import COHERENCE, TRAIT

    spec = load_trait(trait) if isinstance(trait, str) else trait
    n = model.n_layers
    layers = list(layers) if layers is not None else sorted({round(n * f) for f in (0.3, 0.4, 0.5, 0.6, 0.7)})
    missing = [k for k in layers if k not in vector.directions]
    if missing:
        raise UsageError(f"The vector has no direction at layers {missing}; it has {vector.layers}")
    coeffs = sorted(set(float(c) for c in coeffs) | {0.0})
    questions = (list(questions) if questions is not None
                 else list((spec.evaluation_questions + spec.extraction_questions)[:n_questions]))
    if not questions:
        raise UsageError(f"Trait {spec.name!r} has no questions to sweep on")
    prompts = [model.format_chat(user=q) for q in questions]
    norms = mean_residual_norm(model, prompts, layers, batch_size=batch_size)
    shape = (len(layers), len(coeffs))
    t_m, t_l, t_h, c_m, c_l, c_h = (np.full(shape, np.nan) for _ in range(6))
    kind, examples = "", []
    samples: list[dict[str, Any]] = []
    base_texts: list[str] | None = None
    total = len(layers) * len(coeffs)
    with tqdm(total=total, desc=f"sweep {spec.name}", disable=not progress, leave=False) as bar:
        for j, k in enumerate(layers):
            for c_i, c in enumerate(coeffs):
                if c == 0.0 and base_texts is not None:
                    texts = base_texts
                else:
                    steer = relative_steer(vector, k, c, norms[k], positions) if c else None
                    texts = generate(model, prompts, max_new_tokens, steer=steer, batch_size=batch_size,
                                     progress=False)
                    if c == 0.0:
                        base_texts = texts
                items = [Item(text=t, question=q, target=spec.description)
                         for t, q in zip(texts, questions, strict=True)]
                tr = judge.rate(items, TRAIT)
                t_m[j, c_i], t_l[j, c_i], t_h[j, c_i] = bootstrap_mean_ci(
                    [r.value if r.valid and r.value is not None else math.nan for r in tr], seed=seed)
                co = judge.rate(items, COHERENCE)
                if all(r.valid for r in co):
                    kind = "coherence (judge, 0-100)"
                    vals = [float(r.value) for r in co if r.value is not None]
                else:
                    kind = "fluency (nats/token under the unsteered model)"
                    vals = list(fluency(model, prompts, texts, batch_size=batch_size))
                c_m[j, c_i], c_l[j, c_i], c_h[j, c_i] = bootstrap_mean_ci(vals, seed=seed)
                samples += [{"layer": k, "coeff": c, "index": i, "question": q, "response": t,
                             "trait": r.value if r.valid else None}
                            for i, (q, t, r) in enumerate(zip(questions, texts, tr, strict=True))]
                if c_i in (0, len(coeffs) - 1):
                    examples.append({"layer": k, "coeff": c, "question": questions[0], "response": texts[0],
                                     "trait": tr[0].value})
                bar.update(1)
    drop = max_fluency_drop * (10.0 if kind.startswith("coherence") else 1.0)
    ok = [j for j in range(len(layers)) if not c_m[j, -1] < c_m[j, coeffs.index(0.0)] - drop]
    effects = t_m[:, -1] - t_m[:, coeffs.index(0.0)]
    chosen = layers[max(ok, key=lambda j: effects[j])] if ok else None
    return SweepResult(spec.name, layers, coeffs, t_m, t_l, t_h, c_m, c_l, c_h, kind, norms, chosen,
                       judge.identity.model_dump(mode="json"), examples, samples)
