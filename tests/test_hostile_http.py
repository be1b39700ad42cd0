"""The HTTP judge against hostile servers (issue #17): each case runs a tiny server on 127.0.0.1.

Every server here is bounded: it accepts a fixed number of connections, lives a few seconds at
most and stops by itself, so a client that misbehaves fails its test instead of hanging the suite.
"""

from __future__ import annotations

import _thread
import contextlib
import json
import math
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_judges_http import _completion  # one fake-completion builder for both HTTP test modules

from personascope.cli import main
from personascope.http_client import (
    DeadlineExceeded,
    HTTPClient,
    RedirectRefused,
    ResponseTooLarge,
    RetryBudget,
    RetryBudgetExhausted,
)
from personascope.judges.base import Item, Rubric
from personascope.judges.check import judge_check
from personascope.judges.http import HTTPJudge

YES_NO = Rubric(name="yn", scale="yes-no", template="Yes or no: {text}")
ITEM = [Item(text="2 + 2 = 4")]
KEY = "sk-hostile-test-not-a-real-key"


def _response(status: int, body: bytes, *, headers: dict[str, str] | None = None,
              length: bool = True) -> bytes:
    lines = [f"HTTP/1.1 {status} X", "Content-Type: application/json", "Connection: close"]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _read_request(conn: socket.socket) -> dict[str, Any]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            break
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    need = int(headers.get("content-length", 0))
    while len(body) < need:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return {"line": lines[0] if lines else "", "headers": headers, "body": body}


Handler = Callable[[socket.socket, dict[str, Any], threading.Event], None]


@contextlib.contextmanager
def raw_server(handle: Handler, *, max_conns: int = 20, lifetime: float = 8.0) -> Iterator[tuple[str, Any]]:
    """A loopback server that runs ``handle(conn, request, stop)`` per connection.

    It accepts at most ``max_conns`` connections and stops on its own after ``lifetime`` seconds
    (or when the block exits); ``stop`` is set then, so handlers that stall must wait on it.
    """
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.05)
    stop = threading.Event()
    state = SimpleNamespace(requests=[], conns=0, lock=threading.Lock())
    end = time.monotonic() + lifetime

    def one(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(lifetime)
            try:
                req = _read_request(conn)
                with state.lock:
                    state.requests.append(req)
                handle(conn, req, stop)
            except OSError:
                pass  # the client hung up on purpose

    def serve() -> None:
        while not stop.is_set() and time.monotonic() < end and state.conns < max_conns:
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            state.conns += 1
            threading.Thread(target=one, args=(conn,), daemon=True).start()
        stop.wait(max(0.0, end - time.monotonic()))
        stop.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}/v1", state
    finally:
        stop.set()
        thread.join(2)
        srv.close()


def _judge(base: str, **kw: Any) -> HTTPJudge:
    kw.setdefault("backoff", 0.01)
    return HTTPJudge(base, "m", **kw)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.monotonic()
    out = fn()
    return out, time.monotonic() - t0


# ---------------------------------------------------------------------------- size
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "no-length"])
def test_huge_body_is_refused_and_not_cached(declared, tmp_path):
    # 5 MB of "answer" that the old client read whole and cached; the cap here is 1 MB.
    big = json.dumps(_completion("Yes " + "x" * 5_000_000)).encode()

    def handle(conn, req, stop):
        conn.sendall(_response(200, big, length=declared))

    cache = tmp_path / "cache"
    with raw_server(handle) as (base, state):
        (r,), secs = _timed(lambda: _judge(base, max_body_bytes=1_000_000, max_retries=0).rate(
            ITEM, YES_NO, cache=cache))
    assert not r.valid and r.value is None
    assert "1000000-byte cap" in r.error and "max_body_bytes" in r.error
    assert len(state.requests) == 1  # a fatal refusal, not retried
    cached = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    assert cached < 10_000 and secs < 3.0


def test_answer_text_kept_in_a_rating_is_bounded(tmp_path):
    # Under the body cap, a long answer is still cut before it reaches the judge cache.
    body = json.dumps(_completion("Yes " + "x" * 500_000)).encode()
    with raw_server(lambda c, r, s: c.sendall(_response(200, body))) as (base, _):
        (r,) = _judge(base, use_logprobs=False).rate(ITEM, YES_NO, cache=tmp_path / "c")
    assert r.valid and r.value == 1.0 and len(r.raw) <= 2000
    assert sum(p.stat().st_size for p in (tmp_path / "c").rglob("*") if p.is_file()) < 10_000


# ---------------------------------------------------------------------------- time
@pytest.mark.parametrize("what", ["body", "headers"])
def test_dripping_server_ends_by_the_deadline(what):
    # One byte every 0.5 s never trips a per-read timeout; only a total deadline ends it.
    body = json.dumps(_completion("Yes", [("Yes", 0.0)])).encode()
    payload = _response(200, body)
    head_len = payload.index(b"\r\n\r\n") + 4

    def handle(conn, req, stop):
        if what == "body":
            conn.sendall(payload[:head_len])
        for i in range(head_len if what == "body" else 0, len(payload)):
            if stop.wait(0.5):
                return
            conn.sendall(payload[i:i + 1])

    with raw_server(handle) as (base, _):
        (r,), secs = _timed(lambda: _judge(base, deadline=2.0, max_retries=3).rate(ITEM, YES_NO, cache=False))
    assert not r.valid and "deadline of 2 s" in r.error, r.error
    assert secs < 3.0


def test_silent_server_is_bounded_by_the_retry_budget():
    # Accepts and never answers. Each attempt times out after 0.5 s; with 10 retries per item
    # and 8 items, the old client took 8 x 11 x 0.5 s / 2 = 22 s. The budget of 2 s caps the run.
    def handle(conn, req, stop):
        stop.wait()

    items = [Item(text=f"item {i}") for i in range(8)]
    with raw_server(handle, max_conns=100) as (base, state):
        judge = _judge(base, timeout=0.5, max_retries=10, retry_budget=2.0, concurrency=2)
        ratings, secs = _timed(lambda: judge.rate(items, YES_NO, cache=False))
        sent = len(state.requests)
    assert all(not r.valid for r in ratings)
    assert any("retry budget of 2 s" in r.error for r in ratings), [r.error for r in ratings]
    # Budget plus one attempt per worker in flight when it ran out, plus slack.
    assert secs < 2.0 + 0.5 + 1.0, secs
    assert sent <= 10


def test_retry_after_is_capped():
    def handle(conn, req, stop):
        if len(state.requests) == 1:
            conn.sendall(_response(429, b'{"error": {"message": "slow down"}}', headers={"Retry-After": "3600"}))
        else:
            conn.sendall(_response(200, json.dumps(_completion("Yes", [("Yes", 0.0)])).encode()))

    with raw_server(handle) as (base, state):
        (r,), secs = _timed(lambda: _judge(base, max_retry_after=0.5).rate(ITEM, YES_NO, cache=False))
    assert r.valid and r.value == 1.0 and len(state.requests) == 2
    assert 0.4 < secs < 2.0


def test_retry_after_beyond_the_deadline_gives_up_at_once():
    ok = _response(429, b'{"error": {"message": "slow down"}}', headers={"Retry-After": "3600"})
    with raw_server(lambda c, r, s: c.sendall(ok)) as (base, state):
        (r,), secs = _timed(lambda: _judge(base, deadline=5.0, max_retry_after=3600).rate(ITEM, YES_NO,
                                                                                          cache=False))
    assert not r.valid and "deadline of 5 s" in r.error and "HTTP 429" in r.error
    assert secs < 1.0 and len(state.requests) == 1


def test_ctrl_c_ends_a_run_promptly():
    # A silent server and a 30 s read timeout: the old client's thread pool waited for every
    # worker's read before Ctrl-C could act. Here the interrupt must end rate() within ~1 s.
    def handle(conn, req, stop):
        stop.wait()

    items = [Item(text=f"item {i}") for i in range(4)]
    # A process started in the background (CI, nohup) inherits SIGINT ignored, and then
    # interrupt_main() does nothing: install Python's handler for this test, as a terminal has it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    with raw_server(handle, lifetime=6.0) as (base, _):
        judge = _judge(base, timeout=30.0, concurrency=2)
        timer = threading.Timer(0.5, _thread.interrupt_main)
        t0 = time.monotonic()
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                judge.rate(items, YES_NO, cache=False)
        finally:
            timer.cancel()
            signal.signal(signal.SIGINT, previous)
        secs = time.monotonic() - t0
    assert secs < 1.5, secs


# ---------------------------------------------------------------------------- credentials
def test_redirect_to_another_origin_is_not_followed(monkeypatch):
    monkeypatch.setenv("PS_HOSTILE_KEY", KEY)
    good = json.dumps(_completion("Yes", [("Yes", 0.0)])).encode()
    with raw_server(lambda c, r, s: c.sendall(_response(200, good))) as (other, seen):
        target = other.replace("/v1", "/steal")

        def handle(conn, req, stop):
            conn.sendall(_response(302, b"", headers={"Location": target + "?token=abc"}))

        with raw_server(handle) as (base, state):
            (r,) = _judge(base, api_key_env="PS_HOSTILE_KEY").rate(ITEM, YES_NO, cache=False)
        assert state.requests[0]["headers"]["authorization"] == f"Bearer {KEY}"
        assert seen.requests == []  # nothing, let alone the key, reached the other origin
    assert not r.valid and r.value is None
    assert "302" in r.error and "redirect" in r.error and other.removesuffix("/v1") in r.error
    assert "token=abc" not in r.error and KEY not in r.model_dump_json()


def test_client_raises_typed_errors():
    big = json.dumps({"pad": "x" * 2000}).encode()
    with raw_server(lambda c, r, s: c.sendall(_response(200, big))) as (base, _), \
            HTTPClient(base, max_body_bytes=1000, max_retries=0) as client:
        with pytest.raises(ResponseTooLarge):
            client.post_json("/x", {})
    with raw_server(lambda c, r, s: c.sendall(_response(307, b"", headers={"Location": "/v2/x"}))) as (base, _), \
            HTTPClient(base) as client:
        with pytest.raises(RedirectRefused):
            client.post_json("/x", {})
    budget = RetryBudget(0.2)
    with raw_server(lambda c, r, s: s.wait()) as (base, _), \
            HTTPClient(base, deadline=0.5, max_retries=5, retry_budget=budget) as client:
        with pytest.raises(DeadlineExceeded):
            client.post_json("/x", {})
        with pytest.raises(RetryBudgetExhausted):  # the first call lost more than the budget
            client.post_json("/x", {})


# ---------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("lp", [1000.0, math.nan, math.inf, 0.7, "0", [0]],
                         ids=["huge", "nan", "inf", "positive", "string", "list"])
def test_impossible_logprobs_give_invalid_ratings(lp):
    # json.dumps writes NaN/Infinity tokens, which Python's parser (the old client's) accepts.
    body = json.dumps(_completion("Yes", [("Yes", lp), ("No", -1.0)])).encode()
    with raw_server(lambda c, r, s: c.sendall(_response(200, body))) as (base, _):
        (r,) = _judge(base).rate(ITEM, YES_NO, cache=False)
    assert not r.valid and r.value is None and "invalid log-probs" in r.error, r.error


def test_logprobs_summing_above_one_are_invalid():
    body = json.dumps(_completion("Yes", [("Yes", 0.0), ("No", 0.0)])).encode()
    with raw_server(lambda c, r, s: c.sendall(_response(200, body))) as (base, _):
        (r,) = _judge(base).rate(ITEM, YES_NO, cache=False)
    assert not r.valid and "sum to probability 2" in r.error


def test_rounding_and_minus_infinity_are_fine():
    body = json.dumps(_completion("Yes", [("Yes", 0.001), ("No", -math.inf), ("Maybe", -9999.0)])).encode()
    with raw_server(lambda c, r, s: c.sendall(_response(200, body))) as (base, _):
        (r,) = _judge(base).rate(ITEM, YES_NO, cache=False)
    assert r.valid and r.value == 1.0 and r.valid_mass == pytest.approx(1.0)


# ---------------------------------------------------------------------------- judge-check
def _huge_logprobs(conn: socket.socket, req: dict[str, Any], stop: threading.Event) -> None:
    conn.sendall(_response(200, json.dumps(_completion("Yes", [("Yes", 1000.0)])).encode()))


def test_judge_check_of_an_all_invalid_judge_says_why():
    with raw_server(_huge_logprobs, max_conns=200) as (base, _):
        res = judge_check(_judge(base, concurrency=4), ["refusal"], cache=False)
    assert res.unusable and res.sets[0].n_valid == 0
    assert "invalid log-probs" in res.first_error and "1000" in res.first_error


@pytest.mark.parametrize("kind", ["huge-logprobs", "http-400"])
def test_judge_check_cli_exits_non_zero_when_nothing_is_valid(kind, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONASCOPE_CACHE", str(tmp_path / "cache"))
    handle = _huge_logprobs if kind == "huge-logprobs" else (
        lambda c, r, s: c.sendall(_response(400, b'{"error": {"message": "no such model"}}')))
    out = tmp_path / "check.json"
    with raw_server(handle, max_conns=200) as (base, _):
        rc = main(["judge-check", "--judges", "http", "--judge-url", base, "--sets", "refusal",
                   "--json-out", str(out)])
    captured = capsys.readouterr()
    assert rc == 1
    why = "invalid log-probs" if kind == "huge-logprobs" else "HTTP 400: no such model"
    assert "NO VALID RATINGS" in captured.out and why in captured.out
    assert why in captured.err
    assert json.loads(Path(out).read_text())[0]["sets"][0]["first_error"]
    # --json: stdout is the same results as one JSON document; the table moves to stderr.
    with raw_server(handle, max_conns=200) as (base, _):
        rc = main(["judge-check", "--judges", "http", "--judge-url", base, "--sets", "refusal", "--json"])
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert rc == 1 and doc["results"][0]["sets"][0]["first_error"] and why in doc["unusable"][0]
    assert "NO VALID RATINGS" in captured.err
