"""Dependency-free SVG charts for self-contained HTML reports (no network, no torch)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf")


def line_chart(
    x: Sequence[float],
    series: dict[str, Sequence[float]],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    width: int = 640,
    height: int = 300,
    y_range: tuple[float, float] | None = None,
) -> str:
    """An inline ``<svg>`` line chart of several series over a shared x axis (labels escaped)."""
    left, right, top, bottom = 56, 150, 28, 44
    pw, ph = width - left - right, height - top - bottom
    xs = [float(v) for v in x]
    ys = [float(v) for s in series.values() for v in s]
    lo, hi = y_range if y_range else (min(ys, default=0.0), max(ys, default=1.0))
    if hi - lo < 1e-12:
        hi = lo + 1.0
    x0, x1 = min(xs, default=0.0), max(xs, default=1.0)
    x1 = x1 if x1 > x0 else x0 + 1.0

    def px(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * pw

    def py(v: float) -> float:
        return top + (1 - (v - lo) / (hi - lo)) * ph

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{left}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
    ]
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 6}" y="{py(v) + 4:.1f}" font-size="10" text-anchor="end">{v:.2f}</text>')
    step = max(1, len(xs) // 10)
    for v in xs[::step]:
        parts.append(
            f'<text x="{px(v):.1f}" y="{top + ph + 14}" font-size="10" text-anchor="middle">{v:g}</text>'
        )
    parts.append(
        f'<text x="{left + pw / 2}" y="{height - 6}" font-size="11" text-anchor="middle">{escape(xlabel)}</text>'
    )
    parts.append(
        f'<text x="14" y="{top + ph / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + ph / 2})">{escape(ylabel)}</text>'
    )
    for i, (name, vals) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        pts = " ".join(f"{px(a):.1f},{py(float(b)):.1f}" for a, b in zip(xs, vals, strict=True))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>')
        ly = top + 12 + 16 * i
        parts.append(
            f'<line x1="{left + pw + 10}" x2="{left + pw + 28}" y1="{ly}" y2="{ly}" '
            f'stroke="{color}" stroke-width="2"/>'
        )
        parts.append(f'<text x="{left + pw + 32}" y="{ly + 4}" font-size="11">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)
