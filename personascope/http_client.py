"""A JSON-over-HTTP client that stays bounded against hostile or broken servers.

`HTTPClient.post_json` sends one API call and returns the decoded JSON object, or raises an
`HTTPClientError` subclass that says what went wrong. Every call is bounded:

- size: the body is read as a stream and refused past ``max_body_bytes`` (a 50 MB "answer" never
  reaches memory);
- time: a total ``deadline`` per call (retries and waits included), checked between body chunks so
  a server dripping a byte at a time cannot hold it, and every socket wait is capped to the time
  left;
- retries: jittered exponential backoff, a server's ``Retry-After`` capped at
  ``max_retry_after``, and a `RetryBudget` of seconds lost to failures shared by all calls of a
  client (so a dead server costs a run minutes, not hours);
- credentials: redirects are never followed (a 3xx is an error), so an API key is only ever sent
  to the configured origin;
- cancellation: a ``cancel`` event stops waits and body reads promptly (Ctrl-C).

The HTTP judge uses it; served-model adapters reuse it.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import os
import random
import threading
import time
from datetime import UTC, datetime
from typing import Any

import httpcore
import httpx

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
ERROR_BODY_BYTES = 64 * 1024  # enough for an error message; the rest of an error body is not read


class HTTPClientError(Exception):
    """A failed API call; ``str(error)`` is a one-line reason fit for a rating's error field."""


class RequestFailed(HTTPClientError):
    """Connection failures or timeouts on every attempt."""


class HTTPStatusError(HTTPClientError):
    """The server answered with an error status.

    Attributes:
        status: The HTTP status code.
        detail: The server's error message, when it sent one.
    """

    def __init__(self, message: str, status: int, detail: str) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class RedirectRefused(HTTPClientError):
    """The server answered with a redirect, which API calls never follow."""


class ResponseTooLarge(HTTPClientError):
    """The response body is over the client's ``max_body_bytes``."""


class DeadlineExceeded(HTTPClientError):
    """The call's total deadline passed (slow or dripping server, or retries that ran out of time)."""


class RetryBudgetExhausted(HTTPClientError):
    """The client's shared budget of seconds lost to failures is spent; no attempt was sent."""


class MalformedResponse(HTTPClientError):
    """The body is not a JSON object."""


class Cancelled(HTTPClientError):
    """The caller's cancel event was set (e.g. Ctrl-C) before the call finished."""


class RetryBudget:
    """Seconds a client may lose to failed attempts and retry waits, shared by all its calls.

    Thread-safe. Once spent, calls fail fast with `RetryBudgetExhausted` instead of waiting on a
    server that has been failing for that long.

    Args:
        seconds: The budget; ``math.inf`` for none.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        self._spent = 0.0
        self._lock = threading.Lock()

    @property
    def remaining(self) -> float:
        """Seconds left (never negative)."""
        with self._lock:
            return max(0.0, self.seconds - self._spent)

    @property
    def exhausted(self) -> bool:
        """True once the whole budget is spent."""
        return self.remaining <= 0.0

    def spend(self, seconds: float) -> None:
        """Record ``seconds`` lost to a failure."""
        with self._lock:
            self._spent += max(0.0, seconds)

    def take(self, seconds: float) -> bool:
        """Reserve ``seconds`` of waiting; False (nothing reserved) when that is more than is left."""
        with self._lock:
            if self._spent + seconds > self.seconds:
                return False
            self._spent += seconds
            return True


class HTTPClient:
    """Pooled JSON API client with a body cap, a total deadline per call and budgeted retries.

    Thread-safe: one client serves concurrent calls over a shared connection pool.

    Args:
        base_url: API root, e.g. ``http://127.0.0.1:8000/v1``; call paths are appended to it.
        api_key_env: Environment variable holding the API key, sent as a Bearer token when set (read
            at each call, so a key set later is used).
        timeout: Seconds any single socket wait (connect, send, each read) may take.
        deadline: Total seconds one `post_json` call may take, attempts and waits included.
        max_body_bytes: Largest response body accepted; a larger one is refused unread.
        max_retries: Retries after the first attempt on connection errors, timeouts, 408/429/5xx.
        backoff: Base retry delay in seconds; attempt ``n`` waits ``backoff * 2**n``, jittered
            by +-50 % so concurrent callers do not retry in lockstep.
        max_retry_after: Longest wait a server's ``Retry-After`` can ask for.
        retry_budget: Seconds lost to failures (failed attempts plus waits, summed over concurrent
            calls) this client tolerates over its lifetime, or a `RetryBudget` to share.
        max_connections: Size of the connection pool.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key_env: str | None = None,
        timeout: float = 30.0,
        deadline: float = 60.0,
        max_body_bytes: int = 4_000_000,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_retry_after: float = 30.0,
        retry_budget: float | RetryBudget = 300.0,
        max_connections: int = 8,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.deadline = float(deadline)
        self.max_body_bytes = int(max_body_bytes)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_retry_after = float(max_retry_after)
        self.budget = retry_budget if isinstance(retry_budget, RetryBudget) else RetryBudget(retry_budget)
        # follow_redirects=False: a redirect must never carry the Bearer key to another origin, and
        # an API that redirects a POST is misconfigured anyway.
        self._client = httpx.Client(
            follow_redirects=False,
            timeout=httpx.Timeout(self.timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )
        _install_deadline_backend(self._client)

    def __repr__(self) -> str:
        return f"HTTPClient({self.base_url!r})"

    def __enter__(self) -> HTTPClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close pooled connections."""
        self._client.close()

    # ------------------------------------------------------------------ calls
    def post_json(
        self, path: str, payload: Any, *, cancel: threading.Event | None = None
    ) -> dict[str, Any]:
        """POST ``payload`` as JSON to ``base_url + path``; the decoded JSON object of the reply.

        Args:
            path: Appended to the base URL, e.g. ``/chat/completions``.
            payload: JSON-serializable request body.
            cancel: When set, the call stops at the next chunk or wait and raises `Cancelled`.

        Raises:
            HTTPClientError: A subclass saying why: `RequestFailed`, `HTTPStatusError`,
                `RedirectRefused`, `ResponseTooLarge`, `DeadlineExceeded`, `RetryBudgetExhausted`,
                `MalformedResponse` or `Cancelled`.
        """
        url = self.base_url + "/" + path.lstrip("/")
        body = json.dumps(payload, allow_nan=False).encode("utf-8")
        # identity: the byte cap counts what arrives; a compressed body could inflate past it.
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "Accept-Encoding": "identity"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        end = time.monotonic() + self.deadline
        attempt = 0
        while True:
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled")
            if self.budget.exhausted:
                raise RetryBudgetExhausted(
                    f"retry budget of {self.budget.seconds:g} s spent on earlier failures; request not sent"
                )
            t0 = time.monotonic()
            retry_after: float | None = None
            try:
                return self._attempt(url, body, headers, end, cancel)
            except _Retryable as e:
                err, retry_after = e.error, e.retry_after
            except HTTPClientError:
                self.budget.spend(time.monotonic() - t0)  # e.g. a deadline: time lost all the same
                raise
            self.budget.spend(time.monotonic() - t0)
            n = attempt + 1
            if attempt >= self.max_retries:
                raise _with_attempts(err, n)
            delay = self.backoff * 2**attempt * random.uniform(0.5, 1.5)
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.max_retry_after))
            left = end - time.monotonic()
            if delay >= left:
                raise DeadlineExceeded(
                    f"deadline of {self.deadline:g} s reached after {n} attempt(s); last error: {err}"
                )
            if not self.budget.take(delay):
                raise RetryBudgetExhausted(
                    f"retry budget of {self.budget.seconds:g} s spent; gave up after {n} attempt(s); "
                    f"last error: {err}"
                )
            log.debug("HTTP retry %d/%d in %.2fs: %s", n, self.max_retries, delay, err)
            if cancel is not None:
                if cancel.wait(delay):
                    raise Cancelled("cancelled")
            else:
                time.sleep(delay)
            attempt += 1

    def _attempt(
        self, url: str, body: bytes, headers: dict[str, str], end: float, cancel: threading.Event | None
    ) -> dict[str, Any]:
        """One POST; the JSON object, a fatal `HTTPClientError`, or `_Retryable`."""
        left = end - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"deadline of {self.deadline:g} s exceeded")
        # No socket wait may outlive the deadline; between chunks the deadline is checked as well.
        wait = min(self.timeout, left)
        _attempt_end.end = end
        try:
            with self._client.stream("POST", url, content=body, headers=headers,
                                     timeout=httpx.Timeout(wait)) as resp:
                status = resp.status_code
                if 300 <= status < 400:
                    where = _origin(resp.headers.get("Location", ""))
                    raise RedirectRefused(
                        f"HTTP {status} redirect to {where or 'an unnamed location'} refused: API calls do "
                        "not follow redirects (credentials stay with the configured origin)"
                    )
                if status >= 400:
                    raw = self._read(resp, end, cancel, min(self.max_body_bytes, ERROR_BODY_BYTES),
                                     truncate=True)
                    detail = _error_detail(raw) or resp.reason_phrase
                    if status in RETRY_STATUS:
                        raise _Retryable(HTTPStatusError(f"HTTP {status}: {detail}", status, detail),
                                         _retry_after(resp.headers.get("Retry-After")))
                    raise HTTPStatusError(f"HTTP {status}: {detail}", status, detail)
                raw = self._read(resp, end, cancel, self.max_body_bytes)
        except httpx.TransportError as e:  # connect/read/write timeouts, refused, reset, bad HTTP
            if time.monotonic() >= end:
                raise DeadlineExceeded(
                    f"deadline of {self.deadline:g} s exceeded ({type(e).__name__})"
                ) from None
            raise _Retryable(RequestFailed(f"{type(e).__name__}: {e}"[:300])) from None
        finally:
            _attempt_end.end = None
        try:
            data = json.loads(raw)
        except ValueError:
            raise MalformedResponse(f"malformed response: not JSON ({_snippet(raw)})") from None
        if not isinstance(data, dict):
            raise MalformedResponse("malformed response: JSON is not an object")
        return data

    def _read(
        self, resp: httpx.Response, end: float, cancel: threading.Event | None, cap: int,
        *, truncate: bool = False,
    ) -> bytes:
        """The body, streamed: refused past ``cap`` bytes (or cut there when ``truncate``) or the deadline."""
        declared = resp.headers.get("Content-Length", "")
        if not truncate and declared.isdigit() and int(declared) > cap:
            raise ResponseTooLarge(
                f"response body of {int(declared)} bytes is over the {cap}-byte cap (max_body_bytes); refused"
            )
        encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise MalformedResponse(f"malformed response: Content-Encoding {encoding!r} was not asked for")
        chunks: list[bytes] = []
        size = 0
        for chunk in resp.iter_raw():
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled")
            if time.monotonic() > end:
                raise DeadlineExceeded(
                    f"deadline of {self.deadline:g} s exceeded while reading the body ({size} bytes so far)"
                )
            size += len(chunk)
            if size > cap:
                if truncate:
                    chunks.append(chunk[: len(chunk) - (size - cap)])
                    break
                raise ResponseTooLarge(
                    f"response body over the {cap}-byte cap (max_body_bytes); refused"
                )
            chunks.append(chunk)
        return b"".join(chunks)


# The absolute deadline (time.monotonic()) of the attempt running on this thread, read by the
# network backend below; httpx timeouts alone are per socket wait, not per request.
_attempt_end = threading.local()


def _cap(timeout: float | None, exc: type[Exception]) -> float | None:
    """``timeout`` shortened to the time left before this thread's attempt deadline."""
    end = getattr(_attempt_end, "end", None)
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise exc("request deadline exceeded")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every read and write ends by the attempt's deadline.

    This bounds what the between-chunk check cannot: a server that drips its status line and
    headers a byte at a time (each byte resets an ordinary read timeout).
    """

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _cap(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _cap(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname,
                                                     _cap(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """`httpcore.SyncBackend` whose connections honour the attempt deadline (`_DeadlineStream`)."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None, socket_options: Any = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_tcp(host, port, _cap(timeout, httpcore.ConnectTimeout),
                                                       local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_unix_socket(path, _cap(timeout, httpcore.ConnectTimeout),
                                                               socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _install_deadline_backend(client: httpx.Client) -> bool:
    """Put `_DeadlineBackend` under ``client``'s connection pool; False where httpx's layout differs.

    httpx has no public hook for httpcore's network backend, so this reaches into the transport.
    Where it cannot, the deadline is still enforced between body chunks and on every socket wait.
    """
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    inner = getattr(pool, "_network_backend", None)
    if not isinstance(inner, httpcore.NetworkBackend):
        log.debug("httpx layout unknown: request deadline enforced between chunks only")
        return False
    pool._network_backend = _DeadlineBackend(inner)  # type: ignore[union-attr]
    return True


class _Retryable(Exception):
    """Internal: an attempt failed in a way a retry may fix."""

    def __init__(self, error: HTTPClientError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


def _with_attempts(err: HTTPClientError, n: int) -> HTTPClientError:
    """``err`` reworded as the final failure after ``n`` attempts (the message the judge records)."""
    if isinstance(err, HTTPStatusError):
        return HTTPStatusError(f"HTTP {err.status} after {n} attempts: {err.detail}", err.status, err.detail)
    if isinstance(err, RequestFailed):
        return RequestFailed(f"connection failed after {n} attempts: {err}"[:300])
    return err


def _origin(location: str) -> str:
    """``scheme://host:port`` of a redirect target; never its path or query (they may hold tokens)."""
    try:
        u = httpx.URL(location)
    except Exception:  # noqa: BLE001 - a garbage Location is reported, not raised
        return ""
    if not u.host:
        return "a path on the same origin"
    return f"{u.scheme}://{u.host}" + (f":{u.port}" if u.port else "")


def _error_detail(raw: bytes) -> str:
    try:
        return str(json.loads(raw)["error"]["message"])[:200]
    except (ValueError, KeyError, TypeError):
        return _snippet(raw)


def _retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    try:
        secs = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        secs = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, secs) if math.isfinite(secs) else None


def _snippet(raw: bytes, n: int = 80) -> str:
    text = raw[:n].decode("utf-8", "replace").replace("\n", " ")
    return text + ("..." if len(raw) > n else "")


__all__ = [
    "RETRY_STATUS",
    "Cancelled",
    "DeadlineExceeded",
    "HTTPClient",
    "HTTPClientError",
    "HTTPStatusError",
    "MalformedResponse",
    "RedirectRefused",
    "RequestFailed",
    "ResponseTooLarge",
    "RetryBudget",
    "RetryBudgetExhausted",
]
