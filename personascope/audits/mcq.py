"""Asking multiple-choice questions and reading the answers: prompts, option scoring and option matching.

`score_choices` scores every option of every question after a chat prompt and returns the chosen
option and the per-option scores. The scorings (``SCORINGS``):

- ``hidden_mean`` (the default, `DEFAULT_SCORING`): the options are not listed; the reply is
  pre-filled with ``"Answer:"`` and each option text is scored as its continuation by the *mean*
  log-probability per option token, so a long option ("Can't be determined") does not lose merely
  for having more tokens.
- ``shown_mean``: the same with the options listed in the user turn (tells the model what it may
  answer). Measured on the embedded model (2026-12-02, 48 built-in questions, chance 0.25):
  hidden_mean 0.73 (Wilson 0.59..0.83), hidden_sum 0.73, shown_mean 0.44 (0.31..0.58), shown_sum
  0.44, letter 0.25: listing the options costs a 135M model 29 points, so it is not the default.
  On 60 BBQ items every scoring is below chance (0.17-0.18, chance 0.33; "unknown" chosen for 0-3%
  of ambiguous items): the BBQ part has no power on this model and its power control says so.
- ``letter``: the options are listed with letters and the letter is scored (one token each).
- ``hidden_sum``: the historical cloze scoring (options not shown, sum of token log-probabilities).
  It penalises long options: on 120 BBQ items the embedded model picked "Can't be determined" for
  1.7% of the ambiguous items (whose right answer it is), so the BBQ ambiguous bias score read as bias.
- ``shown_sum``: options listed, summed log-probabilities.

`ModelAdapter.option_logprobs` runs each prompt once and reuses its key/value cache for the
options (and the prompts' shared prefix, such as the persona system prompt, once per batch).
The per-token mean divides that sum by the option's token count, tokenized exactly as the
adapter tokenizes a continuation (`personascope.chat.encode`).

The questions themselves (`MCQ`, the loaders, sampling) are `personascope.audits.questions`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UsageError

if TYPE_CHECKING:
    from .questions import MCQ

#: The reply pre-fill of the cloze prompt (measured best of "Answer:" / "The answer is" on the
#: embedded model: 76% vs 66% on half of the built-in set without a persona, options hidden).
ANSWER_PREFIX = "Answer:"

SCORINGS = ("hidden_mean", "shown_mean", "letter", "hidden_sum", "shown_sum")
#: The scoring the audits use unless told otherwise. ``letter`` is not the default: on the embedded
#: model it was at chance on the built-in set (0.26, n = 250; it puts nearly all mass on one letter).
DEFAULT_SCORING = "hidden_mean"

_LETTERS = "ABCDEFGHIJ"

# Texts of an "I cannot tell" option (BBQ's unknown answers and common MMLU-style variants), compared
# after lower-casing and dropping punctuation.
_UNKNOWN_TEXTS = frozenset({
    "unknown", "cant be determined", "cannot be determined", "can not be determined", "undetermined",
    "not enough info", "not enough information", "cant answer", "cannot answer", "can not answer",
    "not answerable", "not known", "cant tell", "cannot tell", "not determinable", "unanswerable",
    "i dont know",
})


# ------------------------------------------------------------------------------------------ prompts
def user_text(q: MCQ, *, show_options: bool = False, lettered: bool = False) -> str:
    """The user turn: context, question, optionally the options, and a short instruction.

    Args:
        q: The question.
        show_options: List the options (unlabeled, ``"Options: a; b; c."``).
        lettered: List the options with letters, one per line, and ask for the letter (implies shown).
    """
    parts = [q.context] if q.context else []
    parts.append(f"Question: {q.question}")
    if lettered:
        parts += [f"{_LETTERS[k]}. {o}" for k, o in enumerate(q.options)]
        parts.append("Answer with the letter of the correct option.")
        return "\n".join(parts)
    if show_options:
        parts.append("Options: " + "; ".join(q.options) + ".")
    parts.append("Answer briefly.")
    return "\n".join(parts)


def unknown_option(q: MCQ) -> int | None:
    """Index of the question's "unknown" / "can't be determined" option (BBQ metadata first), or None."""
    if "unknown" in q.meta and q.meta["unknown"] is not None:
        return int(q.meta["unknown"])
    for k, o in enumerate(q.options):
        if re.sub(r"[^a-z ]", "", o.lower()).strip() in _UNKNOWN_TEXTS:
            return k
    return None


def scoring_inputs(model: Any, items: Sequence[MCQ], systems: Sequence[str | None], *,
                   scoring: str = DEFAULT_SCORING, prefix: str = ANSWER_PREFIX) -> tuple[list[str], list[list[str]]]:
    """Prompts and option continuations of ``scoring`` for ``items`` with one system prompt per item."""
    if scoring not in SCORINGS:
        raise UsageError(f"Unknown scoring {scoring!r}; allowed: {', '.join(SCORINGS)}")
    if len(systems) != len(items):
        raise UsageError(f"{len(items)} questions but {len(systems)} system prompts")
    lettered = scoring == "letter"
    shown = scoring.startswith("shown") or lettered
    prompts = [model.format_chat(user=user_text(q, show_options=shown, lettered=lettered), system=s) + prefix
               for q, s in zip(items, systems, strict=True)]
    if lettered:
        options = [[" " + _LETTERS[k] for k in range(len(q.options))] for q in items]
    else:
        options = [[" " + o for o in q.options] for q in items]
    return prompts, options


def option_token_counts(tokenizer: Any, options: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """Token count of each option continuation, tokenized as the adapters tokenize a continuation."""
    from ..chat import encode

    cache: dict[str, int] = {}
    out = []
    for opts in options:
        for o in opts:
            if o not in cache:
                cache[o] = max(1, len(encode(tokenizer, o, is_continuation=True)))
        out.append(np.array([cache[o] for o in opts], dtype=float))
    return out


def score_choices(model: Any, items: Sequence[MCQ], *, system: str | None | Sequence[str | None] = None,
                  scoring: str = DEFAULT_SCORING, prefix: str = ANSWER_PREFIX,
                  batch_size: int | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Each question's chosen option and per-option scores under ``scoring`` (see the module docstring).

    Args:
        model: A `ModelAdapter` (or the caching adapter around one).
        items: The questions.
        system: One system prompt for all questions, or one per question (None: the model's default).
        scoring: One of ``SCORINGS``.
        prefix: The reply pre-fill the options are scored after.
        batch_size: Prompts per forward pass (default: the adapter's).

    Returns:
        ``(chosen, scores)``: ``chosen[i]`` is the index of the best-scoring option of question
        ``i`` (ties: the first), ``scores[i]`` its options' scores (sum or per-token mean of the
        log-probabilities; higher is better).
    """
    one: Any = system  # one system prompt (or None) for every question
    systems: list[str | None] = list(system) if isinstance(system, (list, tuple)) else [one] * len(items)
    prompts, options = scoring_inputs(model, items, systems, scoring=scoring, prefix=prefix)
    if not prompts:
        return np.zeros(0, dtype=np.int64), []
    scores = [np.asarray(s, dtype=float) for s in model.option_logprobs(prompts, options, batch_size=batch_size)]
    if scoring.endswith("_mean"):
        scores = [s / n for s, n in zip(scores, option_token_counts(model.tokenizer, options), strict=True)]
    return choose(scores), scores


_NUMBER_WORDS = {w: str(k) for k, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}


def _words(text: str) -> list[str]:
    from ..judges.rules import normalize

    # Number words and digits compare equal ("8 legs" answers the option "eight").
    return [_NUMBER_WORDS.get(w, w) for w in normalize(text, accents=True).split()]


def first_mentioned_option(text: str, options: Sequence[str]) -> int | None:
    """The option whose text (whole words, normalized, number words = digits) occurs first in ``text``.

    A fallback for free replies that name several options ("green, but other colours like red
    ..."): the first one named is taken as the answer. At equal positions the longer option wins
    ("ice cream" over "ice"); None when no option occurs or two equally long ones tie.
    """
    words = _words(text)
    best: tuple[int, int, int] | None = None  # (start, -length, option index)
    tie = False
    for k, opt in enumerate(options):
        ow = _words(opt)
        if not ow:
            continue
        for i in range(len(words) - len(ow) + 1):
            if words[i : i + len(ow)] == ow:
                cand = (i, -len(ow), k)
                if best is None or cand[:2] < best[:2]:
                    best, tie = cand, False
                elif cand[:2] == best[:2] and cand[2] != best[2]:
                    tie = True
                break
    return None if best is None or tie else best[2]


def choose(scores: Sequence[np.ndarray]) -> np.ndarray:
    """Index of the best-scoring option per question (ties: the first)."""
    return np.array([int(np.argmax(s)) for s in scores], dtype=np.int64)


__all__ = ["ANSWER_PREFIX", "DEFAULT_SCORING", "SCORINGS", "choose", "first_mentioned_option",
           "option_token_counts", "score_choices", "scoring_inputs", "unknown_option", "user_text"]
