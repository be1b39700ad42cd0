"""Answer formats shared by model judges: the instruction per scale, valid answers, parsing.

Both the log-prob judge (local model) and the HTTP judge ask the same question and accept the
same answers, so their ratings are comparable.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .base import Rubric

# Tokenizers that split numbers into digits (SmolLM2, Llama 2, Gemma) cannot put one token on
# "0".."100"; the judge then asks for a single digit 0-9 and maps it onto 0-100 (d / 9 * 100).
DIGIT_INSTRUCTION = (
    "Reply with a single digit from 0 to 9 only, where 0 means not at all and 9 means completely."
)
INSTRUCTIONS = {
    "0-100": "Reply with a number from 0 to 100 only, where 0 means not at all and 100 means completely.",
    "1-5": "Reply with a single number from 1 to 5 only.",
    "yes-no": "Reply with Yes or No only.",
}


def instruction(rubric: Rubric, *, digits: bool = False) -> str:
    """The answer-format instruction appended to a rubric's prompt."""
    if rubric.scale == "label":
        return f"Reply with one of: {', '.join(rubric.labels)} only."
    if rubric.scale == "0-100" and digits:
        return DIGIT_INSTRUCTION
    return INSTRUCTIONS[rubric.scale]


def options(rubric: Rubric, *, digits: bool = False) -> list[tuple[str, float]]:
    """Valid answer strings and the value each stands for."""
    if rubric.scale == "0-100":
        if digits:
            return [(str(d), d / 9 * 100) for d in range(10)]
        return [(str(v), float(v)) for v in range(101)]
    if rubric.scale == "1-5":
        return [(str(v), float(v)) for v in range(1, 6)]
    if rubric.scale == "yes-no":
        return [("Yes", 1.0), ("No", 0.0)]
    return [(lab, float(i)) for i, lab in enumerate(rubric.labels)]


def expected_value(probs: Sequence[float], values: Sequence[float], scale: str) -> float:
    """Probability-weighted value over valid answers (the argmax index for ``label`` scales)."""
    total = sum(probs)
    if scale == "label":
        return float(max(range(len(probs)), key=lambda i: probs[i]))
    return sum(p * v for p, v in zip(probs, values, strict=True)) / total


def parse_answer(text: str, rubric: Rubric, *, digits: bool = False) -> float | None:
    """Value of a free-text answer, or None when it holds no valid answer."""
    t = text.strip()
    if rubric.scale == "yes-no":
        m = re.match(r"\W*(yes|no)\b", t, re.IGNORECASE)
        return None if m is None else (1.0 if m.group(1).lower() == "yes" else 0.0)
    if rubric.scale == "label":
        for i, lab in enumerate(rubric.labels):
            if re.match(rf"\W*{re.escape(lab)}\b", t, re.IGNORECASE):
                return float(i)
        return None
    m = re.search(r"-?\d+(?:\.\d+)?", t)
    if m is None:
        return None
    v = float(m.group(0))
    if rubric.scale == "0-100":
        if digits:
            return v / 9 * 100 if 0 <= v <= 9 else None
        return v if 0 <= v <= 100 else None
    return v if 1 <= v <= 5 else None
