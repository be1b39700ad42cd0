"""The report opens in headless Chromium without console errors; a screenshot shows the key sections."""

import shutil
import subprocess

import pytest
from test_reports import make_run

from personascope.reports import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (`.ci/run` installs it)")


def _chromium(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_report_renders_in_chromium_with_its_sections(tmp_path):
    run = make_run(payload="<script>alert('x')</script>")
    _, report = write_report(run, tmp_path)
    url = report.resolve().as_uri()
    shot = tmp_path / "shot.png"
    res = _chromium("--window-size=1280,2400", f"--screenshot={shot}", url)
    assert shot.exists() and shot.stat().st_size > 20_000, res.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Console errors (a script that ran, a resource that failed) are logged as CONSOLE lines.
    console = [ln for ln in res.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console
    dom = _chromium("--dump-dom", url).stdout
    for section in ("Risk summary", "persona_localization", "ci_leakage", "Methods"):
        assert section in dom, section
    assert "<script>alert" not in dom
