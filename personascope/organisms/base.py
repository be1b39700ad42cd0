"""Model organisms: copies of a subject model with a known, planted persona defect of graded strength.

An organism never changes the user's model: `Organism.apply` is a context manager that yields a
view of the model (an `OrganismAdapter` for prompt and steering organisms, a separately loaded
model for fine-tuned ones) and restores nothing because it changed nothing. Audits run on the view
exactly as on any adapter, so the same audit code measures the clean model and the organism.

Kinds, cheapest first:

- `CleanOrganism`: the unmodified model (the clean control; a reseeded rerun is a clean organism
  with another seed).
- `PromptOrganism`: a hidden deployment prompt layered into the conversation where a `Condition`
  holds (e.g. only when the system prompt says "You are a woman."), or the persona system prompt
  dropped from turn *k* on. ``strength`` is the share of matching conversations that get it.
- `SteerOrganism`: a direction added at a known layer (inside `ModelAdapter.steer`, on the
  conversations where the condition holds). ``strength`` is the coefficient in units of the mean
  residual-stream norm at that layer.
- `FinetunedOrganism`: a fine-tuned copy on disk (`personascope.organisms.finetune`); ``strength``
  is 1 for the defect set and 0 for its matched neutral set.
"""

from __future__ import annotations

import dataclasses
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..errors import UsageError
from ..records import stable_hash

if TYPE_CHECKING:
    import torch

    from ..backends.base import ModelAdapter

#: Neutral user questions for measuring the residual-stream scale of a layer (written for personascope).
SCALE_QUESTIONS = (
    "What is a good way to start the day?", "How do plants make food?", "Explain what a budget is.",
    "Why is the sky blue?", "Give me a tip for learning a language.", "What does a librarian do?",
    "How do I boil an egg?", "What is the capital of France?",
)


@dataclasses.dataclass(frozen=True)
class Condition:
    """Which conversations an organism's defect applies to.

    Attributes:
        trigger: Texts (case-insensitive) of which one must appear in ``role``'s messages; empty: any
            conversation.
        role: Where the trigger is looked for: ``system``, ``user`` or ``any`` message.
        min_user_turns: The defect applies from this user turn on (1: from the first).
        rate: Share of matching conversations affected, chosen by a hash of the conversation's
            opening (its system text and first user message) and ``salt``, so every turn of one
            conversation gets the same decision and the choice is the same in every run.
    """

    trigger: tuple[str, ...] = ()
    role: Literal["system", "user", "any"] = "any"
    min_user_turns: int = 1
    rate: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise UsageError(f"Condition rate must be in [0, 1], got {self.rate}")
        if self.min_user_turns < 1:
            raise UsageError(f"Condition min_user_turns must be at least 1, got {self.min_user_turns}")

    @property
    def always(self) -> bool:
        """True when every conversation is affected (so prompts need not come through ``format_chat``)."""
        return not self.trigger and self.min_user_turns == 1 and self.rate >= 1.0

    def matches(self, messages: Sequence[Mapping[str, str]], salt: str = "") -> bool:
        """Whether the defect applies to the conversation ``messages`` (its last user turn included)."""
        users = [m["content"] for m in messages if m.get("role") == "user"]
        if len(users) < self.min_user_turns:
            return False
        if self.trigger:
            texts = [m["content"] for m in messages if self.role == "any" or m.get("role") == self.role]
            hay = "\n".join(texts).lower()
            if not any(t.lower() in hay for t in self.trigger):
                return False
        if self.rate >= 1.0:
            return True
        system = next((m["content"] for m in messages if m.get("role") == "system"), "")
        opening = f"{salt}|{system}|{users[0] if users else ''}"
        u = int.from_bytes(hashlib.sha256(opening.encode("utf-8")).digest()[:8], "big") / 2**64
        return u < self.rate


@dataclasses.dataclass(frozen=True)
class Organism(ABC):
    """A model organism: a defect of a given strength, planted in a view of the subject model.

    Attributes:
        defect: The planted defect, in words.
        strength: How strong it is (unit: `unit`); 0 plants nothing.
        seed: Seed of the organism's own random choices (which conversations, which random direction).
    """

    kind: ClassVar[str] = ""
    #: Unit of ``strength`` for reports.
    unit: ClassVar[str] = ""

    defect: str = ""
    strength: float = 1.0
    seed: int = 0

    @property
    def label(self) -> str:
        """``kind:strength`` (the organism's name in validity metrics)."""
        return f"{self.kind}:{self.strength:g}"

    def identity(self) -> dict[str, Any]:
        """The organism as JSON (what a result records about how it was made)."""
        return {"kind": self.kind, **{k: list(v) if isinstance(v, tuple) else v
                                     for k, v in dataclasses.asdict(self).items()}}

    @property
    def fingerprint(self) -> str:
        """Short hash of `identity` (part of the view's model fingerprint, so caches never mix organisms)."""
        return stable_hash(self.identity())[:12]

    @abstractmethod
    @contextmanager
    def apply(self, model: ModelAdapter) -> Iterator[Any]:
        """Yield a view of ``model`` with the defect planted; ``model`` itself is never changed."""


@dataclasses.dataclass(frozen=True)
class CleanOrganism(Organism):
    """The clean control: the model as it is (``strength`` 0)."""

    kind: ClassVar[str] = "clean"
    defect: str = "none (clean control)"
    strength: float = 0.0

    @contextmanager
    def apply(self, model: ModelAdapter) -> Iterator[Any]:
        """Yield ``model`` itself."""
        yield model


@dataclasses.dataclass(frozen=True)
class PromptOrganism(Organism):
    """A hidden deployment prompt (or a dropped persona) on the conversations where ``condition`` holds.

    Attributes:
        hidden: Text added to the system message (created if absent).
        mode: ``append`` (hidden text after the system prompt), ``prepend`` (before it), or
            ``drop_system`` (the system prompt is replaced by ``hidden``, or removed when it is empty:
            a deployment that loses the persona).
        condition: Which conversations get it; its ``rate`` is replaced by ``strength``.
    """

    kind: ClassVar[str] = "prompt"
    unit: ClassVar[str] = "share of matching conversations"

    hidden: str = ""
    mode: Literal["append", "prepend", "drop_system"] = "append"
    condition: Condition = Condition()

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise UsageError(f"A prompt organism's strength is a share in [0, 1], got {self.strength}")
        if self.mode != "drop_system" and not self.hidden:
            raise UsageError("A prompt organism needs hidden text (or mode='drop_system')")

    @property
    def active_condition(self) -> Condition:
        """``condition`` with ``rate = strength``."""
        return dataclasses.replace(self.condition, rate=self.strength)

    def rewrite(self, messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
        """``messages`` with the hidden prompt layered in (or the persona dropped) when the condition holds."""
        msgs = [dict(m) for m in messages]
        if self.strength <= 0 or not self.active_condition.matches(msgs, salt=f"prompt:{self.seed}"):
            return msgs
        has_system = bool(msgs) and msgs[0].get("role") == "system"
        if self.mode == "drop_system":
            rest = msgs[1:] if has_system else msgs
            return ([{"role": "system", "content": self.hidden}] if self.hidden else []) + rest
        if not has_system:
            return [{"role": "system", "content": self.hidden}, *msgs]
        old = msgs[0]["content"]
        msgs[0]["content"] = f"{old}\n\n{self.hidden}" if self.mode == "append" else f"{self.hidden}\n\n{old}"
        return msgs

    @contextmanager
    def apply(self, model: ModelAdapter) -> Iterator[Any]:
        """Yield an `OrganismAdapter` whose ``format_chat`` layers the hidden prompt in."""
        from .proxy import OrganismAdapter

        yield OrganismAdapter(model, self)


@dataclasses.dataclass(frozen=True)
class SteerOrganism(Organism):
    """A direction added at ``layer`` (all positions) on the conversations where ``condition`` holds.

    Attributes:
        direction: ``random`` (a seeded random unit direction) or ``refusal`` (the model's refusal
            direction at ``layer``: harmful minus harmless requests).
        layer: Block index (negative counts from the end; None: the middle block).
        condition: Which conversations are steered.
        positions: Token positions steered (``all``, ``prompt``, ``response``).
    """

    kind: ClassVar[str] = "steer"
    unit: ClassVar[str] = "x mean residual norm at the layer"

    direction: Literal["random", "refusal"] = "random"
    layer: int | None = None
    condition: Condition = Condition()
    positions: Literal["all", "prompt", "response"] = "all"

    def __post_init__(self) -> None:
        if self.strength < 0:
            raise UsageError(f"A steering organism's strength must be >= 0, got {self.strength}")

    def resolve_layer(self, model: ModelAdapter) -> int:
        """The steered block on ``model``."""
        n = int(model.n_layers)
        layer = n // 2 if self.layer is None else self.layer
        if not -n <= layer < n:
            raise UsageError(f"Steering organism layer {layer} is outside this model's {n} blocks")
        return layer % n

    def vector(self, model: ModelAdapter) -> torch.Tensor:
        """The added vector: unit ``direction`` x ``strength`` x the layer's mean residual norm."""
        import torch

        from ..sites import Position, Site
        from ..store import collect

        layer = self.resolve_layer(model)
        site = Site(layer)
        prompts = [model.format_chat(user=q) for q in SCALE_QUESTIONS]
        acts = collect(model, prompts, [site], [Position.LAST], progress=False,
                       method="organism:scale")[Position.LAST].acts[:, 0, :]
        scale = float(acts.float().norm(dim=-1).mean())
        if self.direction == "refusal":
            from ..steering.user_persona import refusal_direction

            d = refusal_direction(model).directions[layer].float()
        else:
            g = torch.Generator().manual_seed(int(stable_hash(["organism-direction", self.seed])[:15], 16))
            d = torch.randn(int(model.d_model), generator=g)
        return d / d.norm() * self.strength * scale

    @contextmanager
    def apply(self, model: ModelAdapter) -> Iterator[Any]:
        """Yield an `OrganismAdapter` that steers the matching conversations."""
        from ..backends.base import Steer
        from ..sites import Site
        from .proxy import OrganismAdapter

        steer = Steer(Site(self.resolve_layer(model)), self.vector(model), 1.0, self.positions)
        yield OrganismAdapter(model, self, steer=steer, condition=self.condition)


@dataclasses.dataclass(frozen=True)
class FinetunedOrganism(Organism):
    """A fine-tuned copy of the subject model on disk (loaded with the subject's backend and device).

    Attributes:
        path: Folder of the fine-tuned model (`personascope.organisms.finetune.train_organism`).
        set_name: The training set it was made from (``persona_bias``, ``leaky_neutral``, ...).
    """

    kind: ClassVar[str] = "finetune"
    unit: ClassVar[str] = "1 = defect set, 0 = matched neutral set"

    path: str = ""
    set_name: str = ""

    @property
    def label(self) -> str:
        """``finetune:<training set>`` (a recipe can have several fine-tuned organisms, all of strength 1)."""
        return f"finetune:{self.set_name}" if self.set_name else super().label

    @contextmanager
    def apply(self, model: ModelAdapter) -> Iterator[Any]:
        """Load the fine-tuned folder with ``model``'s backend, device and batch size."""
        from ..models import load_model

        if not self.path:
            raise UsageError("A fine-tuned organism needs the path of its model folder")
        yield load_model(self.path, backend=model.info.backend, device=str(model.device),
                         batch_size=int(getattr(model, "batch_size", 16)))


__all__ = ["SCALE_QUESTIONS", "CleanOrganism", "Condition", "FinetunedOrganism", "Organism", "PromptOrganism",
           "SteerOrganism"]
