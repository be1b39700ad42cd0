"""A judge behind any OpenAI-compatible ``/chat/completions`` endpoint (stdlib HTTP only).

The judge asks the same question as the local log-prob judge (`scales.instruction`) and, when
the server returns log-probs, reads the answer distribution off the first generated token, so
its ratings carry a valid-answer mass just like local ones. Without log-probs it parses the
answer text. A failed item never raises: it comes back as an invalid `Rating` with an error.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..records import stable_hash
from . import scales
from .base import Item, Judge, JudgeIdentity, Rating, Rubric

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
TOP_LOGPROBS = 20  # the most OpenAI's API returns per token


class _Fatal(Exception):
    """A per-item failure that retrying cannot fix (4xx, malformed response)."""


class HTTPJudge(Judge):
    """Judge that rates items through an OpenAI-compatible chat completions API.

    Args:
        base_url: API root, e.g. ``http://127.0.0.1:8000/v1`` (``/chat/completions`` is appended).
        model: Model name sent in every request.
        api_key_env: Environment variable holding the API key, sent as a Bearer token when set.
        timeout: Seconds per request (connect and read).
        max_retries: Retries after the first attempt on connection errors, timeouts, 408/429/5xx.
        backoff: First retry delay in seconds; doubles on each retry (a 429's Retry-After wins
            when longer, capped at 60 s).
        concurrency: Requests in flight at most.
        system: Optional system message sent before the rubric prompt.
        min_valid_mass: With log-probs, a rating whose valid-answer mass is below this is invalid.
        use_logprobs: Ask for the first token's top log-probs and rate from them; otherwise (or
            when the server returns none) parse the answer text.
        digits: On the ``0-100`` scale ask for one digit 0-9 (mapped onto 0-100), for servers
            whose tokenizer splits numbers into digits (see `scales.DIGIT_INSTRUCTION`).
        max_tokens: Answer length requested from the server.

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

    def __repr__(self) -> str:
        return f"HTTPJudge(model={self.model!r}, base_url={self.base_url!r})"

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters (scikit-learn style)."""
        return {k: getattr(self, k) for k in (
            "base_url", "model", "api_key_env", "timeout", "max_retries", "backoff", "concurrency",
            "system", "min_valid_mass", "use_logprobs", "digits", "max_tokens",
        )}

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
        # Transport failures (timeouts, refused connections, 5xx after retries) carry no raw
        # answer; they are not cached so the next run asks the server again.
        return rating.valid or rating.raw is not None

    def _rate(self, items: Sequence[Item], rubric: Rubric) -> list[Rating]:
        """Rate items, at most ``concurrency`` requests at a time, in input order."""
        ident = self.identity
        if not items:
            return []
        workers = max(1, min(int(self.concurrency), len(items)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="http-judge") as pool:
            return list(pool.map(lambda it: self._rate_one(it, rubric, ident), items))

    def _rate_one(self, item: Item, rubric: Rubric, ident: JudgeIdentity) -> Rating:
        def fail(reason: str, raw: str | None = None) -> Rating:
            return Rating(value=None, valid=False, rubric=rubric.name, judge=ident, raw=raw, error=reason)

        try:
            data = self._post(self._payload(item, rubric))
        except _Fatal as e:
            return fail(str(e))
        except Exception as e:  # noqa: BLE001 - one bad item must not end a whole audit
            return fail(f"request failed: {type(e).__name__}: {e}"[:300])
        try:
            choice = data["choices"][0]
            content = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            return fail("malformed response: no choices[0].message.content")
        content = "" if content is None else str(content)
        top = _first_top_logprobs(choice) if self.use_logprobs else None
        if top is None:
            value = scales.parse_answer(content, rubric, digits=self._digits(rubric))
            if value is None:
                return fail("no valid answer in the response text", raw=content)
            return Rating(value=value, rubric=rubric.name, judge=ident, raw=content)
        opts = scales.options(rubric, digits=self._digits(rubric))
        probs = _option_probs(top, opts, fold_case=rubric.scale in ("yes-no", "label"))
        mass = min(1.0, sum(probs))
        if mass <= 0.0:
            return Rating(
                value=None, valid=False, rubric=rubric.name, judge=ident, valid_mass=0.0, raw=content,
                error="no valid answer among the top log-probs",
            )
        value = scales.expected_value(probs, [v for _, v in opts], rubric.scale)
        if mass < self.min_valid_mass:
            return Rating(
                value=None, valid=False, rubric=rubric.name, judge=ident, valid_mass=mass,
                raw=f"{content} (value {value:.4g})",
                error=f"valid-answer mass {mass:.3f} below {self.min_valid_mass}",
            )
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

    # ------------------------------------------------------------------ transport
    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST ``payload`` with retries; the decoded JSON object, or `_Fatal`/the last error."""
        url = self.base_url.rstrip("/") + "/chat/completions"
        body = json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                req = urllib.request.Request(url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
                try:
                    data = json.loads(raw)
                except ValueError:
                    raise _Fatal(f"malformed response: not JSON ({_snippet(raw)})") from None
                if not isinstance(data, dict):
                    raise _Fatal("malformed response: JSON is not an object")
                return data
            except urllib.error.HTTPError as e:
                detail = _error_detail(e)
                e.close()
                if e.code not in RETRY_STATUS:
                    raise _Fatal(f"HTTP {e.code}: {detail}") from None
                err: Exception = _Fatal(f"HTTP {e.code} after {attempt + 1} attempts: {detail}")
                retry_after = _retry_after(e.headers.get("Retry-After") if e.headers else None)
            except _Fatal:
                raise
            except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, resets, bad status
                reason = getattr(e, "reason", e)
                err = _Fatal(f"connection failed after {attempt + 1} attempts: {type(reason).__name__}: "
                             f"{reason}"[:300])
            if attempt >= self.max_retries:
                raise err
            delay = self.backoff * 2**attempt
            if retry_after is not None:
                delay = max(delay, min(retry_after, 60.0))
            log.debug("HTTP judge retry %d/%d in %.2fs: %s", attempt + 1, self.max_retries, delay, err)
            time.sleep(delay)
            attempt += 1


def _first_top_logprobs(choice: dict[str, Any]) -> list[tuple[str, float]] | None:
    """``(token, logprob)`` pairs of the first generated token, or None when absent."""
    try:
        first = choice["logprobs"]["content"][0]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(first, dict):
        return None
    entries = first.get("top_logprobs") or [{"token": first.get("token"), "logprob": first.get("logprob")}]
    out = []
    for e in entries:
        if not isinstance(e, dict):
            continue
        tok, lp = e.get("token"), e.get("logprob")
        if isinstance(tok, str) and isinstance(lp, int | float) and math.isfinite(lp):
            out.append((tok, float(lp)))
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


def _error_detail(e: urllib.error.HTTPError) -> str:
    try:
        raw = e.read()
    except Exception:  # noqa: BLE001 - the body of an error response is best effort
        return str(e.reason)
    try:
        msg = json.loads(raw)["error"]["message"]
        return str(msg)[:200]
    except (ValueError, KeyError, TypeError):
        return _snippet(raw) or str(e.reason)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _snippet(raw: bytes, n: int = 80) -> str:
    text = raw[:n].decode("utf-8", "replace").replace("\n", " ")
    return text + ("..." if len(raw) > n else "")
