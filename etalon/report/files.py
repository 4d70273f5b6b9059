"""Write a run's report files (tables and plots) into its run directory."""

from __future__ import annotations

from pathlib import Path

from etalon.core.records import RecordTable
from etalon.core.summary import RunSummary
from etalon.report import plots as figures
from etalon.report import tables


def write_report(run_dir: Path, table: RecordTable | None, summary: RunSummary, plots: bool = True) -> list[Path]:
    """Write CSV tables and PNG plots (unless ``plots`` is false) under ``run_dir``; returns the
    written paths.

    ``summary`` must come from ``summarize(table, ...)`` (it carries the per-request metrics of the
    table's non-warm-up rows, in order). ``table=None`` (a summary computed from a records file in
    chunks): the plots that need only the summary's per-request values.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if table is None:
        written = [
            tables.write_percentile_table(run_dir / "metrics_percentiles.csv", summary),
            tables.write_rates_table(run_dir / "metrics_run.csv", summary),
        ]
        if summary.requests is not None:
            written.append(tables.write_request_table(run_dir / "metrics_requests.csv", summary.requests))
        return written + (figures.write_summary_plots(run_dir, summary) if plots else [])
    measured = table.select(~table.warmup) if table.warmup.any() else table
    written = [
        tables.write_percentile_table(run_dir / "metrics_percentiles.csv", summary),
        tables.write_rates_table(run_dir / "metrics_run.csv", summary),
    ]
    if summary.requests is not None:
        written.append(tables.write_request_table(run_dir / "metrics_requests.csv", summary.requests))
        if plots:
            written += figures.write_plots(run_dir, measured, summary)
    return written
