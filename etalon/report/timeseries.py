"""The time-series figure of one run: request rate, in-flight requests, output tokens/s and TTFT over time."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from etalon.core.records import RecordTable
from etalon.report.figure_pool import draw
from etalon.report.figures import grid_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TIMESERIES_FILE = "timeseries.png"


def _bins(t0_ns: int, t1_ns: int) -> np.ndarray:
    span_s = max((t1_ns - t0_ns) / 1e9, 1e-3)
    width_s = max(span_s / 40, 0.5)  # ~40 bins, never finer than 0.5 s (a rate needs a few events per bin)
    return np.arange(0.0, span_s + width_s, width_s)


def plot_timeseries(path: Path, table: RecordTable) -> Path:
    """``timeseries_figure`` saved at ``path`` (by a figure worker when the pool runs)."""
    return draw(f"{__name__}:timeseries_figure", (table,), path)


def timeseries_figure(table: RecordTable) -> Figure:
    """Four panels over time since the first planned send (measured rows; x from 0)."""
    t = table.select(~table.warmup) if table.warmup.any() else table
    fig, grid = grid_figure((10, 8), 4, 1, gap_h=0.25, sharex=True)
    axes = grid[:, 0]
    if not len(t):
        axes[0].text(0.5, 0.5, "no measured request", ha="center", transform=axes[0].transAxes)
        return fig
    t0 = int(t.scheduled_ns.min())
    edges = _bins(t0, int(t.end_ns.max()))
    width = edges[1] - edges[0]
    mids = edges[:-1] + width / 2
    sent_s, end_s = (t.sent_ns - t0) / 1e9, (t.end_ns - t0) / 1e9
    axes[0].plot(mids, np.histogram(sent_s, edges)[0] / width, label="sent")
    axes[0].plot(mids, np.histogram(end_s[t.ok], edges)[0] / width, label="completed ok")
    axes[0].set_ylabel("requests/s")
    axes[0].legend(fontsize=8, loc="upper right")
    inflight = (sent_s[None, :] <= mids[:, None]) & (end_s[None, :] > mids[:, None]) if len(t) * mids.size < 5e7 \
        else np.zeros((mids.size, 1), bool)
    axes[1].step(mids, inflight.sum(axis=1), where="mid")
    axes[1].set_ylabel("in-flight requests")
    ok = t.select(t.ok) if not t.ok.all() else t
    axes[2].plot(mids, np.histogram((ok.token_ns - t0) / 1e9, edges)[0] / width)
    axes[2].set_ylabel("output tokens/s")
    has = ok.first_token_ns >= 0
    axes[3].scatter((ok.sent_ns[has] - t0) / 1e9, (ok.first_token_ns[has] - ok.sent_ns[has]) / 1e6, s=4, alpha=0.5)
    axes[3].set_ylabel("TTFT (ms)")
    axes[3].set_xlabel("time since the first planned send (s)")
    for ax in axes:
        ax.set_ylim(bottom=0)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    fig.suptitle("Load over time (measured requests; warm-up excluded)")
    return fig


__all__ = ["TIMESERIES_FILE", "plot_timeseries", "timeseries_figure"]
