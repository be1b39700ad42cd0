"""HTML risk reports, JSON run results and the release gate. Never imports torch.

`RunResults` (``results.json``) holds a run's audits and provenance; `render_report` turns it into
one self-contained HTML file; `evaluate`/`gate_main` check it against a TOML policy for CI, with
JUnit XML output (`write_junit`).
"""

from ..results import RESULTS_FILE, Check, GateOutcome, RunResults
from .gate import Policy, evaluate, gate_main, load_policy, parse_policy
from .html import render_audit_fragment, render_report, render_run_fragment, write_report
from .junit import to_junit, write_junit

__all__ = ["RESULTS_FILE", "Check", "GateOutcome", "Policy", "RunResults", "evaluate", "gate_main", "load_policy",
           "parse_policy", "render_audit_fragment", "render_report", "render_run_fragment", "to_junit",
           "write_junit", "write_report"]
