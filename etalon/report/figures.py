"""Headless figures for every plot etalon writes: matplotlib's Figure API, no pyplot global state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

DPI = 110


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure with constrained layout (no global backend switch, nothing to close afterwards)."""
    return Figure(figsize=figsize, layout="constrained")


def grid_figure(figsize: tuple[float, float], rows: int, cols: int, *, title: bool = True, gap_w: float = 0.85,
                gap_h: float = 0.75, **subplots: Any) -> tuple[Figure, Any]:
    """A rows x cols grid with fixed margins in inches (room for tick labels, axis labels, titles
    and a suptitle): 2-4x cheaper to save than a constrained layout, which lays every text out
    several times (the latency CDF and tail grids cost ~1 s each with it)."""
    width, height = figsize
    fig = Figure(figsize=figsize)
    # gap_w, gap_h (inches) between axes: room for the neighbour's y label, the next row's title
    left, right, bottom, top = 0.75, 0.2, 0.55, (0.65 if title else 0.4)
    axis_w = (width - left - right - (cols - 1) * gap_w) / cols
    axis_h = (height - bottom - top - (rows - 1) * gap_h) / rows
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                        wspace=gap_w / axis_w, hspace=gap_h / axis_h)
    return fig, fig.subplots(rows, cols, squeeze=False, **subplots)


def save_figure(fig: Figure, path: Path, **kwargs: Any) -> Path:
    """Save ``fig`` as PNG at ``path``: by a worker of the figure pool during a sweep (the file
    exists after ``figure_pool.wait()``), else now."""
    from etalon.report import figure_pool

    if not figure_pool.submit(fig, path, kwargs):
        fig.savefig(path, dpi=DPI, **kwargs)
    return path
