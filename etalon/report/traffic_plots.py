"""Plots of real-traffic runs: TTFT by turn, TTFT against context length, session end-to-end
time, and planned vs achieved rate per ramp stage (only those the run has data for)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from etalon.core.records import STATUS_OK, RequestRecord
from etalon.report.figures import new_figure, save_figure


def write_traffic_plots(out_dir: Path, records: list[RequestRecord], traffic: dict[str, Any]) -> list[Path]:
    ok = [r for r in records if r.status == STATUS_OK and r.first_token_ns is not None and not r.warmup]
    written: list[Path] = []
    if "turns" in traffic and ok:
        written.append(_ttft_by_turn(out_dir / "ttft_by_turn.png", ok))
        written.append(_session_e2e(out_dir / "session_e2e.png", records))
    if ok and ("turns" in traffic or "prefix_cache" in traffic):
        written.append(_ttft_vs_context(out_dir / "ttft_vs_context_tokens.png", ok))
    if traffic.get("stages") and "achieved_rate_rps" in traffic["stages"][0]:
        written.append(_stage_rates(out_dir / "stage_rates.png", traffic["stages"]))
    return written


def _ttft_s(records: list[RequestRecord]) -> np.ndarray:
    return np.array([(r.first_token_ns - r.sent_ns) / 1e9 for r in records])  # type: ignore[operator]


def _ttft_by_turn(path: Path, ok: list[RequestRecord]) -> Path:
    turns = sorted({r.turn for r in ok if r.turn is not None})
    data = [_ttft_s([r for r in ok if r.turn == t]) * 1e3 for t in turns]
    fig = new_figure((6.4, 4.0))
    ax = fig.add_subplot()
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(np.arange(1, len(turns) + 1), [str(t) for t in turns])
    ax.set(xlabel="turn", ylabel="TTFT (ms)", title="TTFT by conversation turn")
    return save_figure(fig, path)


def _ttft_vs_context(path: Path, ok: list[RequestRecord]) -> Path:
    context = np.array([r.server_prompt_tokens or r.prompt_tokens for r in ok])
    cached = np.array([r.cached_tokens or 0 for r in ok])
    fig = new_figure((6.4, 4.0))
    ax = fig.add_subplot()
    points = ax.scatter(context, _ttft_s(ok) * 1e3, c=cached, s=10, cmap="viridis")
    fig.colorbar(points, ax=ax, label="cached prompt tokens")
    ax.set(xlabel="context (prompt tokens)", ylabel="TTFT (ms)", title="TTFT against context length")
    return save_figure(fig, path)


def _session_e2e(path: Path, records: list[RequestRecord]) -> Path:
    spans: dict[int, list[int]] = {}
    for r in records:
        if r.session_id is not None and not r.warmup:
            span = spans.setdefault(r.session_id, [r.sent_ns, r.end_ns])
            span[0], span[1] = min(span[0], r.sent_ns), max(span[1], r.end_ns)
    values = np.sort([(end - start) / 1e9 for start, end in spans.values()])
    fig = new_figure((6.4, 4.0))
    ax = fig.add_subplot()
    ax.plot(values, np.arange(1, values.size + 1) / max(values.size, 1), drawstyle="steps-post")
    ax.set(xlabel="session end-to-end (s)", ylabel="fraction of sessions", title="Session end-to-end time")
    return save_figure(fig, path)


def _stage_rates(path: Path, stages: list[dict[str, Any]]) -> Path:
    x = np.arange(len(stages))
    fig = new_figure((6.4, 4.0))
    ax = fig.add_subplot()
    ax.bar(x - 0.2, [s["planned_rate_rps"] for s in stages], width=0.4, label="planned")
    ax.bar(x + 0.2, [s["achieved_rate_rps"] for s in stages], width=0.4, label="achieved")
    ax.set_xticks(x, [s["stage"] for s in stages])
    ax.set(ylabel="requests/s", title="Send rate per ramp stage")
    ax.legend()
    return save_figure(fig, path)
