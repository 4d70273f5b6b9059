"""A sweep's comparison: one row per job, the swept parameters against the main metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

# Shown when present, in this order (the run summary's keys).
MAIN_METRICS = (
    "ttft_p50_s",
    "ttft_p99_s",
    "tbt_p50_s",
    "tbt_p99_s",
    "tpot_mean_s",
    "e2e_p99_s",
    "output_tokens_per_s",
    "request_rate_achieved_rps",
    "fluidity_index_p1",
    "fluidity_index_mean",
    "service_miss_rate",
    "goodput_rps",
    "error_rate",
    "max_rate_rps",
)
IGNORED_PARAMS = ("hydra.", "tracking.")


def comparison_frame(runs: list[Any]) -> pd.DataFrame:
    """Rows: child runs by job number; columns: swept params (those that differ), main metrics."""
    rows = []
    for run in runs:
        row: dict[str, Any] = {
            "run_id": run.info.run_id,
            "job": int(run.data.tags.get("hydra.job.num", -1)),
            "status": run.info.status,
        }
        row.update({f"param:{k}": v for k, v in run.data.params.items()})
        row.update({k: v for k, v in run.data.metrics.items() if k in MAIN_METRICS})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame = frame.sort_values("job").reset_index(drop=True)
    param_cols = [c for c in frame.columns if c.startswith("param:")]
    swept = [c for c in param_cols if frame[c].nunique(dropna=False) > 1 and not c[6:].startswith(IGNORED_PARAMS)]
    metrics = [m for m in MAIN_METRICS if m in frame.columns]
    frame = frame[["job", "run_id", "status", *swept, *metrics]]
    return frame.rename(columns={c: c[len("param:") :] for c in swept})


def write_comparison(runs: list[Any], out_dir: Path) -> list[Path]:
    """``sweep_comparison.csv`` (the plot of the swept parameter against the main metrics is the
    sweep report's ``comparison/sweep_metrics.png``, drawn once)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = comparison_frame(runs)
    table = out_dir / "sweep_comparison.csv"
    frame.to_csv(table, index=False)
    return [table]


