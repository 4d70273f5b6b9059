"""PNG plots of a run: latency CDFs, TTFT by prompt length, token timelines, miss-rate curve, throughput."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from etalon.core.metrics import NS_PER_S, pooled_gaps_s
from etalon.core.records import RecordTable
from etalon.core.summary import RunSummary
from etalon.report.figure_pool import draw
from etalon.report.figures import grid_figure, text_width_in

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure  # Figure without pyplot: headless (Agg canvas), no global state

_MAX_CDF_POINTS = 200_000  # pooled TBT can hold tens of millions of values: plot a fixed-seed sample


def write_plots(run_dir: Path, table: RecordTable, summary: RunSummary) -> list[Path]:
    """All plots; ``table`` holds the measured rows that ``summary.requests`` describes, in order.
    Each is built and saved by a figure worker when the pool runs (see ``figure_pool.draw``)."""
    return [
        draw(f"{__name__}:latency_cdfs", (table, summary), run_dir / "latency_cdfs.png"),
        draw(f"{__name__}:latency_tails", (table, summary), run_dir / "latency_tails.png"),
        draw(f"{__name__}:ttft_by_prompt", (summary,), run_dir / "ttft_vs_prompt_tokens.png"),
        draw(f"{__name__}:token_timeline", (table, summary), run_dir / "token_timeline.png"),
        draw(f"{__name__}:miss_rate_curve", (summary,), run_dir / "miss_rate_curve.png"),
        draw(f"{__name__}:throughput_views", (summary,), run_dir / "throughput_views.png"),
    ]


def write_summary_plots(run_dir: Path, summary: RunSummary) -> list[Path]:
    """The plots that need only the summary (no token times): for summaries computed from a file."""
    return [
        draw(f"{__name__}:ttft_by_prompt", (summary,), run_dir / "ttft_vs_prompt_tokens.png"),
        draw(f"{__name__}:miss_rate_curve", (summary,), run_dir / "miss_rate_curve.png"),
        draw(f"{__name__}:throughput_views", (summary,), run_dir / "throughput_views.png"),
    ]


def _sample(values: np.ndarray) -> np.ndarray:
    values = values[np.isfinite(values)]
    if values.shape[0] > _MAX_CDF_POINTS:
        values = np.random.default_rng(0).choice(values, _MAX_CDF_POINTS, replace=False)
    return np.sort(values)


def _cdf(ax: Axes, values_s: np.ndarray, title: str, scale: float, unit: str) -> None:
    data = _sample(values_s) * scale
    ax.set_title(title)
    ax.set_xlabel(f"{title} ({unit})")
    ax.set_ylabel("fraction of requests" if title != "TBT" else "fraction of gaps")
    ax.grid(alpha=0.3)
    if data.size == 0:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        return
    ax.plot(data, np.arange(1, data.size + 1) / data.size, color="tab:blue")
    for q, style in ((50, ":"), (99, "--")):
        value = float(np.percentile(data, q))
        ax.axvline(value, color="tab:red", linestyle=style, linewidth=1, label=f"p{q} = {value:.3g} {unit}")
    right = float(np.percentile(data, 99.9))
    if data[-1] > 1.5 * right > 0:  # a few huge stalls would squash the curve: clip, and say so
        ax.set_xlim(min(0.0, float(data[0])), 1.1 * right)
        ax.plot([], [], " ", label=f"x clipped at p99.9; max = {data[-1]:.3g} {unit}")
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right", fontsize=8)


def latency_cdfs(table: RecordTable, summary: RunSummary) -> Figure:
    req = summary.requests
    assert req is not None
    ok = table.select(table.ok) if not table.ok.all() else table
    fig, grid = grid_figure((13, 7.5), 2, 3)
    axes = grid.ravel()
    _cdf(axes[0], req.ttft_s, "TTFT", 1e3, "ms")
    _cdf(axes[1], pooled_gaps_s(ok.token_ns, ok.token_offsets), "TBT", 1e3, "ms")
    _cdf(axes[2], req.tpot_s, "TPOT", 1e3, "ms")
    _cdf(axes[3], req.e2e_s, "end-to-end latency", 1.0, "s")
    _cdf(axes[4], req.normalized_e2e_s, "normalized latency", 1e3, "ms/token")
    _cdf(axes[5], req.ttft_from_scheduled_s, "TTFT from planned send", 1e3, "ms")
    fig.suptitle("Latency CDFs (ok requests)")
    return fig


def _tail(ax: Axes, values_s: np.ndarray, title: str, scale: float, unit: str) -> None:
    """1 - CDF on a log y axis: the p99/p99.9 tail gets as much room as the body."""
    data = _sample(values_s) * scale
    ax.set_title(f"{title} tail")
    ax.set_xlabel(f"{title} ({unit})")
    ax.set_ylabel("fraction above (log)")
    ax.grid(alpha=0.3)
    if data.size < 2:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        return
    above = 1.0 - np.arange(data.size) / data.size
    ax.step(data, above, where="post", color="tab:purple")
    ax.set_yscale("log")
    ax.minorticks_off()  # gridlines per decade; the minor ones were ~40% of the figure's drawing
    ax.set_ylim(max(0.5 / data.size, 1e-6), 1.05)
    for q in (0.9, 0.99, 0.999):
        if 1 - q >= 1 / data.size:
            ax.axhline(1 - q, color="gray", linestyle=":", linewidth=0.8)


def latency_tails(table: RecordTable, summary: RunSummary) -> Figure:
    req = summary.requests
    assert req is not None
    ok = table.select(table.ok) if not table.ok.all() else table
    fig, grid = grid_figure((13, 4), 1, 3)
    axes = grid[0]
    _tail(axes[0], req.ttft_s, "TTFT", 1e3, "ms")
    _tail(axes[1], pooled_gaps_s(ok.token_ns, ok.token_offsets), "TBT", 1e3, "ms")
    _tail(axes[2], req.e2e_s, "end-to-end latency", 1.0, "s")
    fig.suptitle("Latency tails: 1 - CDF, log scale (dotted: p90, p99, p99.9)")
    return fig


def ttft_by_prompt(summary: RunSummary) -> Figure:
    req = summary.requests
    assert req is not None
    fig, grid = grid_figure((9, 5), 1, 1, top=0.4, bottom=0.8)  # two-line tick labels: bin and count
    ax = grid[0, 0]
    ok = np.isfinite(req.ttft_s) & (req.prompt_tokens > 0)
    prompt, ttft_ms = req.prompt_tokens[ok], req.ttft_s[ok] * 1e3
    ax.set_xlabel("prompt length (tokens, power-of-2 bins)")
    ax.set_ylabel("TTFT (ms)")
    ax.set_title("TTFT by prompt length")
    ax.grid(alpha=0.3, axis="y")
    if prompt.size == 0:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        return fig
    low = np.floor(np.log2(prompt)).astype(np.int64)
    bins = np.unique(low)
    groups = [ttft_ms[low == b] for b in bins]
    ax.boxplot(groups, showfliers=True, flierprops={"markersize": 2, "alpha": 0.3}, widths=0.6)
    labels = [f"{2**b}-{2 ** (b + 1) - 1}\n(n={g.size})" for b, g in zip(bins, groups)]
    ax.set_xticks(range(1, len(bins) + 1), labels, fontsize=8)
    return fig


def _timeline_picks(fluidity: np.ndarray) -> list[tuple[str, int]]:
    """Worst, 1st- and 10th-percentile and median request by fluidity-index (row indices)."""
    rows = np.flatnonzero(np.isfinite(fluidity))
    if rows.size == 0:
        return []
    order = rows[np.argsort(fluidity[rows], kind="stable")]
    picks = {
        "worst": order[0],
        "p1": order[order.size // 100],
        "p10": order[order.size // 10],
        "median": order[order.size // 2],
    }
    seen: dict[int, str] = {}
    for name, row in picks.items():
        seen.setdefault(int(row), name)
    return [(name, row) for row, name in seen.items()]


def token_timeline(table: RecordTable, summary: RunSummary) -> Figure:
    req = summary.requests
    assert req is not None
    picks = _timeline_picks(req.fluidity_index)
    labels = [f"{name}: request {req.request_id[row]}, fluidity-index {req.fluidity_index[row]:.3f}"
              for name, row in picks]
    dp, dd = summary.settings.get("ttft_deadline_s"), summary.settings.get("tbt_deadline_s")
    deadlines = isinstance(dp, float) and isinstance(dd, float)
    if deadlines:
        labels.append(f"deadlines: TTFT {dp:g} s, then one token per {dd * 1e3:g} ms")
    # The legend goes beside the axes (never over the steps): the right margin holds its widest label.
    legend_w = text_width_in(labels, 8) + 0.6 if labels else 0.2
    fig, grid = grid_figure((10, 5.5), 1, 1, top=0.4, right=min(legend_w, 4.5))
    ax = grid[0, 0]
    ax.set_xlabel("time since send (s)")
    ax.set_ylabel("output tokens received")
    ax.set_title("Token timeline: flat steps are stalls")
    ax.grid(alpha=0.3)
    top = 0
    for (_, row), label in zip(picks, labels):
        tokens = table.token_ns[table.token_offsets[row] : table.token_offsets[row + 1]]
        times_s = np.concatenate(([0.0], (tokens - table.sent_ns[row]) / NS_PER_S))
        ax.step(times_s, np.arange(times_s.size), where="post", label=label)
        top = max(top, times_s.size - 1)
    if deadlines and top > 0:
        ax.plot([dp, dp + dd * (top - 1)], [1, top], color="black", linestyle="--", linewidth=1, label=labels[-1])
    if ax.lines:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def miss_rate_curve(summary: RunSummary) -> Figure:
    fig, grid = grid_figure((8, 5), 1, 1, top=0.4)
    ax = grid[0, 0]
    ax.set_xlabel("target TBT deadline (ms)")
    ax.set_ylabel("p99 over requests of the deadline miss rate")
    ax.set_title("p99 miss rate vs target TBT (first token ignored)")
    ax.grid(alpha=0.3)
    if summary.curve_target_tbt_s:
        targets_ms = np.asarray(summary.curve_target_tbt_s) * 1e3
        ax.plot(targets_ms, summary.curve_p99_miss_rate, marker=".", markersize=3)
        target = summary.settings.get("target_miss_rate")
        if isinstance(target, float):
            ax.axhline(target, color="tab:red", linestyle="--", linewidth=1, label=f"target miss rate {target:g}")
        deadline = summary.settings.get("tbt_deadline_s")
        if isinstance(deadline, float) and deadline * 1e3 <= targets_ms[-1]:
            ax.axvline(deadline * 1e3, color="gray", linestyle=":", label=f"run TBT deadline {deadline * 1e3:g} ms")
        ax.legend()
        ax.set_ylim(-0.02, 1.02)
    else:
        ax.text(0.5, 0.5, "no TBT gaps", ha="center", va="center", transform=ax.transAxes)
    return fig


def throughput_views(summary: RunSummary) -> Figure:
    fig, grid = grid_figure((7, 4.5), 1, 1, top=0.4, left=0.85, bottom=0.65)  # a two-line tick label
    ax = grid[0, 0]
    views = [
        ("1 / mean(TPOT)", "throughput_tpot_tokens_per_s"),
        ("1 / p99(TBT)", "throughput_tbt_tokens_per_s"),
        ("1 / p99(min TBT deadline\nat 10% miss rate)", "throughput_deadline_tokens_per_s"),
    ]
    values = [summary.rates.get(key, float("nan")) for _, key in views]
    shown = [0.0 if not np.isfinite(v) else v for v in values]
    bars = ax.bar([label for label, _ in views], shown, color=["tab:blue", "tab:orange", "tab:green"])
    for bar, value in zip(bars, values):
        text = f"{value:.1f}" if np.isfinite(value) else "n/a"
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")
    ax.set_ylabel("per-request decode rate (tokens/s)")
    ax.set_ylim(0, max(shown + [1.0]) * 1.15)
    ax.set_title("Three throughput views")
    ax.tick_params(axis="x", labelsize=8)
    return fig
