"""A judge behind any OpenAI-compatible ``/chat/completions`` endpoint (via `personascope.http_client`).

The judge asks the same question as the local log-prob judge (`scales.instruction`) and, when
the server returns log-probs, reads the answer distribution off the first generated token, so
its ratings carry a valid-answer mass just like local ones. Without log-probs it parses the
answer text. A failed item never raises: it comes back as an invalid `Rating` with an error.
Servers are not trusted: bodies are capped, each request has a total deadline, retries share a
budget per judge, redirects are refused, and impossible log-probs make a rating invalid.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from typing import Any

from ..http_client import RETRY_STATUS, HTTPClient, HTTPClientError, RetryBudget
from ..records import stable_hash
from . import scales
from .base import Item, Judge, JudgeIdentity, Rating, Rubric

log = logging.getLogger(__name__)

TOP_LOGPROBS = 20  # the most OpenAI's API returns per token
# A log-prob is at most 0; servers round, so a little above 0 (and a top-k mass a little above 1)
# is rounding, more is a broken or hostile server.
LOGPROB_SLACK = 0.01
MASS_SLACK = 0.05
RAW_CHARS = 2000  # of the answer text kept in a rating (and so in the judge cache)

class HTTPJudge(Judge):
    """Judge that rates items through an OpenAI-compatible chat completions API.

    Args:
        base_url: API root, e.g. ``http://127.0.0.1:8000/v1`` (``/chat/completions`` is appended).
        model: Model name sent in every request.
        api_key_env: Environment variable holding the API key, sent as a Bearer token when set
            (only ever to ``base_url``'s origin: redirects are refused).
        timeout: Seconds any single socket wait (connect, send, each read) may take.
        max_retries: Retries after the first attempt on connection errors, timeouts, 408/429/5xx.
        backoff: First retry delay in seconds; doubles on each retry, jittered +-50 % (a 429's
            Retry-After wins when longer, capped at ``max_retry_after``).
        concurrency: Requests in flight at most.
        system: Optional system message sent before the rubric prompt.
        min_valid_mass: With log-probs, a rating whose valid-answer mass is below this is invalid.
        use_logprobs: Ask for the first token's top log-probs and rate from them; otherwise (or
            when the server returns none) parse the answer text.
        digits: On the ``0-100`` scale ask for one digit 0-9 (mapped onto 0-100), for servers
            whose tokenizer splits numbers into digits (see `scales.DIGIT_INSTRUCTION`).
        max_tokens: Answer length requested from the server.
        deadline: Total seconds per item's request, retries and waits included.
        max_body_bytes: Largest response accepted; a larger one is refused and the item is invalid.
        retry_budget: Seconds this judge may lose to failed attempts and retry waits over all its
            items (summed over concurrent requests); once spent, further items fail at once
            instead of waiting on a dead server.
        max_retry_after: Longest wait a server's ``Retry-After`` can impose.

    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        concurrency: int = 4,
        system: str | None = None,
        min_valid_mass: float = 0.25,
        use_logprobs: bool = True,
        digits: bool = False,
        max_tokens: int = 8,
        deadline: float = 60.0,
        max_body_bytes: int = 4_000_000,
        retry_budget: float = 300.0,
        max_retry_after: float = 30.0,
    ) -> None:
        self.base_url = base_url
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.concurrency = concurrency
        self.system = system
        self.min_valid_mass = min_valid_mass
        self.use_logprobs = use_logprobs
        self.digits = digits
        self.max_tokens = max_tokens
        self.deadline = deadline
        self.max_body_bytes = max_body_bytes
        self.retry_budget = retry_budget
        self.max_retry_after = max_retry_after
        # One budget for the judge's lifetime (a run), shared by all its items and rate() calls.
        self._budget = RetryBudget(retry_budget)
        self._client: HTTPClient | None = None
        self._client_lock = threading.Lock()
        self._local = threading.local()  # the stop event of the rate() call a worker serves

    def __repr__(self) -> str:
        return f"HTTPJudge(model={self.model!r}, base_url={self.base_url!r})"

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters (scikit-learn style)."""
        return {k: getattr(self, k) for k in (
            "base_url", "model", "api_key_env", "timeout", "max_retries", "backoff", "concurrency",
            "system", "min_valid_mass", "use_logprobs", "digits", "max_tokens", "deadline",
            "max_body_bytes", "retry_budget", "max_retry_after",
        )}

    @property
    def client(self) -> HTTPClient:
        """The judge's pooled HTTP client (created on first use)."""
        with self._client_lock:
            if self._client is None:
                self._client = HTTPClient(
                    self.base_url, api_key_env=self.api_key_env, timeout=self.timeout,
                    deadline=self.deadline, max_body_bytes=self.max_body_bytes,
                    max_retries=self.max_retries, backoff=self.backoff,
                    max_retry_after=self.max_retry_after, retry_budget=self._budget,
                    max_connections=max(1, int(self.concurrency)),
                )
            return self._client

    def close(self) -> None:
        """Close the pooled connections (a later `rate` opens new ones)."""
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # ------------------------------------------------------------------ identity
    @property
    def identity(self) -> JudgeIdentity:
        """Kind ``http``, name ``model@base_url``, hash of the prompt texts and rating method."""
        prompt = {
            "system": self.system,
            "instructions": scales.INSTRUCTIONS,
            "digit_instruction": scales.DIGIT_INSTRUCTION if self.digits else None,
            "label_instruction": scales.instruction(
                Rubric(name="", template="", scale="label", labels=("{labels}",))
            ),
            "joiner": "\n\n",
            # How the answer is read changes the rating, so it is part of the identity too.
            "method": "logprobs" if self.use_logprobs else "text",
            "min_valid_mass": self.min_valid_mass if self.use_logprobs else None,
        }
        return JudgeIdentity(
            kind="http", name=f"{self.model}@{self.base_url}", prompt_hash=stable_hash(prompt)[:16]
        )

    # ------------------------------------------------------------------ rating
    def _cache_ok(self, rating: Rating) -> bool:
        # Transport failures (timeouts, refused connections, 5xx after retries, oversized bodies)
        # carry no raw answer; they are not cached so the next run asks the server again.
        return rating.valid or rating.raw is not None

    def _rate(self, items: Sequence[Item], rubric: Rubric) -> list[Rating]:
        """Rate items, at most ``concurrency`` requests at a time, in input order.

        Workers are daemon threads and the caller waits in short slices, so Ctrl-C ends this at
        once: the stop event makes workers give up at their next chunk or wait, and a worker
        still blocked on a socket cannot keep the process alive.
        """
        ident = self.identity
        if not items:
            return []
        stop = threading.Event()
        out: list[Rating | None] = [None] * len(items)
        errors: list[BaseException] = []
        lock = threading.Lock()
        todo = iter(range(len(items)))

        def work() -> None:
            self._local.stop = stop
            while not stop.is_set():
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                try:
                    out[i] = self._rate_one(items[i], rubric, ident)
                except BaseException as e:  # a bug: surface it in the caller's thread
                    errors.append(e)
                    stop.set()
                    return

        workers = max(1, min(int(self.concurrency), len(items)))
        threads = [threading.Thread(target=work, name=f"http-judge-{k}", daemon=True) for k in range(workers)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():
                    t.join(0.1)
        except BaseException:
            stop.set()
            raise
        if errors:
            raise errors[0]
        return [r for r in out if r is not None]

    def _rate_one(self, item: Item, rubric: Rubric, ident: JudgeIdentity) -> Rating:
        def fail(reason: str, raw: str | None = None, mass: float | None = None) -> Rating:
            return Rating(value=None, valid=False, rubric=rubric.name, judge=ident, raw=raw,
                          valid_mass=mass, error=reason)

        try:
            data = self._post(self._payload(item, rubric))
        except HTTPClientError as e:
            return fail(str(e)[:300])
        except Exception as e:  # noqa: BLE001 - one bad item must not end a whole audit
            return fail(f"request failed: {type(e).__name__}: {e}"[:300])
        try:
            choice = data["choices"][0]
            content = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            return fail("malformed response: no choices[0].message.content")
        # Only the start of the answer matters for the rating; the cap keeps the cache small.
        content = "" if content is None else str(content)[:RAW_CHARS]
        top: list[tuple[str, float]] | None = None
        if self.use_logprobs:
            try:
                top = _first_top_logprobs(choice)
            except ValueError as e:
                return fail(f"invalid log-probs: {e}", raw=content)
        if top is None:
            value = scales.parse_answer(content, rubric, digits=self._digits(rubric))
            if value is None:
                return fail("no valid answer in the response text", raw=content)
            return Rating(value=value, rubric=rubric.name, judge=ident, raw=content)
        opts = scales.options(rubric, digits=self._digits(rubric))
        probs = _option_probs(top, opts, fold_case=rubric.scale in ("yes-no", "label"))
        mass = min(1.0, sum(probs))
        if mass <= 0.0:
            return fail("no valid answer among the top log-probs", raw=content, mass=0.0)
        value = scales.expected_value(probs, [v for _, v in opts], rubric.scale)
        if not math.isfinite(value):
            return fail(f"invalid log-probs: expected value {value}", raw=content)
        if mass < self.min_valid_mass:
            return fail(f"valid-answer mass {mass:.3f} below {self.min_valid_mass}",
                        raw=f"{content} (value {value:.4g})", mass=mass)
        return Rating(value=value, rubric=rubric.name, judge=ident, valid_mass=mass, raw=content)

    def _digits(self, rubric: Rubric) -> bool:
        return self.digits and rubric.scale == "0-100"

    def _payload(self, item: Item, rubric: Rubric) -> dict[str, Any]:
        text = rubric.render(item) + "\n\n" + scales.instruction(rubric, digits=self._digits(rubric))
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": text}
        ]
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": self.max_tokens,
        }
        if self.use_logprobs:
            payload["logprobs"] = True
            payload["top_logprobs"] = TOP_LOGPROBS
        return payload


    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST ``payload`` to ``/chat/completions``; the JSON object, or an `HTTPClientError`."""
        return self.client.post_json("/chat/completions", payload, cancel=getattr(self._local, "stop", None))


def _first_top_logprobs(choice: dict[str, Any]) -> list[tuple[str, float]] | None:
    """``(token, logprob)`` pairs of the first generated token, or None when absent.

    Raises:
        ValueError: A log-prob that no distribution has (NaN, +inf, clearly above 0, not a
            number) or top probabilities summing clearly above 1: the server is broken or
            hostile, and no rating should be read off it.
    """
    try:
        first = choice["logprobs"]["content"][0]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(first, dict):
        return None
    entries = first.get("top_logprobs") or [{"token": first.get("token"), "logprob": first.get("logprob")}]
    out = []
    for e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("token"), str):
            continue
        tok, lp = e["token"], e.get("logprob")
        if isinstance(lp, bool) or not isinstance(lp, int | float):
            raise ValueError(f"log-prob of {tok!r} is not a number: {str(lp)[:40]}")
        if lp == -math.inf:  # log of probability 0 (a masked token): harmless
            continue
        if not math.isfinite(lp) or lp > LOGPROB_SLACK:
            raise ValueError(f"log-prob {lp!r} of {tok!r} is impossible (must be finite and <= 0)")
        out.append((tok, min(0.0, float(lp))))
    total = sum(math.exp(lp) for _, lp in out)
    if total > 1.0 + MASS_SLACK:
        raise ValueError(f"top log-probs sum to probability {total:.3g} > 1")
    return out or None


def _option_probs(
    top: Sequence[tuple[str, float]], opts: Sequence[tuple[str, float]], *, fold_case: bool
) -> list[float]:
    """Probability of each option: summed over top tokens equal to it after stripping whitespace."""
    index = {(s.casefold() if fold_case else s): i for i, (s, _) in enumerate(opts)}
    probs = [0.0] * len(opts)
    for tok, lp in top:
        t = tok.strip()
        i = index.get(t.casefold() if fold_case else t)
        if i is not None:
            probs[i] += math.exp(lp)
    return probs


__all__ = ["RETRY_STATUS", "HTTPJudge"]
