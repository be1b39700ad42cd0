"""Similarity judge: does the text say (roughly) the target? TF-IDF over character n-grams.

Dependency-free semantic matching (scikit-learn only): cosine similarity between the target and
the closest sentence of the text, over character 3-5-grams, which tolerates inflection, spacing
and small rewordings. It is a fallback for paraphrase matching, not a substitute for a model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from .base import Item, Judge, JudgeIdentity, Rating, Rubric

_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\n+")


class SimilarityJudge(Judge):
    """Value = max cosine similarity (0..1) between ``item.target`` and a sentence of the text.

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
        sentences = [[s for s in _SENTENCE.split(it.text) if s.strip()] or [it.text] for it in items]
        targets = [it.target or "" for it in items]
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
