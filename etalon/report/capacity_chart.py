"""The capacity chart: one panel per judged SLO metric against the probed load, each with its own limit."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from etalon.report.figures import new_figure, save_figure


def _scale(metric: str) -> tuple[float, str]:
    return (1e3, "ms") if metric.endswith("_s") and not metric.endswith("_per_s") else (1.0, "")


def plot_capacity_chart(path: Path, probes: Sequence[dict[str, Any]], search_kind: str,
                        capacity: float | None, lowest_failing: float | None) -> Path:
    """``probes``: rows with ``load``, ``passed``, ``values`` (every judged metric), ``limits``,
    ``early_stopped`` and ``stop_reason``. Early-stopped probes are drawn at the value measured
    when they stopped (a lower bound), with their own marker and the reason in the legend."""
    metrics = list(dict.fromkeys(k for p in probes for k in (p.get("limits") or {})))
    metrics = metrics or ["value"]
    fig = new_figure((5.2 * len(metrics), 4.6))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        _panel(ax, metric, probes, capacity, lowest_failing)
        ax.set_xlabel("offered request rate (requests/s)" if search_kind == "rate" else "concurrency (requests)")
    found = "none" if capacity is None else f"{capacity:.4g}"
    fig.suptitle(f"capacity search: capacity {found}; o pass, x fail, ^ stopped early (value at the stop, a lower bound)",
                 fontsize=9)
    return save_figure(fig, path)


def _panel(ax: Any, metric: str, probes: Sequence[dict[str, Any]], capacity: float | None,
           lowest_failing: float | None) -> None:
    scale, unit = _scale(metric)
    ordered = sorted(probes, key=lambda p: p["load"])
    points = [(p["load"], (p.get("values") or {}).get(metric, p.get("value")), p) for p in ordered]
    shown = [(x, v * scale, p) for x, v, p in points if v is not None and math.isfinite(v)]
    full = [(x, y) for x, y, p in shown if not p.get("early_stopped")]
    if full:
        ax.plot([x for x, _ in full], [y for _, y in full], color="tab:gray", alpha=0.5, zorder=1)
    reasons = set()
    for x, y, p in shown:
        if p.get("early_stopped"):
            reason = str(p.get("stop_reason") or "stopped").split(":", 1)[0]
            label = None if reason in reasons else f"stopped early ({reason})"
            reasons.add(reason)
            ax.scatter([x], [y], marker="^", s=60, facecolors="none", edgecolors="tab:orange", zorder=3, label=label)
        else:
            ax.scatter([x], [y], marker="o" if p["passed"] else "x", s=45,
                       color="tab:green" if p["passed"] else "tab:red", zorder=3)
    limit = next(((p.get("limits") or {}).get(metric) for p in probes if (p.get("limits") or {}).get(metric) is not None),
                 None)
    if limit is not None:
        ax.axhline(limit * scale, color="tab:red", linestyle="--", linewidth=1, label=f"limit {limit * scale:g} {unit}")
    if capacity is not None and lowest_failing is not None:
        ax.axvspan(capacity, lowest_failing, color="tab:blue", alpha=0.1, label="bracket")
    if capacity is not None:
        ax.axvline(capacity, color="tab:green", linestyle=":", label=f"capacity {capacity:.4g}")
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=0)
    ax.set_ylabel(f"{metric} ({unit})" if unit else metric)
    ax.set_title(metric, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")


__all__ = ["plot_capacity_chart"]
