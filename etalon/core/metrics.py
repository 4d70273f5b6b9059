"""Per-request metric maths: the deadline miss rate (fluidity-index), its vectorised batch forms, stats."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

# Exactness: every deadline computation runs in integer nanoseconds (the record resolution). Seconds
# given by a caller are rounded to the nearest ns once, so a gap equal to its deadline always counts as
# met and floor((x - slack) / Dd) is never off by one from float round-off. Deadlines live on a 1 ns grid.
NS_PER_S = 1_000_000_000
_BLOCK_TOKENS = 1 << 20  # tokens per block: keeps temporaries cache-sized and memory bounded
_BLOCK_REQUESTS = 1 << 16  # bounds the segment offset used by the segmented running max
_INT_LIMIT = 1 << 62
STATS = ("mean", "min", "max", "p50", "p90", "p95", "p99", "p999")
_PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


def to_ns(values_s: Sequence[float] | np.ndarray | float) -> np.ndarray:
    """Seconds -> integer ns, rounded to nearest (int64 array)."""
    return np.rint(np.asarray(values_s, dtype=np.float64) * NS_PER_S).astype(np.int64)


def _deadline_ns(value_s: float, name: str) -> int:
    value_ns = int(to_ns(value_s))
    if not math.isfinite(value_s) or value_ns < 1:
        raise ValueError(f"{name} must be a finite deadline of at least 1 ns, got {value_s!r}")
    return value_ns


def _check_target(target_miss_rate: float) -> None:
    if not 0.0 <= target_miss_rate <= 1.0:
        raise ValueError(f"target_miss_rate must be in [0, 1], got {target_miss_rate!r}")


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
    _check_target(target_miss_rate)
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


# ---------------------------------------------------------------- ragged batch versions


@dataclass(frozen=True)
class _TokenSet:
    """Tokens of one block of requests, as the record formulation needs them.

    With ``v_j = t_j - base - j * Dd`` (``base = sent + Dp``, or ``t_0`` when the first token is
    ignored) token j misses exactly when ``v_j`` exceeds the running max ``M`` of 0 and the earlier
    ``v``, and is then charged ``1 + floor((v_j - M) / Dd)``; this equals the slack recurrence. For a
    larger ``Dd`` only earlier misses can set the running max, so a set can be shrunk to its misses.
    """

    trel_ns: np.ndarray  # t_j - base
    index: np.ndarray  # j, position of the token in its request
    seg: np.ndarray  # request index within the block, non-decreasing
    counted: np.ndarray  # per request: tokens judged (n, or n - 1 when the first is ignored)

    def subset(self, keep: np.ndarray) -> _TokenSet:
        return _TokenSet(self.trel_ns[keep], self.index[keep], self.seg[keep], self.counted)


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
        return _TokenSet(times - base_ns[seg], index, seg, counted)
    first_ns = times[np.minimum(offsets[:-1] - offsets[0], times.shape[0] - 1)]
    keep = index > 0
    return _TokenSet((times - first_ns[seg])[keep], index[keep], seg[keep], np.maximum(counts - 1, 0))


def _record_pass(ts: _TokenSet, dd_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At per-request deadline ``dd_ns``: (miss mask over ts, missed[], total[]) for the block."""
    n_req = ts.counted.shape[0]
    if ts.seg.shape[0] == 0:
        zeros = np.zeros(n_req, dtype=np.int64)
        return np.zeros(0, dtype=bool), zeros, ts.counted.copy()
    d = dd_ns[ts.seg]
    v = ts.trel_ns - ts.index * d
    # Segmented running max in one ufunc call: shift request s by s * big so maxima never leak across.
    big = int(max(ts.trel_ns.max(), 0)) + 1
    if big * n_req >= _INT_LIMIT:
        raise OverflowError(f"request durations too long for exact ns deadline maths ({big} ns)")
    shift = ts.seg * big
    running = np.maximum.accumulate(np.maximum(v, 0) + shift)
    prev = np.zeros_like(v)
    prev[1:] = running[:-1] - shift[1:]
    prev[np.flatnonzero(np.diff(ts.seg)) + 1] = 0
    prev[0] = 0
    miss = v > prev
    charged = (v[miss] - prev[miss]) // d[miss] + 1
    missed = np.bincount(ts.seg[miss], weights=charged, minlength=n_req).astype(np.int64)
    n_miss = np.bincount(ts.seg[miss], minlength=n_req)
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
    """Vectorised integer-ns bisection over all requests of a block at once; inf = unattainable."""
    hi = _floor_deadline_ns(ts, ttft_mode)
    _, missed, total = _record_pass(ts, hi)
    attainable = miss_rates(missed, total) <= target
    lo = np.ones_like(hi)
    miss, missed, total = _record_pass(ts, lo)
    done = miss_rates(missed, total) <= target
    hi[done] = 1
    active = attainable & ~done
    ts = ts.subset(miss & active[ts.seg])  # misses at lo are all that matter for any Dd >= lo
    first = True
    while active.any():
        mid = (lo + hi) // 2
        if first:  # the mean gap is usually close to the answer: one probe there prunes the set fast
            span = _segment_max(ts.trel_ns, ts.seg, hi.shape[0])
            mid = np.clip(span // np.maximum(ts.counted, 1), lo + 1, np.maximum(hi - 1, lo + 1))
            first = False
        miss, missed, total = _record_pass(ts, mid)
        ok = miss_rates(missed, total) <= target
        hi = np.where(active & ok, mid, hi)
        lo = np.where(active & ~ok, mid, lo)
        active &= hi - lo > 1
        ts = ts.subset(active[ts.seg] & (ok[ts.seg] | miss))
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
    _check_target(target_miss_rate)
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
            miss, missed, total = _record_pass(ts, np.full(r1 - r0, targets_ns[col]))
            rates[r0:r1, col] = miss_rates(missed, total)
            ts = ts.subset(miss)
    return rates


def miss_rate_quantile_curve(
    token_ns: np.ndarray,
    token_offsets: np.ndarray,
    targets_s: Sequence[float] | np.ndarray,
    quantile: float = 0.99,
) -> np.ndarray:
    """Per target TBT (s), the ``quantile`` over requests of the gaps-only miss rate (unitless).

    Requests with no gap (fewer than 2 tokens) are left out; NaN everywhere if none has a gap.
    Quantiles use linear interpolation (numpy's default).
    """
    has_gaps = np.diff(token_offsets) >= 2
    targets = np.asarray(targets_s, dtype=np.float64).reshape(-1)
    if not has_gaps.any():
        return np.full(targets.shape[0], np.nan)
    rates = gap_miss_rate_matrix(token_ns, token_offsets, targets)[has_gaps]
    return np.quantile(rates, quantile, axis=0)


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
    tpot_s: np.ndarray, token_ns: np.ndarray, token_offsets: np.ndarray
) -> tuple[float, float, float]:
    """``throughput_views`` over the ragged layout (tokens/s); ``tpot_s`` of requests with >= 2 tokens."""
    tpot_view = _inverse(float(np.mean(tpot_s))) if tpot_s.size else math.nan
    gaps_s = pooled_gaps_s(token_ns, token_offsets)
    tbt_view = _inverse(float(np.percentile(gaps_s, 99))) if gaps_s.size else math.nan
    has_gaps = np.diff(token_offsets) >= 2
    deadline_view = math.nan
    if has_gaps.any():
        zeros = np.zeros(token_offsets.shape[0] - 1, dtype=np.int64)
        deadlines = min_tbt_deadlines(token_ns, token_offsets, zeros, None, 0.1)[has_gaps]
        deadline_view = _inverse(float(np.percentile(deadlines, 99)))
    return tpot_view, tbt_view, deadline_view


def pooled_gaps_s(token_ns: np.ndarray, token_offsets: np.ndarray) -> np.ndarray:
    """All TBT gaps ``x_1..x_{n-1}`` of all requests, pooled (s, float64)."""
    if token_ns.shape[0] < 2:
        return np.zeros(0)
    gaps = np.diff(token_ns)
    inside = np.ones(gaps.shape[0], dtype=bool)
    starts = token_offsets[1:-1]
    inside[starts[(starts > 0) & (starts <= gaps.shape[0])] - 1] = False
    return gaps[inside] / NS_PER_S


def distribution(values: np.ndarray) -> dict[str, float]:
    """mean, min, max, p50, p90, p95, p99, p999 (linear-interpolated percentiles) of finite values.

    Same unit as ``values``; empty dict when there is no finite value.
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {}
    pct = np.percentile(finite, _PERCENTILES)
    stats = [float(finite.mean()), float(finite.min()), float(finite.max()), *map(float, pct)]
    return dict(zip(STATS, stats))
