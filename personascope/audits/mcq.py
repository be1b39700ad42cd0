"""Asking multiple-choice questions and reading the answers: the prompt text and option matching.

Scoring by log-likelihood ("cloze"): the question is asked without listing the options, the
reply is pre-filled with ``"Answer:"`` and each option text is scored as its continuation (sum of
token log-probabilities); the option with the highest score is the model's choice (`choose`). On
the embedded SmolLM2-135M-Instruct this is the only formulation well above chance: scoring the
option *letter* after a listed-options prompt puts nearly all mass on one letter (26% on the
built-in set, chance 25%), and listing the options before a cloze makes it copy the first one.
`ModelAdapter.option_logprobs` runs each prompt once and reuses its key/value cache for the options (and
the prompts' shared prefix, such as the persona system prompt, once per batch), which gives the
same numbers as `ModelAdapter.logprobs` up to float error at a fraction of the cost.

The questions themselves (`MCQ`, the loaders, sampling) are `personascope.audits.questions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .questions import MCQ

#: The reply pre-fill of the cloze prompt (measured best of "Answer:" / "The answer is" on the
#: embedded model: 76% vs 66% on half of the built-in set without a persona).
ANSWER_PREFIX = "Answer:"


# ------------------------------------------------------------------------------------------ prompts
def user_text(q: MCQ, *, show_options: bool = False) -> str:
    """The user turn: context, question, optionally the options (unlabeled), and a short instruction."""
    parts = [q.context] if q.context else []
    parts.append(f"Question: {q.question}")
    if show_options:
        parts.append("Options: " + "; ".join(q.options) + ".")
    parts.append("Answer briefly.")
    return "\n".join(parts)


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


__all__ = ["ANSWER_PREFIX", "choose", "first_mentioned_option", "user_text"]
