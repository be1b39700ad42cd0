"""HTTP judge and the OpenAI-compatible judge server, over real HTTP on 127.0.0.1 only."""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest

from personascope.judges import scales
from personascope.judges.base import Item, Rubric
from personascope.judges.http import HTTPJudge
from personascope.judges.server import start_in_thread

YES_NO = Rubric(name="yn", scale="yes-no", template="Yes or no: {text}")
ITEMS = [Item(text="2 + 2 = 4"), Item(text="The sky is green."), Item(text="Water is wet.")]


# ---------------------------------------------------------------------------- helpers
def _completion(content: Any, top: list[tuple[str, float]] | None = None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": content},
                              "finish_reason": "stop", "logprobs": None}
    if top is not None:
        entries = [{"token": t, "logprob": lp} for t, lp in top]
        choice["logprobs"] = {"content": [dict(entries[0], top_logprobs=entries)]}
    return {"id": "x", "object": "chat.completion", "choices": [choice]}


@contextlib.contextmanager
def stub_server(respond: Callable[[Any, dict[str, Any]], tuple[int, Any]]) -> Iterator[tuple[str, Any]]:
    """A throwaway chat-completions server: ``respond(state, body) -> (status, json-or-bytes)``."""
    state = SimpleNamespace(requests=[], headers=[], active=0, max_active=0, lock=threading.Lock(),
                            stop=threading.Event())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            with state.lock:
                state.requests.append(body)
                state.headers.append(dict(self.headers))
                state.active += 1
                state.max_active = max(state.max_active, state.active)
            try:
                status, payload = respond(state, body)
            finally:
                with state.lock:
                    state.active -= 1
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # clients that time out hang up on purpose

    srv = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/v1", state
    finally:
        state.stop.set()
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def _request(url: str, body: bytes | None = None, method: str = "POST") -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


def _chat(base: str, **body: Any) -> tuple[int, Any]:
    return _request(base + "/chat/completions", json.dumps(body).encode())


class Wrapped:
    """Delegates to a real adapter; records generate calls and can bias the next-token distribution."""

    def __init__(self, model: Any, bias: dict[str, float] | None = None) -> None:
        self._m = model
        self.bias = bias or {}
        self.calls: list[dict[str, Any]] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._m, name)

    def generate(self, prompts: Any, max_new_tokens: int = 64, **kw: Any) -> list[str]:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.calls.append({"max_new_tokens": max_new_tokens, **kw})
        try:
            time.sleep(0.02)
            return self._m.generate(prompts, max_new_tokens=min(max_new_tokens, 4), **kw)
        finally:
            with self._lock:
                self.active -= 1

    def next_token_logprobs(self, prompts: Any, **kw: Any) -> Any:
        lp = self._m.next_token_logprobs(prompts, **kw).clone()
        for text, b in self.bias.items():
            (tid,) = self._m.tokenizer(text, add_special_tokens=False)["input_ids"]
            lp[:, tid] += b
        return lp.log_softmax(-1)


@pytest.fixture(scope="module")
def tiny_server(tiny_nn):
    server, base = start_in_thread(tiny_nn, model_name="tiny")
    yield base
    server.close()


@pytest.fixture()
def wrapped_server(tiny_nn):
    model = Wrapped(tiny_nn, bias={"Yes": 40.0, "No": 39.0})
    server, base = start_in_thread(model, model_name="biased-tiny")
    yield base, model
    server.close()


# ---------------------------------------------------------------------------- the server
def test_server_models_and_errors(tiny_server):
    status, body = _request(tiny_server + "/models", method="GET")
    assert status == 200 and body["object"] == "list" and body["data"][0]["id"] == "tiny"
    assert _request(tiny_server + "/nope", method="GET")[0] == 404
    status, body = _request(tiny_server + "/nope", b"{}")
    assert status == 404 and "error" in body
    assert _request(tiny_server + "/chat/completions", method="GET")[0] == 405
    status, body = _request(tiny_server + "/chat/completions", b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    for bad in ({}, {"messages": []}, {"messages": [{"role": "wizard", "content": "hi"}]},
                {"messages": [{"role": "user", "content": 3}]}, {"messages": "hi"}):
        status, body = _chat(tiny_server, **bad)
        assert status == 400 and body["error"]["message"], bad
    msgs = [{"role": "user", "content": "hi"}]
    for extra in ({"max_tokens": 0}, {"max_tokens": "5"}, {"stream": True}, {"n": 2},
                  {"logprobs": "yes"}, {"top_logprobs": -1}):
        assert _chat(tiny_server, messages=msgs, **extra)[0] == 400, extra


def test_server_chat_completion_with_logprobs(tiny_server, tiny_nn):
    msgs = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Say hi."}]}]
    status, body = _chat(tiny_server, model="whatever", messages=msgs, max_tokens=3, logprobs=True,
                         top_logprobs=5)
    assert status == 200
    assert body["object"] == "chat.completion" and body["model"] == "tiny"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    first = choice["logprobs"]["content"][0]
    top = first["top_logprobs"]
    assert len(top) == 5 and first["token"] == top[0]["token"]
    lps = [t["logprob"] for t in top]
    assert lps == sorted(lps, reverse=True) and all(lp <= 0 for lp in lps)
    # The greedy first token is the argmax of the adapter's own next-token distribution.
    prompt = tiny_nn.format_chat(msgs[:1] + [{"role": "user", "content": "Say hi."}])
    ref = tiny_nn.next_token_logprobs([prompt])[0]
    assert math.isclose(lps[0], float(ref.max()), abs_tol=1e-4)
    assert first["token"] == tiny_nn.tokenizer.decode([int(ref.argmax())])
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and 0 <= usage["completion_tokens"] <= 3
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    status, body = _chat(tiny_server, messages=msgs, max_tokens=1, logprobs=True, top_logprobs=50)
    assert status == 200 and len(body["choices"][0]["logprobs"]["content"][0]["top_logprobs"]) == 20
    status, body = _chat(tiny_server, messages=msgs, max_tokens=1)
    assert status == 200 and body["choices"][0]["logprobs"] is None


def test_server_caps_tokens_and_serializes_model(wrapped_server):
    base, model = wrapped_server
    msgs = [{"role": "user", "content": "hi"}]
    assert _chat(base, messages=msgs)[0] == 200
    assert _chat(base, messages=msgs, max_tokens=100_000)[0] == 200
    assert [c["max_new_tokens"] for c in model.calls] == [16, 512]
    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(lambda _: _chat(base, messages=msgs, max_tokens=2)[0], range(6)))
    assert statuses == [200] * 6
    assert model.max_active == 1


# ---------------------------------------------------------------------------- judge over the server
def test_http_judge_against_real_server(tiny_server):
    judge = HTTPJudge(tiny_server, "tiny", min_valid_mass=0.0, max_retries=0, timeout=60)
    ratings = judge.rate(ITEMS, YES_NO, cache=False)
    assert len(ratings) == len(ITEMS)
    for r in ratings:
        assert r.judge.kind == "http" and r.judge.name == f"tiny@{tiny_server}"
        assert r.valid_mass is not None and 0.0 <= r.valid_mass <= 1.0
        assert (r.valid and 0.0 <= r.value <= 1.0) or (not r.valid and r.value is None and r.error)


def test_http_judge_logprobs_give_valid_ratings(wrapped_server):
    base, model = wrapped_server
    ratings = HTTPJudge(base, "biased-tiny", timeout=60).rate(ITEMS, YES_NO, cache=False)
    # The value is P(Yes) / (P(Yes) + P(No)) of the model's own first-token distribution.
    prompts = [model.format_chat([{"role": "user", "content": YES_NO.render(it) + "\n\n"
                                   + scales.instruction(YES_NO)}]) for it in ITEMS]
    probs = model.next_token_logprobs(prompts).exp()
    yes, no = (model.tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in ("Yes", "No"))
    for r, row in zip(ratings, probs, strict=True):
        assert r.valid and r.error is None and r.judge.kind == "http"
        assert 0.99 < r.valid_mass <= 1.0
        assert r.value == pytest.approx(float(row[yes] / (row[yes] + row[no])), abs=1e-4)


def test_http_judge_without_logprobs_parses_text(tiny_server):
    with stub_server(lambda s, b: (200, _completion("Yes, definitely."))) as (base, state):
        r = HTTPJudge(base, "m", use_logprobs=False).rate(ITEMS[:1], YES_NO, cache=False)[0]
        assert "logprobs" not in state.requests[0] and "top_logprobs" not in state.requests[0]
    assert r.valid and r.value == 1.0 and r.valid_mass is None and r.raw == "Yes, definitely."
    with stub_server(lambda s, b: (200, _completion("Maybe?"))) as (base, _):
        r = HTTPJudge(base, "m", use_logprobs=False).rate(ITEMS[:1], YES_NO, cache=False)[0]
    assert not r.valid and r.value is None and r.error and r.raw == "Maybe?"
    # And against the real server: text answers, no valid mass.
    ratings = HTTPJudge(tiny_server, "tiny", use_logprobs=False, timeout=60).rate(ITEMS, YES_NO, cache=False)
    assert all(r.valid_mass is None and (r.valid or r.error) for r in ratings)


def test_request_payload_and_identity():
    with stub_server(lambda s, b: (200, _completion("No", [("No", 0.0)]))) as (base, state):
        judge = HTTPJudge(base, "m", system="Be fair.")
        r = judge.rate([Item(text="t")], YES_NO, cache=False)[0]
    body = state.requests[0]
    assert body["model"] == "m" and body["temperature"] == 0 and body["max_tokens"] <= 16
    assert body["logprobs"] is True and body["top_logprobs"] == 20
    assert body["messages"] == [
        {"role": "system", "content": "Be fair."},
        {"role": "user", "content": YES_NO.render(Item(text="t")) + "\n\n" + scales.instruction(YES_NO)},
    ]
    assert r.valid and r.value == 0.0 and r.valid_mass == pytest.approx(1.0)
    ident = judge.identity
    assert ident.kind == "http" and ident.name == f"m@{base}" and ident.prompt_hash
    assert HTTPJudge(base, "m", system="Other.").identity.prompt_hash != ident.prompt_hash
    assert HTTPJudge(base, "m", system="Be fair.").identity == ident


def test_logprob_mapping_mass_and_fallback():
    top = [(" Yes", math.log(0.5)), ("yes", math.log(0.1)), ("No\n", math.log(0.3)), ("The", math.log(0.1))]
    with stub_server(lambda s, b: (200, _completion("Yes", top))) as (base, _):
        r = HTTPJudge(base, "m").rate(ITEMS[:1], YES_NO, cache=False)[0]
        low = HTTPJudge(base, "m", min_valid_mass=0.95).rate(ITEMS[:1], YES_NO, cache=False)[0]
    assert r.valid and r.valid_mass == pytest.approx(0.9) and r.value == pytest.approx(0.6 / 0.9)
    assert not low.valid and low.value is None and "mass" in low.error
    assert low.valid_mass == pytest.approx(0.9)
    # Server without log-probs: the text is parsed instead.
    with stub_server(lambda s, b: (200, _completion("No."))) as (base, _):
        r = HTTPJudge(base, "m").rate(ITEMS[:1], YES_NO, cache=False)[0]
    assert r.valid and r.value == 0.0 and r.valid_mass is None
    # Digits on the 0-100 scale: the digit instruction is sent, "9" means 100.
    rubric = Rubric(name="s", template="{text}", scale="0-100")
    with stub_server(lambda s, b: (200, _completion("9", [("9", 0.0)]))) as (base, state):
        r = HTTPJudge(base, "m", digits=True).rate(ITEMS[:1], rubric, cache=False)[0]
    assert scales.DIGIT_INSTRUCTION in state.requests[0]["messages"][-1]["content"]
    assert r.valid and r.value == pytest.approx(100.0)


# ---------------------------------------------------------------------------- failures
@pytest.mark.parametrize("payload", [b"<html>oops</html>", {"object": "chat.completion"},
                                     {"choices": []}, {"choices": [{"message": {}}]}, [1, 2]])
def test_garbage_responses_give_invalid_ratings(payload):
    with stub_server(lambda s, b: (200, payload)) as (base, state):
        ratings = HTTPJudge(base, "m", backoff=0.01).rate(ITEMS, YES_NO, cache=False)
    assert len(state.requests) == len(ITEMS)  # malformed answers are not retried
    for r in ratings:
        assert not r.valid and r.value is None and r.error and "malformed" in r.error


def test_timeout_gives_invalid_rating_quickly():
    def slow(state, body):
        state.stop.wait(3.0)
        return 200, _completion("Yes")

    with stub_server(slow) as (base, state):
        t0 = time.monotonic()
        r = HTTPJudge(base, "m", timeout=0.3, max_retries=1, backoff=0.05).rate(ITEMS[:1], YES_NO,
                                                                               cache=False)[0]
        elapsed = time.monotonic() - t0
        attempts = len(state.requests)
    assert not r.valid and r.value is None and "after 2 attempts" in r.error
    assert attempts == 2 and elapsed < 2.0


def test_connection_refused_gives_invalid_rating():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    judge = HTTPJudge(f"http://127.0.0.1:{port}/v1", "m", timeout=1, max_retries=2, backoff=0.01)
    r = judge.rate(ITEMS[:1], YES_NO, cache=False)[0]
    assert not r.valid and r.value is None and "connection failed after 3 attempts" in r.error


@pytest.mark.parametrize("first", [500, 503, 429])
def test_retry_after_server_error(first):
    def flaky(state, body):
        return (first, {"error": {"message": "busy"}}) if len(state.requests) == 1 else (
            200, _completion("Yes", [("Yes", 0.0)]))

    with stub_server(flaky) as (base, state):
        r = HTTPJudge(base, "m", backoff=0.01).rate(ITEMS[:1], YES_NO, cache=False)[0]
    assert len(state.requests) == 2
    assert r.valid and r.value == 1.0


def test_client_error_is_not_retried():
    with stub_server(lambda s, b: (400, {"error": {"message": "bad model"}})) as (base, state):
        r = HTTPJudge(base, "m", backoff=0.01).rate(ITEMS[:1], YES_NO, cache=False)[0]
    assert len(state.requests) == 1
    assert not r.valid and r.error.startswith("HTTP 400") and "bad model" in r.error


def test_concurrency_limit_and_order():
    def respond(state, body):
        time.sleep(0.1)
        ans = "Yes" if "even" in body["messages"][-1]["content"] else "No"
        return 200, _completion(ans, [(ans, 0.0)])

    items = [Item(text=f"item {i} {'even' if i % 2 == 0 else 'odd'}") for i in range(12)]
    with stub_server(respond) as (base, state):
        ratings = HTTPJudge(base, "m", concurrency=3).rate(items, YES_NO, cache=False)
    assert 1 < state.max_active <= 3
    assert [r.value for r in ratings] == [1.0 if i % 2 == 0 else 0.0 for i in range(12)]


def test_api_key_sent_as_bearer(monkeypatch):
    key = "sk-test-not-a-real-key"
    monkeypatch.setenv("PS_TEST_JUDGE_KEY", key)
    ok = _completion("Yes", [("Yes", 0.0)])
    with stub_server(lambda s, b: (200, ok)) as (base, state):
        HTTPJudge(base, "m", api_key_env="PS_TEST_JUDGE_KEY").rate(ITEMS[:1], YES_NO, cache=False)
        monkeypatch.delenv("PS_TEST_JUDGE_KEY")
        HTTPJudge(base, "m", api_key_env="PS_TEST_JUDGE_KEY").rate(ITEMS[:1], YES_NO, cache=False)
    assert state.headers[0]["Authorization"] == f"Bearer {key}"
    assert "Authorization" not in state.headers[1]
    monkeypatch.setenv("PS_TEST_JUDGE_KEY", key)
    with stub_server(lambda s, b: (401, {"error": {"message": "invalid key"}})) as (base, _):
        r = HTTPJudge(base, "m", api_key_env="PS_TEST_JUDGE_KEY").rate(ITEMS[:1], YES_NO, cache=False)[0]
    assert not r.valid and "401" in r.error and key not in r.model_dump_json()


# ---------------------------------------------------------------------------- the embedded model
@pytest.mark.slow
def test_http_judge_over_embedded_model(smol_nn):
    server, base = start_in_thread(smol_nn)
    try:
        judge = HTTPJudge(base, "smol", system="Reply Yes or No.", concurrency=1, timeout=300,
                          deadline=300, max_retries=0)
        r = judge.rate([Item(text="2 + 2 = 4")], YES_NO, cache=False)[0]
    finally:
        server.close()
    assert r.valid, r.error
    assert r.valid_mass > 0.5 and r.value > 0.5
