"""JUnit XML of a gate outcome, so that CI systems show each policy check as a test.

One ``<testcase>`` per check: ``classname`` is the audit, ``name`` the metric key and the rule. A
blocking failure is a ``<failure>``, a skipped check (missing result, policy says skip) is a
``<skipped>``, a warning (a failure below the policy's ``fail_severity``) passes with the warning
in ``<system-out>``. Built with `xml.etree`, so every text is escaped; characters XML 1.0 cannot
hold are dropped.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from ..results import Check, GateOutcome

# Characters outside the XML 1.0 Char production (control characters other than tab/LF/CR, ...).
_INVALID_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _clean(text: str) -> str:
    return _INVALID_XML.sub("", text)


def _num(v: float | None) -> str:
    if v is None:
        return "n/a"
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e9 else f"{v:.6g}"


def _message(c: Check) -> str:
    parts = [c.reason or "failed", f"observed {_num(c.observed)}, threshold {c.op} {_num(c.threshold)}".strip()]
    if c.description:
        parts.append(c.description)
    return "; ".join(parts)


def to_junit(outcome: GateOutcome, suite: str = "personascope.gate") -> str:
    """The JUnit XML text of ``outcome`` (``<testsuites>`` with one ``<testsuite>``)."""
    counts = outcome.counts()
    attrs = {"name": suite, "tests": str(len(outcome.checks)), "failures": str(counts["fail"]), "errors": "0",
             "skipped": str(counts["skip"]), "time": "0"}
    root = ET.Element("testsuites", attrs)
    ts = ET.SubElement(root, "testsuite", {**attrs, "name": _clean(f"{suite}.{outcome.policy}")})
    props = ET.SubElement(ts, "properties")
    for name, value in (("policy", outcome.policy), ("policy_hash", outcome.policy_hash),
                        ("baseline", outcome.baseline or "")):
        ET.SubElement(props, "property", {"name": name, "value": _clean(value)})
    for c in outcome.checks:
        case = ET.SubElement(ts, "testcase", {"classname": _clean(c.audit), "name": _clean(f"{c.metric} | {c.rule}"),
                                              "time": "0"})
        if c.status == "fail":
            el = ET.SubElement(case, "failure", {"message": _clean(_message(c)), "type": c.kind})
            el.text = _clean(f"{c.kind} check failed ({c.severity}): {_message(c)}")
        elif c.status == "skip":
            ET.SubElement(case, "skipped", {"message": _clean(c.reason or "skipped")})
        elif c.status == "warn":
            ET.SubElement(case, "system-out").text = _clean(f"WARNING ({c.severity}): {_message(c)}")
    ET.indent(root, space=" ")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(outcome: GateOutcome, path: str | Path, suite: str = "personascope.gate") -> Path:
    """Write `to_junit` to ``path`` (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_junit(outcome, suite), encoding="utf-8")
    return path


__all__ = ["to_junit", "write_junit"]
