"""Run summary from a records file read in bounded chunks: the numbers of ``summarize_table`` on the
whole file, with memory bounded by the chunk size plus O(requests) per-request values.

Two passes. Pass 1 computes every per-request metric chunk by chunk (kept: one float per request
and metric, as ``RunSummary.requests``, which is what bootstrap confidence intervals resample),
the error counts, token sums, and for the pooled TBT gaps (O(tokens), never held) their count,
sum, min, max and a histogram on a 2**20 ns (~1 ms) grid. Pass 2 re-reads the file and keeps only
(a) the gaps in the histogram buckets that hold the ranks the percentiles read, and (b) per
miss-rate-curve target, the largest per-request rates that can reach the p99 (about 1% of them).

Exactness: every value equals the in-memory summary's except the pooled TBT mean, a sum over
chunks (float64 rounding, relative error ~1e-15); percentiles use numpy's linear method, checked
against np.percentile in the tests.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from etalon.core import deadline_kernels as kernels
from etalon.core import metrics
from etalon.core import summary as core
from etalon.core.records import RecordTable
from etalon.records.files import iter_tables

_BUCKET_SHIFT = 20  # histogram bucket = gap_ns >> 20 (1.05 ms)
_MAX_BUCKET = 1 << 22  # gaps above ~73 min share the last bucket
_PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


def percentile_positions(n: int, q_percent: float) -> tuple[int, int, float]:
    """numpy's linear method: the two order statistics it reads and the weight of the second."""
    virtual = (n - 1) * (np.true_divide(q_percent, 100))
    prev = int(np.floor(virtual))
    return min(max(prev, 0), n - 1), min(max(prev + 1, 0), n - 1), float(virtual - np.floor(virtual))


def lerp(a: float, b: float, t: float) -> float:
    """numpy's ``_lerp`` (the form it uses on each side of t = 0.5), on float64 scalars."""
    a64, b64, t64 = np.float64(a), np.float64(b), np.float64(t)
    diff = b64 - a64
    return float(b64 - diff * (1 - t64)) if t64 >= 0.5 else float(a64 + diff * t64)


@dataclass
class _Pass1:
    columns: dict[str, list[np.ndarray]] = field(default_factory=dict)
    rows: dict[str, list[np.ndarray]] = field(default_factory=dict)
    warmup: int = 0
    cancelled: int = 0
    n_gaps: int = 0
    sum_gaps_s: float = 0.0
    min_gap_s: float = math.inf
    max_gap_s: float = -math.inf
    hist: np.ndarray = field(default_factory=lambda: np.zeros(_MAX_BUCKET + 1, dtype=np.int64))
    deadlines_s: list[np.ndarray] = field(default_factory=list)
    n_curve: int = 0


def _measured(chunk: RecordTable, slo: Any) -> tuple[RecordTable, np.ndarray, np.ndarray, np.ndarray]:
    cancelled = chunk.error_type == core.CANCELLED
    measured = ~chunk.warmup & ~cancelled
    dp_s = core._per_row(slo.ttft_deadlines_s(chunk.prompt_tokens), len(chunk), "ttft_deadline_s")[measured]
    slo_ok = core._per_row(slo.request_ok(chunk), len(chunk), "slo_ok")[measured] > 0
    t = chunk.select(measured) if not measured.all() else chunk
    return t, dp_s, slo_ok, cancelled


def _gaps_ns(t: RecordTable, rows: np.ndarray) -> np.ndarray:
    tokens, offsets = kernels.gather_tokens(t.token_ns, t.token_offsets, rows)
    if tokens.shape[0] < 2:
        return np.zeros(0, dtype=np.int64)
    inside = np.ones(tokens.shape[0] - 1, dtype=bool)
    starts = offsets[1:-1]
    inside[starts[(starts > 0) & (starts <= inside.shape[0])] - 1] = False
    return np.diff(tokens)[inside]


def _buckets(gaps_ns: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(gaps_ns, 0) >> _BUCKET_SHIFT, _MAX_BUCKET)


def _pass1_chunk(acc: _Pass1, chunk: RecordTable, slo: Any) -> None:
    t, dp_s, slo_ok, cancelled = _measured(chunk, slo)
    acc.warmup += int(chunk.warmup.sum())
    acc.cancelled += int((cancelled & ~chunk.warmup).sum())
    req = core._request_metrics(t, dp_s, slo.tbt_deadline_s, slo.target_miss_rate)
    for name, values in req.columns().items():
        acc.columns.setdefault(name, []).append(values)
    for name in ("scheduled_ns", "end_ns", "http_status", "error_type", "warmup"):
        acc.rows.setdefault(name, []).append(getattr(t, name))
    acc.rows.setdefault("slo_ok", []).append(slo_ok)
    ok_rows = np.flatnonzero(t.ok)
    gaps_s = metrics.pooled_gaps_s(t.token_ns, t.token_offsets, ok_rows)
    if gaps_s.size:
        acc.n_gaps += gaps_s.size
        acc.sum_gaps_s += float(np.sum(gaps_s))
        acc.min_gap_s = min(acc.min_gap_s, float(gaps_s.min()))
        acc.max_gap_s = max(acc.max_gap_s, float(gaps_s.max()))
        acc.hist += np.bincount(_buckets(_gaps_ns(t, ok_rows)), minlength=_MAX_BUCKET + 1)
    with_gaps = ok_rows[np.diff(t.token_offsets)[ok_rows] >= 2]
    acc.n_curve += with_gaps.size
    zeros = np.zeros(len(t), dtype=np.int64)
    acc.deadlines_s.append(kernels.min_tbt_deadlines(t.token_ns, t.token_offsets, zeros, None, 0.1, rows=with_gaps))


@dataclass
class _Pass2:
    wanted: np.ndarray  # histogram buckets holding a rank some percentile reads
    keep: int  # per curve target: how many of the largest rates can reach the quantile
    targets_ns: np.ndarray  # ascending
    picked: list[np.ndarray] = field(default_factory=list)
    top: list[np.ndarray] = field(default_factory=list)


def _pass2_chunk(acc: _Pass2, chunk: RecordTable, slo: Any) -> None:
    t, _, _, _ = _measured(chunk, slo)
    ok_rows = np.flatnonzero(t.ok)
    if acc.wanted.size:
        gaps = _gaps_ns(t, ok_rows)
        acc.picked.append(gaps[np.isin(_buckets(gaps), acc.wanted)])
    with_gaps = ok_rows[np.diff(t.token_offsets)[ok_rows] >= 2].astype(np.int64)
    if acc.keep and with_gaps.size:
        rates = kernels._rates_at(t.token_ns, t.token_offsets, with_gaps, acc.targets_ns)
        if not acc.top:
            acc.top = [np.zeros(0) for _ in range(rates.shape[0])]
        for c in range(rates.shape[0]):
            merged = np.concatenate([acc.top[c], rates[c]])
            if merged.shape[0] > acc.keep:
                merged = np.partition(merged, merged.shape[0] - acc.keep)[merged.shape[0] - acc.keep :]
            acc.top[c] = merged


def _rank_buckets(hist: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, float]]]:
    cum = np.cumsum(hist)
    positions = [percentile_positions(n, q) for q in _PERCENTILES]
    ranks = sorted({r for lo, hi, _ in positions for r in (lo, hi)})
    wanted = np.unique(np.searchsorted(cum, np.asarray(ranks) + 1))  # first bucket with cum > rank
    return wanted, cum, positions


def _order_stat(rank: int, picked: np.ndarray, cum: np.ndarray) -> float:
    bucket = int(np.searchsorted(cum, rank + 1))
    before = int(cum[bucket - 1]) if bucket else 0
    values = np.sort(picked[_buckets(picked) == bucket])
    return float(np.float64(values[rank - before]) / metrics.NS_PER_S)


def _tbt_distribution(p1: _Pass1, p2: _Pass2, cum: np.ndarray, positions: list) -> dict[str, float]:
    if p1.n_gaps == 0:
        return {}
    picked = np.concatenate(p2.picked) if p2.picked else np.zeros(0, dtype=np.int64)
    pct = [lerp(_order_stat(lo, picked, cum), _order_stat(hi, picked, cum), g) for lo, hi, g in positions]
    stats = [p1.sum_gaps_s / p1.n_gaps, p1.min_gap_s, p1.max_gap_s, *pct]
    return dict(zip(metrics.STATS, stats))


def _curve(p1: _Pass1, p2: _Pass2, order: np.ndarray, quantile: float) -> np.ndarray:
    curve = np.full(order.shape[0], np.nan)
    if p1.n_curve == 0 or not p2.top:
        return curve
    for c, top in enumerate(p2.top):
        filled = np.concatenate([top, np.full(p1.n_curve - top.shape[0], -1.0)])  # below the quantile
        curve[order[c]] = np.quantile(filled, quantile)
    return curve


def _curve_keep(n: int, quantile: float) -> int:
    if n == 0:
        return 0
    h = int(math.floor(quantile * (n - 1)))
    return n - max(h - 1, 0)  # one position to spare: np.quantile's index is a float


def summarize_file(path: Path, slo: Any, *, batch_rows: int = 8192, partial: bool = False) -> core.RunSummary:
    """``benchmark.summarize_table`` of the records at ``path`` (JSONL or Parquet), in chunks of
    ``batch_rows`` records; see the module docstring for memory and exactness."""
    metrics.check_target_miss_rate(slo.target_miss_rate)
    p1 = _Pass1()
    for chunk in iter_tables(path, batch_rows):
        _pass1_chunk(p1, chunk, slo)
    wanted, cum, positions = _rank_buckets(p1.hist, p1.n_gaps) if p1.n_gaps else (np.zeros(0, np.int64), None, [])
    targets_ns = metrics.to_ns(core.CURVE_TARGETS_S)
    order = np.argsort(targets_ns, kind="stable")
    p2 = _Pass2(wanted, _curve_keep(p1.n_curve, 0.99), targets_ns[order])
    if wanted.size or p2.keep:
        for chunk in iter_tables(path, batch_rows):
            _pass2_chunk(p2, chunk, slo)
    return _assemble(p1, p2, cum, positions, order, slo, partial)


def _concat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def _assemble(p1: _Pass1, p2: _Pass2, cum: Any, positions: list, order: np.ndarray, slo: Any, partial: bool) -> core.RunSummary:
    req = core.RequestMetrics(**{n: _concat(p1.columns.get(n, []), np.float64) for n in core.RequestMetrics.__dataclass_fields__})
    rows = _row_table(p1, req)
    good = rows.ok & _concat(p1.rows.get("slo_ok", []), bool)
    window_s = core._window_s(rows)
    rates = core._rates(rows, req, good, window_s)
    distributions = core._distributions(req, np.zeros(0))
    distributions[("tbt", "s")] = _tbt_distribution(p1, p2, cum, positions)
    tpot = req.tpot_s[np.isfinite(req.tpot_s) & (req.token_count >= 2)]
    deadlines = _concat(p1.deadlines_s, np.float64)
    rates.update({
        "throughput_tpot_tokens_per_s": metrics._inverse(float(np.mean(tpot))) if tpot.size else math.nan,
        "throughput_tbt_tokens_per_s": metrics._inverse(distributions[("tbt", "s")].get("p99", math.nan)),
        "throughput_deadline_tokens_per_s": (
            metrics._inverse(float(np.percentile(deadlines, 99))) if deadlines.size else math.nan
        ),
    })
    rates.update(core._fluidity_tail(req))
    curve = _curve(p1, p2, order, 0.99)
    by_status, by_code, by_type = core._error_counts(rows)
    has_curve = bool(np.isfinite(curve).all())
    return core.RunSummary(
        partial=partial,
        counts={"total": len(rows), "ok": by_status["ok"], "error": by_status["error"],
                "warmup": p1.warmup, "cancelled": p1.cancelled},
        measurement_window_s=window_s,
        distributions=distributions,
        rates=rates,
        curve_target_tbt_s=core.CURVE_TARGETS_S.tolist() if has_curve else [],
        curve_p99_miss_rate=curve.tolist() if has_curve else [],
        errors_by_status=by_status,
        errors_by_http_status=by_code,
        errors_by_type=by_type,
        settings={"tbt_deadline_s": float(slo.tbt_deadline_s), "ttft_deadline_s": "per-request",
                  "target_miss_rate": float(slo.target_miss_rate), "goodput_slo": "slo_ok mask"},
        requests=req,
    )


def _row_table(p1: _Pass1, req: core.RequestMetrics) -> RecordTable:
    """The measured rows' per-request columns as a RecordTable without tokens (O(requests))."""
    n = req.request_id.shape[0]
    return RecordTable(
        request_id=req.request_id.astype(np.int64), actor=np.zeros(n, dtype=np.int64),
        scheduled_ns=_concat(p1.rows.get("scheduled_ns", []), np.int64),
        sent_ns=np.zeros(n, dtype=np.int64), first_token_ns=np.zeros(n, dtype=np.int64),
        end_ns=_concat(p1.rows.get("end_ns", []), np.int64), prompt_tokens=req.prompt_tokens,
        output_tokens=req.output_tokens, requested_output_tokens=np.zeros(n, dtype=np.int64),
        ok=req.ok.astype(bool), warmup=_concat(p1.rows.get("warmup", []), bool),
        http_status=_concat(p1.rows.get("http_status", []), np.int64),
        error_type=_concat(p1.rows.get("error_type", []), object),
        token_ns=np.zeros(0, dtype=np.int64), token_offsets=np.zeros(n + 1, dtype=np.int64),
    )


def iter_request_metrics(summary: core.RunSummary) -> Iterator[tuple[str, np.ndarray]]:
    """The per-request values of a file summary (one array per metric, O(requests)): what bootstrap
    confidence intervals resample."""
    if summary.requests is not None:
        yield from summary.requests.columns().items()
