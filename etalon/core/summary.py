"""Run summary: per-request metrics and run-level statistics of one RecordTable (DESIGN section 3)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from etalon.core import chunks, metrics
from etalon.core.records import RecordTable

CURVE_TARGETS_S = np.arange(1, 101) / 1000.0  # p99 miss-rate curve: TBT targets 1..100 ms
THROUGHPUT_VIEW_MISS_RATE = 0.1
CANCELLED = "cancelled"  # error_type of a request the client cancelled when it stopped the run

# (metric, unit) in the order reports list them; unit "" for unitless metrics.
DISTRIBUTIONS: tuple[tuple[str, str], ...] = (
    ("ttft", "s"),
    ("tbt", "s"),
    ("tpot", "s"),
    ("e2e", "s"),
    ("normalized_e2e", "s"),
    ("output_throughput", "tokens_per_s"),
    ("fluidity_index", ""),
    ("min_tbt_deadline", "s"),
    ("dispatch_lag", "s"),
    ("ttft_from_scheduled", "s"),
    ("e2e_from_scheduled", "s"),
)


def metric_key(metric: str, stat: str, unit: str) -> str:
    """``<metric>_<stat>_<unit>`` (no unit suffix for unitless metrics)."""
    return f"{metric}_{stat}_{unit}" if unit else f"{metric}_{stat}"


@dataclass(frozen=True)
class RequestMetrics:
    """Per-request metrics of the measured (non-warm-up) rows; NaN where undefined for a row.

    Durations in s. ``fluidity_index``, ``missed`` and ``total`` use the run's deadlines;
    ``min_tbt_deadline_s`` the run's TTFT deadline and target miss rate (inf: unattainable).
    """

    request_id: np.ndarray
    ok: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    token_count: np.ndarray
    ttft_s: np.ndarray
    tpot_s: np.ndarray
    e2e_s: np.ndarray
    normalized_e2e_s: np.ndarray
    output_throughput_tokens_per_s: np.ndarray
    dispatch_lag_s: np.ndarray
    ttft_from_scheduled_s: np.ndarray
    e2e_from_scheduled_s: np.ndarray
    missed: np.ndarray
    total: np.ndarray
    fluidity_index: np.ndarray
    min_tbt_deadline_s: np.ndarray

    def columns(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class RunSummary:
    """Everything summary.json and MLflow get for one run; ``requests`` stays in memory only."""

    partial: bool
    counts: dict[str, int]
    measurement_window_s: float
    distributions: dict[tuple[str, str], dict[str, float]]
    rates: dict[str, float]
    curve_target_tbt_s: list[float]
    curve_p99_miss_rate: list[float]
    errors_by_status: dict[str, int]
    errors_by_http_status: dict[str, int]
    errors_by_type: dict[str, int]
    settings: dict[str, Any]
    requests: RequestMetrics | None = field(default=None, repr=False, compare=False)
    # etalon.core.chunks: {"flags": {name: requests}, "flagged": n, "finish_reasons": {reason: n}}
    output_checks: dict[str, Any] = field(default_factory=dict)

    def scalars(self) -> dict[str, float]:
        """Flat ``<metric>_<stat>_<unit>`` -> value; undefined values are left out (never NaN)."""
        out: dict[str, float] = {f"requests_{k}": float(v) for k, v in self.counts.items()}
        out["partial"] = float(self.partial)
        out["measurement_window_s"] = self.measurement_window_s
        for (metric, unit), stats in self.distributions.items():
            out.update({metric_key(metric, stat, unit): v for stat, v in stats.items()})
        out.update(self.rates)
        if self.output_checks:
            out["requests_flagged"] = float(self.output_checks.get("flagged", 0))
            out.update({f"flag_{k}": float(v) for k, v in self.output_checks.get("flags", {}).items()})
        return {k: float(v) for k, v in out.items() if math.isfinite(v)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary: scalars plus the curve, error counts and settings."""
        return {
            "partial": self.partial,
            "scalars": self.scalars(),
            "miss_rate_curve": {
                "target_tbt_s": self.curve_target_tbt_s,
                "p99_miss_rate": self.curve_p99_miss_rate,
            },
            "errors": {
                "by_status": self.errors_by_status,
                "by_http_status": self.errors_by_http_status,
                "by_error_type": self.errors_by_type,
            },
            "settings": self.settings,
            "output_checks": self.output_checks,
        }


def _nan_where(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    return np.where(valid, values, np.nan)


def _request_metrics(
    t: RecordTable, dp_s: np.ndarray, tbt_deadline_s: float, target_miss_rate: float
) -> RequestMetrics:
    """Per-request metrics of table ``t`` (already restricted to measured rows)."""
    count = np.diff(t.token_offsets)
    has_token = count >= 1
    first_idx = np.minimum(t.token_offsets[:-1], max(t.token_ns.shape[0] - 1, 0))
    last_idx = np.maximum(t.token_offsets[1:] - 1, 0)
    first_ns = t.token_ns[first_idx] if t.token_ns.size else np.zeros(len(t), dtype=np.int64)
    last_ns = t.token_ns[last_idx] if t.token_ns.size else np.zeros(len(t), dtype=np.int64)
    ok_tok = t.ok & has_token
    e2e_s = (t.end_ns - t.sent_ns) / metrics.NS_PER_S
    e2e_ok = t.ok & (e2e_s > 0)
    out_tokens = t.output_tokens.astype(np.float64)
    tpot_s = (last_ns - first_ns) / np.maximum(count - 1, 1) / metrics.NS_PER_S
    missed, total = metrics.deadline_miss_counts(t.token_ns, t.token_offsets, t.sent_ns, dp_s, tbt_deadline_s)
    min_dd_s = metrics.min_tbt_deadlines(t.token_ns, t.token_offsets, t.sent_ns, dp_s, target_miss_rate)
    with np.errstate(divide="ignore", invalid="ignore"):
        return RequestMetrics(
            request_id=t.request_id,
            ok=t.ok,
            prompt_tokens=t.prompt_tokens,
            output_tokens=t.output_tokens,
            token_count=count,
            ttft_s=_nan_where((first_ns - t.sent_ns) / metrics.NS_PER_S, ok_tok),
            tpot_s=_nan_where(np.where(count >= 2, tpot_s, 0.0), t.ok),  # DESIGN: 0 if n < 2
            e2e_s=_nan_where(e2e_s, t.ok),
            normalized_e2e_s=_nan_where(e2e_s / out_tokens, e2e_ok & (out_tokens > 0)),
            output_throughput_tokens_per_s=_nan_where(out_tokens / e2e_s, e2e_ok),
            dispatch_lag_s=(t.sent_ns - t.scheduled_ns) / metrics.NS_PER_S,
            ttft_from_scheduled_s=_nan_where((first_ns - t.scheduled_ns) / metrics.NS_PER_S, ok_tok),
            e2e_from_scheduled_s=_nan_where((t.end_ns - t.scheduled_ns) / metrics.NS_PER_S, t.ok),
            missed=missed,
            total=total,
            fluidity_index=_nan_where(1.0 - metrics.miss_rates(missed, total), ok_tok),
            min_tbt_deadline_s=_nan_where(min_dd_s, ok_tok),
        )


def _error_counts(t: RecordTable) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    n_err = int((~t.ok).sum())
    by_status = {"ok": int(t.ok.sum()), "error": n_err}
    codes = Counter(str(int(c)) if c else "none" for c in t.http_status[~t.ok])
    types = Counter(str(e) if e else "unknown" for e in t.error_type[~t.ok])
    return by_status, dict(sorted(codes.items())), dict(sorted(types.items()))


def _rates(
    t: RecordTable, req: RequestMetrics, good: np.ndarray, window_s: float
) -> dict[str, float]:
    """Per-run rates (rps, tokens/s) and ratios; NaN where undefined (dropped by scalars())."""
    n = len(t)
    nan = math.nan
    span_s = (int(t.scheduled_ns.max()) - int(t.scheduled_ns.min())) / metrics.NS_PER_S if n else 0.0
    per_s = (lambda x: x / window_s) if window_s > 0 else (lambda x: nan)
    ok = t.ok
    input_tokens = float(t.prompt_tokens[ok].sum())
    output_tokens = float(t.output_tokens[ok].sum())
    service_total = int(req.total[ok].sum())
    return {
        # n planned sends span n - 1 intervals: a constant 1 rps schedule gives exactly 1.0
        "request_rate_offered_rps": (n - 1) / span_s if n >= 2 and span_s > 0 else nan,
        "request_rate_achieved_rps": per_s(float(ok.sum())),
        "goodput_rps": per_s(float(good.sum())),
        "goodput_fraction": float(good.sum()) / n if n else nan,
        "input_tokens_per_s": per_s(input_tokens),
        "output_tokens_per_s": per_s(output_tokens),
        "total_tokens_per_s": per_s(input_tokens + output_tokens),
        "error_rate": float((~ok).sum()) / n if n else nan,
        "service_miss_rate": int(req.missed[ok].sum()) / service_total if service_total else nan,
    }


def _throughput_views(
    t: RecordTable, ok_rows: np.ndarray, req: RequestMetrics, gaps_s: np.ndarray, tbt_p99_s: float | None
) -> dict[str, float]:
    tpot = req.tpot_s[np.isfinite(req.tpot_s) & (req.token_count >= 2)]  # rows with a gap
    views = metrics.throughput_views_ragged(
        tpot, t.token_ns, t.token_offsets, gaps_s, rows=ok_rows, tbt_p99_s=tbt_p99_s
    )
    keys = ("throughput_tpot_tokens_per_s", "throughput_tbt_tokens_per_s", "throughput_deadline_tokens_per_s")
    return dict(zip(keys, views))


def _distributions(req: RequestMetrics, pooled_gaps_s: np.ndarray) -> dict[tuple[str, str], dict[str, float]]:
    pooled = pooled_gaps_s
    sources = {"tbt": pooled}
    for name, unit in DISTRIBUTIONS:
        sources.setdefault(name, getattr(req, f"{name}_{unit}" if unit else name, pooled))
    return {(name, unit): metrics.distribution(sources[name]) for name, unit in DISTRIBUTIONS}


def _fluidity_tail(req: RequestMetrics) -> dict[str, float]:
    """Low tail of the fluidity-index ("99% of requests keep >= 0.9" reads p1 >= 0.9) and the
    fraction of requests for which no TBT deadline reaches the target (late first token)."""
    fluid = req.fluidity_index[np.isfinite(req.fluidity_index)]  # ok rows with a token
    nan = math.nan
    unattainable = np.isinf(req.min_tbt_deadline_s).sum()
    return {
        "fluidity_index_p1": float(np.percentile(fluid, 1)) if fluid.size else nan,
        "fluidity_index_p10": float(np.percentile(fluid, 10)) if fluid.size else nan,
        "min_tbt_deadline_unattainable_fraction": float(unattainable / fluid.size) if fluid.size else nan,
    }


def _window_s(t: RecordTable) -> float:
    """Measurement window: first planned send to last end among measured rows (s), 0 if none."""
    if not len(t):
        return 0.0
    return max(int(t.end_ns.max()) - int(t.scheduled_ns.min()), 0) / metrics.NS_PER_S


def _per_row(value: np.ndarray | float, n: int, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        return np.full(n, float(arr))
    if arr.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have one entry per table row ({n}), got {arr.shape}")
    return arr


def summarize(
    table: RecordTable,
    *,
    ttft_deadline_s: np.ndarray | float,
    tbt_deadline_s: float,
    target_miss_rate: float = 0.1,
    slo_ok: np.ndarray | None = None,
    partial: bool = False,
) -> RunSummary:
    """Summarise a run (DESIGN section 3). Warm-up rows are excluded from everything, and so are
    requests the client itself cancelled when a run was stopped (Ctrl-C, early stop): they say
    nothing about the server and are only counted (``requests_cancelled``).

    ``ttft_deadline_s`` (``Dp``) is a scalar or one value per table row; ``tbt_deadline_s`` is ``Dd``.
    Goodput counts requests meeting the SLO: ``slo_ok`` (a mask over the table's rows) if given, else
    ok and fluidity-index >= 1 - ``target_miss_rate`` (evaluated as miss rate <= target, exactly).
    Latency distributions use ok rows; dispatch lag uses every measured row.
    """
    metrics.check_target_miss_rate(target_miss_rate)
    cancelled = table.error_type == CANCELLED
    measured = ~table.warmup & ~cancelled
    dp_s = _per_row(ttft_deadline_s, len(table), "ttft_deadline_s")[measured]
    slo = None if slo_ok is None else _per_row(slo_ok, len(table), "slo_ok")[measured] > 0
    t = table.select(measured) if not measured.all() else table
    req = _request_metrics(t, dp_s, tbt_deadline_s, target_miss_rate)
    ok_rows = np.flatnonzero(t.ok)  # ok rows by index: no copy of their tokens
    meets = metrics.miss_rates(req.missed, req.total) <= target_miss_rate
    good = t.ok & (meets if slo is None else slo)
    window_s = _window_s(t)
    rates = _rates(t, req, good, window_s)
    gaps_s = metrics.pooled_gaps_s(t.token_ns, t.token_offsets, ok_rows)
    distributions = _distributions(req, gaps_s)
    tbt_p99_s = distributions[("tbt", "s")].get("p99")
    rates.update(_throughput_views(t, ok_rows, req, gaps_s, tbt_p99_s))
    del gaps_s
    rates.update(_fluidity_tail(req))
    chunk_values = chunks.chunk_values(t, among=t.ok)
    for name, unit in chunks.CHUNK_DISTRIBUTIONS:
        if name in chunk_values.values:
            distributions[(name, unit)] = metrics.distribution(chunk_values.values[name])
    rates.update(chunk_values.totals)
    curve = metrics.miss_rate_quantile_curve(t.token_ns, t.token_offsets, CURVE_TARGETS_S, rows=ok_rows)
    by_status, by_code, by_type = _error_counts(t)
    has_curve = bool(np.isfinite(curve).all())
    return RunSummary(
        partial=partial,
        counts={
            "total": len(t),
            "ok": by_status["ok"],
            "error": by_status["error"],
            "warmup": int(table.warmup.sum()),
            "cancelled": int((cancelled & ~table.warmup).sum()),
        },
        measurement_window_s=window_s,
        distributions=distributions,
        rates=rates,
        curve_target_tbt_s=CURVE_TARGETS_S.tolist() if has_curve else [],
        curve_p99_miss_rate=curve.tolist() if has_curve else [],
        errors_by_status=by_status,
        errors_by_http_status=by_code,
        errors_by_type=by_type,
        settings={
            "tbt_deadline_s": float(tbt_deadline_s),
            "ttft_deadline_s": float(ttft_deadline_s) if np.ndim(ttft_deadline_s) == 0 else "per-request",
            "target_miss_rate": float(target_miss_rate),
            "goodput_slo": "fluidity_index" if slo_ok is None else "slo_ok mask",
        },
        requests=req,
        output_checks=_output_checks(t),
    )


def _output_checks(t: RecordTable) -> dict[str, Any]:
    """Flag counts (requests per flag), flagged requests, finish reasons of the measured rows."""
    if t.flags is None:
        return {}
    return {
        "flags": chunks.flag_counts(t),
        "flagged": chunks.flagged_requests(t),
        "check_flagged": chunks.flagged_requests(t, chunks.CHECK_FLAGS),
        "finish_reasons": chunks.finish_reason_counts(t),
    }
