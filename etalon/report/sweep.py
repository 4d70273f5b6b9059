"""A sweep's report: latency against achieved throughput (the main figure), a table, the other metrics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from etalon.report.figure_pool import draw
from etalon.report.figures import grid_figure

LATENCIES = (("TTFT", "ttft"), ("TBT", "tbt"), ("end-to-end", "e2e"))
THROUGHPUT_KEYS = ("output_tokens_per_s_steady", "output_tokens_per_s")
TABLE_METRICS = ("output_tokens_per_s_steady", "output_tokens_per_s", "request_rate_achieved_steady_rps",
                 "ttft_p50_s", "ttft_p99_s", "tbt_p50_s", "tbt_p99_s", "e2e_p50_s", "e2e_p99_s",
                 "goodput_rps", "fluidity_index_mean", "slo_passed", "max_rate_rps")
# The terminal table (100 columns): the rest is in the report.
TERMINAL_METRICS = ("output_tokens_per_s_steady", "ttft_p50_s", "ttft_p99_s", "tbt_p50_s", "tbt_p99_s",
                    "e2e_p99_s", "goodput_rps", "slo_passed", "max_rate_rps")


def is_geometric(values: np.ndarray) -> bool:
    """Three or more positive values whose successive ratios are equal (1, 2, 4, 8 ...)."""
    v = np.sort(np.unique(values.astype(float)))
    if v.size < 3 or (v <= 0).any():
        return False
    ratios = v[1:] / v[:-1]
    return bool(np.allclose(ratios, ratios[0], rtol=0.02) and ratios[0] > 1.2)


def _series(frame: pd.DataFrame, swept: list[str]) -> list[tuple[str, pd.DataFrame]]:
    """One series per combination of the swept parameters other than the first."""
    others = swept[1:]
    if not others:
        return [("", frame)]
    return [(" ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(others, key if isinstance(key, tuple) else (key,))),
             group) for key, group in frame.groupby(others, sort=True)]


def plot_latency_throughput(path: Path, frame: pd.DataFrame, swept: list[str]) -> Path | None:
    """TTFT/TBT/e2e p50 (solid) and p99 (dashed) in ms against achieved output tokens/s."""
    x_key = next((k for k in THROUGHPUT_KEYS if k in frame.columns and frame[k].notna().any()), None)
    if x_key is None:
        return None
    return draw(f"{__name__}:latency_throughput_figure", (frame, swept, x_key), path)


def latency_throughput_figure(frame: pd.DataFrame, swept: list[str], x_key: str) -> Any:
    """The figure of ``plot_latency_throughput`` (built by a figure worker when the pool runs)."""
    fig, grid = grid_figure((15, 4.8), 1, 3)
    axes = grid[0]
    for ax, (title, metric) in zip(axes, LATENCIES):
        for label, group in _series(frame.sort_values(x_key), swept):
            for stat, style in (("p50", "-"), ("p99", "--")):
                key = f"{metric}_{stat}_s"
                if key in group.columns and group[key].notna().any():
                    ax.plot(group[x_key], group[key] * 1e3, style, marker="o",
                            label=f"{stat} {label}".strip())
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("achieved output tokens/s" + (" (steady window)" if x_key.endswith("steady") else ""))
        ax.set_ylabel(f"{title} (ms)")
        ax.set_title(f"{title} vs throughput")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle("Latency vs throughput, one point per job")
    return fig


def plot_metrics_vs_param(path: Path, frame: pd.DataFrame, swept: list[str]) -> Path | None:
    """The other metrics against the first swept parameter: constant series dropped, y from 0,
    ms for seconds, log x for a geometric sweep."""
    if not swept:
        return None
    x = pd.to_numeric(frame[swept[0]], errors="coerce")
    if x.isna().any():
        return None
    metrics = [m for m in TABLE_METRICS if m in frame.columns and _varies(frame[m])]
    if not metrics:
        return None
    return draw(f"{__name__}:metrics_vs_param_figure", (frame, swept, metrics), path)


def metrics_vs_param_figure(frame: pd.DataFrame, swept: list[str], metrics: list[str]) -> Any:
    """The figure of ``plot_metrics_vs_param`` (built by a figure worker when the pool runs)."""
    x = pd.to_numeric(frame[swept[0]], errors="coerce")
    cols = min(3, len(metrics))
    rows = -(-len(metrics) // cols)
    # No axes titles: each panel's metric is its y label (small: the names are long).
    fig, axes = grid_figure((4.4 * cols, 3.2 * rows), rows, cols, title=False, gap_h=0.6)
    order = np.argsort(x.to_numpy())
    for ax, metric in zip(axes.flat, metrics):
        scale, unit = (1e3, " (ms)") if is_seconds(metric) else (1.0, "")
        ax.plot(x.to_numpy()[order], frame[metric].to_numpy(dtype=float)[order] * scale, marker="o")
        if is_geometric(x.to_numpy()):
            ax.set_xscale("log")
            ax.set_xticks(sorted(set(x.tolist())), [f"{v:g}" for v in sorted(set(x.tolist()))])
            ax.minorticks_off()
        ax.set_ylim(bottom=0)
        ax.set_xlabel(swept[0])
        ax.set_ylabel(metric + unit, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    fig.suptitle(f"Metrics against {swept[0]} (constant metrics left out)")
    return fig


def is_seconds(metric: str) -> bool:
    """A duration in seconds (``ttft_p99_s``), not a rate per second (``output_tokens_per_s``)."""
    return metric.endswith("_s") and not metric.endswith("_per_s")


def _varies(column: pd.Series) -> bool:
    values = pd.to_numeric(column, errors="coerce").dropna()
    if values.size < 2:
        return False
    spread = float(values.max() - values.min())
    return spread > 0.01 * max(abs(float(values.mean())), 1e-12)


def format_sweep_table(frame: pd.DataFrame, swept: list[str]) -> str:
    shown = ["job", *swept, *[m for m in TERMINAL_METRICS if m in frame.columns]]
    rows = [[_short(c) for c in shown]]
    for _, r in frame.iterrows():
        rows.append([_fmt(r[c], c) for c in shown])
    widths = [max(len(row[i]) for row in rows) for i in range(len(shown))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _short(name: str) -> str:
    short = name.rsplit(".", 1)[-1].replace("output_tokens_per_s", "out_tok/s").replace("_steady", "*")
    return short.replace("_s", "").replace("slo_passed", "slo").replace("goodput_rps", "goodput")


def _fmt(value: Any, column: str) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(v):
        return "-"
    if column == "slo_passed":
        return "PASS" if v else "FAIL"
    if is_seconds(column):
        return f"{v * 1e3:.4g}ms" if v < 1 else f"{v:.4g}s"
    return f"{v:.4g}"


__all__ = ["format_sweep_table", "is_geometric", "latency_throughput_figure", "metrics_vs_param_figure",
           "plot_latency_throughput", "plot_metrics_vs_param"]
