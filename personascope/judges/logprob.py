"""Log-prob judge: a local model answers the rubric question, read as a distribution.

The score is the expectation of the judge's next-token distribution over the valid answers (as
the persona-vectors paper scores with its judge). Deterministic: one forward pass per batch, no sampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..records import stable_hash
from . import scales
from .base import Item, Judge, JudgeIdentity, Rating, Rubric

if TYPE_CHECKING:
    from ..backends.base import ModelAdapter

DEFAULT_SYSTEM = "You are a careful, impartial evaluator. Follow the answer format exactly."
# The assistant turn is pre-filled so the very next token is the answer. Measured on the 135M
# embedded model: without it < 25% of the mass falls on valid answers; with it > 60%.
PREFILLS = {"spaced": "Answer:", "bare": "Answer: "}


class LogProbJudge(Judge):
    """Judge with any model loaded by `personascope.load_model` (the subject itself or another).

    Args:
        model: The judge model.
        system: System message for the judge prompt.
        min_valid_mass: Ratings whose valid-answer probability mass is below this are invalid.
        calibrate: Divide the answer distribution by the one the judge gives a content-free item
            ("N/A"), then renormalize (contextual calibration, Zhao et al. 2021). Small judges
            carry a strong prior toward some answers; this removes it.
        batch_size: Prompts per forward pass.
    """

    def __init__(
        self,
        model: ModelAdapter,
        *,
        system: str | None = DEFAULT_SYSTEM,
        min_valid_mass: float = 0.25,
        calibrate: bool = False,
        batch_size: int = 16,
        progress: bool = False,
    ) -> None:
        self.model = model
        self.progress = progress  # a bar per rating call (not part of the identity: it changes no rating)
        self.system = system
        self.min_valid_mass = min_valid_mass
        self.calibrate = calibrate
        self.batch_size = batch_size

    @property
    def identity(self) -> JudgeIdentity:
        """Judge identity: the model's fingerprint and a hash of the prompt format."""
        digits = self._digits_only()
        return JudgeIdentity(
            kind="logprob",
            name=self.model.info.id,
            model_fingerprint=self.model.info.fingerprint,
            prompt_hash=stable_hash({"system": self.system, "digits": digits, "prefill": PREFILLS,
                                     "calibrate": self.calibrate,
                                     "instructions": scales.INSTRUCTIONS,
                                     "digit_instruction": scales.DIGIT_INSTRUCTION})[:16],
        )

    def _digits_only(self) -> bool:
        # "100" must be one token for a 0-100 distribution; otherwise ask for a digit 0-9.
        return len(self._token_ids("100", "any")) == 0

    def _token_ids(self, answer: str, spelling: str = "any") -> list[int]:
        """Single-token ids of ``answer``: ``bare``, ``spaced`` (leading space) or ``any``."""
        tok = self.model.tokenizer
        forms = {"bare": [answer], "spaced": [" " + answer], "any": [answer, " " + answer]}[spelling]
        ids = []
        for form in forms:
            enc = tok(form, add_special_tokens=False)["input_ids"]
            if len(enc) == 1:
                ids.append(enc[0])
        return sorted(set(ids))

    def _spelling(self, answers: Sequence[str]) -> str:
        # "Answer: Yes" tokenizes as ["Answer", ":", " Yes"] in most vocabularies, but digit-split
        # vocabularies write " 5" as [" ", "5"]: then pre-fill the space and read bare digits.
        return "spaced" if all(self._token_ids(a, "spaced") for a in answers) else "bare"

    def prompt(self, item: Item, rubric: Rubric) -> str:
        """The full judge prompt (chat-formatted, answer pre-filled) for ``item``."""
        digits = self._digits_only() if rubric.scale == "0-100" else False
        answers = [a for a, _ in scales.options(rubric, digits=digits)]
        text = f"{rubric.render(item)}\n\n{scales.instruction(rubric, digits=digits)}"
        return self.model.format_chat(user=text, system=self.system) + PREFILLS[self._spelling(answers)]

    def _rate(self, items: Sequence[Item], rubric: Rubric) -> list[Rating]:
        digits = self._digits_only() if rubric.scale == "0-100" else False
        opts = scales.options(rubric, digits=digits)
        spelling = self._spelling([a for a, _ in opts])
        opt_ids = [self._token_ids(a, spelling) for a, _ in opts]
        missing = [a for (a, _), ids in zip(opts, opt_ids, strict=True) if not ids]
        ident = self.identity
        if missing:
            err = f"answers {missing[:5]} are not single tokens for this judge's tokenizer"
            return [Rating(value=None, valid=False, rubric=rubric.name, judge=ident, error=err) for _ in items]
        prompts = [self.prompt(it, rubric) for it in items]
        if self.calibrate:
            prompts.append(self.prompt(Item(text="N/A", question="N/A", target="N/A"), rubric))
        probs = self.model.next_token_logprobs(prompts, batch_size=self.batch_size, progress=self.progress).exp()
        prior = None
        if self.calibrate:
            prior = [max(float(probs[-1][ids].sum()), 1e-9) for ids in opt_ids]
            probs = probs[:-1]
        out = []
        values = [v for _, v in opts]
        for row in probs:
            p = [float(row[ids].sum()) for ids in opt_ids]
            mass = sum(p)
            top = int(row.argmax())
            raw = self.model.tokenizer.decode([top])
            if mass <= 0:
                out.append(Rating(value=None, valid=False, rubric=rubric.name, judge=ident,
                                  valid_mass=0.0, raw=raw, error="no mass on valid answers"))
                continue
            weights = p if prior is None else [a / b for a, b in zip(p, prior, strict=True)]
            value = scales.expected_value(weights, values, rubric.scale)
            ok = mass >= self.min_valid_mass
            out.append(Rating(
                value=value if ok else None, valid=ok, rubric=rubric.name, judge=ident, valid_mass=mass,
                raw=raw if ok else f"{raw} (value {value:.3g} dropped: mass {mass:.2f})",
                error=None if ok else f"valid-answer mass {mass:.2f} < {self.min_valid_mass}",
            ))
        return out

    def __repr__(self) -> str:
        return f"LogProbJudge({self.model.info.short})"

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters (scikit-learn style)."""
        return {"system": self.system, "min_valid_mass": self.min_valid_mass,
                "calibrate": self.calibrate, "batch_size": self.batch_size}
