"""SVG rendering of `Plot` records: line charts with CI bands, bar charts with error bars, heatmaps.

Dependency-free (no numpy, no torch, no matplotlib) so that a report renders anywhere the results
JSON can be read. Every label is HTML-escaped; every number is printed with a fixed format, so the
same plot always gives the same bytes. Hover text uses SVG ``<title>`` elements (no JavaScript).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

from ..results import Plot, Series

# Okabe-Ito: distinguishable for the common colour-vision deficiencies and in greyscale print.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#8C6D31")
FONT = "system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif"
# Sequential (viridis stops) and diverging (blue - white - red) colour maps for heatmaps.
_VIRIDIS = ((0.0, (68, 1, 84)), (0.25, (59, 82, 139)), (0.5, (33, 145, 140)), (0.75, (94, 201, 98)),
            (1.0, (253, 231, 37)))
_DIVERGING = ((0.0, (33, 102, 172)), (0.5, (247, 247, 247)), (1.0, (178, 24, 43)))
MISSING = "\u00b7"  # drawn in a heatmap cell without a value


class ChartError(ValueError):
    """A `Plot` that cannot be drawn (ragged heatmap, x and y of different lengths, ...)."""


# ---------------------------------------------------------------------------------------- helpers
def _num(v: object) -> float | None:
    """``v`` as a finite float, or None (None, NaN, inf and non-numbers are gaps)."""
    if v is None or isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _f(v: float) -> str:
    """A coordinate with one decimal (fixed format: byte-identical output)."""
    s = f"{v:.1f}"
    return "0.0" if s == "-0.0" else s


def _short(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis."""
    return text if len(text) <= limit else text[: max(1, limit - 1)] + "\u2026"


def nice_ticks(lo: float, hi: float, n: int = 5) -> tuple[list[float], float]:
    """About ``n`` round tick values covering ``[lo, hi]`` and the step between them."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi - lo < 1e-12:
        pad = abs(lo) * 0.1 or 0.5
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step + 1e-9) * step
    ticks: list[float] = []
    t = start
    while t < hi + step * 0.5 and len(ticks) < 50:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi - 1e-9:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks, step


def tick_label(v: float, step: float) -> str:
    """A tick value printed with as many decimals as the step needs."""
    if step >= 1 and abs(v) < 1e6:
        s = f"{v:.0f}" if abs(v - round(v)) < 1e-9 else f"{v:g}"
    elif abs(v) >= 1e6 or step < 1e-4:
        s = f"{v:.2g}"
    else:
        decimals = max(0, -math.floor(math.log10(step) + 1e-9))
        if abs(step * 10**decimals - round(step * 10**decimals)) > 1e-6:  # e.g. step 0.25
            decimals += 1
        s = f"{v:.{decimals}f}"
    return "0" if s.strip("-0.") == "" else s


def value_label(v: float | None) -> str:
    """A data value for hover text and cells: 3 significant decimals, no exponent for usual values."""
    if v is None:
        return "n/a"
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1000:
        return f"{v:.0f}"
    if a >= 1:
        return f"{v:.3g}" if a < 100 else f"{v:.1f}"
    if a >= 0.01:
        return f"{v:.3f}"
    if a >= 1e-4:  # small p-values and rates keep two significant digits
        return f"{v:.2g}"
    return f"{v:.2e}"


def _svg_open(width: int, height: int, title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
            f'font-family="{FONT}" font-size="11" style="max-width:100%;height:auto">'
            f"<title>{escape(title)}</title>")


def _title(title: str, x: float) -> str:
    return f'<text x="{_f(x)}" y="16" font-size="13" font-weight="600" fill="#1d2330">{escape(title)}</text>'


def _axis_labels(x_label: str, y_label: str, left: float, top: float, pw: float, ph: float,
                 height: float, x_offset: float = 0.0) -> list[str]:
    out = []
    if x_label:
        out.append(f'<text x="{_f(left + pw / 2)}" y="{_f(height - 6 - x_offset)}" text-anchor="middle" '
                   f'fill="#333">{escape(x_label)}</text>')
    if y_label:
        cy = top + ph / 2
        out.append(f'<text x="14" y="{_f(cy)}" text-anchor="middle" fill="#333" '
                   f'transform="rotate(-90 14 {_f(cy)})">{escape(_short(y_label, 48))}</text>')
    return out


def _legend(labels: Sequence[str], x: float, top: float, kind: str) -> list[str]:
    out = []
    for i, label in enumerate(labels):
        color = PALETTE[i % len(PALETTE)]
        ly = top + 10 + 18 * i
        if kind == "bar":
            out.append(f'<rect x="{_f(x)}" y="{_f(ly - 5)}" width="12" height="10" fill="{color}"/>')
        else:
            out.append(f'<line x1="{_f(x)}" x2="{_f(x + 18)}" y1="{_f(ly)}" y2="{_f(ly)}" stroke="{color}" '
                       f'stroke-width="2.5"/>')
        out.append(f'<text x="{_f(x + 22)}" y="{_f(ly + 4)}" fill="#333">{escape(_short(label, 24))}'
                   f"<title>{escape(label)}</title></text>")
    return out


def _check_series(plot: Plot) -> None:
    if not plot.series:
        raise ChartError(f"plot {plot.title!r} has no series")
    for s in plot.series:
        if len(s.x) != len(s.y):
            raise ChartError(f"plot {plot.title!r}, series {s.label!r}: {len(s.x)} x values but {len(s.y)} y values")
        for name, band in (("lo", s.lo), ("hi", s.hi)):
            if band is not None and len(band) != len(s.y):
                raise ChartError(f"plot {plot.title!r}, series {s.label!r}: {name} has {len(band)} values, "
                                 f"y has {len(s.y)}")


def _categories(series: Sequence[Series]) -> list[str] | None:
    """Category labels in first-seen order when any x is a string, else None (a numeric axis)."""
    if all(_num(v) is not None for s in series for v in s.x):
        return None
    seen: dict[str, None] = {}
    for s in series:
        for v in s.x:
            seen.setdefault(_cat(v), None)
    return list(seen)


def _cat(v: float | str) -> str:
    if isinstance(v, str):
        return v
    return f"{v:g}"


def _y_extent(series: Sequence[Series], include_zero: bool) -> tuple[float, float]:
    vals = [_num(v) for s in series for band in (s.y, s.lo or [], s.hi or []) for v in band]
    finite = [v for v in vals if v is not None]
    if include_zero:
        finite.append(0.0)
    if not finite:
        return 0.0, 1.0
    return min(finite), max(finite)


def _y_grid(y_ticks: Sequence[float], y_step: float, left: float, pw: float,
            py: Callable[[float], float]) -> list[str]:
    """Horizontal grid lines with their y tick labels (``py`` maps a value to its pixel row)."""
    parts = []
    for t in y_ticks:
        parts.append(f'<line x1="{_f(left)}" x2="{_f(left + pw)}" y1="{_f(py(t))}" y2="{_f(py(t))}" '
                     f'stroke="#e6e9ef"/>')
        parts.append(f'<text x="{_f(left - 6)}" y="{_f(py(t) + 4)}" text-anchor="end" fill="#444">'
                     f"{tick_label(t, y_step)}</text>")
    return parts


def _x_tick_labels(cats: Sequence[str], positions: Sequence[float], y: float) -> list[str]:
    """Category tick labels, thinned to at most ~16 and rotated when long."""
    step = max(1, math.ceil(len(cats) / 16))
    rotate = max((len(c) for c in cats), default=0) * 6 > (positions[1] - positions[0] if len(positions) > 1
                                                          else 1e9) * step
    out = []
    for i in range(0, len(cats), step):
        label, x = cats[i], positions[i]
        if rotate:
            out.append(f'<text x="{_f(x)}" y="{_f(y)}" text-anchor="end" fill="#444" '
                       f'transform="rotate(-35 {_f(x)} {_f(y)})">{escape(_short(label, 18))}'
                       f"<title>{escape(label)}</title></text>")
        else:
            out.append(f'<text x="{_f(x)}" y="{_f(y)}" text-anchor="middle" fill="#444">'
                       f"{escape(_short(label, 18))}</text>")
    return out


def _frame(cats: list[str] | None, left: float, pw: float, top: float, height: int,
           n_labels: int) -> tuple[float, float, float, int, float]:
    """Plot-area geometry with room for rotated category labels and the legend: left, pw, bottom, height, ph."""
    extra, need_left = _rotated_room(cats, pw)
    bottom = 44.0 + extra
    if need_left > left:
        left, pw = need_left, pw - (need_left - left)
    height = max(height, int(top + 18 * n_labels + 20))
    return left, pw, bottom, height, height - top - bottom


def _rotated_room(cats: Sequence[str] | None, pw: float) -> tuple[float, float]:
    """Extra bottom margin, and the left margin, that rotated category labels need (0 when not rotated)."""
    if not cats:
        return 0.0, 0.0
    longest = min(18, max(len(c) for c in cats))
    slot = pw / max(1, len(cats)) * max(1, math.ceil(len(cats) / 16))
    if longest * 6 <= slot:
        return 0.0, 0.0
    # a label rotated by -35 degrees ends left of its category by about cos(35) of its length
    return longest * 6 * 0.57, longest * 6 * 0.82 - pw / max(1, len(cats)) / 2 + 6


# ---------------------------------------------------------------------------------------- charts
def line_plot(plot: Plot, width: int = 680, height: int = 300, *, y_range: tuple[float, float] | None = None,
              ref_y: float | None = None, ref_label: str = "") -> str:
    """Lines (one per series) with shaded CI bands where ``lo``/``hi`` are given; None values are gaps.

    ``y_range`` makes the y axis cover at least that interval (a rate on 0..1, so a curve at 1.0 does
    not fill the whole plot); ``ref_y`` draws a dashed reference line there, labelled ``ref_label``.
    """
    _check_series(plot)
    labels = [s.label for s in plot.series]
    legend_w = 170 if any(labels) else 20
    left, top = 60.0, 28.0
    pw = width - left - legend_w
    cats = _categories(plot.series)
    left, pw, bottom, height, ph = _frame(cats, left, pw, top, height, len(labels))

    if cats is None:
        xs = [float(v) for s in plot.series for v in s.x]
        x_ticks, x_step = nice_ticks(min(xs, default=0.0), max(xs, default=1.0), 8)
        if len(set(xs)) <= 12 and all(float(v).is_integer() for v in xs):  # few integer x: tick each
            x_ticks, x_step = sorted(set(xs)), 1.0
        x0, x1 = (x_ticks[0], x_ticks[-1]) if len(x_ticks) > 1 else (x_ticks[0] - 1, x_ticks[0] + 1)
    else:
        x0, x1 = -0.5, len(cats) - 0.5
    x1 = x1 if x1 > x0 else x0 + 1.0
    lo_v, hi_v = _y_extent(plot.series, include_zero=False)
    ref = _num(ref_y)
    keep = [float(v) for v in (y_range or ())] + ([] if ref is None else [ref])
    lo_v, hi_v = min([lo_v, *keep]), max([hi_v, *keep])
    y_ticks, y_step = nice_ticks(lo_v, hi_v, 5)
    y0, y1 = y_ticks[0], y_ticks[-1]

    def px(v: float | str) -> float:
        pos = cats.index(_cat(v)) if cats is not None else float(v)
        return left + (pos - x0) / (x1 - x0) * pw

    def py(v: float) -> float:
        return top + (1 - (v - y0) / (y1 - y0)) * ph

    parts = [_svg_open(width, height, plot.title), _title(plot.title, left)]
    parts += _y_grid(y_ticks, y_step, left, pw, py)
    if cats is None:
        for t in x_ticks:
            parts.append(f'<line x1="{_f(px(t))}" x2="{_f(px(t))}" y1="{_f(top + ph)}" y2="{_f(top + ph + 4)}" '
                         f'stroke="#888"/>')
            parts.append(f'<text x="{_f(px(t))}" y="{_f(top + ph + 16)}" text-anchor="middle" fill="#444">'
                         f"{tick_label(t, x_step)}</text>")
    else:
        parts += _x_tick_labels(cats, [px(c) for c in cats], top + ph + 16)
    parts.append(f'<rect x="{_f(left)}" y="{_f(top)}" width="{_f(pw)}" height="{_f(ph)}" fill="none" '
                 f'stroke="#9aa3b2"/>')
    parts += _axis_labels(plot.x_label, plot.y_label, left, top, pw, ph, height)
    if ref is not None:
        parts.append(f'<line x1="{_f(left)}" x2="{_f(left + pw)}" y1="{_f(py(ref))}" y2="{_f(py(ref))}" '
                     f'stroke="#555" stroke-dasharray="5 4"/>')
        if ref_label:
            parts.append(f'<text x="{_f(left + pw - 4)}" y="{_f(py(ref) - 4)}" text-anchor="end" font-size="10" '
                         f'fill="#555">{escape(_short(ref_label, 40))}</text>')

    for i, s in enumerate(plot.series):
        color = PALETTE[i % len(PALETTE)]
        if s.lo is not None and s.hi is not None:
            for run in _runs([j for j in range(len(s.x)) if _num(s.lo[j]) is not None
                              and _num(s.hi[j]) is not None]):
                upper = [f"{_f(px(s.x[j]))},{_f(py(_num(s.hi[j])))}" for j in run]  # type: ignore[arg-type]
                lower = [f"{_f(px(s.x[j]))},{_f(py(_num(s.lo[j])))}" for j in reversed(run)]  # type: ignore[arg-type]
                if len(run) == 1:  # a lone point: draw its interval as an error bar
                    j = run[0]
                    xj = _f(px(s.x[j]))
                    parts.append(f'<line x1="{xj}" x2="{xj}" y1="{_f(py(_num(s.hi[j])))}" '  # type: ignore[arg-type]
                                 f'y2="{_f(py(_num(s.lo[j])))}" stroke="{color}" stroke-opacity="0.5" '  # type: ignore[arg-type]
                                 f'stroke-width="4"/>')
                else:
                    parts.append(f'<polygon points="{" ".join(upper + lower)}" fill="{color}" '
                                 f'fill-opacity="0.16" stroke="none"/>')
        for run in _runs([j for j in range(len(s.x)) if _num(s.y[j]) is not None]):
            pts = " ".join(f"{_f(px(s.x[j]))},{_f(py(_num(s.y[j])))}" for j in run)  # type: ignore[arg-type]
            if len(run) > 1:
                parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>')
        for j in range(len(s.x)):
            y = _num(s.y[j])
            if y is None:
                continue
            tip = f"{s.label}: x={_cat(s.x[j])}, y={value_label(y)}"
            if s.lo is not None and s.hi is not None:
                tip += f" [{value_label(_num(s.lo[j]))}, {value_label(_num(s.hi[j]))}]"
            parts.append(f'<circle cx="{_f(px(s.x[j]))}" cy="{_f(py(y))}" r="2.6" fill="{color}">'
                         f"<title>{escape(tip)}</title></circle>")
    if any(labels):
        parts += _legend(labels, left + pw + 12, top, "line")
    parts.append("</svg>")
    return "".join(parts)


def _runs(idx: Sequence[int]) -> list[list[int]]:
    """Consecutive runs of indices ([0, 1, 3] -> [[0, 1], [3]]): None values break lines and bands."""
    out: list[list[int]] = []
    for j in idx:
        if out and out[-1][-1] == j - 1:
            out[-1].append(j)
        else:
            out.append([j])
    return out


def bar_plot(plot: Plot, width: int = 680, height: int = 300) -> str:
    """Grouped bars (one group per x category, one bar per series) with error bars from ``lo``/``hi``."""
    _check_series(plot)
    labels = [s.label for s in plot.series]
    show_legend = len(plot.series) > 1 or any(labels)
    legend_w = 170 if show_legend else 20
    left, top = 60.0, 28.0
    pw = width - left - legend_w
    cats: list[str] = []
    for s in plot.series:
        for v in s.x:
            if _cat(v) not in cats:
                cats.append(_cat(v))
    left, pw, bottom, height, ph = _frame(cats, left, pw, top, height, len(labels))
    lo_v, hi_v = _y_extent(plot.series, include_zero=True)
    y_ticks, y_step = nice_ticks(lo_v, hi_v, 5)
    y0, y1 = y_ticks[0], y_ticks[-1]

    def py(v: float) -> float:
        return top + (1 - (v - y0) / (y1 - y0)) * ph

    slot = pw / max(1, len(cats))
    bar_w = slot * 0.8 / len(plot.series)
    parts = [_svg_open(width, height, plot.title), _title(plot.title, left)]
    parts += _y_grid(y_ticks, y_step, left, pw, py)
    parts += _x_tick_labels(cats, [left + slot * (k + 0.5) for k in range(len(cats))], top + ph + 16)
    zero = py(min(max(0.0, y0), y1))
    for i, s in enumerate(plot.series):
        color = PALETTE[i % len(PALETTE)]
        for j, xv in enumerate(s.x):
            k = cats.index(_cat(xv))
            bx = left + slot * k + slot * 0.1 + bar_w * i
            y = _num(s.y[j])
            cx = bx + bar_w / 2
            if y is None:
                parts.append(f'<text x="{_f(cx)}" y="{_f(zero - 3)}" text-anchor="middle" font-size="9" '
                             f'fill="#888">n/a</text>')
                continue
            tip = f"{s.label + ': ' if s.label else ''}{cats[k]} = {value_label(y)}"
            lo = _num(s.lo[j]) if s.lo is not None else None
            hi = _num(s.hi[j]) if s.hi is not None else None
            if lo is not None and hi is not None:
                tip += f" [{value_label(lo)}, {value_label(hi)}]"
            top_y, bot_y = sorted((py(y), zero))
            parts.append(f'<rect x="{_f(bx)}" y="{_f(top_y)}" width="{_f(max(bar_w - 1, 1))}" '
                         f'height="{_f(max(bot_y - top_y, 0.5))}" fill="{color}" fill-opacity="0.85">'
                         f"<title>{escape(tip)}</title></rect>")
            if lo is not None and hi is not None:
                cap = min(6.0, bar_w / 3)
                parts.append(f'<path d="M{_f(cx)} {_f(py(lo))}V{_f(py(hi))}M{_f(cx - cap)} {_f(py(lo))}'
                             f'H{_f(cx + cap)}M{_f(cx - cap)} {_f(py(hi))}H{_f(cx + cap)}" stroke="#222" '
                             f'stroke-width="1.2" fill="none"/>')
    parts.append(f'<line x1="{_f(left)}" x2="{_f(left + pw)}" y1="{_f(zero)}" y2="{_f(zero)}" stroke="#555"/>')
    parts.append(f'<rect x="{_f(left)}" y="{_f(top)}" width="{_f(pw)}" height="{_f(ph)}" fill="none" '
                 f'stroke="#9aa3b2"/>')
    parts += _axis_labels(plot.x_label, plot.y_label, left, top, pw, ph, height)
    if show_legend:
        parts += _legend([s.label or f"series {i + 1}" for i, s in enumerate(plot.series)],
                         left + pw + 12, top, "bar")
    parts.append("</svg>")
    return "".join(parts)


def _interp(stops: Sequence[tuple[float, tuple[int, int, int]]], t: float) -> tuple[int, int, int]:
    t = min(1.0, max(0.0, t))
    for (t0, c0), (t1, c1) in zip(stops, stops[1:], strict=False):
        if t <= t1:
            u = (t - t0) / (t1 - t0)
            return tuple(round(a + (b - a) * u) for a, b in zip(c0, c1, strict=True))  # type: ignore[return-value]
    return stops[-1][1]


def _hex(c: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*c)


def heatmap_plot(plot: Plot, width: int = 680) -> str:
    """A matrix of coloured cells (``values[row][col]``); diverging colours when values straddle 0."""
    values = plot.values
    if not values or not any(values):
        raise ChartError(f"heatmap {plot.title!r} has no values")
    n_cols = max(len(r) for r in values)
    if any(len(r) != n_cols for r in values):
        raise ChartError(f"heatmap {plot.title!r}: rows have different lengths "
                         f"({sorted({len(r) for r in values})})")
    rows = list(plot.rows) if plot.rows is not None else [str(i) for i in range(len(values))]
    cols = list(plot.cols) if plot.cols is not None else [str(j) for j in range(n_cols)]
    if len(rows) != len(values) or len(cols) != n_cols:
        raise ChartError(f"heatmap {plot.title!r}: {len(rows)} row labels for {len(values)} rows, "
                         f"{len(cols)} column labels for {n_cols} columns")
    finite = [v for r in values for v in (_num(x) for x in r) if v is not None]
    vmin, vmax = (min(finite), max(finite)) if finite else (0.0, 1.0)
    diverging = vmin < 0 < vmax
    if diverging:
        m = max(abs(vmin), abs(vmax))
        vmin, vmax = -m, m
    stops = _DIVERGING if diverging else _VIRIDIS
    if vmax - vmin < 1e-12:
        vmax = vmin + 1.0

    label_w = min(180.0, 12 + 6.2 * max((len(_short(r, 28)) for r in rows), default=1))
    col_h = min(130.0, 14 + 4.6 * max((len(_short(c, 24)) for c in cols), default=1))
    cell = max(12.0, min(46.0, (width - label_w - 110) / n_cols, 420 / max(1, len(rows)) * 1.6))
    left, top = label_w, 28 + col_h
    pw, ph = cell * n_cols, cell * len(rows)
    width = int(max(width if n_cols * cell + label_w + 110 >= width else left + pw + 110, 260))
    height = int(top + ph + 18 + (18 if plot.x_label else 0))
    show_text = cell >= 30 and len(rows) * n_cols <= 400

    parts = [_svg_open(width, height, plot.title), _title(plot.title, 8)]
    for j, c in enumerate(cols):
        x = left + cell * (j + 0.5)
        parts.append(f'<text x="{_f(x)}" y="{_f(top - 6)}" text-anchor="start" fill="#444" '
                     f'transform="rotate(-50 {_f(x)} {_f(top - 6)})">{escape(_short(c, 24))}'
                     f"<title>{escape(c)}</title></text>")
    for i, r in enumerate(rows):
        y = top + cell * (i + 0.5)
        parts.append(f'<text x="{_f(left - 6)}" y="{_f(y + 4)}" text-anchor="end" fill="#444">'
                     f"{escape(_short(r, 28))}<title>{escape(r)}</title></text>")
        for j in range(n_cols):
            v = _num(values[i][j])
            x0, y0 = left + cell * j, top + cell * i
            tip = f"{r} x {cols[j]}: {value_label(v)}"
            if v is None:
                fill, ink = "#eeeeee", "#999"
            else:
                rgb = _interp(stops, (v - vmin) / (vmax - vmin))
                fill = _hex(rgb)
                ink = "#000" if 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 140 else "#fff"
            parts.append(f'<rect x="{_f(x0)}" y="{_f(y0)}" width="{_f(cell)}" height="{_f(cell)}" fill="{fill}" '
                         f'stroke="#fff" stroke-width="0.5"><title>{escape(tip)}</title></rect>')
            if show_text or v is None:
                parts.append(f'<text x="{_f(x0 + cell / 2)}" y="{_f(y0 + cell / 2 + 3.5)}" text-anchor="middle" '
                             f'font-size="{9 if cell < 36 else 10}" fill="{ink}">'
                             f"{MISSING if v is None else value_label(v)}</text>")
    # colour bar: 10 steps, min and max labelled
    bx, bh = left + pw + 18, min(ph, 160.0)
    for k in range(10):
        t = 1 - (k + 0.5) / 10
        parts.append(f'<rect x="{_f(bx)}" y="{_f(top + bh * k / 10)}" width="12" height="{_f(bh / 10 + 0.3)}" '
                     f'fill="{_hex(_interp(stops, t))}"/>')
    parts.append(f'<rect x="{_f(bx)}" y="{_f(top)}" width="12" height="{_f(bh)}" fill="none" stroke="#999"/>')
    for v, y in ((vmax, top + 4), ((vmin + vmax) / 2, top + bh / 2 + 4), (vmin, top + bh + 2)):
        parts.append(f'<text x="{_f(bx + 16)}" y="{_f(y)}" fill="#444">{value_label(v)}</text>')
    if plot.x_label:
        parts.append(f'<text x="{_f(left + pw / 2)}" y="{_f(height - 6)}" text-anchor="middle" fill="#333">'
                     f"{escape(plot.x_label)}</text>")
    if plot.y_label:
        parts.append(f'<text x="{_f(left - 6)}" y="{_f(top - 6)}" text-anchor="end" font-style="italic" '
                     f'fill="#333">{escape(_short(plot.y_label, 28))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_plot(plot: Plot, width: int = 680, *, y_range: tuple[float, float] | None = None,
                ref_y: float | None = None, ref_label: str = "") -> str:
    """The inline ``<svg>`` of ``plot`` by its kind; `ChartError` when the data cannot be drawn.

    ``y_range``, ``ref_y`` and ``ref_label`` apply to line plots (see `line_plot`); other kinds ignore them.
    """
    if plot.kind == "heatmap":
        return heatmap_plot(plot, width)
    if plot.kind == "bar":
        return bar_plot(plot, width)
    return line_plot(plot, width, y_range=y_range, ref_y=ref_y, ref_label=ref_label)


__all__ = ["PALETTE", "ChartError", "bar_plot", "heatmap_plot", "line_plot", "nice_ticks", "render_plot",
           "tick_label", "value_label"]
