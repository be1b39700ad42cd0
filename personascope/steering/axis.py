"""The assistant axis: a direction of "being the default assistant", drift along it turn by turn, and capping.

After Lu et al., "The Assistant Axis" (``../shared/papers.md`` section 9). A *role vector* is the
mean response activation, per layer, of the model told to embody one role, over shared questions.
The axis at a layer is the mean under neutral default-assistant prompts minus the mean of the role
vectors: a positive projection is more assistant-like, a negative one more in character.

Every number comes with what it would be without an effect:

- The alignment of the first principal component of the role vectors with the axis is set beside
  random directions (``|cos|`` of isotropic unit vectors) and beside the same fit on shuffled
  assistant/role labels.
- The separation of assistant from role responses is measured on questions held out from the fit
  (AUROC of the projection), beside the separation an axis fit on shuffled labels reaches on the
  same held-out rows. The monitoring layer is chosen on the fitting questions and reported on the
  held-out ones.

Capping (`AssistantAxis.cap`) floors every token's projection at a percentile of the projections of
default-assistant responses, over a band of layers, inside a ``with`` block that restores the model.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tqdm.auto import tqdm

from ..errors import DataError, UsageError
from ..records import now_iso, stable_hash
from ..sites import Position, Site
from .vector import PersonaVector

if TYPE_CHECKING:
    from ..backends.base import ModelAdapter

ROLES_DIR = Path(__file__).resolve().parents[1] / "data" / "roles"
#: Percentiles at which the per-token projections of default-assistant responses are kept (capping thresholds).
PERCENTILES = np.arange(101, dtype=float)
AXIS_FORMAT = "personascope.AssistantAxis"
#: Deepest layer (as a share of the model's depth) the monitoring layer may be chosen from.
MAX_DEPTH = 0.8


# ====================================================================== roles
class _Role(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, max_length=100)
    category: str = ""
    system: list[str] = Field(min_length=1)


class _RoleFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    version: int = 1
    description: str = ""
    assistant: list[str] = Field(min_length=1)
    questions: list[str] = Field(min_length=4)
    roles: list[_Role] = Field(min_length=3)


@dataclass(frozen=True)
class Role:
    """One character role: a name, a category and system prompts that tell the model to embody it."""

    name: str
    category: str
    system: tuple[str, ...]


@dataclass(frozen=True)
class RoleSet:
    """Default-assistant system prompts (``""``: no system prompt), shared questions and roles."""

    assistant: tuple[str, ...]
    questions: tuple[str, ...]
    roles: tuple[Role, ...]
    source: str = "builtin"

    @property
    def hash(self) -> str:
        """Content hash (recorded with every axis fit from this set)."""
        return stable_hash([list(self.assistant), list(self.questions),
                            [[r.name, r.category, list(r.system)] for r in self.roles]])[:16]

    def interleaved(self, n: int | None) -> list[Role]:
        """The first ``n`` roles taking one per category in turn, so a small set still spans the categories."""
        by_cat: dict[str, list[Role]] = {}
        for r in self.roles:
            by_cat.setdefault(r.category, []).append(r)
        out: list[Role] = []
        queues = list(by_cat.values())
        while any(queues):
            for q in queues:
                if q:
                    out.append(q.pop(0))
        return out if n is None else out[:n]


def load_roles(spec: str | Path = "builtin") -> RoleSet:
    """The built-in role set (``"builtin"``) or a JSON file of the same schema (see ``data/roles/README.md``).

    Raises:
        DataError: The file is missing, not JSON, or does not follow the schema (one line naming the field).
    """
    from ..data import read_json_object

    path = ROLES_DIR / "roles.json" if str(spec) == "builtin" else Path(spec)
    raw = read_json_object(path, "role file")
    try:
        data = _RoleFile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise DataError(f"{path}: {where}: {err['msg']} (schema: personascope/data/roles/README.md)") from None
    names = [r.name for r in data.roles]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"{path}: role names must be unique; repeated: {', '.join(dup[:5])}")
    return RoleSet(tuple(data.assistant), tuple(data.questions),
                   tuple(Role(r.name, r.category, tuple(r.system)) for r in data.roles),
                   "builtin" if str(spec) == "builtin" else str(path))


# ====================================================================== geometry helpers
def _unit(v: torch.Tensor) -> torch.Tensor:
    n = v.norm(dim=-1, keepdim=True)
    return torch.where(n > 0, v / n.clamp_min(1e-30), torch.zeros_like(v))


def _pc1(role_means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First principal component ``[d]`` and variance-explained ratios of role vectors ``[R, d]`` (centered)."""
    x = role_means - role_means.mean(0, keepdims=True)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    var = s**2
    total = var.sum()
    return vt[0], (var / total if total > 0 else np.zeros_like(var))


def _axis_stats(x: np.ndarray, is_role: np.ndarray, role_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axis ``[L, d]`` (assistant mean minus the mean of role means) and role means ``[R, L, d]``."""
    roles = np.unique(role_id[is_role])
    role_means = np.stack([x[role_id == r].mean(0) for r in roles])
    return x[~is_role].mean(0) - role_means.mean(0), role_means


def _auroc_rows(proj: np.ndarray, is_role: np.ndarray) -> float:
    from ..stats import auc

    return auc(proj[~is_role], proj[is_role])


def _cohen_d(a: np.ndarray, b: np.ndarray) -> float:
    pooled = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2) if a.size > 1 and b.size > 1 else math.nan
    return float((a.mean() - b.mean()) / pooled) if pooled and math.isfinite(pooled) and pooled > 0 else 0.0


# ====================================================================== the axis
@dataclass
class AssistantAxis:
    """The assistant axis per layer, the role vectors it came from, and the calibration for capping.

    Attributes:
        vector: ``PersonaVector`` named ``assistant_axis``: per layer, the default-assistant mean minus
            the mean role vector (raw, not unit; it steers and exports like any persona vector).
        role_names: Roles in the order of ``role_means``.
        role_means: ``[R, L, d]`` role vectors over the fitting questions, layers as ``vector.layers``.
        assistant_mean: ``[L, d]`` mean activation of default-assistant responses.
        token_quantiles: ``[L, 101]`` percentiles 0..100 of the per-token projections (on the unit axis)
            of default-assistant response tokens: the thresholds `cap` uses.
        layer: The monitoring layer: the best separation on the fitting questions among layers up to
            `MAX_DEPTH` of the depth.
        report: Per-layer statistics and their nulls (JSON; see `assistant_axis`).
    """

    vector: PersonaVector
    role_names: list[str]
    role_means: torch.Tensor
    assistant_mean: torch.Tensor
    token_quantiles: np.ndarray
    layer: int
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def layers(self) -> list[int]:
        """Layers the axis has."""
        return self.vector.layers

    def unit(self, layer: int) -> torch.Tensor:
        """The unit axis at ``layer``."""
        return _unit(self.vector[layer])

    def project(self, acts: torch.Tensor | np.ndarray, layer: int) -> np.ndarray:
        """Projection of activations ``[..., d]`` on the unit axis at ``layer`` (higher: more assistant-like)."""
        a = torch.as_tensor(np.asarray(acts), dtype=torch.float32)
        return (a @ self.unit(layer)).numpy()

    def threshold(self, layer: int, percentile: float = 25.0) -> float:
        """The ``percentile`` of default-assistant token projections at ``layer`` (the capping floor)."""
        if not 0.0 <= percentile <= 100.0:
            raise UsageError(f"percentile must be in [0, 100], got {percentile}")
        row = self.token_quantiles[self.layers.index(layer) if layer in self.layers else self._missing(layer)]
        return float(np.interp(percentile, PERCENTILES, row))

    def _missing(self, layer: int) -> int:
        raise UsageError(f"The axis has no layer {layer}; it has layers {self.layers}")

    def default_band(self) -> list[int]:
        """Capping layers: the monitoring layer, one before and two after (those the axis has).

        The paper caps a band of 8 of 64 layers around its monitoring depth; on a 30-layer model four
        layers are the same share.
        """
        return [k for k in range(self.layer - 1, self.layer + 3) if k in self.layers]

    @contextlib.contextmanager
    def cap(self, model: Any, layers: Sequence[int] | None = None, percentile: float = 25.0, *,
            thresholds: Mapping[int, float] | None = None, force: bool = False) -> Iterator[Any]:
        """Floor every token's projection on the axis at ``layers`` inside the block; restored on exit.

        The floor stops drift away from the assistant end: a token whose projection is below the
        threshold is moved along the axis to it, every other token is left exactly as it was.

        Args:
            model: The adapter (or a caching/organism view of it).
            layers: Layers to cap (default `default_band`).
            percentile: Percentile of default-assistant token projections used as the floor.
            thresholds: ``{layer: floor}`` to use instead of the percentile.
            force: Allow a model other than the one the axis was fit on.
        """
        from ..backends.base import Steer

        band = list(self.default_band() if layers is None else layers)
        if not band:
            raise UsageError("cap(layers=...) needs at least one layer")
        self.vector.at_layers(band).check_model(model, force=force)
        steers = []
        for k in band:
            given = thresholds is not None and k in thresholds
            floor = float(thresholds[k]) if given and thresholds is not None else self.threshold(k, percentile)
            # Rounding leaves a tiny difference where assistant and role responses are the same.
            if float(self.vector[k].norm()) <= 1e-6 * float(self.assistant_mean[self.layers.index(k)].norm()):
                raise UsageError(f"The axis is zero at layer {k} (assistant and role responses were identical); "
                                 "it cannot cap there")
            steers.append(Steer(Site(k), self.unit(k), 1.0, "all", cap=floor))
        with model.steer(steers):
            yield model

    # ------------------------------------------------------------------ monitoring
    def monitor(self, model: Any, conversations: Sequence[Sequence[Mapping[str, str]]] | Sequence[Transcript]
                | str | Path, *, layer: int | None = None, ids: Sequence[str] | None = None,
                batch_size: int | None = None, progress: bool = True) -> DriftTrace:
        """Project every assistant turn of ``conversations`` on the axis (mean over the turn's tokens).

        Args:
            model: The adapter the axis was fit on (or a view of it; inside a `cap` block the capped
                model's activations are read).
            conversations: Message lists, `Transcript` objects (from `converse`: each turn read under
                the prompt the model answered), or a JSONL file of chat transcripts (one
                ``{"messages": [...]}`` per line, optional ``"id"``), e.g. logged production traffic.
            layer: Layer to read (default: the monitoring layer).
            ids: Conversation ids (default: the transcripts' own, the file's ``id`` fields or ``conv-<i>``).
            batch_size: Rows per forward pass.
            progress: Show progress.
        """
        from ..store import collect

        layer = self.layer if layer is None else int(layer)
        if layer not in self.layers:
            self._missing(layer)
        items = list(conversations) if not isinstance(conversations, str | Path) else []
        if items and all(isinstance(c, Transcript) for c in items):
            trs = [c for c in items if isinstance(c, Transcript)]
        else:
            convs, conv_ids = read_conversations(conversations, ids)  # type: ignore[arg-type]
            trs = [transcript(model, c, i) for c, i in zip(convs, conv_ids, strict=True)]
        conv_ids = [t.id for t in trs] if ids is None else [str(x) for x in ids]
        prompts, responses, where = [], [], []
        per = [[math.nan] * len(t.replies) for t in trs]
        for ci, tr in enumerate(trs):
            for t, (pr, reply) in enumerate(zip(tr.prompts, tr.replies, strict=True)):
                # An empty reply keeps its turn (NaN), so turn numbers stay those of the transcript.
                if reply:
                    prompts.append(pr)
                    responses.append(reply)
                    where.append((ci, t))
        if not prompts:
            raise DataError("No assistant turn with text after a user turn in these conversations; "
                            "a transcript needs {'role': 'assistant', 'content': ...} messages")
        got = collect(model, prompts, [Site(layer)], [Position.RESPONSE_MEAN], responses=responses,
                      batch_size=batch_size, progress=progress, method="assistant_axis:monitor")
        proj = self.project(got[Position.RESPONSE_MEAN].at(layer), layer)
        for (ci, t), p in zip(where, proj, strict=True):
            per[ci][t] = float(p)
        ref = self.report.get("response_reference", {}).get(str(layer), {})
        return DriftTrace(layer=layer, ids=conv_ids, projections=[np.asarray(p) for p in per],
                          user_turns=[list(t.users) for t in trs], assistant_reference=ref)

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write the axis as a persona vector (``path.safetensors`` + ``path.json``) plus ``path.roles.safetensors``.

        The first two files load with `PersonaVector.load` (steer or export the axis anywhere); the
        third holds the role vectors and the capping calibration.
        """
        from safetensors.torch import save_file

        vec = PersonaVector(self.vector.name, self.vector.directions, self.vector.model, self.vector.method,
                            {**self.vector.meta, "assistant_axis": {"format": AXIS_FORMAT, "layer": self.layer,
                                                                    "role_names": self.role_names,
                                                                    "report": self.report}})
        st = vec.save(path)
        extra = st.with_name(st.name[: -len(".safetensors")] + ".roles.safetensors")
        save_file({"role_means": self.role_means.contiguous().float(),
                   "assistant_mean": self.assistant_mean.contiguous().float(),
                   "token_quantiles": torch.from_numpy(np.ascontiguousarray(self.token_quantiles, dtype=np.float32))},
                  str(extra), metadata={"format": AXIS_FORMAT})
        return st

    @classmethod
    def load(cls, path: str | Path) -> AssistantAxis:
        """Read an axis written by `save`.

        Raises:
            DataError: A missing or damaged file, or a persona vector that is not an assistant axis.
        """
        from safetensors.torch import load_file

        vec = PersonaVector.load(path)
        meta = vec.meta.get("assistant_axis")
        base = Path(path)
        if base.suffix in (".safetensors", ".json"):
            base = base.with_suffix("")
        if not isinstance(meta, dict) or meta.get("format") != AXIS_FORMAT:
            raise DataError(f"{base} is a persona vector but not an assistant axis (no role data); "
                            "fit one with personascope.steering.axis.assistant_axis")
        extra = base.with_name(base.name + ".roles.safetensors")
        try:
            t = load_file(str(extra))
            names = [str(n) for n in meta["role_names"]]
            axis = cls(vec, names, t["role_means"], t["assistant_mean"], t["token_quantiles"].numpy().astype(float),
                       int(meta["layer"]), dict(meta.get("report", {})))
        except Exception as exc:  # noqa: BLE001 - safetensors, KeyError and type errors all mean a damaged file
            raise DataError(f"Cannot read assistant-axis data {extra}: {' '.join(str(exc).split())[:200]}") from None
        n_l = len(vec.layers)
        if axis.role_means.shape[:2] != (len(names), n_l) or axis.token_quantiles.shape != (n_l, len(PERCENTILES)) \
                or axis.layer not in vec.layers:
            raise DataError(f"{extra} does not match {base}.json (roles, layers or percentiles differ)")
        return axis

    def __repr__(self) -> str:
        return (f"AssistantAxis(layers={self.layers[:4]}{'...' if len(self.layers) > 4 else ''}, "
                f"roles={len(self.role_names)}, layer={self.layer})")


# ====================================================================== conversations
def read_conversations(conversations: Sequence[Sequence[Mapping[str, str]]] | str | Path,
                       ids: Sequence[str] | None = None) -> tuple[list[list[dict[str, str]]], list[str]]:
    """Message lists and ids from a list or a JSONL/JSON file of ``{"messages": [...], "id": ...}`` records.

    Raises:
        DataError: A record without a ``messages`` list of ``{"role", "content"}`` texts (names the record).
    """
    from ..chat import check_messages

    if isinstance(conversations, str | Path):
        from ..data import read_records

        recs = read_records(conversations)
        convs, found = [], []
        for i, r in enumerate(recs, 1):
            if not isinstance(r.get("messages"), list):
                raise DataError(f"{conversations}: record {i} has no 'messages' list; each record is "
                                "{'messages': [{'role': ..., 'content': ...}, ...]}")
            convs.append(r["messages"])
            found.append(str(r.get("id", f"conv-{i - 1}")))
        conv_ids = found
    else:
        convs = [list(c) for c in conversations]
        conv_ids = [f"conv-{i}" for i in range(len(convs))]
    out = []
    for i, c in enumerate(convs):
        try:
            check_messages(c)
        except DataError as exc:
            raise DataError(f"conversation {conv_ids[i]}: {exc}") from None
        out.append([{"role": m["role"], "content": m["content"]} for m in c])
    if ids is not None:
        if len(ids) != len(out):
            raise UsageError(f"{len(out)} conversations but {len(ids)} ids")
        conv_ids = [str(x) for x in ids]
    return out, conv_ids


@dataclass(frozen=True)
class Transcript:
    """A conversation as the model saw it: per assistant turn, the rendered prompt, the reply and the user turn.

    Attributes:
        id: Conversation id.
        prompts: The prompt text each reply was generated from (chat template applied).
        replies: The assistant replies.
        users: The user message before each reply.
        messages: The whole conversation (under the last turn's system prompt).
    """

    id: str
    prompts: tuple[str, ...]
    replies: tuple[str, ...]
    users: tuple[str, ...]
    messages: tuple[Mapping[str, str], ...] = ()


def transcript(model: Any, messages: Sequence[Mapping[str, str]], id: str = "") -> Transcript:
    """The `Transcript` of a logged conversation: each assistant turn after the first message, rendered by the model."""
    prompts, replies, users = [], [], []
    for mi, m in enumerate(messages):
        if m["role"] != "assistant" or mi == 0:
            continue
        prompts.append(model.format_chat(messages=[dict(x) for x in messages[:mi]]))
        replies.append(m["content"])
        users.append(next((messages[j]["content"] for j in range(mi - 1, -1, -1)
                           if messages[j]["role"] == "user"), ""))
    return Transcript(id, tuple(prompts), tuple(replies), tuple(users), tuple(messages))


def builtin_scripts() -> dict[str, dict[str, Any]]:
    """The built-in user-turn scripts (``data/roles/conversations.json``): ``{name: {kind, about, turns}}``.

    ``kind`` is ``control`` (coding and writing help: the assistant should stay the assistant) or
    ``drift`` (emotional, meta-reflective and role-play pressure, where the paper sees drift).
    """
    from ..data import read_json_object

    data = read_json_object(ROLES_DIR / "conversations.json", "built-in conversation scripts")
    return dict(data["scripts"])


def converse(model: Any, user_turns: Sequence[Sequence[str]], *,
             system: str | None | Sequence[Sequence[str | None]] = None, max_new_tokens: int = 48,
             batch_size: int | None = None, progress: bool = True,
             ids: Sequence[str] | None = None) -> list[Transcript]:
    """Greedy conversations: the model answers each list of user turns turn by turn (generations cached).

    ``system`` is one system prompt for every conversation, or per conversation a list with the
    system prompt in force at each turn: the whole history is rendered under it (a deployment whose
    persona changes at turn k, say). The returned messages carry the system prompt of the last turn.
    All conversations advance one turn per batch; active steering (an `AssistantAxis.cap` block, say)
    applies to every reply, and the cache keys replies by it, so capped and plain runs never mix.
    """
    from ..store import generate

    n = len(user_turns)
    if system is None or isinstance(system, str):
        plan: list[list[str | None]] = [[system] * len(u) for u in user_turns]
    else:
        plan = [list(x) for x in system]
        if len(plan) != n or any(len(p) < len(u) for p, u in zip(plan, user_turns, strict=True)):
            raise UsageError("system: give one system prompt per turn of every conversation")
    history: list[list[dict[str, str]]] = [[] for _ in range(n)]
    prompts: list[list[str]] = [[] for _ in range(n)]
    longest = max((len(u) for u in user_turns), default=0)

    def render(i: int, t: int) -> list[dict[str, str]]:
        sys_text = plan[i][t]
        head = [{"role": "system", "content": sys_text}] if sys_text else []
        return head + history[i]

    for t in tqdm(range(longest), desc="conversations", disable=not progress, leave=False):
        live = [i for i, u in enumerate(user_turns) if len(u) > t]
        for i in live:
            history[i].append({"role": "user", "content": user_turns[i][t]})
        for i in live:
            prompts[i].append(model.format_chat(messages=render(i, t)))
        replies = generate(model, [prompts[i][-1] for i in live], max_new_tokens, batch_size=batch_size,
                           progress=False)
        for i, r in zip(live, replies, strict=True):
            history[i].append({"role": "assistant", "content": r})
    names = [str(x) for x in ids] if ids is not None else [f"conv-{i}" for i in range(n)]
    return [Transcript(names[i], tuple(prompts[i]), tuple(m["content"] for m in history[i] if m["role"] == "assistant"),
                       tuple(user_turns[i]), tuple(render(i, len(user_turns[i]) - 1) if user_turns[i] else []))
            for i in range(n)]


@dataclass
class DriftTrace:
    """Projection on the assistant axis per assistant turn of each conversation.

    Attributes:
        layer: Layer read.
        ids: Conversation ids.
        projections: Per conversation, one value per assistant turn (mean over the turn's tokens).
        user_turns: The user message before each assistant turn (what may have moved it).
        assistant_reference: Percentiles of default-assistant response projections at this layer
            (``p5``, ``p25``, ``p50``) and the median of role responses (``role_p50``), from the fit.
    """

    layer: int
    ids: list[str]
    projections: list[np.ndarray]
    user_turns: list[list[str]]
    assistant_reference: dict[str, float] = field(default_factory=dict)

    def velocity(self) -> list[np.ndarray]:
        """Change of the projection from each turn to the next, per conversation."""
        return [np.diff(p) for p in self.projections]

    def per_turn(self) -> list[dict[str, float]]:
        """Mean projection per turn over the conversations that reach it, with a Student-t 95% interval.

        A t interval, not a bootstrap: monitored sets are often a handful of conversations, where a
        percentile bootstrap covers far less than 95%.
        """
        from ..stats import t_mean_ci

        longest = max((len(p) for p in self.projections), default=0)
        rows = []
        for t in range(longest):
            vals = [float(p[t]) for p in self.projections if len(p) > t and math.isfinite(p[t])]
            m, lo, hi = t_mean_ci(vals)
            rows.append({"turn": t + 1, "mean": m, "lo": lo, "hi": hi, "n": len(vals)})
        return rows

    def movers(self, k: int = 5) -> list[dict[str, Any]]:
        """The ``k`` turns with the largest fall toward the role end, with the user message before them."""
        rows: list[dict[str, Any]] = []
        for ci, v in enumerate(self.velocity()):
            for t, dv in enumerate(v):
                if not math.isfinite(dv):
                    continue
                rows.append({"id": self.ids[ci], "turn": t + 2, "change": float(dv),
                             "user": self.user_turns[ci][t + 1][:200]})
        return sorted(rows, key=lambda r: r["change"])[:k]

    def normalized(self) -> list[np.ndarray]:
        """Projections rescaled so that 1 is the median default-assistant response and 0 the median role response.

        The raw projection's scale differs by model and layer; on this scale a conversation at 0.5 is
        halfway to the roles the axis was fit on. NaN when the fit recorded no reference.
        """
        ref = self.assistant_reference
        lo, hi = ref.get("role_p50"), ref.get("p50")
        if lo is None or hi is None or hi == lo:
            return [np.full(len(p), math.nan) for p in self.projections]
        return [(p - lo) / (hi - lo) for p in self.projections]

    def to_records(self) -> list[dict[str, Any]]:
        """One JSON record per turn (id, turn, projection, velocity, the user message before it)."""
        out = []
        for ci, p in enumerate(self.projections):
            for t, x in enumerate(p):
                v = float(x - p[t - 1]) if t > 0 else math.nan
                out.append({"id": self.ids[ci], "turn": t + 1, "projection": float(x) if math.isfinite(x) else None,
                            "velocity": v if math.isfinite(v) else None, "layer": self.layer,
                            "user": self.user_turns[ci][t]})
        return out


# ====================================================================== fitting
def assistant_axis(
    model: ModelAdapter,
    roles: str | Path | RoleSet = "builtin",
    *,
    layers: Any = "all",
    n_roles: int | None = None,
    n_questions: int | None = None,
    max_new_tokens: int = 48,
    n_null: int = 200,
    n_shuffle: int = 50,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = True,
) -> AssistantAxis:
    """Fit the assistant axis of ``model``: role vectors, the axis per layer, its PCA and nulls, capping calibration.

    Each role answers every question with one of its system prompts (in turn); the default assistant
    answers every question under each of its prompts. Greedy responses are generated (cached), and
    their mean activation per layer is the row. Questions are split in half by ``seed``: the axis,
    role vectors, PCA and layer choice use the first half; separation is reported on the second.

    The ``report`` holds, per layer: ``pc_var`` (variance explained by the first 5 principal
    components of the role vectors), ``cos_pc1`` (``|cos|`` of PC1 with the axis) beside
    ``cos_random_q95`` (random unit directions) and ``cos_shuffled`` (null summary of the same fit on
    shuffled labels), ``d_select`` (Cohen's d of assistant vs role projections on the fitting
    questions), ``auc_eval`` (held-out AUROC, assistant above role) with its interval, and
    ``auc_shuffled`` (null summary of held-out AUROC of axes fit on shuffled labels); plus
    ``response_reference`` (percentiles of assistant and role response projections) and provenance.

    Args:
        model: Adapter with local weights.
        roles: ``"builtin"``, a role-file path, or a `RoleSet`.
        layers: Layers to fit (layer spec as in `ModelAdapter.sites`).
        n_roles: Roles to use (default all; fewer are taken one per category in turn).
        n_questions: Questions to use (default all; at least 4).
        max_new_tokens: Response length.
        n_null: Random directions for the ``|cos|`` null.
        n_shuffle: Label shuffles for the shuffled-label nulls.
        seed: Seed of the question split and the nulls.
        batch_size: Rows per batch (default: the model's).
        progress: Show progress.
    """
    from ..stats import auc_ci, null_summary, rng
    from ..store import collect, data_hash, generate

    rs = roles if isinstance(roles, RoleSet) else load_roles(roles)
    chosen = rs.interleaved(n_roles)
    questions = list(rs.questions[: n_questions or len(rs.questions)])
    if len(chosen) < 3 or len(questions) < 4:
        raise UsageError(f"The axis needs at least 3 roles and 4 questions; got {len(chosen)} and {len(questions)}")
    order = rng(seed, "axis_split").permutation(len(questions))
    select_q = set(order[: len(questions) // 2].tolist())

    prompts, row_role, row_q = [], [], []
    for j, q in enumerate(questions):
        for a in rs.assistant:
            prompts.append(model.format_chat(user=q, system=a or None))
            row_role.append(-1)
            row_q.append(j)
        for r_i, role in enumerate(chosen):
            prompts.append(model.format_chat(user=q, system=role.system[j % len(role.system)]))
            row_role.append(r_i)
            row_q.append(j)
    responses = generate(model, prompts, max_new_tokens, batch_size=batch_size, progress=progress)
    keep = [i for i, r in enumerate(responses) if r]
    if not keep:
        raise DataError("Every response was empty: the axis needs response tokens (raise max_new_tokens?)")
    sites = model.sites(layers)
    layer_ids = [s.layer for s in sites]
    got = collect(model, [prompts[i] for i in keep], sites, [Position.RESPONSE_MEAN],
                  responses=[responses[i] for i in keep], batch_size=batch_size, progress=progress,
                  method="assistant_axis:fit")[Position.RESPONSE_MEAN]
    x = got.acts.numpy().astype(np.float64)  # [n, L, d]
    role_id = np.asarray([row_role[i] for i in keep])
    is_role = role_id >= 0
    in_sel = np.asarray([row_q[i] in select_q for i in keep])
    sel, ev = in_sel, ~in_sel
    if not (is_role[sel].any() and (~is_role[sel]).any() and is_role[ev].any() and (~is_role[ev]).any()):
        raise DataError("Too many empty responses: a split lacks assistant or role rows")

    axis, role_means = _axis_stats(x[sel], is_role[sel], role_id[sel])  # [L, d], [R', L, d]
    kept_roles = sorted(set(role_id[sel & is_role].tolist()))
    n_l, d = axis.shape
    g = rng(seed, "axis_nulls")
    rand = g.standard_normal((n_null, d))
    rand /= np.linalg.norm(rand, axis=1, keepdims=True)

    def unit_rows(a: np.ndarray) -> np.ndarray:
        n = np.linalg.norm(a, axis=-1, keepdims=True)
        return np.divide(a, n, out=np.zeros_like(a), where=n > 0)

    def fit_stats(lab_role: np.ndarray, lab_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per layer ``|cos(PC1, axis)|`` and held-out AUROC for a labelling of all rows (fit on ``sel``)."""
        if lab_role[sel].all() or not lab_role[sel].any():  # a shuffle left one class out of the fit: no draw
            return np.full(n_l, math.nan), np.full(n_l, math.nan)
        ax, rm = _axis_stats(x[sel], lab_role[sel], lab_id[sel])
        u = unit_rows(ax)
        cos = np.array([abs(float(_pc1(rm[:, k])[0] @ u[k])) for k in range(n_l)])
        proj = np.einsum("nld,ld->nl", x[ev], u)
        aucs = np.array([_auroc_rows(proj[:, k], lab_role[ev]) for k in range(n_l)])
        return cos, aucs

    cos_pc1, auc_eval = fit_stats(is_role, role_id)
    pcs = [_pc1(role_means[:, k]) for k in range(n_l)]
    u_axis = unit_rows(axis)
    rand_cos = np.abs(rand @ u_axis.T)  # [n_null, L]
    shuf_cos, shuf_auc = [], []
    it = tqdm(range(n_shuffle), desc="axis nulls", disable=not progress, leave=False)
    for _ in it:
        # Under the null the labels are exchangeable over every row: shuffled before the split, so
        # the held-out rows are scored against shuffled labels too.
        perm = g.permutation(len(role_id))
        null_cos, null_auc = fit_stats(is_role[perm], role_id[perm])
        shuf_cos.append(null_cos)
        shuf_auc.append(null_auc)
    shuf_cos_a, shuf_auc_a = np.asarray(shuf_cos), np.asarray(shuf_auc)

    proj_sel = np.einsum("nld,ld->nl", x[sel], u_axis)
    d_sel = np.array([_cohen_d(proj_sel[~is_role[sel], k], proj_sel[is_role[sel], k]) for k in range(n_l)])
    # The monitoring layer is the best separating one among those up to MAX_DEPTH of the model: the
    # last blocks turn the residual into next-token logits, so there the axis reads the roles' words
    # more than the persona, and a cap there edits the output directly (the paper caps at 72-84% depth).
    depth_ok = np.asarray([k <= MAX_DEPTH * (model.n_layers - 1) for k in layer_ids])
    cand = np.where(depth_ok & np.isfinite(d_sel), d_sel, -np.inf)
    best = int(np.argmax(cand)) if np.isfinite(cand).any() else n_l // 2
    proj_ev = np.einsum("nld,ld->nl", x[ev], u_axis)
    proj_all = np.einsum("nld,ld->nl", x, u_axis)

    per_layer = []
    for k in range(n_l):
        a_lo_hi = auc_ci(proj_ev[~is_role[ev], k], proj_ev[is_role[ev], k], seed=seed)
        per_layer.append({
            "layer": layer_ids[k], "axis_norm": float(np.linalg.norm(axis[k])),
            "pc_var": [float(v) for v in pcs[k][1][:5]], "cos_pc1": float(cos_pc1[k]),
            "cos_random_q95": float(np.quantile(rand_cos[:, k], 0.95)),
            "cos_shuffled": null_summary(float(cos_pc1[k]), shuf_cos_a[:, k]),
            "d_select": float(d_sel[k]), "auc_eval": float(a_lo_hi[0]), "auc_eval_ci": [a_lo_hi[1], a_lo_hi[2]],
            "auc_shuffled": null_summary(float(auc_eval[k]), shuf_auc_a[:, k]),
        })
    reference = {}
    for k in range(n_l):
        a_p = proj_all[~is_role, k]
        r_p = proj_all[is_role, k]
        reference[str(layer_ids[k])] = {"p5": float(np.percentile(a_p, 5)), "p25": float(np.percentile(a_p, 25)),
                                        "p50": float(np.percentile(a_p, 50)), "role_p50": float(np.median(r_p))}

    token_q = _token_quantiles(model, [prompts[i] for i in keep if row_role[i] < 0],
                               [responses[i] for i in keep if row_role[i] < 0], sites, u_axis,
                               batch_size=batch_size, progress=progress)
    names = [chosen[r].name for r in kept_roles]
    sel_q = sorted(select_q)
    report = {
        "per_layer": per_layer, "layer": layer_ids[best], "response_reference": reference,
        "params": {"roles": rs.source, "n_roles": len(chosen), "n_questions": len(questions),
                   "max_new_tokens": max_new_tokens, "n_null": n_null, "n_shuffle": n_shuffle, "seed": seed},
        "data": {"roles_hash": rs.hash, "select_questions": sel_q,
                 "select_hash": data_hash([questions[j] for j in sel_q]),
                 "eval_hash": data_hash([q for j, q in enumerate(questions) if j not in select_q]),
                 "responses_hash": data_hash(prompts, responses)},
        "rows": {"assistant": int((~is_role).sum()), "role": int(is_role.sum()),
                 "empty_dropped": len(prompts) - len(keep)},
        "created": now_iso(),
    }
    vec = PersonaVector("assistant_axis", {layer_ids[k]: torch.from_numpy(axis[k]).float() for k in range(n_l)},
                        model.info, "assistant_axis:mean_diff:response_avg",
                        {"roles_hash": rs.hash, "seed": seed})
    return AssistantAxis(vec, names, torch.from_numpy(role_means).float(),
                         torch.from_numpy(x[sel][~is_role[sel]].mean(0)).float(), token_q, layer_ids[best], report)


def _token_quantiles(model: Any, prompts: list[str], responses: list[str], sites: list[Site], u_axis: np.ndarray,
                     *, batch_size: int | None, progress: bool, chunk: int = 16) -> np.ndarray:
    """``[L, 101]`` percentiles of per-token projections of response tokens on the unit axis.

    Read in chunks with every position and reduced to projections at once: every token at every
    layer would not fit a cache entry worth keeping (hundreds of MB), and this pass is forward-only.
    """
    from ..chat import encode
    from ..store import collect

    vals: list[np.ndarray] = []
    u = torch.from_numpy(u_axis).float()  # [L, d]
    for start in range(0, len(prompts), chunk):
        ps, rs_ = prompts[start:start + chunk], responses[start:start + chunk]
        got = collect(model, ps, sites, [Position.ALL], responses=rs_, batch_size=batch_size, cache=False,
                      progress=False, method="assistant_axis:calibrate")[Position.ALL]
        plen = np.asarray([len(encode(model.tokenizer, p)) for p in ps])
        resp_rows = got.row_token >= plen[got.row_sample]
        proj = torch.einsum("nld,ld->nl", got.acts[torch.from_numpy(resp_rows)], u).numpy()
        vals.append(proj)
    allv = np.concatenate(vals, 0)
    return np.percentile(allv, PERCENTILES, axis=0).T.astype(float)
