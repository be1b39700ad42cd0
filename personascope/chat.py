"""Chat formatting in one place: persona = system message; no double BOS.

Templates without a system role (Gemma, some base models) get the system text folded into the
first user turn. Models without any chat template get a plain ``System/User/Assistant`` layout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import DataError

Message = Mapping[str, str]
_PROBE = "PERSONASCOPE_SYSTEM_PROBE"


def supports_system(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template renders a system message as its own turn."""
    template = getattr(tokenizer, "chat_template", None)
    # Cached per template: a tokenizer copied (or edited) after the probe may have another one.
    cached = getattr(tokenizer, "_personascope_supports_system", None)
    if isinstance(cached, tuple) and cached[0] == template:
        return cached[1]
    ok = False
    if template:
        try:
            text = tokenizer.apply_chat_template(
                [{"role": "system", "content": _PROBE}, {"role": "user", "content": "hi"}],
                tokenize=False,
            )
            # Templates that fold the system text into the user turn put it right before "hi".
            ok = _PROBE in text and f"{_PROBE}\n\nhi" not in text
        except Exception:  # noqa: BLE001 - Jinja templates raise arbitrary errors for system roles
            ok = False
    try:
        tokenizer._personascope_supports_system = (template, ok)
    except AttributeError:
        pass
    return ok


def to_messages(
    user: str | None = None, system: str | None = None, assistant: str | None = None
) -> list[dict[str, str]]:
    """Build a message list from optional system, user and assistant texts."""
    msgs: list[dict[str, str]] = []
    if system:
        msgs.append({"role": "system", "content": system})
    if user is not None:
        msgs.append({"role": "user", "content": user})
    if assistant is not None:
        msgs.append({"role": "assistant", "content": assistant})
    return msgs


def check_messages(messages: Sequence[Any]) -> None:
    """Check a conversation from user data: a non-empty list of ``{"role": str, "content": str}`` objects.

    Raises:
        DataError: Naming the first bad message and what it lacks (a chat file or an HTTP request
            with a message without ``content`` is the user's to fix, not a crash).
    """
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise DataError(f"messages must be a list of {{'role', 'content'}} objects, got {type(messages).__name__}")
    if not messages:
        raise DataError("messages is empty: give at least one {'role', 'content'} object")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise DataError(f"message {i}: expected an object with 'role' and 'content', got {type(m).__name__}")
        for key in ("role", "content"):
            if not isinstance(m.get(key), str):
                what = "lacks" if key not in m else f"has a non-text ({type(m[key]).__name__})"
                raise DataError(f"message {i} {what} {key!r}; each message is {{'role': ..., 'content': '...'}}")


def format_chat(
    tokenizer: Any,
    messages: Sequence[Message] | None = None,
    *,
    user: str | None = None,
    system: str | None = None,
    add_generation_prompt: bool = True,
) -> str:
    """Render a conversation to the model's prompt text.

    Args:
        tokenizer: A Hugging Face tokenizer (its chat template is used when it has one).
        messages: ``[{"role": ..., "content": ...}]``; alternatively pass ``user``/``system``.
        user: User turn text, used when ``messages`` is None.
        system: System (persona) text, used when ``messages`` is None.
        add_generation_prompt: Append the assistant header so the model answers next.

    Returns:
        The prompt text, ready for `encode` (which avoids a double BOS).

    Raises:
        DataError: A message that is not a ``{"role", "content"}`` object of texts (`check_messages`).

    """
    if messages is not None:
        check_messages(messages)
    msgs = [dict(m) for m in (messages if messages is not None else to_messages(user, system))]
    if not msgs:
        raise DataError("format_chat needs at least one message")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if msgs[0]["role"] == "system" and has_template and not supports_system(tokenizer):
        sys_text = msgs.pop(0)["content"]
        if msgs and msgs[0]["role"] == "user":
            msgs[0]["content"] = f"{sys_text}\n\n{msgs[0]['content']}"
        else:
            msgs.insert(0, {"role": "user", "content": sys_text})
    if has_template:
        return tokenizer.apply_chat_template(
            msgs, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    parts = [f"{m['role'].capitalize()}: {m['content']}" for m in msgs]
    if add_generation_prompt:
        parts.append("Assistant:")
    return "\n".join(parts)


def encode(tokenizer: Any, text: str, *, is_continuation: bool = False) -> list[int]:
    """Token ids of ``text`` with exactly one BOS where the model expects one.

    A chat template that already writes the BOS token must not get a second one from the
    tokenizer; a continuation (response text appended to a prompt) never gets special tokens.
    """
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not is_continuation and not (bos and text.startswith(bos))
    return list(tokenizer(text, add_special_tokens=add_special)["input_ids"])
