"""Headless figures for every plot etalon writes: matplotlib's Figure API, no pyplot global state.

matplotlib is imported when a figure is built, not with this module: a run whose figures are all
drawn by the figure pool's workers (``figure_pool.draw``) never imports it (~0.6 s).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 110


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure with constrained layout (no global backend switch, nothing to close afterwards)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def grid_figure(figsize: tuple[float, float], rows: int, cols: int, *, title: bool = True, gap_w: float = 0.85,
                gap_h: float = 0.75, left: float = 0.75, right: float = 0.2, bottom: float = 0.55,
                top: float | None = None, **subplots: Any) -> tuple[Figure, Any]:
    """A rows x cols grid with fixed margins in inches (room for tick labels, axis labels, titles
    and a suptitle): 2-4x cheaper to save than a constrained layout, which lays every text out
    several times (the latency CDF and tail grids cost ~1 s each with it). Axes titles sit at a
    fixed height too: matplotlib otherwise measures every tick label again to place them (~20% of
    a grid's drawing). Wider margins are the caller's: ``right`` for a legend beside the axes,
    ``bottom`` for two-line tick labels, ``left`` for long y tick labels."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    width, height = figsize
    fig = Figure(figsize=figsize)
    top = top if top is not None else (0.65 if title else 0.4)
    # gap_w, gap_h (inches) between axes: room for the neighbour's y label, the next row's title
    axis_w = (width - left - right - (cols - 1) * gap_w) / cols
    axis_h = (height - bottom - top - (rows - 1) * gap_h) / rows
    if axis_w <= 0 or axis_h <= 0:
        raise ValueError(f"figure {figsize} too small for {rows}x{cols} axes with these margins")
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                        wspace=gap_w / axis_w, hspace=gap_h / axis_h)
    with rc_context({"axes.titley": 1.0}):
        return fig, fig.subplots(rows, cols, squeeze=False, **subplots)


def text_width_in(texts: Any, fontsize: float) -> float:
    """About how wide (inches) the longest line of ``texts`` is in the default sans-serif font:
    for a margin that must hold tick labels or a legend beside the axes."""
    longest = max((len(line) for t in texts for line in str(t).splitlines()), default=0)
    return longest * fontsize * 0.6 / 72


def save_figure(fig: Figure, path: Path, **kwargs: Any) -> Path:
    """Save ``fig`` as PNG at ``path``: by a worker of the figure pool during a sweep (the file
    exists after ``figure_pool.wait()``), else now."""
    from etalon.report import figure_pool

    if not figure_pool.submit(fig, path, kwargs):
        fig.savefig(path, dpi=DPI, **kwargs)
    return path
