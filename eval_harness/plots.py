"""The sign-off page's figures, drawn with matplotlib and inlined as SVG so the HTML stays one
self-contained file that can be attached to a release ticket. Each figure says so when it has nothing
to draw, rather than leaving an empty frame."""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from dataclasses import dataclass

ANCHOR, CANDIDATE, AA, BUG = "#1f77b4", "#d62728", "#7f7f7f", "#ff7f0e"


@functools.cache
def _plt():
    """pyplot, imported on first use: a report whose figures are cached never pays for matplotlib."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "svg.fonttype": "none", "figure.dpi": 100})
    return plt


def _svg(fig) -> str:
    plt = _plt()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog: inlined in HTML


def _empty(title: str, note: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 1.2))
    ax.set_axis_off()
    ax.set_title(title, loc="left")
    ax.text(0.0, 0.4, note, transform=ax.transAxes, color="#555")
    return _svg(fig)


@dataclass(frozen=True)
class Interval:
    label: str
    estimate: float
    low: float
    high: float
    color: str = CANDIDATE


def intervals(
    rows: Sequence[Interval],
    title: str,
    xlabel: str,
    log: bool = False,
    lines: Sequence[tuple[float, str]] = (),
) -> str:
    """One point with its CI per row (a forest plot); `lines` are vertical references (value, label)."""
    plt = _plt()
    if not rows:
        return _empty(title, "nothing to plot")
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(rows) + 1.0))
    for y, r in enumerate(rows):
        lo, hi = min(r.low, r.estimate), max(r.high, r.estimate)
        ax.errorbar(
            r.estimate, y, xerr=[[r.estimate - lo], [hi - r.estimate]], fmt="o", color=r.color, capsize=3
        )
    for value, label in lines:
        ax.axvline(value, color="#555", linestyle="--", linewidth=0.8)
        ax.annotate(
            label, (value, len(rows) - 0.5), fontsize=8, color="#555", rotation=90, va="top", ha="right"
        )
    ax.set_yticks(range(len(rows)), [r.label for r in rows])
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.invert_yaxis()
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_title(title, loc="left")
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig)


def histograms(
    edges: Sequence[float], series: dict[str, Sequence[int]], title: str, xlabel: str, below_note: str
) -> str:
    """Step histograms on shared bins (log10 x axis); counts below the first edge are reported, since a
    deterministic CPU floor puts every value at exactly zero."""
    plt = _plt()
    drawable = {k: v for k, v in series.items() if sum(v)}
    if not drawable:
        return _empty(title, below_note)
    fig, ax = plt.subplots(figsize=(6.4, 2.6))
    for label, counts in drawable.items():
        ax.stairs(counts, edges, label=label)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("positions")
    ax.set_title(title, loc="left")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    empty = sorted(set(series) - set(drawable))
    if empty:
        ax.text(
            0.0,
            -0.32,
            f"not drawn (every value below {edges[0]:.0e}): {', '.join(empty)}",
            transform=ax.transAxes,
            fontsize=8,
            color="#555",
        )
    return _svg(fig)


def per_position(series: dict[str, Sequence[float]], title: str) -> str:
    """Acceptance rate per draft position, one line per arm."""
    plt = _plt()
    drawable = {k: v for k, v in series.items() if len(v)}
    if not drawable:
        return _empty(title, "no speculative decoding in this run")
    fig, ax = plt.subplots(figsize=(6.4, 2.6))
    for label, rates in drawable.items():
        ax.plot(range(1, len(rates) + 1), rates, marker="o", label=label)
    ax.set_xlabel("draft position")
    ax.set_ylabel("acceptance rate")
    ax.set_ylim(0, 1)
    ax.set_xticks(range(1, max(len(v) for v in drawable.values()) + 1))
    ax.set_title(title, loc="left")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _svg(fig)
