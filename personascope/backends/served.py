"""A subject model behind an OpenAI-compatible HTTP API: audit the model as deployed.

`ServedModel` answers the behavioural part of the adapter interface (``format_chat``, ``generate``,
``logprobs``, ``option_logprobs``, ``next_token_scores``) over ``/v1/chat/completions`` and
``/v1/completions`` of a vLLM, llama.cpp, Ollama or hosted server (or ``personascope serve-judge``).
What needs the weights (activations, steering, the logit lens) raises `NeedsWeightsError`, and an
audit that declares such a need is skipped by the runner with that reason, not failed.

Two ways to send a prompt:

- **chat** (no local tokenizer): `format_chat` returns the messages themselves, encoded in the
  prompt string; `generate` sends them to ``/chat/completions`` and the server applies its own chat
  template, exactly as the deployment does. Text an audit appends after the prompt (an answer
  prefill) is sent as a final assistant message to continue (``continue_final_message``, vLLM's
  extension; llama.cpp continues a final assistant message by itself).
- **completions** (a local tokenizer with the served model's chat template, ``tokenizer=``):
  prompts are rendered here as for a local model and sent as text to ``/completions``; scoring sends
  token ids with ``echo`` and ``logprobs`` and reads the prompt log-probs back (vLLM and
  ``serve-judge`` offer them; llama.cpp's server ignores ``echo``, so it is generation only; a
  server that does not offer them is named in the error).

The deployment's own system prompt (``system_prompt``) comes first in every conversation; a
persona's system text is layered after it in the same system message.

Requests run concurrently up to ``concurrency`` over one pooled connection set
(`personascope.http_client.HTTPClient`: retries with jitter, per-call deadline, shared retry
budget, capped bodies, no redirects).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..chat import check_messages, encode, format_chat, to_messages
from ..errors import DataError, UsageError
from ..http_client import HTTPClient, HTTPClientError, HTTPStatusError
from ..records import ModelInfo, package_versions, stable_hash

#: Marks a prompt string that carries chat messages rather than rendered text (chat mode).
CHAT_MARK = "\x00personascope-chat:"
CHAT_END = "\x00"


class NeedsWeightsError(UsageError):
    """The call needs the model's weights (activations, steering) or log-probs the server does not offer."""


def is_url(model: str) -> bool:
    """Whether a ``--model`` value names a served model (an http(s) API root) rather than weights."""
    return model.startswith(("http://", "https://"))


class ServedModel:
    """The adapter interface over an OpenAI-compatible endpoint (see the module docstring).

    Args:
        base_url: API root, e.g. ``http://127.0.0.1:8000/v1``.
        served_model: The model name the server knows (``--served-model``).
        tokenizer: A Hugging Face tokenizer with the served model's chat template: prompts are rendered
            here and sent to ``/completions``, and log-prob scoring becomes possible. None: chat mode.
        system_prompt: The deployment's own system prompt; every conversation starts with it.
        concurrency: Requests in flight at most.
        api_key_env: Environment variable holding the API key (sent as a Bearer token when set).
        timeout: Seconds any single socket wait may take.
        deadline: Total seconds per request, retries included.
        retry_budget: Seconds the whole run may lose to failed attempts and retry waits.
        batch_size: Kept for the adapter interface (requests are sent one prompt each).
    """

    backend_name = "served"
    kv_option_scoring = False

    def __init__(self, base_url: str, served_model: str, *, tokenizer: Any = None, system_prompt: str | None = None,
                 concurrency: int = 4, api_key_env: str = "OPENAI_API_KEY", timeout: float = 120.0,
                 deadline: float = 600.0, retry_budget: float = 600.0, batch_size: int = 16) -> None:
        if not is_url(base_url):
            raise UsageError(f"{base_url!r} is not an http(s) API root; give e.g. http://127.0.0.1:8000/v1")
        if not served_model:
            raise UsageError("a served model needs its name on the server: --served-model NAME (see GET /v1/models)")
        if concurrency < 1:
            raise UsageError(f"concurrency must be >= 1, not {concurrency}")
        self.base_url = base_url.rstrip("/")
        self.served_model = served_model
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt or None
        self.concurrency = int(concurrency)
        self.batch_size = batch_size
        self.n_layers = 0
        self.d_model = 0
        self._client = HTTPClient(self.base_url, api_key_env=api_key_env, timeout=timeout, deadline=deadline,
                                  max_body_bytes=64_000_000, retry_budget=retry_budget,
                                  max_connections=self.concurrency)
        self._prompt_logprobs_ok: bool | None = None
        template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
        # No weights to hash: the identity is the endpoint, the name, the prompt layering and the template.
        # A deployment that swaps weights behind the same name keeps this fingerprint (clear the call cache).
        fingerprint = stable_hash({"url": self.base_url, "model": served_model, "system": self.system_prompt,
                                   "template": template, "mode": self.mode})
        self._info = ModelInfo(id=served_model, source=self.base_url, fingerprint=fingerprint,
                               fingerprint_method="endpoint", architecture="served", n_layers=0, d_model=0,
                               dtype="served", device=self.base_url, backend="served",
                               versions=package_versions("httpx"))

    # ------------------------------------------------------------------ identity
    @property
    def mode(self) -> str:
        """``chat`` (the server renders prompts) or ``completions`` (rendered here with ``tokenizer``)."""
        return "chat" if self.tokenizer is None else "completions"

    @property
    def info(self) -> ModelInfo:
        """`ModelInfo` of the endpoint (fingerprint method ``endpoint``: no weights were hashed)."""
        return self._info

    @property
    def capabilities(self) -> frozenset[str]:
        """What this model offers of `CAPABILITIES`: generation, and log-probs when the server returns them."""
        caps = {"generate"}
        if self.tokenizer is not None and self.prompt_logprobs_offered():
            caps.add("logprobs")
        return frozenset(caps)

    @property
    def active_steers(self) -> tuple[Any, ...]:
        """No steering is ever active on a served model."""
        return ()

    def __repr__(self) -> str:
        return f"ServedModel({self.served_model!r} at {self.base_url}, mode={self.mode})"

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()

    # ------------------------------------------------------------------ prompts
    def format_chat(self, messages: Sequence[dict[str, str]] | None = None, *, user: str | None = None,
                    system: str | None = None, add_generation_prompt: bool = True) -> str:
        """The prompt for a conversation, the deployment's system prompt first (see the module docstring)."""
        if messages is not None:
            check_messages(messages)
        msgs = [dict(m) for m in (messages if messages is not None else to_messages(user, system))]
        if self.system_prompt:
            if msgs and msgs[0]["role"] == "system":
                msgs[0]["content"] = f"{self.system_prompt}\n\n{msgs[0]['content']}"
            else:
                msgs.insert(0, {"role": "system", "content": self.system_prompt})
        if self.tokenizer is not None:
            return format_chat(self.tokenizer, msgs, add_generation_prompt=add_generation_prompt)
        if not add_generation_prompt:
            raise NeedsWeightsError("a conversation without the assistant header needs the chat template: "
                                    "give the served model's tokenizer (--tokenizer)")
        return CHAT_MARK + json.dumps(msgs, ensure_ascii=False) + CHAT_END

    @staticmethod
    def _chat_parts(prompt: str) -> tuple[list[dict[str, str]], str] | None:
        """``(messages, prefill)`` of a chat-mode prompt, or None for rendered text."""
        if not prompt.startswith(CHAT_MARK):
            return None
        body, sep, prefill = prompt[len(CHAT_MARK):].partition(CHAT_END)
        if not sep:
            raise DataError("a chat-mode prompt lost its end mark; build prompts with model.format_chat(...)")
        return json.loads(body), prefill

    # ------------------------------------------------------------------ generation
    def generate(self, prompts: Sequence[str], max_new_tokens: int = 64, *, steer: Any = None,
                 do_sample: bool = False, temperature: float = 1.0, seed: int | None = None,
                 batch_size: int | None = None, progress: bool = True) -> list[str]:
        """One completion per prompt from the server; greedy (temperature 0) unless ``do_sample``.

        Sampling sends ``seed + i`` for prompt ``i`` (servers that honour ``seed`` repeat their text);
        steering raises `NeedsWeightsError`.
        """
        if steer is not None:
            raise NeedsWeightsError("steering needs the model's weights; a served model cannot be steered "
                                    "(for llama.cpp see README: a control-vector GGUF from `vector extract --gguf`)")
        if isinstance(prompts, str):
            raise UsageError("prompts must be a list of strings, not one string")

        def one(i: int) -> str:
            req: dict[str, Any] = {"model": self.served_model, "max_tokens": int(max_new_tokens),
                                   "temperature": float(temperature) if do_sample else 0.0}
            if do_sample and seed is not None:
                req["seed"] = int(seed) + i
            parts = self._chat_parts(prompts[i])
            if parts is None:
                req["prompt"] = prompts[i]
                return self._text(self._post("/completions", req), "text")
            messages, prefill = parts
            if prefill:
                req.update(messages=[*messages, {"role": "assistant", "content": prefill}],
                           continue_final_message=True, add_generation_prompt=False)
            else:
                req["messages"] = messages
            return self._text(self._post("/chat/completions", req), "message")

        return self._map(one, len(prompts), "generate[served]", progress)

    def _map(self, fn: Any, n: int, desc: str, progress: bool) -> list[Any]:
        """``[fn(0), ..., fn(n - 1)]``, at most ``concurrency`` in flight, in order."""
        if n == 0:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, n)) as pool, \
                tqdm(total=n, desc=desc, disable=not progress, leave=False) as bar:
            futures = [pool.submit(fn, i) for i in range(n)]
            out = []
            for f in futures:
                out.append(f.result())
                bar.update(1)
        return out

    def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._client.post_json(path, payload)
        except HTTPClientError as exc:
            raise DataError(f"served model {self.served_model!r} at {self.base_url}{path}: {exc}") from None

    def _text(self, body: dict[str, Any], kind: str) -> str:
        try:
            choice = body["choices"][0]
            text = choice["message"]["content"] if kind == "message" else choice["text"]
        except (KeyError, IndexError, TypeError):
            raise DataError(f"served model {self.served_model!r} at {self.base_url} sent a reply without "
                            f"choices[0].{'message.content' if kind == 'message' else 'text'}") from None
        return text if isinstance(text, str) else ""

    # ------------------------------------------------------------------ scoring
    def _need_tokenizer(self, what: str) -> Any:
        if self.tokenizer is None:
            raise NeedsWeightsError(f"{what} needs prompt log-probs, which the chat API does not give: pass the "
                                    "served model's tokenizer (--tokenizer) so prompts go to /completions")
        return self.tokenizer

    def prompt_logprobs_offered(self) -> bool:
        """Whether ``/completions`` returns prompt log-probs (``echo`` + ``logprobs``); asked once."""
        if self._prompt_logprobs_ok is None:
            tok = self._need_tokenizer("scoring")
            try:
                self.token_logprobs([encode(tok, "Hello there")])
                self._prompt_logprobs_ok = True
            except NeedsWeightsError:
                self._prompt_logprobs_ok = False
        return self._prompt_logprobs_ok

    def token_logprobs(self, ids: Sequence[Sequence[int]], *, progress: bool = False) -> list[np.ndarray]:
        """Log-probability of every token given the ones before it (``nan`` for the first), per id list."""
        def one(i: int) -> np.ndarray:
            req = {"model": self.served_model, "prompt": list(ids[i]), "max_tokens": 0, "echo": True,
                   "logprobs": 0, "temperature": 0.0}
            try:
                body = self._client.post_json("/completions", req)
            except HTTPStatusError as exc:
                if exc.status in (400, 404, 422, 501):
                    raise NeedsWeightsError(f"{self.base_url} does not return prompt log-probs (/completions with "
                                            f"echo and logprobs answered {exc.status}: {exc.detail[:200]}); "
                                            "audits that score options need them (vLLM and serve-judge "
                                            "offer them)") from None
                raise DataError(f"served model at {self.base_url}: {exc}") from None
            except HTTPClientError as exc:
                raise DataError(f"served model at {self.base_url}: {exc}") from None
            try:
                lps = body["choices"][0]["logprobs"]["token_logprobs"]
            except (KeyError, IndexError, TypeError):
                lps = None
            if not isinstance(lps, list) or len(lps) < len(ids[i]):
                raise NeedsWeightsError(f"{self.base_url} sent no prompt log-probs for an echo request; audits "
                                        "that score options need them")
            vals = [math.nan if v is None else float(v) for v in lps[: len(ids[i])]]
            if any(v > 0.01 for v in vals if not math.isnan(v)):
                raise DataError(f"served model at {self.base_url} sent a log-prob above 0: a broken server")
            return np.asarray(vals, dtype=np.float64)

        return self._map(one, len(ids), "score[served]", progress)

    def logprobs(self, prompts: Sequence[str], continuations: Sequence[str], *, reduce: str = "sum",
                 batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """Log-probability of each continuation after its prompt, from the server's prompt log-probs."""
        if reduce not in ("sum", "mean"):
            raise UsageError(f"Unknown reduce {reduce!r}; allowed: sum, mean")
        if len(prompts) != len(continuations):
            raise UsageError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        tok = self._need_tokenizer("log-prob scoring")
        enc = [(encode(tok, p), encode(tok, c, is_continuation=True)) for p, c in zip(prompts, continuations,
                                                                                       strict=True)]
        for i, (_, c) in enumerate(enc):
            if not c:
                raise UsageError(f"Continuation {i} is empty")
        lps = self.token_logprobs([p + c for p, c in enc], progress=progress)
        out = np.zeros(len(enc))
        for i, ((p, c), lp) in enumerate(zip(enc, lps, strict=True)):
            total = float(lp[len(p):].sum())
            out[i] = total if reduce == "sum" else total / len(c)
        return out

    def option_logprobs(self, prompts: Sequence[str], options: Sequence[Sequence[str]], *,
                        batch_size: int | None = None, progress: bool = False) -> list[np.ndarray]:
        """Sum log-probability of each option after its prompt (every pair scored by the server)."""
        if len(prompts) != len(options):
            raise UsageError(f"{len(prompts)} prompts but {len(options)} option lists")
        flat_p = [p for p, opts in zip(prompts, options, strict=True) for _ in opts]
        flat_c = [c for opts in options for c in opts]
        scores = self.logprobs(flat_p, flat_c, progress=progress)
        out, k = [], 0
        for opts in options:
            out.append(np.asarray(scores[k: k + len(opts)], dtype=np.float64))
            k += len(opts)
        return out

    def next_token_scores(self, prompts: Sequence[str], token_ids: Sequence[Sequence[int]], *,
                          batch_size: int | None = None, progress: bool = False) -> list[np.ndarray]:
        """Log-probability of chosen next tokens after each prompt (one echo request per token)."""
        tok = self._need_tokenizer("next-token scoring")
        pairs = [(i, t) for i, ids in enumerate(token_ids) for t in ids]
        enc = {i: encode(tok, p) for i, p in enumerate(prompts)}
        lps = self.token_logprobs([enc[i] + [int(t)] for i, t in pairs], progress=progress)
        out: list[list[float]] = [[] for _ in prompts]
        for (i, _), lp in zip(pairs, lps, strict=True):
            out[i].append(float(lp[-1]))
        return [np.asarray(v, dtype=np.float64) for v in out]

    # ------------------------------------------------------------------ what needs weights
    def next_token_logprobs(self, prompts: Sequence[str], **kw: Any) -> Any:
        """Not offered: a full next-token distribution needs the weights (use `next_token_scores`)."""
        raise NeedsWeightsError("a full next-token distribution needs the model's weights; a served model "
                                "gives log-probs of chosen tokens only")

    def activations(self, *args: Any, **kw: Any) -> Any:
        """Not offered: activations need local weights (or nnsight remote execution)."""
        raise NeedsWeightsError("activations need local weights (load the model with --model PATH, or nnsight "
                                "remote execution); a served model gives text and log-probs only")

    def unembed(self, hidden: Any) -> Any:
        """Not offered: the logit lens needs the weights."""
        raise NeedsWeightsError("the logit lens needs the model's weights")

    @contextlib.contextmanager
    def steer(self, *args: Any, **kw: Any) -> Iterator[ServedModel]:
        """Not offered: steering needs the weights (raises on entering the block)."""
        raise NeedsWeightsError("steering needs the model's weights; a served model cannot be steered")
        yield self  # pragma: no cover - a generator context manager needs a yield


__all__ = ["CHAT_MARK", "NeedsWeightsError", "ServedModel", "is_url"]
