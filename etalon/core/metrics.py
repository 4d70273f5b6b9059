"""Per-request metric maths: the deadline miss rate (scalar reference), curves, throughput views, stats.

The scalar functions follow DESIGN section 3 literally, in integer ns. The batch versions the run
summary uses are re-exported from ``etalon.core.deadline_batch``, which sends small inputs to the
vectorised numpy versions (``etalon.core.deadlines``) and large ones to the compiled kernels
(``etalon.core.deadline_kernels``); the two give the same numbers.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from etalon.core.deadline_batch import (
    deadline_miss_counts,
    pooled_gaps_s,
    gap_miss_rate_matrix,
    min_tbt_deadlines,
    miss_rate_quantile_curve,
)
from etalon.core.deadlines import NS_PER_S, check_target_miss_rate, miss_rates, to_ns

__all__ = [
    "NS_PER_S",
    "STATS",
    "check_target_miss_rate",
    "deadline_miss_counts",
    "deadline_miss_rate",
    "distribution",
    "fluidity_index",
    "gap_miss_rate_matrix",
    "min_tbt_deadline_to_meet",
    "min_tbt_deadlines",
    "miss_counts_ns",
    "miss_rate_curve",
    "miss_rate_quantile_curve",
    "miss_rates",
    "pooled_gaps_s",
    "ragged_from_gaps",
    "throughput_views",
    "throughput_views_ragged",
    "to_ns",
]

STATS = ("mean", "min", "max", "p50", "p90", "p95", "p99", "p999")
_PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


def _deadline_ns(value_s: float, name: str) -> int:
    value_ns = int(to_ns(value_s)) if math.isfinite(value_s) else 0
    if value_ns < 1:
        raise ValueError(f"{name} must be a finite deadline of at least 1 ns, got {value_s!r}")
    return value_ns


# ---------------------------------------------------------------- scalar reference (one request)


def miss_counts_ns(xs_ns: Sequence[int], dp_ns: int | None, dd_ns: int) -> tuple[int, int]:
    """(missed, total) of DESIGN section 3, literally, in integer ns.

    ``xs_ns[0]`` is the TTFT with deadline ``dp_ns``; the rest are gaps with deadline ``dd_ns``.
    ``dp_ns=None`` means ``xs_ns`` holds TBT gaps only (first token ignored): every entry is judged
    against ``dd_ns`` with zero initial slack.
    """
    slack = total = missed = 0
    for i, x in enumerate(int(v) for v in xs_ns):
        first = i == 0 and dp_ns is not None
        deadline = dp_ns if first else dd_ns
        if x <= deadline + slack:  # type: ignore[operator]
            slack += deadline - x  # type: ignore[operator]
            total += 1
        else:
            k = 1 + (x - slack - dp_ns) // dd_ns if first else (x - slack) // dd_ns  # type: ignore[operator]
            missed += k
            total += k
            slack = 0
    return missed, total


def _rate(missed: int, total: int) -> float:
    return missed / total if total else 0.0


def deadline_miss_rate(
    inter_token_times_s: Sequence[float], ttft_deadline_s: float | None, tbt_deadline_s: float
) -> tuple[float, int, int]:
    """Deadline miss rate of one request: ``(missed / total, missed, total)``, rate unitless in [0, 1].

    ``inter_token_times_s`` (s): ``x_0`` = TTFT, ``x_i`` (i >= 1) = gaps between tokens. Tokens are
    periodic tasks: token 0 is due ``Dp = ttft_deadline_s`` after send, each next one ``Dd =
    tbt_deadline_s`` after the previous; an early token banks slack ``D - x``; a late token resets
    slack to 0 and is charged ``k`` missed periods: ``1 + floor((x - Dp) / Dd)`` for the first token,
    ``floor((x - slack) / Dd)`` (>= 1) for the others. Zero gaps (several tokens in one chunk) are met
    and bank a full ``Dd``. Empty input: ``(0.0, 0, 0)``. ``ttft_deadline_s=None``: the list holds TBT
    gaps only (first token ignored). Computed in integer ns (inputs rounded to 1 ns).
    """
    dd_ns = _deadline_ns(tbt_deadline_s, "tbt_deadline_s")
    dp_ns = None if ttft_deadline_s is None else int(to_ns(ttft_deadline_s))
    missed, total = miss_counts_ns(to_ns(inter_token_times_s).tolist(), dp_ns, dd_ns)
    return _rate(missed, total), missed, total


def fluidity_index(
    inter_token_times_s: Sequence[float], ttft_deadline_s: float | None, tbt_deadline_s: float
) -> float:
    """Fluidity-index = ``1 - deadline_miss_rate`` (unitless, 1 = every deadline met)."""
    return 1.0 - deadline_miss_rate(inter_token_times_s, ttft_deadline_s, tbt_deadline_s)[0]


def min_tbt_deadline_to_meet(
    inter_token_times_s: Sequence[float], ttft_deadline_s: float | None, target_miss_rate: float
) -> float:
    """Smallest TBT deadline ``Dd`` (s, on the 1 ns grid) whose miss rate is <= ``target_miss_rate``.

    Exact: the miss rate is non-increasing in ``Dd`` (slack only grows, charges only shrink), so an
    integer-ns bisection between 1 ns and ``max(max gap, x_0 - Dp + 1 ns)`` (where the rate is minimal)
    finds the first step. Returns ``1e-9`` when even a 1 ns deadline meets the target (e.g. no gaps,
    all-zero gaps) and ``math.inf`` when no deadline does (a late first token is always charged one
    miss, so the rate never goes below ``1 / n``). ``ttft_deadline_s=None``: gaps only.
    """
    check_target_miss_rate(target_miss_rate)
    xs_ns = to_ns(inter_token_times_s).tolist()
    dp_ns = None if ttft_deadline_s is None else int(to_ns(ttft_deadline_s))

    def meets(dd_ns: int) -> bool:
        return _rate(*miss_counts_ns(xs_ns, dp_ns, dd_ns)) <= target_miss_rate

    hi = _rate_floor_deadline_ns(xs_ns, dp_ns)
    if not meets(hi):
        return math.inf
    if meets(1):
        return 1 / NS_PER_S
    lo = 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if meets(mid) else (mid, hi)
    return hi / NS_PER_S


def _rate_floor_deadline_ns(xs_ns: list[int], dp_ns: int | None) -> int:
    """A ``Dd`` at which the miss rate is already minimal: every gap met, a late TTFT charged once."""
    gaps = xs_ns[1:] if dp_ns is not None else xs_ns
    first_late = xs_ns[0] - dp_ns + 1 if dp_ns is not None and xs_ns else 1
    return max([1, first_late, *gaps])


def ragged_from_gaps(gap_lists_s: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Lists of TBT gaps (s) -> ragged ``(token_ns, token_offsets)`` with each first token at 0."""
    counts = np.array([len(g) + 1 if len(g) else 0 for g in gap_lists_s], dtype=np.int64)
    offsets = np.zeros(counts.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    parts = [np.concatenate(([0], np.cumsum(to_ns(g)))) for g in gap_lists_s if len(g)]
    tokens = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
    return tokens, offsets


def miss_rate_curve(
    tbt_lists_s: Sequence[Sequence[float]], target_tbt_s: Sequence[float], quantile: float = 0.99
) -> np.ndarray:
    """Per target TBT (s), the ``quantile`` over requests of the miss rate on the gaps alone.

    ``tbt_lists_s``: one list of gaps (s) per request; the first token is not part of it.
    Empty lists are left out; NaN everywhere if all are empty.
    """
    tokens, offsets = ragged_from_gaps(tbt_lists_s)
    return miss_rate_quantile_curve(tokens, offsets, target_tbt_s, quantile)


def _inverse(value: float) -> float:
    return 1.0 / value if math.isfinite(value) and value > 0 else math.nan


def throughput_views(
    tpot_s: Sequence[float] | np.ndarray, tbt_lists_s: Sequence[Sequence[float]]
) -> tuple[float, float, float]:
    """Three token-rate views (tokens/s): ``1/mean(tpot)``, ``1/p99(pooled gaps)``, deadline-based.

    Deadline-based: ``1 / p99`` over requests with gaps of the min TBT deadline meeting a 10% miss
    rate on the gaps alone. NaN where undefined (no data, or a zero denominator).
    """
    tokens, offsets = ragged_from_gaps(tbt_lists_s)
    return throughput_views_ragged(np.asarray(tpot_s, dtype=np.float64), tokens, offsets)


def throughput_views_ragged(
    tpot_s: np.ndarray, token_ns: np.ndarray, token_offsets: np.ndarray, gaps_s: np.ndarray | None = None,
    rows: np.ndarray | None = None, tbt_p99_s: float | None = None,
) -> tuple[float, float, float]:
    """``throughput_views`` over the ragged layout (tokens/s); ``tpot_s`` of requests with >= 2 tokens.

    ``gaps_s``: ``pooled_gaps_s(token_ns, token_offsets)`` if the caller already has it, and
    ``tbt_p99_s`` its 99th percentile; ``rows``: only these requests (indices) count.
    """
    tpot_view = _inverse(float(np.mean(tpot_s))) if tpot_s.size else math.nan
    rows = np.arange(token_offsets.shape[0] - 1) if rows is None else rows
    if tbt_p99_s is None:
        gaps_s = pooled_gaps_s(token_ns, token_offsets, rows) if gaps_s is None else gaps_s
        tbt_p99_s = float(np.percentile(gaps_s, 99)) if gaps_s.size else math.nan
    tbt_view = _inverse(tbt_p99_s)
    with_gaps = rows[np.diff(token_offsets)[rows] >= 2]
    deadline_view = math.nan
    if with_gaps.size:
        zeros = np.zeros(token_offsets.shape[0] - 1, dtype=np.int64)
        deadlines = min_tbt_deadlines(token_ns, token_offsets, zeros, None, 0.1, rows=with_gaps)
        deadline_view = _inverse(float(np.percentile(deadlines, 99)))
    return tpot_view, tbt_view, deadline_view


def distribution(values: np.ndarray) -> dict[str, float]:
    """mean, min, max, p50, p90, p95, p99, p999 (linear-interpolated percentiles) of finite values.

    Same unit as ``values``; empty dict when there is no finite value.
    """
    mask = np.isfinite(values)
    finite = values if mask.all() else values[mask]
    if finite.size == 0:
        return {}
    pct = np.percentile(finite, _PERCENTILES)
    stats = [float(finite.mean()), float(finite.min()), float(finite.max()), *map(float, pct)]
    return dict(zip(STATS, stats))
