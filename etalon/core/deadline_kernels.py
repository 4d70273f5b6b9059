"""Compiled per-request deadline maths (numba): the integer-ns recurrence of ``etalon.core.deadlines``,
one request at a time, each pass over only the tokens that can still miss.

Same contract and the same numbers as the vectorised numpy versions in ``etalon.core.deadlines``
(kept as the reference; ``tests/unit/test_deadline_kernels.py`` compares them exactly). Why compiled:
the numpy versions make ~12 full-array passes per probe and the bisection needs ~20 probes per
request, so the summary of 100k x 500 tokens spent most of its 21 s there; a loop over one
request's tokens keeps them in cache and stops as soon as its answer is known.

Record formulation (see ``deadlines._TokenSet``): with ``v_j = trel_j - j * Dd`` token j misses
exactly when ``v_j`` exceeds the running max ``M`` of 0 and the earlier ``v``, and is charged
``1 + (v_j - M) // Dd``. For a larger ``Dd`` only earlier misses can miss (and set ``M``), so after
a pass at ``Dd`` the candidates for any larger deadline shrink to that pass's misses.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from numba import njit, prange

from etalon.core.deadlines import _per_request, check_target_miss_rate, to_ns

__all__ = [
    "deadline_miss_counts",
    "gather_tokens",
    "gap_miss_rate_matrix",
    "min_tbt_deadlines",
    "miss_rate_quantile_curve",
    "pooled_gaps_s",
]

_COARSE_STEP = 5  # miss-rate curve: every request at every 5th target, pruned in between


@njit(cache=True, nogil=True)
def _scan(trel, jidx, m, dd, misses):  # pragma: no cover - compiled
    """One pass over the first ``m`` candidates at deadline ``dd``: (missed, events); the positions
    of the misses go to ``misses[:events]`` (ascending)."""
    running = 0
    missed = 0
    events = 0
    for k in range(m):
        v = trel[k] - jidx[k] * dd
        if v > running:
            missed += 1 + (v - running) // dd
            misses[events] = k
            events += 1
            running = v
    return missed, events


@njit(cache=True, nogil=True)
def _compact(trel, jidx, misses, events):  # pragma: no cover - compiled
    for k in range(events):  # misses is ascending: in-place gather is safe
        trel[k] = trel[misses[k]]
        jidx[k] = jidx[misses[k]]


@njit(cache=True, nogil=True)
def _rate(missed, events, counted):  # pragma: no cover - compiled
    total = counted - events + missed
    return missed / total if total > 0 else 0.0


@njit(cache=True, nogil=True)
def _load(token_ns, o0, o1, base, ttft_mode, trel, jidx):  # pragma: no cover - compiled
    """Candidates of one request into ``trel``/``jidx``: every token (ttft mode, relative to
    ``base = sent + Dp``) or every token after the first (relative to it). Returns (m, counted)."""
    n = o1 - o0
    if ttft_mode:
        for j in range(n):
            trel[j] = token_ns[o0 + j] - base
            jidx[j] = j
        return n, n
    m = max(n - 1, 0)
    for j in range(1, n):
        trel[j - 1] = token_ns[o0 + j] - token_ns[o0]
        jidx[j - 1] = j
    return m, m


@njit(cache=True, nogil=True)
def _miss_counts(token_ns, offsets, base, dd, ttft_mode, missed_out, total_out):  # pragma: no cover
    width = 0
    for r in range(offsets.shape[0] - 1):
        width = max(width, offsets[r + 1] - offsets[r])
    trel = np.empty(width, np.int64)
    jidx = np.empty(width, np.int64)
    misses = np.empty(width, np.int64)
    for r in range(offsets.shape[0] - 1):
        m, counted = _load(token_ns, offsets[r], offsets[r + 1], base[r], ttft_mode, trel, jidx)
        missed, events = _scan(trel, jidx, m, dd[r], misses)
        missed_out[r] = missed
        total_out[r] = counted - events + missed


@njit(cache=True, nogil=True)
def _floor_deadline(trel, m, ttft_mode):  # pragma: no cover - compiled
    """A Dd at which the rate is minimal: every gap met, a late first token charged once."""
    hi = 1
    prev = 0
    for k in range(m):
        gap = trel[k] - prev if (k > 0 or not ttft_mode) else 0
        hi = max(hi, gap)
        prev = trel[k]
    if ttft_mode and m > 0:
        hi = max(hi, trel[0] + 1)
    return hi


@njit(cache=True, nogil=True)
def _min_deadline_one(trel, jidx, m, counted, ttft_mode, target, misses):  # pragma: no cover
    """Smallest integer-ns Dd meeting ``target`` for one loaded request; -1 when unattainable."""
    hi = _floor_deadline(trel, m, ttft_mode)
    late = 1 if (ttft_mode and m > 0 and trel[0] > 0) else 0
    rate_hi = late / counted if counted > 0 else 0.0
    if rate_hi > target:
        return -1
    span = 0
    for k in range(m):
        span = max(span, trel[k])
    lo, rate_lo = 0, 1.0
    mid = span // max(counted, 1)
    step = 0
    while hi - lo > 1:
        mid = min(max(mid, lo + 1), max(hi - 1, lo + 1))
        missed, events = _scan(trel, jidx, m, mid, misses)
        rate = _rate(missed, events, counted)
        if rate <= target:
            hi, rate_hi = mid, rate
        else:
            lo, rate_lo = mid, rate
            _compact(trel, jidx, misses, events)  # only these can miss at a larger Dd
            m = events
        step += 1
        if step % 2:  # alternate interpolation (fast on smooth rates) and midpoint (log2 bound)
            frac = (rate_lo - target) / max(rate_lo - rate_hi, 1e-12)
            mid = lo + int(min(max(frac, 0.0), 1.0) * (hi - lo))
        else:
            mid = (lo + hi) // 2
    return hi


@njit(cache=True, nogil=True)
def _width(offsets, rows, k0, k1):  # pragma: no cover - compiled
    width = 1
    for k in range(k0, k1):
        width = max(width, offsets[rows[k] + 1] - offsets[rows[k]])
    return width


@njit(cache=True, nogil=True, parallel=True)
def _min_deadlines(token_ns, offsets, rows, base, ttft_mode, target, out):  # pragma: no cover
    """Min deadline of requests ``rows`` (s, inf when unattainable); chunks of rows in parallel."""
    chunk = 256
    for c in prange((rows.shape[0] + chunk - 1) // chunk):
        k0, k1 = c * chunk, min((c + 1) * chunk, rows.shape[0])
        width = _width(offsets, rows, k0, k1)
        trel = np.empty(width, np.int64)
        jidx = np.empty(width, np.int64)
        misses = np.empty(width, np.int64)
        for k in range(k0, k1):
            r = rows[k]
            m, counted = _load(token_ns, offsets[r], offsets[r + 1], base[k], ttft_mode, trel, jidx)
            hi = _min_deadline_one(trel, jidx, m, counted, ttft_mode, target, misses)
            out[k] = math.inf if hi < 0 else hi / 1000000000


@njit(cache=True, nogil=True, parallel=True)
def _gap_rates(token_ns, offsets, rows, targets_ns, out):  # pragma: no cover - compiled
    """Gaps-only miss rate of requests ``rows`` at ascending ``targets_ns``: ``out[target, row]``."""
    chunk = 256
    for ch in prange((rows.shape[0] + chunk - 1) // chunk):
        k0, k1 = ch * chunk, min((ch + 1) * chunk, rows.shape[0])
        width = _width(offsets, rows, k0, k1)
        trel = np.empty(width, np.int64)
        jidx = np.empty(width, np.int64)
        misses = np.empty(width, np.int64)
        for k in range(k0, k1):
            r = rows[k]
            m, counted = _load(token_ns, offsets[r], offsets[r + 1], 0, False, trel, jidx)
            for c in range(targets_ns.shape[0]):
                if m == 0:
                    out[c, k] = 0.0  # nothing can miss at this or any larger target
                    continue
                missed, events = _scan(trel, jidx, m, targets_ns[c], misses)
                out[c, k] = _rate(missed, events, counted)
                _compact(trel, jidx, misses, events)
                m = events


@njit(cache=True, nogil=True)
def _pooled_gaps(token_ns, offsets, rows, out):  # pragma: no cover - compiled
    """TBT gaps of requests ``rows`` in order (s): the same float ops as ``metrics.pooled_gaps_s``."""
    w = 0
    for r in rows:
        for j in range(offsets[r] + 1, offsets[r + 1]):
            out[w] = (np.float64(token_ns[j]) - np.float64(token_ns[j - 1])) / 1e9
            w += 1
    return w


@njit(cache=True, nogil=True)
def _gather(token_ns, offsets, rows, out):  # pragma: no cover - compiled
    w = 0
    for r in rows:
        for j in range(offsets[r], offsets[r + 1]):
            out[w] = token_ns[j]
            w += 1


def _i64(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.int64)


def deadline_miss_counts(
    token_ns: np.ndarray,
    token_offsets: np.ndarray,
    sent_ns: np.ndarray,
    ttft_deadline_s: np.ndarray | float | None,
    tbt_deadline_s: np.ndarray | float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per request ``(missed[], total[])`` (int64); contract of ``deadlines.deadline_miss_counts``."""
    n = token_offsets.shape[0] - 1
    dd_ns = _per_request(to_ns(tbt_deadline_s), n, np.int64)
    if n and dd_ns.min() < 1:
        raise ValueError("tbt_deadline_s must be at least 1 ns for every request")
    ttft_mode = ttft_deadline_s is not None
    base = sent_ns + _per_request(to_ns(ttft_deadline_s), n, np.int64) if ttft_mode else np.zeros(n, np.int64)
    missed = np.zeros(n, dtype=np.int64)
    total = np.zeros(n, dtype=np.int64)
    _miss_counts(_i64(token_ns), _i64(token_offsets), _i64(base), _i64(dd_ns), ttft_mode, missed, total)
    return missed, total


def min_tbt_deadlines(
    token_ns: np.ndarray,
    token_offsets: np.ndarray,
    sent_ns: np.ndarray,
    ttft_deadline_s: np.ndarray | float | None,
    target_miss_rate: float,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Per request, the smallest TBT deadline (s) meeting the target; contract of
    ``deadlines.min_tbt_deadlines`` (1e-9 when 1 ns suffices, inf when unattainable).
    ``rows``: only these requests (indices, in order), as if the table held just them."""
    check_target_miss_rate(target_miss_rate)
    n = token_offsets.shape[0] - 1
    ttft_mode = ttft_deadline_s is not None
    base = sent_ns + _per_request(to_ns(ttft_deadline_s), n, np.int64) if ttft_mode else np.zeros(n, np.int64)
    rows = np.arange(n, dtype=np.int64) if rows is None else rows
    base = base[rows]
    out = np.empty(rows.shape[0], dtype=np.float64)
    _min_deadlines(_i64(token_ns), _i64(token_offsets), rows, _i64(base), ttft_mode, float(target_miss_rate), out)
    return out


def gap_miss_rate_matrix(
    token_ns: np.ndarray, token_offsets: np.ndarray, targets_s: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Miss rate on the TBT gaps alone (first token ignored), shape (requests, targets), unitless."""
    targets_ns = to_ns(targets_s).reshape(-1)
    order = np.argsort(targets_ns, kind="stable")
    rows = np.arange(token_offsets.shape[0] - 1, dtype=np.int64)
    rates = np.empty((token_offsets.shape[0] - 1, targets_ns.shape[0]))
    rates[:, order] = _rates_at(token_ns, token_offsets, rows, targets_ns[order]).T
    return rates


def _rates_at(token_ns: np.ndarray, token_offsets: np.ndarray, rows: np.ndarray, sorted_ns: np.ndarray) -> np.ndarray:
    """Gaps-only rates of ``rows`` at ascending deadlines ``sorted_ns`` (ns): shape (targets, rows)."""
    if sorted_ns.size and sorted_ns.min() < 1:
        raise ValueError("target TBT deadlines must be at least 1 ns")
    out = np.empty((sorted_ns.shape[0], rows.shape[0]))
    _gap_rates(_i64(token_ns), _i64(token_offsets), _i64(rows), _i64(sorted_ns), out)
    return out


def miss_rate_quantile_curve(
    token_ns: np.ndarray,
    token_offsets: np.ndarray,
    targets_s: Sequence[float] | np.ndarray,
    quantile: float = 0.99,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Per target TBT (s), the ``quantile`` over requests with a gap of the gaps-only miss rate;
    NaN everywhere if none has a gap (contract of ``deadlines.miss_rate_quantile_curve``).
    ``rows``: only these requests (indices), as if the table held just them.

    Rates are computed for every request at every ``_COARSE_STEP``-th target only; in between
    (where each rate lies between its two neighbours' values, the rate being monotone in the target)
    only for requests that can reach the two order statistics np.quantile interpolates.
    """
    targets_ns = to_ns(targets_s).reshape(-1)
    curve = np.full(targets_ns.shape[0], np.nan)
    rows = np.arange(token_offsets.shape[0] - 1) if rows is None else rows
    rows = rows[np.diff(token_offsets)[rows] >= 2].astype(np.int64)
    if rows.size == 0 or targets_ns.size == 0:
        return curve
    order = np.argsort(targets_ns, kind="stable")
    sorted_ns = targets_ns[order]
    coarse = np.unique(np.append(np.arange(0, order.shape[0], _COARSE_STEP), order.shape[0] - 1))
    coarse_rates = _rates_at(token_ns, token_offsets, rows, sorted_ns[coarse])
    values = np.empty(sorted_ns.shape[0])
    values[coarse] = np.quantile(coarse_rates, quantile, axis=1)
    for c in range(coarse.shape[0] - 1):
        fine = np.arange(coarse[c] + 1, coarse[c + 1])
        if fine.size:
            values[fine] = _fine_quantiles(
                token_ns, token_offsets, rows, coarse_rates[c], coarse_rates[c + 1], sorted_ns[fine], quantile
            )
    curve[order] = values
    return curve


def _fine_quantiles(
    token_ns: np.ndarray, token_offsets: np.ndarray, rows: np.ndarray, upper: np.ndarray,
    lower: np.ndarray, sorted_ns: np.ndarray, quantile: float,
) -> np.ndarray:
    """Quantiles at targets between two computed ones (rates ``upper`` >= rate >= ``lower``).

    A request whose upper bound is below the i-th smallest lower bound stays below the i-th order
    statistic whatever its exact rate, one whose lower bound exceeds the j-th smallest upper bound
    stays above the j-th; they become sentinels -1 / 2 and the rest is computed. i and j bracket
    np.quantile's two positions with one to spare on each side (its virtual index is a float).
    """
    n = rows.shape[0]
    h = int(math.floor(quantile * (n - 1)))
    i, j = max(h - 1, 0), min(h + 2, n - 1)
    below = upper < np.partition(lower, i)[i]
    above = lower > np.partition(upper, j)[j]
    exact = _rates_at(token_ns, token_offsets, rows[~below & ~above], sorted_ns)
    fill = np.concatenate([np.full(int(below.sum()), -1.0), np.full(int(above.sum()), 2.0)])
    return np.array([np.quantile(np.concatenate([col, fill]), quantile) for col in exact])


def pooled_gaps_s(token_ns: np.ndarray, token_offsets: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """TBT gaps of requests ``rows`` (all when None), pooled in order (s); ``metrics.pooled_gaps_s``."""
    rows = np.arange(token_offsets.shape[0] - 1) if rows is None else rows
    counts = np.diff(token_offsets)[rows]
    out = np.empty(int(np.maximum(counts - 1, 0).sum()))
    _pooled_gaps(_i64(token_ns), _i64(token_offsets), _i64(rows), out)
    return out


def gather_tokens(token_ns: np.ndarray, token_offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ragged tokens of ``rows`` re-packed: ``(token_ns, token_offsets)``."""
    counts = np.diff(token_offsets)[rows]
    offsets = np.zeros(rows.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    out = np.empty(int(offsets[-1]), dtype=np.int64)
    _gather(_i64(token_ns), _i64(token_offsets), _i64(rows), out)
    return out, offsets
