"""Tiny inline-SVG plots for the sign-off page: no plotting dependency, and the HTML stays one
self-contained file that can be attached to a release ticket."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

W, H, PAD = 560, 220, 40
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
FLOOR = "#999999"


@dataclass(frozen=True)
class Row:
    """One interval row of a forest plot: estimate with [low, high]."""

    label: str
    est: float
    low: float
    high: float
    floor: float | None = None  # |A/A| drawn as a grey band around zero


def _svg(body: str, h: int = H) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" font-family="sans-serif" '
        f'font-size="11">{body}</svg>'
    )


def _title(text: str) -> str:
    return f'<text x="4" y="14" font-weight="bold">{escape(text)}</text>'


def _legend(s: int, name: str, color: str) -> str:
    return f'<text x="{W - 200}" y="{20 + 14 * s}" fill="{color}">{escape(name)}</text>'


def _color(s: int, name: str) -> str:
    return FLOOR if "A/A" in name else COLORS[s % len(COLORS)]


def forest(rows: Sequence[Row], title: str) -> str:
    """Δ with CIs per row; zero line and the A/A floor band."""
    if not rows:
        return ""
    lim = max([1e-9] + [max(abs(r.low), abs(r.high), r.floor or 0.0) for r in rows]) * 1.1
    h = PAD + 28 * len(rows) + 20

    def x(v: float) -> float:
        return 150 + (v + lim) / (2 * lim) * (W - 170)

    parts = [
        _title(title),
        f'<line x1="{x(0):.1f}" y1="{PAD - 10}" x2="{x(0):.1f}" y2="{h - 20}" stroke="#333"/>',
    ]
    for i, r in enumerate(rows):
        y = PAD + 28 * i
        if r.floor:
            parts.append(
                f'<rect x="{x(-r.floor):.1f}" y="{y - 9}" width="{x(r.floor) - x(-r.floor):.1f}" height="18" '
                f'fill="{FLOOR}" opacity="0.3"><title>A/A floor</title></rect>'
            )
        parts.append(f'<text x="4" y="{y + 4}">{escape(r.label)}</text>')
        parts.append(
            f'<line x1="{x(r.low):.1f}" y1="{y}" x2="{x(r.high):.1f}" y2="{y}" stroke="{COLORS[0]}" '
            'stroke-width="2"/>'
        )
        parts.append(f'<circle cx="{x(r.est):.1f}" cy="{y}" r="4" fill="{COLORS[0]}"/>')
    parts.append(
        f'<text x="150" y="{h - 4}">{-lim:+.3g}</text><text x="{W - 50}" y="{h - 4}">{lim:+.3g}</text>'
    )
    return _svg("".join(parts), h)


def bars(edges: Sequence[float], series: dict[str, Sequence[float]], title: str, xlabel: str) -> str:
    """Overlaid histograms (each series normalised) on shared bins; an A/A series is grey."""
    n = len(edges) - 1
    if n <= 0 or not series:
        return ""
    bw = (W - 2 * PAD) / n
    parts = [_title(title)]
    for s, (name, counts) in enumerate(series.items()):
        total = sum(counts) or 1
        color = _color(s, name)
        for i, c in enumerate(counts):
            hgt = (H - 2 * PAD) * c / total
            parts.append(
                f'<rect x="{PAD + i * bw + s * bw / len(series):.1f}" y="{H - PAD - hgt:.1f}" '
                f'width="{bw / len(series):.1f}" height="{hgt:.1f}" fill="{color}" opacity="0.8">'
                f"<title>{escape(name)}: {c} in [{edges[i]:.3g}, {edges[i + 1]:.3g})</title></rect>"
            )
        parts.append(_legend(s, name, color))
    for i in range(0, n + 1, max(1, n // 6)):
        parts.append(f'<text x="{PAD + i * bw:.1f}" y="{H - PAD + 14}">{edges[i]:.2g}</text>')
    parts.append(f'<text x="{W / 2:.0f}" y="{H - 6}">{escape(xlabel)}</text>')
    return _svg("".join(parts))


def lines(series: dict[str, Sequence[float]], title: str, xlabel: str) -> str:
    """One polyline per series over integer x (e.g. acceptance rate per draft position)."""
    longest = max((len(v) for v in series.values()), default=0)
    if longest == 0:
        return ""
    top = max([1e-9] + [max(v) for v in series.values() if v])

    def xy(i: int, v: float) -> str:
        return f"{PAD + i * (W - 2 * PAD) / max(1, longest - 1):.1f},{H - PAD - (H - 2 * PAD) * v / top:.1f}"

    parts = [_title(title)]
    for s, (name, vals) in enumerate(series.items()):
        color = _color(s, name)
        pts = " ".join(xy(i, v) for i, v in enumerate(vals))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
        parts.append(_legend(s, name, color))
    parts.append(f'<text x="{W / 2:.0f}" y="{H - 6}">{escape(xlabel)}</text>')
    return _svg("".join(parts))
