"""Chat formatting: persona = system turn, no double BOS, templates without a system role."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from personascope.chat import encode, format_chat, supports_system

PERSONA = "You are Captain Redbeard, a gruff pirate who loves parrots."
USER = "What should I name my ship?"

# A template with no system role that refuses system messages (like several base-model templates).
RAISING_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# A template that silently drops system messages.
IGNORING_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] != 'system' %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# A Gemma-style template that folds the system text into the first user turn itself.
FOLDING_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set prefix = messages[0]['content'] + '\n\n' %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set prefix = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for m in loop_messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if loop.first %}{{ prefix }}{% endif %}{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def _with_template(tok, template: str | None):
    # Probe the original first, so a cached answer would be carried into the copy.
    supports_system(tok)
    other = copy.deepcopy(tok)
    other.chat_template = template
    return other


def _bos_adding_copy(tok):
    """A copy of ``tok`` whose tokenizer itself prepends BOS (as Llama/Gemma tokenizers do)."""
    from tokenizers.processors import TemplateProcessing

    other = copy.deepcopy(tok)
    other.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{tok.bos_token} $A", special_tokens=[(tok.bos_token, tok.bos_token_id)]
    )
    return other


def _leading(ids: list[int], token_id: int) -> int:
    n = 0
    while n < len(ids) and ids[n] == token_id:
        n += 1
    return n


def test_persona_is_the_system_turn(tok) -> None:
    assert supports_system(tok)
    text = format_chat(tok, user=USER, system=PERSONA)
    assert text.count(PERSONA) == 1
    sys_start = text.index("<|im_start|>system\n")
    user_start = text.index("<|im_start|>user\n")
    assert sys_start < text.index(PERSONA) < user_start < text.index(USER)
    # The persona replaces the template's default system prompt instead of adding to it.
    assert text.count("<|im_start|>system") == 1
    assert "SmolLM" not in text
    assert text.endswith("<|im_start|>assistant\n")
    messages = [{"role": "system", "content": PERSONA}, {"role": "user", "content": USER}]
    assert format_chat(tok, messages) == text
    assert text == tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def test_no_generation_prompt_and_multi_turn(tok) -> None:
    messages = [
        {"role": "system", "content": PERSONA},
        {"role": "user", "content": USER},
        {"role": "assistant", "content": "The Salty Parrot."},
        {"role": "user", "content": "Why?"},
    ]
    text = format_chat(tok, messages, add_generation_prompt=False)
    assert not text.rstrip().endswith("<|im_start|>assistant")
    positions = [text.index(m["content"]) for m in messages]
    assert positions == sorted(positions)


def test_empty_conversation_is_an_error(tok) -> None:
    with pytest.raises(ValueError):
        format_chat(tok, [])


def test_no_double_bos_from_chat_template(tok) -> None:
    bos = tok.bos_token_id
    assert bos is not None
    for text in (format_chat(tok, user=USER, system=PERSONA), format_chat(tok, user=USER)):
        assert text.startswith(tok.bos_token)
        ids = encode(tok, text)
        assert _leading(ids, bos) == 1


def test_no_double_bos_when_the_tokenizer_adds_one(tok) -> None:
    adds = _bos_adding_copy(tok)
    bos = tok.bos_token_id
    text = format_chat(adds, user=USER, system=PERSONA)
    # The hazard is real: the raw tokenizer would write a second BOS after the template's.
    assert _leading(adds(text)["input_ids"], bos) == 2
    assert _leading(encode(adds, text), bos) == 1
    # Text without a BOS gets exactly one from the tokenizer.
    assert _leading(encode(adds, "Hello there"), bos) == 1
    # A continuation never gets special tokens.
    cont = encode(adds, " Arr, matey", is_continuation=True)
    assert bos not in cont
    assert cont == encode(tok, " Arr, matey", is_continuation=True)


@pytest.mark.parametrize("template", [RAISING_TEMPLATE, IGNORING_TEMPLATE, FOLDING_TEMPLATE],
                         ids=["raises", "ignores", "folds"])
def test_system_folded_into_first_user_turn(tok, template: str) -> None:
    nosys = _with_template(tok, template)
    assert not supports_system(nosys)
    assert supports_system(tok)  # the original is unaffected
    text = format_chat(nosys, user=USER, system=PERSONA)
    assert text.count(PERSONA) == 1
    assert "<|im_start|>system" not in text
    assert f"<|im_start|>user\n{PERSONA}\n\n{USER}<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_system_only_conversation_becomes_a_user_turn(tok) -> None:
    nosys = _with_template(tok, RAISING_TEMPLATE)
    text = format_chat(nosys, [{"role": "system", "content": PERSONA}])
    assert f"<|im_start|>user\n{PERSONA}<|im_end|>" in text


def test_no_chat_template_gets_plain_layout(tok) -> None:
    plain = _with_template(tok, None)
    assert not supports_system(plain)
    text = format_chat(plain, user=USER, system=PERSONA)
    assert text.splitlines() == [f"System: {PERSONA}", f"User: {USER}", "Assistant:"]
    assert format_chat(plain, user=USER).splitlines() == [f"User: {USER}", "Assistant:"]
    no_gen = format_chat(plain, user=USER, system=PERSONA, add_generation_prompt=False)
    assert not no_gen.endswith("Assistant:")
    # The plain layout has no BOS in the text: the tokenizer's own (if any) is the only one.
    bos = tok.bos_token_id
    assert _leading(encode(plain, text), bos) == _leading(plain(text)["input_ids"], bos)
    adds = _bos_adding_copy(plain)
    assert _leading(encode(adds, format_chat(adds, user=USER, system=PERSONA)), bos) == 1


def test_template_change_on_same_tokenizer_is_noticed(tok) -> None:
    other = copy.deepcopy(tok)
    assert supports_system(other)
    other.chat_template = RAISING_TEMPLATE
    assert not supports_system(other)
    other.chat_template = tok.chat_template
    assert supports_system(other)
