"""Typed names for places in a model (`Site`) and for token positions to read (`Position`).

Layer ``i`` always means the raw output of block ``i`` (``resid_post``), the same place in every
backend: nnsight ``layers[i].output`` = TransformerLens ``blocks.i.hook_out`` = Hugging Face
``hidden_states[i + 1]`` (except the last layer, where Hugging Face applies the final norm).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from .errors import UsageError


class Point(StrEnum):
    """A point inside one transformer block."""

    RESID_PRE = "resid_pre"  # input of block `layer` (= resid_post of layer - 1)
    ATTN_OUT = "attn_out"  # output of the attention sub-layer, before it is added to the stream
    MLP_OUT = "mlp_out"  # output of the MLP sub-layer, before it is added to the stream
    RESID_POST = "resid_post"  # output of block `layer`


# Execution order inside a block. nnsight must read sites in this order within one trace.
POINT_ORDER: dict[Point, int] = {
    Point.RESID_PRE: 0,
    Point.ATTN_OUT: 1,
    Point.MLP_OUT: 2,
    Point.RESID_POST: 3,
}


class Position(StrEnum):
    """Which token positions an activation is read from (and pooled over)."""

    LAST = "last"  # last prompt token
    PROMPT_MEAN = "prompt_mean"  # mean over all prompt tokens
    RESPONSE_MEAN = "response_mean"  # mean over response tokens (needs responses)
    ALL = "all"  # every real token, one row each


@dataclass(frozen=True)
class Site:
    """A place in the model: block index ``layer`` and a ``point`` within that block."""

    layer: int
    point: Point = Point.RESID_POST

    def __post_init__(self) -> None:
        object.__setattr__(self, "point", parse_point(self.point))
        if not isinstance(self.layer, int) or isinstance(self.layer, bool):
            raise UsageError(f"Site layer must be an int, got {self.layer!r}")

    def __str__(self) -> str:
        return f"{self.layer}.{self.point.value}"

    @property
    def order(self) -> tuple[int, int]:
        """Sort key in execution order."""
        return (self.layer, POINT_ORDER[self.point])

    @classmethod
    def parse(cls, text: str) -> Site:
        """Parse ``"12"`` or ``"12.mlp_out"`` into a Site."""
        layer, _, point = str(text).partition(".")
        try:
            index = int(layer)
        except ValueError as exc:
            raise UsageError(f"Bad site {text!r}: use LAYER or LAYER.POINT, e.g. 12.resid_post") from exc
        # An unknown point keeps parse_point's message, which lists the allowed names.
        return cls(index, parse_point(point or Point.RESID_POST))


def parse_point(point: str | Point) -> Point:
    """Return ``point`` as a `Point`, with an error that lists the allowed names."""
    try:
        return Point(point)
    except ValueError:
        allowed = ", ".join(p.value for p in Point)
        raise UsageError(f"Unknown point {point!r}; allowed: {allowed}") from None


def parse_position(position: str | Position) -> Position:
    """Return ``position`` as a `Position`, with an error that lists the allowed names."""
    try:
        return Position(position)
    except ValueError:
        allowed = ", ".join(p.value for p in Position)
        raise UsageError(f"Unknown position {position!r}; allowed: {allowed}") from None


def parse_layers(spec: str | int | Iterable[int] | None, n_layers: int) -> list[int]:
    """Resolve a layer spec (``"all"``, ``"3"``, ``"0-5"``, ``"1,3,-1"``, ints) to block indices.

    Negative indices count from the end, as in Python. Raises `UsageError` naming the valid range.
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "all")):
        return list(range(n_layers))
    items: list[int] = []
    if isinstance(spec, int):
        raw: Sequence[int | str] = [spec]
    elif isinstance(spec, str):
        raw = [p.strip() for p in spec.split(",") if p.strip()]
    else:
        raw = list(spec)
    for part in raw:
        if isinstance(part, str) and "-" in part.lstrip("-"):
            lo_s, hi_s = part.lstrip("-").split("-", 1)
            try:
                lo = -int(lo_s) if part.startswith("-") else int(lo_s)
                hi = int(hi_s)
            except ValueError:
                raise UsageError(f"Bad layer range {part!r}; use e.g. 0-5") from None
            first, last = _check_layer(lo, n_layers), _check_layer(hi, n_layers)
            if first > last:
                raise UsageError(f"Bad layer range {part!r}: it is empty; write the lower layer first")
            items.extend(range(first, last + 1))
        else:
            try:
                index = int(part)
            except ValueError:
                raise UsageError(f"Bad layer {part!r}; use an int, a range 0-5, or 'all'") from None
            # Outside the try: the out-of-range UsageError (a ValueError) names the valid range.
            items.append(_check_layer(index, n_layers))
    return sorted(set(items))


def _check_layer(layer: int, n_layers: int) -> int:
    if not -n_layers <= layer < n_layers:
        raise UsageError(
            f"Layer {layer} is out of range: this model has {n_layers} layers, "
            f"valid indices are 0..{n_layers - 1} (or -{n_layers}..-1)"
        )
    return layer % n_layers


def make_sites(layers: Iterable[int], points: Iterable[str | Point] = (Point.RESID_POST,)) -> list[Site]:
    """All combinations of ``layers`` and ``points``, in execution order."""
    sites = {Site(int(layer), parse_point(p)) for layer in layers for p in points}
    return sorted(sites, key=lambda s: s.order)
