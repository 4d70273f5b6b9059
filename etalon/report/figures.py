"""Headless figures for every plot etalon writes: matplotlib's Figure API, no pyplot global state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

DPI = 110


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure with constrained layout (no global backend switch, nothing to close afterwards)."""
    return Figure(figsize=figsize, layout="constrained")


def save_figure(fig: Figure, path: Path, **kwargs: Any) -> Path:
    fig.savefig(path, dpi=DPI, **kwargs)
    return path
