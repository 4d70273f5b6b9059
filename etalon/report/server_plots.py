"""The server's metrics and the client's view of the same run on one time axis."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from etalon.report.figure_pool import draw
from etalon.report.figures import grid_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_server_timeline(path: Path, series: dict[str, np.ndarray]) -> Path:
    """``server_timeline_figure`` saved at ``path`` (by a figure worker when the pool runs)."""
    return draw(f"{__name__}:server_timeline_figure", (series,), path)


def server_timeline_figure(series: dict[str, np.ndarray]) -> Figure:
    """Three panels over seconds since the first scrape: requests (server running/waiting, client
    in flight), token rates (server generated vs client received), cache (KV usage, prefix hits)."""
    t_s = (series["time_ns"] - series["time_ns"][0]) / 1e9
    fig, grid = grid_figure((9, 8), 3, 1, gap_h=0.25, sharex=True)
    ax_req, ax_tok, ax_kv = grid[:, 0]
    panels = [
        (ax_req, [("running", "server running"), ("waiting", "server waiting"),
                  ("client_inflight", "client in flight")], "requests"),
        (ax_tok, [("generation_tokens_per_s", "server generated"), ("client_tokens_per_s", "client received")],
         "output tokens/s"),
        (ax_kv, [("kv_cache_usage", "KV cache usage"), ("prefix_cache_hit_rate", "prefix-cache hit rate")],
         "fraction"),
    ]
    for ax, lines, ylabel in panels:
        for key, label in lines:
            values = series.get(key)
            if values is not None and np.isfinite(values).any():
                client = key.startswith("client_")  # dashed: drawn over a matching server line it stays visible
                ax.plot(t_s, values, label=label, linestyle="--" if client else "-",
                        drawstyle="default" if key == "client_tokens_per_s" else "steps-post")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper right")
    ax_kv.set_xlabel("time since the first scrape (s)")
    fig.suptitle("server metrics (/metrics) and the client's view of the same run", fontsize=10)
    return fig


__all__ = ["plot_server_timeline", "server_timeline_figure"]
