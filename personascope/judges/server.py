"""A small OpenAI-compatible server over a local `ModelAdapter` (stdlib ``http.server`` only).

It serves ``GET /v1/models``, ``POST /v1/chat/completions`` (greedy unless ``temperature`` > 0,
optional log-probs of the first generated token, ``continue_final_message``) and ``POST
/v1/completions`` (text or token-id prompts, ``echo`` with prompt log-probs), enough for `HTTPJudge`
to use a local model as a judge and for `personascope.backends.served.ServedModel` to audit it over
HTTP. Concurrent requests are micro-batched: greedy generations with the same ``max_tokens`` and
prompt scorings that wait together run as one batch on the model (up to ``max_batch``); a request
whose client hung up while it waited is dropped without model work. It binds only to the host given
(loopback by default) and has no authentication, so do not expose it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import select
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..chat import encode

if TYPE_CHECKING:
    from ..backends.base import ModelAdapter

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 16
MAX_TOKENS_CAP = 512
TOP_LOGPROBS_CAP = 20
MAX_BODY_BYTES = 8 * 1024 * 1024
LOGPROB_FLOOR = -9999.0  # what OpenAI reports for tokens too unlikely to matter
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class RequestError(Exception):
    """A client error answered as an OpenAI-style JSON error."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


class JudgeServer(ThreadingHTTPServer):
    """Threading HTTP server that holds the model, its name and the lock serializing model access.

    Args:
        address: ``(host, port)`` to bind; port 0 picks a free port.
        model: The local model that answers.
        model_name: Name reported by ``/v1/models`` and in responses (default: the model's id).

    """

    daemon_threads = True
    request_queue_size = 64  # clients queue here while one request at a time runs on the model

    def __init__(self, address: tuple[str, int], model: ModelAdapter, *, model_name: str | None = None,
                 max_batch: int = 16):
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an integer >= 1, got {max_batch!r}")
        self.model = model
        self.model_name = model_name or model.info.id or "personascope-local"
        self.model_lock = threading.Lock()
        self.batcher = _Batcher(self, max_batch)
        self._serving_thread: threading.Thread | None = None
        super().__init__(address, _Handler)

    @property
    def base_url(self) -> str:
        """API root clients use, e.g. ``http://127.0.0.1:8000/v1``."""
        addr = self.server_address
        host, port = str(addr[0]), int(addr[1])
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/v1"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log a failed connection; a client that hung up early (timed out) is routine."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            log.debug("client %s went away: %s", client_address, exc)
        else:
            log.exception("error while serving %s", client_address)

    def close(self) -> None:
        """Stop `serve_forever` (when running), the batch worker, and release the socket."""
        self.batcher.stop()
        if self._serving_thread is not None:
            self.shutdown()
            self._serving_thread.join(timeout=5)
            self._serving_thread = None
        self.server_close()

    # ------------------------------------------------------------------ API
    def models(self) -> dict[str, Any]:
        """The ``/v1/models`` listing (one model)."""
        return {"object": "list", "data": [self._model_entry()]}

    def _model_entry(self) -> dict[str, Any]:
        return {"id": self.model_name, "object": "model", "created": 0, "owned_by": "personascope"}

    def chat_completion(self, req: Any) -> dict[str, Any]:
        """Answer a chat completions request body (already JSON-decoded); `RequestError` if bad."""
        if not isinstance(req, dict):
            raise RequestError(400, "Request body must be a JSON object")
        messages = _messages(req.get("messages"))
        if req.get("stream"):
            raise RequestError(400, "Streaming is not supported", "stream")
        if req.get("n", 1) != 1:
            raise RequestError(400, "Only n=1 is supported", "n")
        max_tokens = req.get("max_completion_tokens", req.get("max_tokens"))
        max_tokens = DEFAULT_MAX_TOKENS if max_tokens is None else _int(max_tokens, "max_tokens", 1)
        max_tokens = min(max_tokens, MAX_TOKENS_CAP)
        want_lp = req.get("logprobs", False)
        if not isinstance(want_lp, bool):
            raise RequestError(400, "logprobs must be a boolean", "logprobs")
        top_n = req.get("top_logprobs")
        top_n = 0 if top_n is None else min(_int(top_n, "top_logprobs", 0), TOP_LOGPROBS_CAP)
        stop = _stops(req.get("stop"))
        sampling = _sampling(req)
        # vLLM's extension (llama.cpp does the same for a final assistant message): the last assistant
        # message is an answer prefix the model continues, not a finished turn.
        prefill = ""
        if req.get("continue_final_message"):
            if messages[-1]["role"] != "assistant":
                raise RequestError(400, "continue_final_message needs a final assistant message",
                                   "continue_final_message")
            prefill = messages.pop()["content"]
            if not messages:
                raise RequestError(400, "messages needs a turn before the assistant prefix", "messages")

        model, tok = self.model, self.model.tokenizer
        try:
            prompt = model.format_chat(messages) + prefill
        except Exception as e:  # noqa: BLE001 - chat templates reject some role orders
            raise RequestError(400, f"Cannot format these messages: {e}", "messages") from None
        text = self.batcher.generate(prompt, max_tokens, sampling)
        logprobs = None
        if want_lp:
            with self.model_lock:
                logprobs = self._first_token_logprobs(prompt, top_n)
        prompt_tokens = len(encode(tok, prompt))
        completion_tokens = len(tok(text, add_special_tokens=False)["input_ids"]) if text else 0
        finish = "length" if completion_tokens >= max_tokens else "stop"
        cut = min((text.index(s) for s in stop if s in text), default=None)
        if cut is not None:
            text, finish = text[:cut], "stop"
            completion_tokens = len(tok(text, add_special_tokens=False)["input_ids"]) if text else 0
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "system_fingerprint": (model.info.fingerprint or "")[:16] or None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": logprobs,
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def completion(self, req: Any) -> dict[str, Any]:
        """Answer a ``/v1/completions`` request: text or token-id prompt, optional ``echo`` with prompt log-probs.

        ``logprobs`` (an int) asks for the log-prob of every returned token (with ``echo``: the prompt's
        too, ``None`` for the first, as OpenAI and vLLM do) and the top ``logprobs`` alternatives of the
        generated ones; ``max_tokens = 0`` with ``echo`` scores the prompt alone.
        """
        if not isinstance(req, dict):
            raise RequestError(400, "Request body must be a JSON object")
        tok = self.model.tokenizer
        raw = req.get("prompt")
        if isinstance(raw, str) and raw:
            ids = encode(tok, raw)
            prompt = raw
        elif isinstance(raw, list) and raw and all(isinstance(t, int) and not isinstance(t, bool) for t in raw):
            vocab = len(tok)
            if any(t < 0 or t >= vocab for t in raw):
                raise RequestError(400, f"prompt token ids must be in [0, {vocab})", "prompt")
            ids, prompt = list(raw), tok.decode(raw)
        else:
            raise RequestError(400, "prompt must be a non-empty string or list of token ids", "prompt")
        if req.get("stream"):
            raise RequestError(400, "Streaming is not supported", "stream")
        echo = req.get("echo", False)
        if not isinstance(echo, bool):
            raise RequestError(400, "echo must be a boolean", "echo")
        max_tokens = req.get("max_tokens")
        max_tokens = DEFAULT_MAX_TOKENS if max_tokens is None else _int(max_tokens, "max_tokens", 0 if echo else 1)
        max_tokens = min(max_tokens, MAX_TOKENS_CAP)
        n_lp = req.get("logprobs")
        n_lp = None if n_lp is None else min(_int(n_lp, "logprobs", 0), TOP_LOGPROBS_CAP)
        sampling = _sampling(req)
        text = self.batcher.generate(prompt, max_tokens, sampling) if max_tokens else ""
        new = tok(text, add_special_tokens=False)["input_ids"] if text else []
        lp_block = None
        if n_lp is not None:
            seq = (ids if echo else []) + new
            every = self.batcher.score(ids + new)
            lps = list(every if echo else every[len(ids):])
            pieces = [tok.decode([t]) for t in seq]
            offsets, at = [], 0
            for piece in pieces:
                offsets.append(at)
                at += len(piece)
            lp_block = {
                "tokens": pieces,
                "token_logprobs": [None if math.isnan(v) else max(float(v), LOGPROB_FLOOR) for v in lps],
                "top_logprobs": None,
                "text_offset": offsets,
            }
        n_prompt = len(ids)
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [{"index": 0, "text": (prompt if echo else "") + text, "logprobs": lp_block,
                         "finish_reason": "length" if max_tokens and len(new) >= max_tokens else "stop"}],
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": len(new), "total_tokens": n_prompt + len(new)},
        }

    def _first_token_logprobs(self, prompt: str, top_n: int) -> dict[str, Any]:
        """OpenAI-style ``logprobs`` block for the first (greedy) token after ``prompt``."""
        lp = self.model.next_token_logprobs([prompt])[0]
        k = max(1, top_n)
        vals, ids = lp.topk(k)
        tok = self.model.tokenizer

        def entry(i: int, v: float) -> dict[str, Any]:
            text = tok.decode([i])
            # JSON has no -Infinity: a masked token gets OpenAI's floor instead (clients reject
            # non-finite log-probs as a broken server).
            return {"token": text, "logprob": max(v, LOGPROB_FLOOR), "bytes": list(text.encode("utf-8"))}

        top = [entry(int(i), float(v)) for i, v in zip(ids.tolist(), vals.tolist(), strict=True)]
        first = dict(top[0])
        first["top_logprobs"] = top[:top_n]
        return {"content": [first]}


class _ClientGone(Exception):
    """The client closed its connection before its request reached the model."""


def _client_alive(sock: socket.socket | None) -> bool:
    """Whether the client on ``sock`` still waits for its answer (None: not known, assumed yes).

    Client timeouts used to pile abandoned requests onto the model; a request whose connection is
    closed when its batch forms is dropped without model work.
    """
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return not (readable and not sock.recv(1, socket.MSG_PEEK))
    except (OSError, ValueError):
        return False


@dataclass
class _Job:
    """One request's model call, waiting for its batch."""

    key: tuple[Any, ...]
    payload: Any
    sock: socket.socket | None
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


class _Batcher:
    """Micro-batching: one worker thread runs the model calls of concurrent requests together.

    Greedy generations with the same ``max_tokens`` form one `ModelAdapter.generate` batch, and
    prompt scorings one `ModelAdapter.token_logprobs` batch (the adapter sorts by length and pads
    little). A sampled generation runs alone: its seed fixes its text only as a batch of one. While
    a batch runs the next requests queue, so under load batches fill without a fixed wait.
    """

    def __init__(self, server: JudgeServer, max_batch: int) -> None:
        self.server = server
        self.max_batch = max_batch
        self.sizes: list[int] = []  # batch sizes run, for tests and benchmarks
        self.dropped = 0  # requests whose client hung up before their batch ran
        self._queue: list[_Job] = []
        self._cv = threading.Condition()
        self._worker: threading.Thread | None = None
        self._stopped = False

    def generate(self, prompt: str, max_tokens: int, sampling: dict[str, Any]) -> str:
        """The completion of ``prompt``, computed in a batch with compatible waiting requests."""
        key = ("gen", max_tokens, *sorted(sampling.items())) if sampling else ("gen", max_tokens)
        return str(self._submit(key, prompt))

    def score(self, ids: list[int]) -> list[float]:
        """Per-token log-probs of ``ids`` (NaN first), in a batch with other waiting scorings."""
        return list(self._submit(("score",), ids))

    def stop(self) -> None:
        """Stop the worker; waiting requests get an error."""
        with self._cv:
            self._stopped = True
            self._cv.notify_all()

    def _submit(self, key: tuple[Any, ...], payload: Any) -> Any:
        job = _Job(key, payload, getattr(_current, "socket", None))
        with self._cv:
            if self._stopped:
                raise RuntimeError("server is closing")
            self._queue.append(job)
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="judge-batcher", daemon=True)
                self._worker.start()
            self._cv.notify()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def _wait(self) -> bool:
        """Block until a job waits (True) or the batcher stops (False; waiting jobs get an error)."""
        with self._cv:
            while not self._queue and not self._stopped:
                self._cv.wait()
            if self._stopped:
                for job in self._queue:
                    job.error = RuntimeError("server is closing")
                    job.done.set()
                self._queue.clear()
                return False
            return True

    def _take(self) -> list[_Job]:
        """The next batch: the oldest job and the waiting jobs that can share its call."""
        with self._cv:
            first = self._queue[0]
            solo = first.key[0] == "gen" and len(first.key) > 2  # sampled: alone
            batch = [first] if solo else [j for j in self._queue if j.key == first.key][: self.max_batch]
            taken = {id(j) for j in batch}
            self._queue = [j for j in self._queue if id(j) not in taken]
            return batch

    def _run(self) -> None:
        while self._wait():
            live: list[_Job] = []
            batch: list[_Job] = []
            try:
                # The batch forms once the model is free: requests that came while it was busy join it.
                with self.server.model_lock:
                    batch = self._take()
                    # Checked now, too: the wait for the model is when clients give up.
                    for job in batch:
                        if _client_alive(job.sock):
                            live.append(job)
                        else:
                            self.dropped += 1
                            job.error = _ClientGone()
                    if live:
                        for job, r in zip(live, self._call(live), strict=True):
                            job.result = r
                        self.sizes.append(len(live))
                        if len(self.sizes) > 10_000:  # a long-lived server keeps the recent ones only
                            del self.sizes[:5_000]
            except BaseException as e:  # noqa: BLE001 - every waiting request answers, the worker lives on
                for job in live:
                    job.error = e
            finally:
                for job in batch:
                    job.done.set()

    def _call(self, jobs: list[_Job]) -> list[Any]:
        model, key = self.server.model, jobs[0].key
        if key[0] == "score":
            return [list(map(float, r)) for r in model.token_logprobs([j.payload for j in jobs])]
        sampling = dict(key[2:])
        return list(model.generate([j.payload for j in jobs], max_new_tokens=key[1], progress=False,
                                   batch_size=len(jobs), **sampling))


#: The socket of the request this handler thread serves (`_client_alive` looks at it when its batch forms).
_current = threading.local()


def _sampling(req: dict[str, Any]) -> dict[str, Any]:
    """Decoding arguments for `ModelAdapter.generate`: greedy unless ``temperature`` > 0 (then ``seed`` too)."""
    temp = req.get("temperature")
    if temp is None or temp == 0:
        return {}
    if isinstance(temp, bool) or not isinstance(temp, int | float) or not 0 < temp <= 2:
        raise RequestError(400, "temperature must be a number in [0, 2]", "temperature")
    seed = req.get("seed")
    if seed is not None:
        seed = _int(seed, "seed", 0)
    return {"do_sample": True, "temperature": float(temp), "seed": seed}


def _int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RequestError(400, f"{name} must be an integer >= {minimum}", name)
    return value


def _stops(value: Any) -> list[str]:
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise RequestError(400, "stop must be a string or a list of strings", "stop")
    return [s for s in stops if s]


def _messages(value: Any) -> list[dict[str, str]]:
    """Validated ``[{"role", "content"}]`` (text content parts joined), or `RequestError`."""
    if not isinstance(value, list) or not value:
        raise RequestError(400, "messages must be a non-empty list", "messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise RequestError(
                400, f"messages[{i}] needs a role among {', '.join(ROLES)}", f"messages[{i}].role"
            )
        content = m.get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                raise RequestError(400, "Only text content parts are supported", f"messages[{i}].content")
            content = "".join(str(p.get("text", "")) for p in content)
        if not isinstance(content, str):
            raise RequestError(400, f"messages[{i}].content must be a string", f"messages[{i}].content")
        out.append({"role": ROLES[m["role"]], "content": content})
    return out


class _Handler(BaseHTTPRequestHandler):
    server: JudgeServer
    protocol_version = "HTTP/1.1"
    timeout = 120  # an idle keep-alive connection is closed after this many seconds

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = urlsplit(self.path).path.rstrip("/")
        if path == "/v1/models":
            self._send(200, self.server.models())
        elif path == f"/v1/models/{self.server.model_name}":
            self._send(200, self.server._model_entry())
        elif path == "/health":
            self._send(200, {"status": "ok"})
        elif path in ("/v1/chat/completions", "/v1/completions"):
            self._error(405, f"Use POST for {path}")
        else:
            self._error(404, f"Unknown path {path or '/'}")

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        path = urlsplit(self.path).path.rstrip("/")
        answer = {"/v1/chat/completions": self.server.chat_completion,
                  "/v1/completions": self.server.completion}.get(path)
        if answer is None:
            self._discard_body()
            self._error(404, f"Unknown path {path or '/'}")
            return
        _current.socket = self.connection
        try:
            body = self._read_json()
            self._send(200, answer(body))
        except _ClientGone:
            self.close_connection = True
            log.debug("client %s hung up before its turn: not computed", self.address_string())
        except RequestError as e:
            self._error(e.status, e.message, e.param)
        except Exception as e:  # noqa: BLE001 - a model failure answers 500, the server lives on
            log.exception("completion failed")
            self._error(500, f"Internal error: {type(e).__name__}", kind="server_error")

    def _read_json(self) -> Any:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise RequestError(400, "Chunked request bodies are not supported; send Content-Length")
        try:
            n = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            raise RequestError(400, "Missing Content-Length") from None
        if n < 0 or n > MAX_BODY_BYTES:
            self.close_connection = True
            raise RequestError(413, f"Request body over {MAX_BODY_BYTES} bytes")
        raw = self.rfile.read(n)
        try:
            return json.loads(raw)
        except ValueError as e:
            raise RequestError(400, f"Invalid JSON body: {e}") from None

    def _discard_body(self) -> None:
        try:
            n = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            n = -1
        if 0 <= n <= MAX_BODY_BYTES:
            self.rfile.read(n)
        else:
            self.close_connection = True

    def _send(self, status: int, obj: Any) -> None:
        # allow_nan=False: never emit the non-standard NaN/Infinity tokens strict clients reject.
        data = json.dumps(obj, ensure_ascii=False, allow_nan=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _error(
        self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"
    ) -> None:
        code = HTTPStatus(status).phrase.lower().replace(" ", "_")
        self._send(status, {"error": {"message": message, "type": kind, "param": param, "code": code}})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug("%s - " + format, self.address_string(), *args)


def _server_class(host: str) -> type[JudgeServer]:
    try:
        v6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        v6 = False
    if not v6:
        return JudgeServer
    return type("JudgeServer6", (JudgeServer,), {"address_family": socket.AF_INET6})


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(
    model: ModelAdapter, host: str = "127.0.0.1", port: int = 8000, *, model_name: str | None = None,
    max_batch: int = 16,
) -> JudgeServer:
    """A bound (not yet serving) `JudgeServer` on ``host:port`` (``max_batch``: requests per model batch)."""
    if not _is_loopback(host):
        log.warning("Judge server binds to %s: it has no authentication, anyone who can reach it can "
                    "use the model", host)
    return _server_class(host)((host, port), model, model_name=model_name, max_batch=max_batch)


def serve(
    model: ModelAdapter, host: str = "127.0.0.1", port: int = 8000, *, model_name: str | None = None,
    max_batch: int = 16,
) -> None:
    """Serve ``model`` as an OpenAI-compatible API on ``host:port`` until interrupted (Ctrl-C).

    Args:
        model: The local model that answers.
        host: Interface to bind (default loopback only).
        port: TCP port (0 picks a free one; the URL is printed).
        model_name: Name reported to clients (default: the model's id).
        max_batch: Most concurrent requests run as one model batch (1: one at a time).

    """
    server = make_server(model, host, port, model_name=model_name, max_batch=max_batch)
    print(f"Serving {server.model_name} at {server.base_url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def start_in_thread(
    model: ModelAdapter, host: str = "127.0.0.1", port: int = 0, **kw: Any
) -> tuple[JudgeServer, str]:
    """Start a server in a daemon thread; returns ``(server, base_url)``. Stop it with ``server.close()``.

    Args:
        model: The local model that answers.
        host: Interface to bind (default loopback).
        port: TCP port (default 0: a free port).
        **kw: Passed to `make_server` (``model_name``, ``max_batch``).

    """
    server = make_server(model, host, port, **kw)
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), name="judge-server", daemon=True)
    server._serving_thread = thread
    thread.start()
    return server, server.base_url


__all__ = ["JudgeServer", "RequestError", "make_server", "serve", "start_in_thread"]
