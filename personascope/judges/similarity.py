"""Similarity judge: does the text say (roughly) the target? TF-IDF over character n-grams.

Dependency-free semantic matching (scikit-learn only): cosine similarity between the target and
the closest window of the text (windows of about the target's length in words), over character
3-5-grams, which tolerates inflection, spacing and small rewordings. It is a fallback for
paraphrase matching, not a substitute for a model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from .base import Item, Judge, JudgeIdentity, Rating, Rubric

_WORD = re.compile(r"\S+")


def _windows(text: str, n_words: int) -> list[str]:
    """Word windows of length ``n_words`` .. ``n_words + 2`` (the whole text if shorter)."""
    words = _WORD.findall(text)
    if len(words) <= n_words:
        return [text]
    out: list[str] = []
    for size in range(max(1, n_words), n_words + 3):
        out.extend(" ".join(words[i : i + size]) for i in range(0, len(words) - size + 1))
    return out


class SimilarityJudge(Judge):
    """Value = max cosine similarity (0..1) between ``item.target`` and a window of the text.

    Args:
        ngram_range: Character n-gram sizes.
    """

    cacheable = False

    @property
    def check_sets(self) -> dict[str, Rubric]:
        """Shipped judge-check sets this judge applies to."""
        from .rubrics import LEAK

        return {"leak": LEAK}

    def __init__(self, ngram_range: tuple[int, int] = (3, 5)) -> None:
        self.ngram_range = ngram_range

    @property
    def identity(self) -> JudgeIdentity:
        """Judge identity."""
        return JudgeIdentity(kind="tfidf", name=f"char{self.ngram_range[0]}-{self.ngram_range[1]}")

    def _rate(self, items: Sequence[Item], rubric: Rubric) -> list[Rating]:
        ident = self.identity
        targets = [it.target or "" for it in items]
        sentences = [_windows(it.text, len(_WORD.findall(t))) for it, t in zip(items, targets, strict=True)]
        corpus = targets + [s for group in sentences for s in group]
        vec = TfidfVectorizer(analyzer="char_wb", ngram_range=self.ngram_range, sublinear_tf=True)
        mat = vec.fit_transform(corpus)
        out = []
        offset = len(items)
        for i, group in enumerate(sentences):
            if not targets[i]:
                out.append(Rating(value=None, valid=False, rubric=rubric.name, judge=ident, error="no target value"))
                offset += len(group)
                continue
            sims = (mat[offset : offset + len(group)] @ mat[i].T).toarray().ravel()
            best = int(np.argmax(sims))
            value = float(sims[best]) * (100.0 if rubric.scale == "0-100" else 1.0)
            out.append(Rating(value=value, valid=True, rubric=rubric.name, judge=ident, raw=group[best][:200]))
            offset += len(group)
        return out
