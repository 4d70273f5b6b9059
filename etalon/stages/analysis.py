"""Per-request samples of a measured run and their bootstrap confidence intervals (summary.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from etalon.core.bootstrap import RunSample, confidence_intervals
from etalon.core.records import RecordTable
from etalon.core.slo import tbt_gaps_s

CANCELLED = "cancelled"


def measured_rows(table: RecordTable) -> np.ndarray:
    """The rows a summary describes: not warm-up, not cancelled by the client when it stopped."""
    return ~table.warmup & (table.error_type != CANCELLED)


def save_sample(path: Path, sample: RunSample) -> None:
    """``sample`` as one ``.npz`` file (``load_sample`` reads it back)."""
    with open(path, "wb") as f:
        np.savez(f, **{k: v for k, v in sample.__dict__.items() if k != "window_s"},
                 window_s=np.float64(sample.window_s))


def load_sample(path: Path) -> RunSample:
    with np.load(path) as z:
        fields = {k: z[k] for k in z.files}
    return RunSample(**{**fields, "window_s": float(fields["window_s"])})


def run_sample(table: RecordTable, slo: Any, window_s: float) -> RunSample:
    """The per-request values of ``table``'s measured rows that headline metrics and their
    intervals are computed from (same definitions as the run summary, DESIGN section 3)."""
    measured = measured_rows(table)
    t = table.select(measured) if not measured.all() else table
    good = np.asarray(slo.request_ok(table), dtype=bool)[measured] & t.ok
    ok_rows = np.flatnonzero(t.ok)
    ok = t.select(t.ok) if not t.ok.all() else t
    gaps, rows = tbt_gaps_s(ok)
    has_token = t.ok & (t.first_token_ns >= 0)
    ttft = np.where(has_token, (t.first_token_ns - t.sent_ns) / 1e9, np.nan)
    e2e = np.where(t.ok, (t.end_ns - t.sent_ns) / 1e9, np.nan)
    fluidity = _fluidity(t, slo, has_token)
    return RunSample(ttft_s=ttft, e2e_s=e2e, fluidity_index=fluidity,
                     output_tokens=np.where(t.ok, t.output_tokens, 0), good=good,
                     gap_s=gaps, gap_row=ok_rows[rows] if rows.size else rows, window_s=float(window_s))


def _fluidity(t: RecordTable, slo: Any, has_token: np.ndarray) -> np.ndarray:
    from etalon.core.metrics import deadline_miss_counts, miss_rates

    dp = slo.ttft_deadlines_s(t.prompt_tokens)
    missed, total = deadline_miss_counts(t.token_ns, t.token_offsets, t.sent_ns, dp, slo.tbt_deadline_s)
    return np.where(has_token, 1.0 - miss_rates(missed, total), np.nan)


def steady_rates(table: RecordTable) -> dict[str, float]:
    """Rates over the steady window, first planned send to last actual send (the drain after the
    last send excluded): output tokens and completed requests that arrived inside it, per second."""
    measured = measured_rows(table)
    t = table.select(measured) if not measured.all() else table
    if len(t) < 2:
        return {}
    start, stop = int(t.scheduled_ns.min()), int(t.sent_ns.max())
    window_s = (stop - start) / 1e9
    if window_s <= 0:
        return {}
    ok = t.select(t.ok) if not t.ok.all() else t
    tokens = int(np.count_nonzero((ok.token_ns >= start) & (ok.token_ns <= stop)))
    done = int(np.count_nonzero((ok.end_ns >= start) & (ok.end_ns <= stop)))
    return {"steady_window_s": window_s, "output_tokens_per_s_steady": tokens / window_s,
            "request_rate_achieved_steady_rps": done / window_s}


def intervals_block(sample: RunSample, *, level: float, replicates: int, seed: int) -> dict[str, Any]:
    """``{"level", "replicates", "method", "intervals": {key: [low, high]}}`` for summary.json."""
    cis = confidence_intervals(sample, level=level, replicates=replicates, seed=seed)
    return {"level": level, "replicates": replicates, "seed": seed,
            "method": "percentile bootstrap over requests",
            "intervals": {k: [lo, hi] for k, (lo, hi) in cis.items()}}


__all__ = ["intervals_block", "load_sample", "measured_rows", "run_sample", "save_sample", "steady_rates"]
