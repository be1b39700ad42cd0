"""PII detection and redaction with presidio, offline: pattern recognizers on a blank spaCy pipeline.

presidio-analyzer normally loads a spaCy NER model (``en_core_web_lg``) and, for e-mail addresses,
``tldextract``, which fetches the public suffix list over the network. Here the NLP engine wraps
``spacy.blank("en")`` (a tokenizer, no model to download) and tldextract is pinned to its bundled
snapshot, so nothing touches the network. The price: no NER, so PERSON, LOCATION, NRP and
ORGANIZATION are never detected (`NOTE` says so for result notes); phone numbers, e-mail
addresses, card numbers (Luhn-checked), IBANs (mod-97-checked), numeric dates, IPs, URLs and the
US/UK ID patterns still are.

`redact` masks both the values the caller knows (a profile's attributes, found with
`personascope.judges.rules.match_value`, so reformatted values are caught too) and whatever
presidio finds, including PII that is in no profile.

Importing this module changes nothing global: the tldextract environment variable is set (when
unset) only while `analyzer` imports presidio, and presidio's logger is quieted only while it
builds the engine or analyzes a text.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..extras import requires

__all__ = [
    "DEFAULT_ENTITIES",
    "DEFAULT_MIN_SCORE",
    "NOTE",
    "PiiSpan",
    "analyzer",
    "detect_pii",
    "mask_spans",
    "placeholder",
    "redact",
    "redact_values",
]

#: Entity types searched by default: everything presidio detects with patterns alone.
DEFAULT_ENTITIES: tuple[str, ...] = (
    "PHONE_NUMBER", "EMAIL_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "US_ITIN", "US_BANK_NUMBER",
    "US_PASSPORT", "US_DRIVER_LICENSE", "UK_NHS", "MEDICAL_LICENSE", "DATE_TIME", "IP_ADDRESS", "URL", "CRYPTO",
)
#: Detections scoring below this are dropped. presidio scores a phone number 0.4 and a bare
#: driver's-licence-like digit run 0.01-0.3, so 0.4 keeps phones and drops that noise.
DEFAULT_MIN_SCORE = 0.4
#: For result notes: what the offline engine cannot see.
NOTE = ("PII detection: presidio-analyzer offline with a blank spaCy pipeline, pattern recognizers only "
        "(phone, e-mail, card, IBAN, numeric dates, IP, URL, US/UK ID formats). No NER model is loaded, so "
        "PERSON, LOCATION, NRP and ORGANIZATION are not detected; names and places are caught only by "
        "attribute value matching.")


_PRESIDIO_LOGGER = "presidio-analyzer"


@dataclass(frozen=True)
class PiiSpan:
    """One presidio detection: entity type, character span, score and the matched text."""

    entity: str
    start: int
    end: int
    score: float
    text: str


def _offline_tldextract() -> None:
    """Make tldextract offline even when it was imported before `analyzer` set the variable."""
    mod: Any = sys.modules.get("tldextract.tldextract")
    if mod is None:
        return
    extractor = getattr(mod, "TLD_EXTRACTOR", None)
    if extractor is not None and getattr(extractor, "suffix_list_urls", None):
        # `tldextract.extract` looks the module global up at call time, so replacing it suffices.
        mod.TLD_EXTRACTOR = mod.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)


@contextmanager
def _env_default(name: str, value: str) -> Iterator[None]:
    """Set the environment variable ``name`` to ``value`` if it is unset, and unset it again on exit."""
    added = name not in os.environ
    if added:
        os.environ[name] = value
    try:
        yield
    finally:
        if added:
            os.environ.pop(name, None)


@contextmanager
def _quiet(logger: str, level: int = logging.ERROR) -> Iterator[None]:
    """Raise the level of ``logger`` to ``level`` inside the block and restore it after."""
    log = logging.getLogger(logger)
    saved = log.level
    log.setLevel(max(level, saved))
    try:
        yield
    finally:
        log.setLevel(saved)


@functools.lru_cache(maxsize=1)
def analyzer() -> Any:
    """The presidio `AnalyzerEngine` (built once, cached): blank spaCy engine, offline tldextract."""
    _offline_tldextract()
    # tldextract reads this variable once, when it is imported (presidio's e-mail recognizer imports
    # it): an empty URL list makes it use its bundled suffix-list snapshot instead of the network.
    with _env_default("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", ""), requires("pii", "PII detection (presidio)"):
        import spacy
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import SpacyNlpEngine

    _offline_tldextract()

    class _BlankSpacyEngine(SpacyNlpEngine):
        """`SpacyNlpEngine` over ``spacy.blank("en")``: tokens for context words, no NER, no download."""

        def __init__(self) -> None:
            super().__init__(models=[{"lang_code": "en", "model_name": "blank:en"}])

        def load(self) -> None:
            self.nlp: Any = {"en": spacy.blank("en")}

    # presidio logs a warning per recognizer it cannot serve without NER; they say nothing new.
    with _quiet(_PRESIDIO_LOGGER):
        engine = _BlankSpacyEngine()
        engine.load()
        return AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])


def detect_pii(
    text: str, *, entities: Sequence[str] | None = DEFAULT_ENTITIES, min_score: float = DEFAULT_MIN_SCORE
) -> list[PiiSpan]:
    """PII spans presidio finds in ``text``, overlaps resolved, in text order.

    Where detections overlap the highest-scoring (then longest) one is kept, so the ``example.com``
    inside an e-mail address is not also counted as a URL.

    Args:
        text: Any text (model output is fine; it is only pattern-matched).
        entities: presidio entity types to look for (None: all the engine supports).
        min_score: Drop detections scoring below this.

    Returns:
        The kept `PiiSpan` records.

    """
    if not 0.0 <= min_score <= 1.0:
        raise UsageError(f"min_score must be in [0, 1], got {min_score}")
    if not text.strip():
        return []
    engine = analyzer()
    with _quiet(_PRESIDIO_LOGGER):
        found = engine.analyze(text=text, language="en", entities=list(entities) if entities else None)
    cands = sorted((r for r in found if r.score >= min_score), key=lambda r: (-r.score, -(r.end - r.start), r.start))
    kept: list[PiiSpan] = []
    for r in cands:
        if any(r.start < k.end and k.start < r.end for k in kept):
            continue
        kept.append(PiiSpan(r.entity_type, r.start, r.end, round(float(r.score), 4), text[r.start:r.end]))
    return sorted(kept, key=lambda s: s.start)


def mask_spans(text: str, spans: Iterable[tuple[int, int, str]]) -> str:
    """``text`` with each ``(start, end, replacement)`` span replaced; overlapping spans are merged."""
    merged: list[list[Any]] = []
    for start, end, rep in sorted(spans, key=lambda s: (s[0], -s[1])):
        if not 0 <= start <= end <= len(text):
            raise UsageError(f"Span ({start}, {end}) is outside a text of length {len(text)}")
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
            continue
        merged.append([start, end, rep])
    out = text
    for start, end, rep in reversed(merged):
        out = out[:start] + rep + out[end:]
    return out


def placeholder(key: str) -> str:
    """Mask for a known value: ``[KEY]`` without dots (so no URL pattern fires on it)."""
    return "[" + key.upper().replace(".", "_").replace("-", "_") + "]"


def redact_values(text: str, values: Mapping[str, str], *, max_passes: int = 20) -> str:
    """``text`` (NFKC) with every occurrence of each known value masked as ``[KEY]``.

    Occurrences are found with `match_value` (exact, fuzzy, reformatted numbers and dates, names),
    repeatedly, until none is left, so a value written twice in two formats is masked twice.
    Longer values are masked first, so a value inside another is not left half-masked.
    """
    from ..judges.rules import match_value

    out = unicodedata.normalize("NFKC", text)
    for key, value in sorted(values.items(), key=lambda kv: -len(kv[1])):
        if not value.strip():
            continue
        out = out.replace(value, placeholder(key))
        for _ in range(max_passes):
            res = match_value(value, out)
            if not res.matched or not res.evidence or res.evidence not in out:
                break
            out = out.replace(res.evidence, placeholder(key))
    return out


def redact(
    text: str,
    values: Mapping[str, str] | None = None,
    *,
    entities: Sequence[str] | None = DEFAULT_ENTITIES,
    min_score: float = DEFAULT_MIN_SCORE,
) -> str:
    """``text`` with known ``values`` masked as ``[KEY]`` and presidio's PII spans as ``<TYPE>``.

    Args:
        text: Text to redact (a prompt or a model output).
        values: ``{key: value}`` known to be private (a profile's attributes), masked first.
        entities: presidio entity types to mask as well.
        min_score: presidio score threshold.

    Returns:
        The redacted text.

    """
    out = redact_values(text, values or {})
    spans = detect_pii(out, entities=entities, min_score=min_score)
    return mask_spans(out, [(s.start, s.end, f"<{s.entity}>") for s in spans])
