"""Vectorised deadline maths over the ragged token layout of a RecordTable (no per-token Python loop).

Exactness: every computation runs in integer nanoseconds (the record resolution). Seconds given by a
caller are rounded to the nearest ns once, so a gap equal to its deadline always counts as met and
floor((x - slack) / Dd) is never off by one from float round-off. Deadlines live on a 1 ns grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

NS_PER_S = 1_000_000_000
_BLOCK_TOKENS = 1 << 18  # tokens per block: keeps temporaries cache-sized and memory bounded
_BLOCK_REQUESTS = 1 << 16  # bounds the segment offset used by the segmented running max
_INT_LIMIT = 1 << 62
_COARSE_STEP = 5  # miss-rate curve: full evaluation at every 5th target, pruned in between

def to_ns(values_s: Sequence[float] | np.ndarray | float) -> np.ndarray:
    """Seconds -> integer ns, rounded to nearest (int64 array)."""
    return np.rint(np.asarray(values_s, dtype=np.float64) * NS_PER_S).astype(np.int64)


def check_target_miss_rate(target_miss_rate: float) -> None:
    """Raise ValueError naming ``target_miss_rate`` unless it is in [0, 1]."""
    if not 0.0 <= target_miss_rate <= 1.0:
        raise ValueError(f"target_miss_rate must be in [0, 1], got {target_miss_rate!r}")


@dataclass(frozen=True)
class _TokenSet:
    """Tokens of one block of requests, as the record formulation needs them.

    With ``v_j = t_j - base - j * Dd`` (``base = sent + Dp``, or ``t_0`` when the first token is
    ignored) token j misses exactly when ``v_j`` exceeds the running max ``M`` of 0 and the earlier
    ``v``, and is then charged ``1 + floor((v_j - M) / Dd)``; this equals the slack recurrence. For a
    larger ``Dd`` only earlier misses can set the running max, so a set can be shrunk to its misses.
    """

    trel_ns: np.ndarray  # t_j - base (int64)
    index: np.ndarray  # j, position of the token in its request (int32)
    seg: np.ndarray  # request index within the block, non-decreasing (int32)
    counted: np.ndarray  # per request: tokens judged (n, or n - 1 when the first is ignored)
    big: int  # > max(trel_ns, 0): lifting request s by s * big keeps running maxima apart
    starts: np.ndarray  # where each request's tokens start in the set (len = requests + 1)

    @classmethod
    def build(cls, trel_ns: np.ndarray, index: np.ndarray, seg: np.ndarray, counted: np.ndarray) -> _TokenSet:
        big = int(max(trel_ns.max(initial=0), 0)) + 1
        if big * (counted.shape[0] + 1) >= _INT_LIMIT:
            raise OverflowError(f"request durations too long for exact ns deadline maths ({big} ns)")
        seg32 = seg.astype(np.int32)
        return cls(trel_ns, index.astype(np.int32), seg32, counted, big, _starts(seg32, counted))

    def subset(self, keep: np.ndarray) -> _TokenSet:
        if keep.shape[0] and np.count_nonzero(keep) > 0.85 * keep.shape[0]:
            return self  # a superset stays valid; compressing would cost more than it saves
        idx = np.flatnonzero(keep)
        seg = self.seg[idx]
        return _TokenSet(
            self.trel_ns[idx], self.index[idx], seg, self.counted, self.big, _starts(seg, self.counted)
        )

    def segment_sums(self, values: np.ndarray) -> np.ndarray:
        """Per request sum of ``values`` (one per token of the set); seg is sorted."""
        starts = self.starts
        nonempty = starts[:-1] < starts[1:]
        out = np.zeros(self.counted.shape[0], dtype=np.int64)
        out[nonempty] = np.add.reduceat(values, starts[:-1][nonempty])
        return out


def _starts(seg: np.ndarray, counted: np.ndarray) -> np.ndarray:
    return np.searchsorted(seg, np.arange(counted.shape[0] + 1, dtype=seg.dtype))


def _blocks(token_offsets: np.ndarray) -> Iterator[tuple[int, int]]:
    n = token_offsets.shape[0] - 1
    r0 = 0
    while r0 < n:
        limit = token_offsets[r0] + _BLOCK_TOKENS
        r1 = int(np.searchsorted(token_offsets, limit, side="right")) - 1
        r1 = min(max(r1, r0 + 1), r0 + _BLOCK_REQUESTS, n)
        yield r0, r1
        r0 = r1


def _token_set(
    token_ns: np.ndarray, token_offsets: np.ndarray, r0: int, r1: int, base_ns: np.ndarray | None
) -> _TokenSet:
    """Block ``[r0, r1)``; ``base_ns`` per request (``sent + Dp``) or None to ignore the first token."""
    ttft_mode = base_ns is not None
    offsets = token_offsets[r0 : r1 + 1]
    counts = np.diff(offsets)
    seg = np.repeat(np.arange(r1 - r0, dtype=np.int64), counts)
    index = np.arange(offsets[-1] - offsets[0], dtype=np.int64) - np.repeat(offsets[:-1] - offsets[0], counts)
    times = token_ns[offsets[0] : offsets[-1]]
    if base_ns is not None or times.shape[0] == 0:
        base_ns = np.zeros(r1 - r0, dtype=np.int64) if base_ns is None else base_ns
        counted = counts if ttft_mode else np.maximum(counts - 1, 0)
        return _TokenSet.build(times - base_ns[seg], index, seg, counted)
    first_ns = times[np.minimum(offsets[:-1] - offsets[0], times.shape[0] - 1)]
    keep = index > 0
    return _TokenSet.build(
        (times - first_ns[seg])[keep], index[keep], seg[keep], np.maximum(counts - 1, 0)
    )


def _record_pass(ts: _TokenSet, dd_ns: np.ndarray | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At deadline ``dd_ns`` (scalar or per request): (miss mask over ts, missed[], total[]) of the block."""
    if ts.seg.shape[0] == 0:
        n_req = ts.counted.shape[0]
        return np.zeros(0, dtype=bool), np.zeros(n_req, dtype=np.int64), ts.counted.copy()
    d = dd_ns[ts.seg] if isinstance(dd_ns, np.ndarray) else np.int64(dd_ns)
    v = np.multiply(ts.index, d, dtype=np.int64)  # int32 * int64 -> int64: j * Dd overflows int32
    np.subtract(ts.trel_ns, v, out=v)
    # Segmented running max in one ufunc call: request s is lifted by s * big so maxima never leak
    # across requests; one request's lifted running max minus the next one's lift is < 0, clipped to
    # the anchor 0, so no boundary mask is needed.
    shift = ts.seg * np.int64(ts.big)
    running = np.maximum(v, 0)
    running += shift
    np.maximum.accumulate(running, out=running)
    excess = np.empty_like(v)
    excess[0] = 0
    np.subtract(running[:-1], shift[1:], out=excess[1:])
    np.maximum(excess, 0, out=excess)
    np.subtract(v, excess, out=excess)  # v_j minus the running max before j
    np.maximum(excess, 0, out=excess)  # > 0 exactly at misses
    miss = excess > 0
    np.floor_divide(excess, d, out=excess)  # charge of a miss is this + 1; 0 elsewhere
    n_miss = ts.segment_sums(miss.view(np.int8).astype(np.int64))
    missed = ts.segment_sums(excess) + n_miss
    return miss, missed, ts.counted - n_miss + missed


def _per_request(value: np.ndarray | float, n: int, dtype: type) -> np.ndarray:
    arr = np.asarray(value)
    return np.full(n, arr, dtype=dtype) if arr.ndim == 0 else arr.astype(dtype, copy=False)


def deadline_miss_counts(
    token_ns: np.ndarray,
    token_offsets: np.ndarray,
    sent_ns: np.ndarray,
    ttft_deadline_s: np.ndarray | float | None,
    tbt_deadline_s: np.ndarray | float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per request ``(missed[], total[])`` (int64) of the deadline recurrence, vectorised.

    Ragged layout of ``RecordTable``: tokens of request i are ``token_ns[token_offsets[i]:
    token_offsets[i+1]]`` (ns), ``x_0 = token_ns[first] - sent_ns[i]``. Deadlines in s, scalar or one
    per request; ``ttft_deadline_s=None`` ignores the first token (gaps only). Same numbers as
    ``deadline_miss_rate`` per request; O(tokens) numpy work, no per-token Python loop.
    """
    n = token_offsets.shape[0] - 1
    dd_ns = _per_request(to_ns(tbt_deadline_s), n, np.int64)
    if n and dd_ns.min() < 1:
        raise ValueError("tbt_deadline_s must be at least 1 ns for every request")
    base = None if ttft_deadline_s is None else sent_ns + _per_request(to_ns(ttft_deadline_s), n, np.int64)
    missed = np.zeros(n, dtype=np.int64)
    total = np.zeros(n, dtype=np.int64)
    for r0, r1 in _blocks(token_offsets):
        ts = _token_set(token_ns, token_offsets, r0, r1, None if base is None else base[r0:r1])
        _, missed[r0:r1], total[r0:r1] = _record_pass(ts, dd_ns[r0:r1])
    return missed, total


def miss_rates(missed: np.ndarray, total: np.ndarray) -> np.ndarray:
    """``missed / total`` elementwise, 0 where ``total == 0`` (unitless)."""
    return np.divide(missed, total, out=np.zeros(missed.shape[0]), where=total > 0)


def _segment_max(values: np.ndarray, seg: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.int64)
    np.maximum.at(out, seg, values)
    return out


def _floor_deadline_ns(ts: _TokenSet, ttft_mode: bool) -> np.ndarray:
    """Per request, a ``Dd`` at which the miss rate is minimal (see ``_rate_floor_deadline_ns``)."""
    n = ts.counted.shape[0]
    same = np.zeros(ts.seg.shape[0], dtype=bool)
    same[1:] = ts.seg[1:] == ts.seg[:-1]
    gaps = np.where(same, np.diff(ts.trel_ns, prepend=0), 0)
    hi = np.maximum(_segment_max(gaps, ts.seg, n), 1)
    if ttft_mode:
        hi = np.maximum(hi, _segment_max(np.where(same, 0, ts.trel_ns + 1), ts.seg, n))
    else:  # the first kept gap is measured from the ignored first token, i.e. trel itself
        hi = np.maximum(hi, _segment_max(np.where(same, 0, ts.trel_ns), ts.seg, n))
    return hi


def _block_min_deadlines(ts: _TokenSet, ttft_mode: bool, target: float) -> np.ndarray:
    """Per-request smallest integer-ns ``Dd`` meeting ``target``, all requests of a block at once.

    Bracket ``lo`` (misses) < answer <= ``hi`` (meets), narrowed by probes that alternate between
    linear interpolation of the miss rate (fast when the rate is smooth in ``Dd``) and the midpoint
    (guarantees log2 convergence). The set shrinks to the misses at ``lo`` as ``lo`` grows.
    """
    hi = _floor_deadline_ns(ts, ttft_mode)
    # At hi every gap is met and a late first token is charged once: the lowest rate there is.
    late = np.zeros(hi.shape[0], dtype=np.int64)
    if ttft_mode and ts.seg.shape[0]:
        late[ts.seg[ts.index == 0]] = ts.trel_ns[ts.index == 0] > 0
    rate_hi = miss_rates(late, ts.counted)
    attainable = rate_hi <= target
    # lo = 0 is never probed (Dd must be >= 1 ns); bisection reaches hi = 1 when 1 ns suffices.
    lo = np.zeros_like(hi)
    rate_lo = np.ones(hi.shape[0])
    active = attainable & (hi > 1)
    # First probe at the mean token interval: usually close to the answer.
    span = _segment_max(ts.trel_ns, ts.seg, hi.shape[0])
    mid = span // np.maximum(ts.counted, 1)
    step = 0
    while active.any():
        mid = np.clip(mid, lo + 1, np.maximum(hi - 1, lo + 1))
        miss, missed, total = _record_pass(ts, mid)
        rate = miss_rates(missed, total)
        ok = rate <= target
        hi, rate_hi = np.where(active & ok, mid, hi), np.where(active & ok, rate, rate_hi)
        lo, rate_lo = np.where(active & ~ok, mid, lo), np.where(active & ~ok, rate, rate_lo)
        active &= hi - lo > 1
        ts = ts.subset(active[ts.seg] & (ok[ts.seg] | miss))
        step += 1
        if step % 2:
            frac = (rate_lo - target) / np.maximum(rate_lo - rate_hi, 1e-12)
            frac = np.clip(np.nan_to_num(frac), 0.0, 1.0)  # inactive requests may hold anything
            mid = lo + (frac * (hi - lo)).astype(np.int64)
        else:
            mid = (lo + hi) // 2
    out = hi / NS_PER_S
    out[~attainable] = math.inf
    return out


def min_tbt_deadlines(
    token_ns: np.ndarray,
    token_offsets: np.ndarray,
    sent_ns: np.ndarray,
    ttft_deadline_s: np.ndarray | float | None,
    target_miss_rate: float,
) -> np.ndarray:
    """Per request, ``min_tbt_deadline_to_meet`` (s) over the ragged layout, vectorised.

    Same contract as the scalar function (1e-9 when 1 ns suffices, inf when unattainable);
    ``ttft_deadline_s=None`` ignores the first token. Cost: a few full numpy passes, then bisection
    passes over only the tokens that still miss at the lower bracket.
    """
    check_target_miss_rate(target_miss_rate)
    n = token_offsets.shape[0] - 1
    base = None if ttft_deadline_s is None else sent_ns + _per_request(to_ns(ttft_deadline_s), n, np.int64)
    out = np.empty(n, dtype=np.float64)
    for r0, r1 in _blocks(token_offsets):
        ts = _token_set(token_ns, token_offsets, r0, r1, None if base is None else base[r0:r1])
        out[r0:r1] = _block_min_deadlines(ts, base is not None, target_miss_rate)
    return out


def gap_miss_rate_matrix(
    token_ns: np.ndarray, token_offsets: np.ndarray, targets_s: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Miss rate on the TBT gaps alone (first token ignored), shape (requests, targets), unitless."""
    targets_ns = to_ns(targets_s).reshape(-1)
    if targets_ns.size and targets_ns.min() < 1:
        raise ValueError("target TBT deadlines must be at least 1 ns")
    order = np.argsort(targets_ns, kind="stable")
    n = token_offsets.shape[0] - 1
    rates = np.zeros((n, targets_ns.shape[0]))
    for r0, r1 in _blocks(token_offsets):
        ts = _token_set(token_ns, token_offsets, r0, r1, None)
        for col in order:  # ascending deadlines: each set shrinks to the previous one's misses
            miss, missed, total = _record_pass(ts, int(targets_ns[col]))
            rates[r0:r1, col] = miss_rates(missed, total)
            ts = ts.subset(miss)
    return rates


def _select_ragged(token_ns: np.ndarray, token_offsets: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    counts = np.diff(token_offsets)[idx]
    offsets = np.zeros(idx.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    gather = np.repeat(token_offsets[idx] - offsets[:-1], counts) + np.arange(int(offsets[-1]))
    return token_ns[gather], offsets


def _pruned_quantiles(
    token_ns: np.ndarray, token_offsets: np.ndarray, upper: np.ndarray, lower: np.ndarray,
    fill: np.ndarray, targets_ns: np.ndarray, quantile: float,
) -> np.ndarray:
    """Exact quantiles at ascending targets lying between two targets that bound each rate.

    Only the order statistics at positions floor(h) and floor(h) + 1 (h = q (n - 1)) matter. A request
    whose upper bound is below the floor(h)-th smallest lower bound sits below them whatever its
    exact rate; one whose lower bound exceeds the next upper order statistic sits above. Those become
    sentinels (-1 / 2, in ``fill``) that leave np.quantile reading the same two values; the rest is
    evaluated at the middle target, which splits the range into two tighter ones (recursively).
    """
    if targets_ns.size == 0:
        return np.zeros(0)
    n = upper.shape[0] + fill.shape[0]
    i = int(math.floor(quantile * (n - 1)))
    low_stat = np.partition(np.concatenate([lower, fill]), i)[i]
    j = min(i + 1, n - 1)
    high_stat = np.partition(np.concatenate([upper, fill]), j)[j]
    below, above = upper < low_stat, lower > high_stat
    fill = np.concatenate([fill, np.full(int(below.sum()), -1.0), np.full(int(above.sum()), 2.0)])
    keep = np.flatnonzero(~below & ~above)
    if keep.shape[0] < upper.shape[0]:
        token_ns, token_offsets = _select_ragged(token_ns, token_offsets, keep)
        upper, lower = upper[keep], lower[keep]
    if keep.shape[0] > 0.5 * n:  # pruning is not biting: one ascending sweep beats recursion here
        exact_all = gap_miss_rate_matrix(token_ns, token_offsets, targets_ns / NS_PER_S)
        return np.array([np.quantile(np.concatenate([col, fill]), quantile) for col in exact_all.T])
    mid = targets_ns.shape[0] // 2
    exact = gap_miss_rate_matrix(token_ns, token_offsets, targets_ns[mid : mid + 1] / NS_PER_S)[:, 0]
    value = np.quantile(np.concatenate([exact, fill]), quantile)
    left = _pruned_quantiles(token_ns, token_offsets, upper, exact, fill, targets_ns[:mid], quantile)
    right = _pruned_quantiles(token_ns, token_offsets, exact, lower, fill, targets_ns[mid + 1 :], quantile)
    return np.concatenate([left, [value], right])


def miss_rate_quantile_curve(
    token_ns: np.ndarray,
    token_offsets: np.ndarray,
    targets_s: Sequence[float] | np.ndarray,
    quantile: float = 0.99,
) -> np.ndarray:
    """Per target TBT (s), the ``quantile`` over requests of the gaps-only miss rate (unitless).

    Requests with no gap (fewer than 2 tokens) are left out; NaN everywhere if none has a gap.
    Quantiles use linear interpolation (numpy's default), exactly as ``np.quantile`` over the full
    per-request rates; rates are computed in full at every ``_COARSE_STEP``-th target only, and in
    between just for the requests that can reach the quantile (the rate is monotone in the target).
    """
    targets_ns = to_ns(targets_s).reshape(-1)
    curve = np.full(targets_ns.shape[0], np.nan)
    has_gaps = np.flatnonzero(np.diff(token_offsets) >= 2)
    if has_gaps.size == 0 or targets_ns.size == 0:
        return curve
    if has_gaps.shape[0] < token_offsets.shape[0] - 1:
        token_ns, token_offsets = _select_ragged(token_ns, token_offsets, has_gaps)
    order = np.argsort(targets_ns, kind="stable")
    coarse = np.unique(np.append(np.arange(0, order.shape[0], _COARSE_STEP), order.shape[0] - 1))
    coarse_rates = gap_miss_rate_matrix(token_ns, token_offsets, targets_ns[order[coarse]] / NS_PER_S)
    curve[order[coarse]] = np.quantile(coarse_rates, quantile, axis=0)
    for c in range(coarse.shape[0] - 1):
        fine = order[coarse[c] + 1 : coarse[c + 1]]
        if fine.size:
            upper, lower = coarse_rates[:, c], coarse_rates[:, c + 1]
            curve[fine] = _pruned_quantiles(
                token_ns, token_offsets, upper, lower, np.zeros(0), targets_ns[fine], quantile
            )
    return curve


def pooled_gaps_s(token_ns: np.ndarray, token_offsets: np.ndarray) -> np.ndarray:
    """All TBT gaps ``x_1..x_{n-1}`` of all requests, pooled (s, float64)."""
    if token_ns.shape[0] < 2:
        return np.zeros(0)
    gaps_s = np.subtract(token_ns[1:], token_ns[:-1], dtype=np.float64)  # exact below 2**53 ns
    inside = np.ones(gaps_s.shape[0], dtype=bool)
    starts = token_offsets[1:-1]
    inside[starts[(starts > 0) & (starts <= gaps_s.shape[0])] - 1] = False
    if not inside.all():
        gaps_s = gaps_s[inside]
    gaps_s /= NS_PER_S
    return gaps_s
