"""Release comparison: how a candidate model (e.g. a fine-tune) moved along persona vectors of its base.

The Persona Vectors paper measures a fine-tune by the *finetuning shift*: the mean activation of the
fine-tuned model minus that of the base model, at the last prompt token of a fixed prompt set,
projected on the base model's persona vector; the shift predicts the change of trait expression
(r up to 0.97). `activation_shift` measures it per layer with a paired bootstrap CI over prompts and
puts it on two scales a user can read without knowing the model:

- ``frac``: the shift as a fraction of the *persona gap*, the projection difference the base model
  shows between the trait's positive and negative system prompts (1.0 = the fine-tune moved as far
  as telling the base model "You are a/an {trait} assistant").
- ``z``: the shift against random directions: a random unit direction u gives
  ``E[(m . u)^2] = |m|^2 / d`` for the mean shift m, so ``z = shift / (|m| / sqrt(d))`` says whether
  the fine-tune moved *along this trait* more than along an arbitrary direction.

`load_sft_samples` reads chat fine-tuning data (``messages`` ending with the assistant turn, or
prompt/response fields) for `flag_dataset`'s projection-difference ranking before training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataError, UsageError
from ..records import finite
from ..sites import Position
from ..stats import auroc, bootstrap_columns
from ..store import collect
from .vector import PersonaVector

if TYPE_CHECKING:
    from ..backends.base import ModelAdapter


def check_compatible(base: ModelAdapter, candidate: ModelAdapter) -> None:
    """Raise `UsageError` unless the two models share depth, width and vocabulary (one architecture)."""
    problems = []
    for what, a, b in (("layers", base.n_layers, candidate.n_layers), ("d_model", base.d_model, candidate.d_model),
                       ("vocabulary size", len(base.tokenizer), len(candidate.tokenizer))):
        if a != b:
            problems.append(f"{what} {a} vs {b}")
    if problems:
        raise UsageError(f"Base {base.info.short} and candidate {candidate.info.short} do not share an architecture "
                         f"({'; '.join(problems)}); compare a fine-tune with the model it was trained from")


@dataclass
class TraitShift:
    """Per-layer finetuning shift along one persona vector (unit direction), with scales and CIs."""

    trait: str
    layers: list[int]
    shift: np.ndarray  # mean over prompts of (candidate - base) . v_hat, per layer
    lo: np.ndarray
    hi: np.ndarray
    gap: np.ndarray  # persona gap of the base model per layer (nan when not measured)
    gap_d: np.ndarray  # persona gap / pooled sd of the projections (how well the layer separates)
    shift_norm: np.ndarray  # |mean (candidate - base)| per layer
    d_model: int
    n_prompts: int

    def at(self, layer: int) -> dict[str, float]:
        """Every number of one layer: shift with CI, fraction of the persona gap with CI, z vs random."""
        j = self.layers.index(layer)
        gap = float(self.gap[j])
        frac = (lambda v: float(v / gap)) if math.isfinite(gap) and abs(gap) > 1e-9 else (lambda v: math.nan)
        sd_random = float(self.shift_norm[j]) / math.sqrt(self.d_model)
        return {"layer": layer, "shift": float(self.shift[j]), "lo": float(self.lo[j]), "hi": float(self.hi[j]),
                "gap": gap, "gap_d": float(self.gap_d[j]), "frac": frac(self.shift[j]), "frac_lo": frac(self.lo[j]),
                "frac_hi": frac(self.hi[j]),
                "z": float(self.shift[j]) / sd_random if sd_random > 0 else 0.0,
                "shift_norm": float(self.shift_norm[j])}

    def best_layer(self, n_layers: int | None = None) -> int:
        """The reported layer: see `choose_layer`."""
        return choose_layer(self.layers, self.gap, self.gap_d, n_layers)


def choose_layer(layers: Sequence[int], gap: np.ndarray, gap_d: np.ndarray, n_layers: int | None = None,
                 min_gap_share: float = 0.25) -> int:
    """The layer where a persona vector best separates the base model's positive and negative prompts.

    Among layers whose persona gap is at least ``min_gap_share`` of the largest gap, the one with the
    largest effect size (gap / pooled sd). Layers with a tiny gap are left out because a shift
    divided by a near-zero gap is unstable (on SmolLM2-135M the early layers have gaps of ~0.1
    against ~10 later, yet the largest effect size); the last block is left out because its output
    feeds the unembedding directly. Falls back to two thirds of the depth when nothing qualifies.
    """
    layers = list(layers)
    last = (n_layers if n_layers is not None else max(layers) + 1) - 1
    g = np.asarray(gap, dtype=float)
    d = np.asarray(gap_d, dtype=float)
    ok = np.isfinite(g) & np.isfinite(d) & (np.array(layers) != last)
    if ok.any() and np.nanmax(np.where(ok, g, np.nan)) > 0:
        ok &= g >= min_gap_share * np.nanmax(np.where(ok, g, np.nan))
    if not ok.any():
        return layers[len(layers) * 2 // 3]
    return layers[int(np.argmax(np.where(ok, d, -np.inf)))]


def last_token_acts(model: ModelAdapter, prompts: Sequence[str], *, batch_size: int | None = None,
                    progress: bool = False) -> np.ndarray:
    """Last-prompt-token activations at every layer, ``[n, n_layers, d]`` (one pass per batch, cached)."""
    acts = collect(model, list(prompts), model.sites("all"), [Position.LAST], batch_size=batch_size,
                   progress=progress)[Position.LAST]
    return acts.acts.numpy().astype(np.float64)


def persona_gap(model: ModelAdapter, vector: PersonaVector, pos_prompts: Sequence[str], neg_prompts: Sequence[str],
                *, batch_size: int | None = None, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per layer of ``vector``: mean projection under positive minus negative prompts, and that gap / pooled sd."""
    pa = last_token_acts(model, pos_prompts, batch_size=batch_size, progress=progress)
    na = last_token_acts(model, neg_prompts, batch_size=batch_size, progress=progress)
    gap, gd = [], []
    for layer in vector.layers:
        u = vector.unit()[layer].numpy().astype(np.float64)
        p, n = pa[:, layer] @ u, na[:, layer] @ u
        g = float(p.mean() - n.mean())
        sd = math.sqrt((p.var(ddof=1) + n.var(ddof=1)) / 2) if len(p) > 1 and len(n) > 1 else math.nan
        gap.append(g)
        gd.append(g / sd if sd and math.isfinite(sd) and sd > 0 else math.nan)
    return np.array(gap), np.array(gd)


def activation_shift(
    base_acts: np.ndarray,
    cand_acts: np.ndarray,
    vector: PersonaVector,
    *,
    gap: tuple[np.ndarray, np.ndarray] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> TraitShift:
    """The finetuning shift along ``vector`` from paired last-token activations ``[n, n_layers, d]``.

    Args:
        base_acts: Base-model activations of the prompt set.
        cand_acts: Candidate-model activations of the same prompts (same order).
        vector: A persona vector of the base model; each layer's direction is used as a unit vector.
        gap: `persona_gap` of the base model (for the ``frac`` scale and the layer choice).
        n_boot: Bootstrap resamples over prompts (paired: each prompt's difference is resampled).
        seed: Bootstrap seed.
    """
    if base_acts.shape != cand_acts.shape:
        raise UsageError(f"Activation shapes differ: base {base_acts.shape} vs candidate {cand_acts.shape}")
    diff = cand_acts - base_acts
    layers = vector.layers
    unit = vector.unit()
    proj = np.stack([diff[:, k] @ unit[k].numpy().astype(np.float64) for k in layers], axis=1)  # [n, L]
    mean, lo, hi = bootstrap_columns(proj, n_boot=n_boot, seed=seed)  # one resample of prompts for every layer
    norms = np.array([float(np.linalg.norm(diff[:, k].mean(axis=0))) for k in layers])
    g, gd = gap if gap is not None else (np.full(len(layers), np.nan), np.full(len(layers), np.nan))
    return TraitShift(vector.name, layers, mean, lo, hi, np.asarray(g), np.asarray(gd), norms, diff.shape[-1],
                      diff.shape[0])


def projections(acts: np.ndarray, vector: PersonaVector, layer: int) -> np.ndarray:
    """Projections of activations ``[n, n_layers, d]`` at ``layer`` on the vector's unit direction there, ``[n]``."""
    return acts[:, layer] @ vector.unit()[layer].numpy().astype(np.float64)


def frac_ci(shift: np.ndarray, pos: np.ndarray, neg: np.ndarray, *, n_boot: int = 2000, seed: int = 0,
            alpha: float = 0.05) -> tuple[float, float, float]:
    """The shift as a fraction of the persona gap, with a bootstrap CI that includes the gap's own uncertainty.

    Args:
        shift: Per-prompt projected shifts (candidate minus base) at one layer.
        pos: Per-prompt projections of the base model under the trait's positive system prompts at
            that layer (the gap is ``mean(pos) - mean(neg)``).
        neg: The same under the negative system prompts.
        n_boot: Resamples; prompts of the shift set, positive and negative sets are resampled independently.
        seed: Bootstrap seed.
        alpha: 1 - coverage.
    """
    from ..stats import rng

    shift, pos, neg = (np.asarray(x, dtype=float) for x in (shift, pos, neg))
    gap = float(pos.mean() - neg.mean()) if pos.size and neg.size else math.nan
    if not shift.size or not math.isfinite(gap) or abs(gap) < 1e-12:
        return math.nan, math.nan, math.nan
    gen = rng(seed, "frac_ci")
    s = shift[gen.integers(0, shift.size, (n_boot, shift.size))].mean(1)
    g = (pos[gen.integers(0, pos.size, (n_boot, pos.size))].mean(1)
         - neg[gen.integers(0, neg.size, (n_boot, neg.size))].mean(1))
    # A resample whose gap crosses zero has no meaningful ratio; it counts as an unbounded fraction.
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(g * gap > 0, s / np.where(g == 0, np.nan, g), np.sign(s) * np.inf)
    ratio = np.where(s == 0, 0.0, ratio)  # no shift is no shift, whatever the gap's resample
    lo, hi = np.quantile(ratio, [alpha / 2, 1 - alpha / 2])
    return float(shift.mean() / gap), float(lo), float(hi)


def random_direction_null(diff: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Mean projected shift along ``k`` random unit directions (isotropic), ``[k]``; ``diff`` is ``[n, d]``."""
    from ..stats import rng

    u = rng(seed, "shift_null").standard_normal((k, diff.shape[-1]))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return u @ diff.mean(axis=0)


@dataclass
class SFTSample:
    """One supervised fine-tuning sample: the chat before the answer, the answer, and the raw record."""

    messages: list[dict[str, str]]
    response: str
    record: dict[str, Any]


def load_sft_samples(path: str | Path) -> list[SFTSample]:
    """Fine-tuning samples from a JSONL/JSON/parquet/``save_to_disk`` file.

    Each record is either ``{"messages": [..., {"role": "assistant", "content": ...}]}`` (the last
    message is the answer) or has a prompt (``prompt``/``user``/``text``, optional ``system``) and a
    ``response`` (or ``completion``) string.

    Raises:
        DataError: A record fits neither form; the message names the file, the record and the field.
    """
    from ..data import read_records

    out = []
    for i, rec in enumerate(read_records(path), 1):
        where = f"{path}: record {i}"
        if "messages" in rec:
            msgs = rec["messages"]
            if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) for m in msgs):
                raise DataError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
            if msgs[-1].get("role") != "assistant":
                raise DataError(f"{where}: the last message must have role 'assistant' (the answer to train on)")
            before = [{"role": str(m.get("role")), "content": str(m.get("content", ""))} for m in msgs[:-1]]
            out.append(SFTSample(before, str(msgs[-1].get("content", "")), rec))
            continue
        prompt = next((rec[k] for k in ("prompt", "user", "text") if isinstance(rec.get(k), str)), None)
        response = next((rec[k] for k in ("response", "completion") if isinstance(rec.get(k), str)), None)
        if prompt is None or response is None:
            missing = "'prompt' (or 'user'/'text')" if prompt is None else "'response' (or 'completion')"
            raise DataError(f"{where}: missing field {missing}; use 'messages' ending with the assistant turn, or "
                            "prompt + response strings")
        msgs = ([{"role": "system", "content": str(rec["system"])}] if rec.get("system") else []) + [
            {"role": "user", "content": prompt}]
        out.append(SFTSample(msgs, response, rec))
    return out


def flag_training_data(
    model: ModelAdapter,
    path: str | Path,
    trait: Any,
    *,
    vector: PersonaVector | None = None,
    layer: int | None = None,
    judge: Any = None,
    n_questions: int = 5,
    n_instructions: int = 2,
    max_new_tokens: int = 48,
    batch_size: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Rank fine-tuning samples by projection difference on a trait vector of ``model``, before training.

    The vector is extracted on ``model`` (cached) unless given; the layer defaults to the one where
    the vector best separates the trait's positive and negative prompts (`persona_gap`). When every
    record carries a ``trait`` string and there are several, the AUROC for ``trait == vector name`` is
    reported too.

    Returns:
        ``{"trait", "layer", "dataset_score", "auroc", "ranked": [{index, score, label, user, response}]}``.
    """
    from .monitor import flag_dataset
    from .traits import extract_persona_vector, load_trait

    spec = load_trait(trait) if isinstance(trait, str | Path) else trait
    samples = load_sft_samples(path)
    if vector is None:
        vector = extract_persona_vector(model, spec, judge=judge, n_questions=n_questions,
                                        n_instructions=n_instructions, max_new_tokens=max_new_tokens,
                                        batch_size=batch_size, progress=progress).vector
    if layer is None:
        qs = list(spec.evaluation_questions or spec.extraction_questions)[:8]
        pos = [model.format_chat(user=q, system=p) for p, _ in spec.instructions for q in qs]
        neg = [model.format_chat(user=q, system=n) for _, n in spec.instructions for q in qs]
        gap, gap_d = persona_gap(model, vector, pos, neg, batch_size=batch_size, progress=progress)
        layer = choose_layer(vector.layers, gap, gap_d, model.n_layers)
    prompts = [model.format_chat(s.messages) for s in samples]
    fr = flag_dataset(model, prompts, [s.response for s in samples], vector, layer, max_new_tokens=max_new_tokens,
                      batch_size=batch_size, progress=progress)
    labels = [s.record.get("trait") for s in samples]
    score = math.nan
    if all(isinstance(x, str) for x in labels) and len(set(labels)) > 1:
        score = auroc(fr.scores, [x == vector.name for x in labels])
    ranked = []
    for i, s in fr.top(len(samples)):
        user = next((m["content"] for m in reversed(samples[i].messages) if m["role"] == "user"), "")
        ranked.append({"index": i, "score": s, "label": labels[i], "user": user, "response": samples[i].response,
                       "own_response": fr.own_responses[i]})
    return {"trait": vector.name, "layer": layer, "dataset_score": fr.dataset_score,
            "auroc": finite(score), "n": len(samples), "ranked": ranked}


__all__ = ["SFTSample", "TraitShift", "activation_shift", "check_compatible", "choose_layer",
           "flag_training_data", "last_token_acts", "load_sft_samples", "persona_gap"]
