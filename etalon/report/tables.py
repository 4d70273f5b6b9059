"""CSV tables of a run: one row per metric with its stats, and one row per request."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from etalon.core.metrics import STATS
from etalon.core.summary import RequestMetrics, RunSummary


def write_percentile_table(path: Path, summary: RunSummary) -> Path:
    """``metric,unit,count?,mean,min,max,p50,...``: one row per metric distribution (empty = undefined)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["metric", "unit", *STATS])
        for (metric, unit), stats in summary.distributions.items():
            writer.writerow([metric, unit, *(_cell(stats.get(stat)) for stat in STATS)])
    return path


def write_rates_table(path: Path, summary: RunSummary) -> Path:
    """``key,value`` of every defined run-level scalar."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "value"])
        for key, value in summary.scalars().items():
            writer.writerow([key, repr(value)])
    return path


def write_request_table(path: Path, requests: RequestMetrics) -> Path:
    """One row per measured request, one column per per-request metric (empty where undefined)."""
    columns = requests.columns()
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(columns))
        arrays = [_column_text(values) for values in columns.values()]
        writer.writerows(zip(*arrays))
    return path


def _cell(value: float | None) -> str:
    return "" if value is None or not np.isfinite(value) else repr(float(value))


def _column_text(values: np.ndarray) -> list[str]:
    if values.dtype.kind == "f":
        return ["" if np.isnan(v) else repr(float(v)) for v in values.tolist()]
    return [str(v) for v in values.tolist()]
