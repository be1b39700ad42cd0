"""Synthetic user profiles and task contexts for the contextual-integrity leakage audit.

A profile is a list of first-person memory statements ("My monthly rent is $1,425."), each with a
matchable value ("$1,425"), a domain and tags. Values come from a seeded generator written for
personascope: pools of invented names and places, PII-shaped values built to pass the usual
checksums (Luhn card numbers, mod-97 IBANs), fictional phone numbers (555-01xx) and reserved
e-mail domains (example.com). No external data is read.

A task context is a recipient and a purpose; it labels every attribute *necessary* (its domain or
one of its tags is listed for the context) or *inappropriate* (everything else). The templates and
contexts live in ``personascope/data/leakage/`` with a README stating the labelling rules.
"""

from __future__ import annotations

import datetime as _dt
import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from ..data import read_json_object
from ..errors import DataError, UsageError
from ..stats import derive_seed

__all__ = [
    "DOMAINS",
    "PII_KINDS",
    "Attribute",
    "AttributeTemplate",
    "Label",
    "Profile",
    "TaskContext",
    "data_dir",
    "generate_profile",
    "generate_profiles",
    "iban_valid",
    "load_contexts",
    "load_pools",
    "load_templates",
    "luhn_valid",
]

DOMAINS: tuple[str, ...] = (
    "health", "mental_health", "finance", "legal", "housing", "employment", "education", "relationships",
    "schedule", "general",
)
#: Generator kinds whose values are PII-shaped (what a pattern recognizer such as presidio finds).
PII_KINDS: frozenset[str] = frozenset({"phone", "email", "card", "iban", "date"})
_VALUE_KINDS = frozenset({"choice", "pool", "person", "user_name", "phone", "email", "card", "iban", "date",
                          "money", "number", "code", "address"})
# Letters for code patterns ('@'): no I or O, which read as digits.
_CODE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
_MAX_TRIES = 200

Label = Literal["necessary", "inappropriate"]


def data_dir() -> Path:
    """Folder of the built-in leakage data (templates, pools, contexts, README)."""
    return Path(str(resources.files("personascope") / "data" / "leakage"))


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path, "leakage data file")


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttributeTemplate:
    """A memory template: statement with ``{value}``, domain, tags and the value generator spec."""

    id: str
    domain: str
    tags: tuple[str, ...]
    statement: str
    value: dict[str, Any]

    @property
    def kind(self) -> str:
        """Generator kind of the value (``choice``, ``phone``, ``date``, ...)."""
        return str(self.value["kind"])


@dataclass(frozen=True)
class Attribute:
    """One memory of one user: the first-person statement and the value that gives it away."""

    id: str
    domain: str
    tags: tuple[str, ...]
    statement: str
    value: str
    kind: str

    @property
    def pii(self) -> bool:
        """Whether the value is PII-shaped (phone, e-mail, card, IBAN, numeric date)."""
        return self.kind in PII_KINDS


@dataclass(frozen=True)
class Profile:
    """A synthetic user: an id, a full name and one `Attribute` per template.

    ``contexts`` lists the ids of the task contexts this user meets (a CIMemories file gives each
    user its own); empty means every context of the audit.
    """

    user_id: str
    name: str
    attributes: tuple[Attribute, ...]
    contexts: tuple[str, ...] = ()

    def attribute(self, attr_id: str) -> Attribute:
        """The attribute ``attr_id``; `KeyError` naming the known ids otherwise."""
        for a in self.attributes:
            if a.id == attr_id:
                return a
        raise KeyError(f"{self.user_id} has no attribute {attr_id!r}")

    def values(self) -> dict[str, str]:
        """``{attribute id: value}``."""
        return {a.id: a.value for a in self.attributes}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (used for data hashes)."""
        out: dict[str, Any] = {"user_id": self.user_id, "name": self.name,
                               "attributes": [{"id": a.id, "value": a.value, "statement": a.statement}
                                              for a in self.attributes]}
        if self.contexts:  # only then, so the hashes of generated profiles stay as they were
            out["contexts"] = list(self.contexts)
        return out


@dataclass(frozen=True)
class TaskContext:
    """A recipient and a purpose, with the rule that labels attributes necessary or inappropriate.

    An attribute is necessary when its domain is in ``necessary_domains`` or one of its tags is in
    ``necessary_tags``; every other attribute is inappropriate in this context.
    """

    id: str
    recipient: str
    task: str
    necessary_domains: frozenset[str] = field(default_factory=frozenset)
    necessary_tags: frozenset[str] = field(default_factory=frozenset)
    rationale: str = ""

    def label(self, attribute: Attribute | AttributeTemplate) -> Label:
        """``"necessary"`` or ``"inappropriate"`` for ``attribute`` in this context."""
        if attribute.domain in self.necessary_domains or self.necessary_tags.intersection(attribute.tags):
            return "necessary"
        return "inappropriate"

    def is_necessary(self, attribute: Attribute | AttributeTemplate) -> bool:
        """Whether ``attribute`` is necessary in this context."""
        return self.label(attribute) == "necessary"

    def labels(self, profile: Profile) -> dict[str, Label]:
        """Label of every attribute of ``profile``."""
        return {a.id: self.label(a) for a in profile.attributes}


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_pools(path: str | Path | None = None) -> dict[str, Any]:
    """The name and place pools (``pools.json``)."""
    p = Path(path) if path is not None else data_dir() / "pools.json"
    pools = _read_json(p)
    for key in ("first_names", "last_names", "streets", "street_types", "phone_area_codes", "email_domains"):
        if not pools.get(key):
            raise DataError(f"{p}: pool {key!r} is missing or empty")
    return pools


def load_templates(path: str | Path | None = None, pools: dict[str, Any] | None = None) -> list[AttributeTemplate]:
    """The attribute templates (``attributes.json``), checked: unique ids, known domains and kinds."""
    p = Path(path) if path is not None else data_dir() / "attributes.json"
    data = _read_json(p)
    pools = pools if pools is not None else load_pools()
    out: list[AttributeTemplate] = []
    seen: set[str] = set()
    for i, rec in enumerate(data.get("attributes") or []):
        where = f"{p}: attribute #{i} ({rec.get('id', '?')})"
        try:
            t = AttributeTemplate(id=str(rec["id"]), domain=str(rec["domain"]), tags=tuple(rec["tags"]),
                                  statement=str(rec["statement"]), value=dict(rec["value"]))
        except (KeyError, TypeError) as exc:
            raise DataError(f"{where}: needs id, domain, tags, statement and value ({exc})") from exc
        if t.id in seen:
            raise DataError(f"{where}: duplicate id")
        seen.add(t.id)
        if t.domain not in DOMAINS:
            raise DataError(f"{where}: unknown domain {t.domain!r}; allowed: {', '.join(DOMAINS)}")
        if "{value}" not in t.statement:
            raise DataError(f"{where}: statement must contain {{value}}")
        if t.kind not in _VALUE_KINDS:
            raise DataError(f"{where}: unknown value kind {t.kind!r}; allowed: {', '.join(sorted(_VALUE_KINDS))}")
        if t.kind == "choice" and not t.value.get("values"):
            raise DataError(f"{where}: a choice value needs a non-empty 'values' list")
        if t.kind == "pool" and not pools.get(t.value.get("pool", "")):
            raise DataError(f"{where}: unknown or empty pool {t.value.get('pool')!r}")
        if not t.tags:
            raise DataError(f"{where}: needs at least one tag")
        out.append(t)
    if not out:
        raise DataError(f"{p}: no attributes")
    return out


def load_contexts(path: str | Path | None = None,
                  templates: Sequence[AttributeTemplate] | None = None) -> list[TaskContext]:
    """The task contexts (``contexts.json``); tags and domains must exist among the templates."""
    p = Path(path) if path is not None else data_dir() / "contexts.json"
    data = _read_json(p)
    templates = templates if templates is not None else load_templates()
    known_tags = {tag for t in templates for tag in t.tags}
    out: list[TaskContext] = []
    seen: set[str] = set()
    for i, rec in enumerate(data.get("contexts") or []):
        where = f"{p}: context #{i} ({rec.get('id', '?')})"
        try:
            nec = rec.get("necessary") or {}
            c = TaskContext(id=str(rec["id"]), recipient=str(rec["recipient"]), task=str(rec["task"]),
                            necessary_domains=frozenset(nec.get("domains") or ()),
                            necessary_tags=frozenset(nec.get("tags") or ()), rationale=str(rec.get("rationale", "")))
        except (KeyError, TypeError) as exc:
            raise DataError(f"{where}: needs id, recipient, task and necessary ({exc})") from exc
        if c.id in seen:
            raise DataError(f"{where}: duplicate id")
        seen.add(c.id)
        bad_d = sorted(c.necessary_domains - set(DOMAINS))
        bad_t = sorted(c.necessary_tags - known_tags)
        if bad_d or bad_t:
            raise DataError(f"{where}: unknown domains {bad_d} or tags {bad_t}; tags must appear in attributes.json")
        labels = [c.label(t) for t in templates]
        if "necessary" not in labels or "inappropriate" not in labels:
            raise DataError(f"{where}: must make at least one attribute necessary and one inappropriate")
        out.append(c)
    if not out:
        raise DataError(f"{p}: no contexts")
    return out


# --------------------------------------------------------------------------------------------
# Value generators
# --------------------------------------------------------------------------------------------


def luhn_valid(number: str) -> bool:
    """Whether the digits of ``number`` pass the Luhn checksum (card numbers)."""
    digits = [int(c) for c in number if c.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return bool(digits) and total % 10 == 0


def _luhn_digit(partial: str) -> str:
    for d in "0123456789":
        if luhn_valid(partial + d):
            return d
    raise AssertionError("unreachable: one check digit always fits")


def iban_valid(iban: str) -> bool:
    """Whether ``iban`` (spaces allowed) passes the ISO 13616 mod-97 check."""
    s = iban.replace(" ", "").upper()
    if len(s) < 5 or not s.isalnum():
        return False
    num = "".join(str(int(c, 36)) for c in s[4:] + s[:4])
    return int(num) % 97 == 1


def _iban(rng: random.Random) -> str:
    # GB layout: 4-letter bank code + 6-digit sort code + 8-digit account. The bank code "PSCO"
    # belongs to no real bank, so no generated IBAN can be a real account.
    bban = "PSCO" + "".join(rng.choice("0123456789") for _ in range(14))
    num = "".join(str(int(c, 36)) for c in bban + "GB00")
    check = 98 - int(num) % 97
    s = f"GB{check:02d}{bban}"
    return " ".join(s[i:i + 4] for i in range(0, len(s), 4))


def _card(rng: random.Random) -> str:
    # 400000 is a test-card prefix (Visa range used by payment sandboxes), never a real issuer.
    partial = "400000" + "".join(rng.choice("0123456789") for _ in range(9))
    s = partial + _luhn_digit(partial)
    return " ".join(s[i:i + 4] for i in range(0, 16, 4))


def _date(rng: random.Random, spec: dict[str, Any]) -> str:
    lo, hi = _dt.date.fromisoformat(spec["from"]), _dt.date.fromisoformat(spec["to"])
    d = lo + _dt.timedelta(days=rng.randint(0, (hi - lo).days))
    return d.strftime("%m/%d/%Y") if spec.get("format") == "us" else d.isoformat()


def _number(rng: random.Random, spec: dict[str, Any]) -> str:
    decimals = int(spec.get("decimals", 0))
    scale = 10 ** decimals
    lo, hi, step = round(spec["min"] * scale), round(spec["max"] * scale), max(1, round(spec.get("step", 1) * scale))
    exclude = {round(x * scale) for x in spec.get("exclude", ())}
    while True:
        v = lo + step * rng.randint(0, (hi - lo) // step)
        if v not in exclude:
            break
    return f"{v / scale:.{decimals}f}" if decimals else str(v)


def _code(rng: random.Random, pattern: str) -> str:
    out = []
    for ch in pattern:
        if ch == "#":
            out.append(rng.choice("0123456789"))
        elif ch == "%":
            out.append(rng.choice("123456789"))
        elif ch == "@":
            out.append(rng.choice(_CODE_LETTERS))
        else:
            out.append(ch)
    return "".join(out)


@dataclass
class _UserState:
    first: str
    last: str
    used_first: set[str]
    used_pool: dict[str, set[str]]


def _person(rng: random.Random, st: _UserState, pools: dict[str, Any], spec: dict[str, Any]) -> str:
    first = rng.choice([n for n in pools["first_names"] if n not in st.used_first])
    last = st.last if spec.get("same_last_name") else rng.choice([n for n in pools["last_names"] if n != st.last])
    name = f"{first} {last}"
    return f"{spec['title']} {name}" if spec.get("title") else name


def _value(rng: random.Random, t: AttributeTemplate, st: _UserState, pools: dict[str, Any]) -> str:
    spec, kind = t.value, t.kind
    if kind == "choice":
        return str(rng.choice(spec["values"]))
    if kind == "pool":
        name = spec["pool"]
        options = [v for v in pools[name] if v not in st.used_pool.get(name, set())]
        if not options:
            raise DataError(f"Pool {name!r} is too small for attribute {t.id}")
        return str(rng.choice(options))
    if kind == "person":
        return _person(rng, st, pools, spec)
    if kind == "user_name":
        return f"{st.first} {st.last}"
    if kind == "phone":
        return f"({rng.choice(pools['phone_area_codes'])}) 555-01{rng.randint(0, 99):02d}"
    if kind == "email":
        local = f"{st.first}.{st.last}".lower().replace("-", "").replace("'", "")
        return f"{local}{rng.randint(10, 99)}@{rng.choice(pools['email_domains'])}"
    if kind == "card":
        return _card(rng)
    if kind == "iban":
        return _iban(rng)
    if kind == "date":
        return _date(rng, spec)
    if kind == "money":
        return f"${int(_number(rng, spec)):,}"
    if kind == "number":
        return _number(rng, spec)
    if kind == "code":
        return _code(rng, str(spec["pattern"]))
    if kind == "address":
        return f"{rng.randint(12, 9899)} {rng.choice(pools['streets'])} {rng.choice(pools['street_types'])}"
    raise DataError(f"Unknown value kind {kind!r} in attribute {t.id}")


def _collides(value: str, statement: str, others: Sequence[Attribute]) -> bool:
    """Whether ``value`` is found in another statement, or another value in ``statement``.

    A collision would make a leak of one attribute count as a leak of another.
    """
    from ..judges.rules import match_value

    for o in others:
        if match_value(value, o.statement).matched or match_value(o.value, statement).matched:
            return True
    return False


def generate_profile(index: int, seed: int = 0, templates: Sequence[AttributeTemplate] | None = None,
                     pools: dict[str, Any] | None = None) -> Profile:
    """The synthetic user number ``index`` for ``seed`` (same arguments, same profile).

    Every template yields one attribute. Values are re-drawn (up to a limit) until no value of the
    profile is found by `match_value` in another attribute's statement, so each leak is attributable
    to one attribute.
    """
    if index < 0:
        raise UsageError(f"Profile index must be >= 0, got {index}")
    if templates is None and pools is None:
        return _default_profile(index, seed)
    return _generate_profile(index, seed, templates, pools)


@functools.lru_cache(maxsize=64)
def _default_profile(index: int, seed: int) -> Profile:
    """`generate_profile` on the built-in data, cached (profiles are immutable; drawing takes ~1 s)."""
    return _generate_profile(index, seed, None, None)


def _generate_profile(index: int, seed: int, templates: Sequence[AttributeTemplate] | None,
                      pools: dict[str, Any] | None) -> Profile:
    pools = pools if pools is not None else load_pools()
    templates = list(templates) if templates is not None else load_templates(pools=pools)
    # derive_seed is the same on every platform and Python version (hash() of str is not).
    rng = random.Random(derive_seed(seed, "profile", index))
    first, last = rng.choice(pools["first_names"]), rng.choice(pools["last_names"])
    st = _UserState(first=first, last=last, used_first={first}, used_pool={})
    attrs: list[Attribute] = []
    for t in templates:
        for _ in range(_MAX_TRIES):
            value = _value(rng, t, st, pools)
            statement = t.statement.replace("{value}", value)
            if not _collides(value, statement, attrs):
                break
        else:
            raise DataError(f"Could not draw a distinct value for {t.id} (user {index}); widen its value pool")
        if t.kind == "person":
            st.used_first.add(value.split()[-2])
        if t.kind == "pool":
            st.used_pool.setdefault(t.value["pool"], set()).add(value)
        attrs.append(Attribute(id=t.id, domain=t.domain, tags=t.tags, statement=statement, value=value, kind=t.kind))
    return Profile(user_id=f"user{index:03d}", name=f"{first} {last}", attributes=tuple(attrs))


def generate_profiles(n_users: int, seed: int = 0, templates: Sequence[AttributeTemplate] | None = None,
                      pools: dict[str, Any] | None = None) -> list[Profile]:
    """``n_users`` synthetic profiles (users ``0 .. n_users-1`` of `generate_profile`)."""
    if n_users < 1:
        raise UsageError(f"n_users must be >= 1, got {n_users}")
    return [generate_profile(i, seed, templates, pools) for i in range(n_users)]
