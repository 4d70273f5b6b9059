"""Bootstrap confidence intervals of a run's headline metrics, resampling requests (seeded, vectorised).

A replicate draws n requests with replacement from the run's n measured requests. Per-request
quantiles come from the exact order-statistic distribution of a resample (O(replicates)); sums and
means from per-request draw counts (O(replicates x requests)). Pooled TBT quantiles (over every gap
of every request) would cost O(replicates x tokens) done directly, so one O(tokens) pass builds, per
quantile, a grid of per-request cumulative gap counts in a window around the point estimate (sized
from the request-clustered spread of the pooled CDF, widened until no replicate leaves it); each
replicate's pooled CDF on the grid is then one matrix product, its quantile interpolated on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 1000
_CHUNK_ELEMENTS = 4_000_000  # replicate rows x columns held at once (int32/int64 working arrays)


@dataclass(frozen=True)
class RunSample:
    """Per-request values of one run's measured requests (index i = request i) and its pooled gaps.

    ``ttft_s``/``e2e_s``/``fluidity_index`` are NaN where undefined (failed requests);
    ``output_tokens`` counts only ok requests (0 otherwise); ``good`` marks requests meeting the
    SLO; ``gap_s``/``gap_row`` are the pooled TBT gaps and the request each belongs to;
    ``window_s`` is the measurement window that rates divide by (held fixed across replicates).
    """

    ttft_s: np.ndarray
    e2e_s: np.ndarray
    fluidity_index: np.ndarray
    output_tokens: np.ndarray
    good: np.ndarray
    gap_s: np.ndarray
    gap_row: np.ndarray
    window_s: float

    @property
    def n(self) -> int:
        return int(self.ttft_s.shape[0])


@dataclass(frozen=True)
class Headline:
    """A headline metric: its summary key, how it is computed, and which direction is better."""

    key: str
    kind: str  # "quantile" (per request), "pooled" (TBT gaps), "mean", "rate"
    source: str  # RunSample field
    q: float = math.nan
    lower_is_better: bool = True


def _quantiles(name: str, source: str, kind: str) -> tuple[Headline, ...]:
    return tuple(Headline(f"{name}_p{p}_s", kind, source, p / 100) for p in (50, 90, 99))


HEADLINES: tuple[Headline, ...] = (
    *_quantiles("ttft", "ttft_s", "quantile"),
    *_quantiles("tbt", "gap_s", "pooled"),
    *_quantiles("e2e", "e2e_s", "quantile"),
    Headline("output_tokens_per_s", "rate", "output_tokens", lower_is_better=False),
    Headline("goodput_rps", "rate", "good", lower_is_better=False),
    Headline("fluidity_index_mean", "mean", "fluidity_index", lower_is_better=False),
    Headline("fluidity_index_p1", "quantile", "fluidity_index", 0.01, lower_is_better=False),
)
HEADLINE_KEYS = tuple(h.key for h in HEADLINES)


def resample_counts(rng: np.random.Generator, n: int, replicates: int) -> np.ndarray:
    """(replicates, n) float32: how often each request is drawn in each replicate (rows sum to n)."""
    draws = rng.integers(0, n, size=(replicates, n), dtype=np.int64)
    draws += (np.arange(replicates, dtype=np.int64) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=replicates * n).reshape(replicates, n).astype(np.float32)


def order_stat_quantiles(
    values: np.ndarray, qs: tuple[float, ...], rng: np.random.Generator, replicates: int
) -> np.ndarray:
    """(replicates, len(qs)) inverted-CDF quantiles of request resamples of ``values`` (NaN rows are
    drawn but not counted), in O(replicates) after one sort.

    Exact, not an approximation: of n draws, the number m that land on the m0 finite values is
    Binomial(n, m0/n); those draws are uniform over them, and the k-th smallest of m uniform
    indices floor(m0 U) is floor(m0 U_(k)) with U_(k) ~ Beta(k, m + 1 - k).
    """
    n = values.shape[0]
    ordered = np.sort(values[np.isfinite(values)])
    m0 = ordered.size
    out = np.full((replicates, len(qs)), np.nan)
    if m0 == 0:
        return out
    m = np.full(replicates, n) if m0 == n else rng.binomial(n, m0 / n, replicates)
    live = m > 0
    for j, q in enumerate(qs):
        k = np.clip(np.ceil(q * m - 1e-9), 1, np.maximum(m, 1))
        u = rng.beta(k[live], (m - k + 1)[live])
        out[live, j] = ordered[np.minimum((m0 * u).astype(np.int64), m0 - 1)]
    return out


@dataclass(frozen=True)
class PooledGrid:
    """Per-request cumulative gap counts at ``grid`` thresholds around one pooled quantile.

    ``counts[i, k]`` = gaps of request i that are <= ``grid[k]``; ``below[i]`` = its gaps under
    the window; ``per_row[i]`` = all its gaps. A replicate's pooled CDF at the grid is then one
    matrix product, and its quantile is interpolated between the two grid points it falls between.
    """

    q: float
    grid: np.ndarray
    counts: np.ndarray
    below: np.ndarray
    per_row: np.ndarray
    covers_all: bool


GRID_POINTS = 32
_SIGMA_REQUESTS = 20_000  # requests whose gaps size the windows (the spread scales as 1/sqrt(requests))


def row_counts(mask: np.ndarray, gap_row: np.ndarray, n: int) -> np.ndarray:
    """Per request: how many of its gaps ``mask`` marks (``gap_row`` non-decreasing), without
    copying the selected gaps (a segmented sum)."""
    starts = np.searchsorted(gap_row, np.arange(n), side="left")
    ends = np.append(starts[1:], gap_row.size)
    out = np.zeros(n, dtype=np.int64)
    nonempty = ends > starts
    if nonempty.any():  # reduceat over uint8 into int32: ~30x faster than over bool into int64
        out[nonempty] = np.add.reduceat(mask.view(np.uint8), starts[nonempty], dtype=np.int32)
    return out


def _inverted_index(p: float, total: int) -> int:
    """Sorted position of the inverted-CDF p-quantile of ``total`` values."""
    return min(max(math.ceil(p * total - 1e-9) - 1, 0), total - 1)


def pooled_sigmas(gap_s: np.ndarray, gap_row: np.ndarray, n: int, qs: list[float]) -> list[float]:
    """Request-clustered standard error of the pooled empirical CDF at each q-quantile, estimated
    on the first requests (``gap_row`` is non-decreasing) and scaled to all ``n``."""
    n_sub = min(n, _SIGMA_REQUESTS)
    end = int(np.searchsorted(gap_row, n_sub, side="left"))
    gaps, rows = gap_s[:end], gap_row[:end]
    per_row = np.bincount(rows, minlength=n_sub)
    total = max(int(per_row.sum()), 1)
    out = []
    for point in np.quantile(gaps, qs, method="inverted_cdf") if end else [0.0] * len(qs):  # type: ignore[call-overload]
        at_or_below = row_counts(gaps <= point, rows, n_sub)
        frac = at_or_below.sum() / total
        out.append(math.sqrt(float(((at_or_below - frac * per_row) ** 2).sum())) / total * math.sqrt(n_sub / n))
    return out


def pooled_grids(gap_s: np.ndarray, gap_row: np.ndarray, n: int, qs: list[float],
                 widths: list[float]) -> list[PooledGrid]:
    """One grid per q, over the window (t_lo, t_hi] of ``widths[j]`` standard errors of the pooled
    CDF either side of the quantile. O(tokens) once: one partition for every window bound, one
    bucketing of the gaps by those bounds and one per-request count of each bucket."""
    total = int(gap_s.size)
    per_row = np.bincount(gap_row, minlength=n).astype(np.float32)
    # Too few requests for a standard error (NaN): the window is the whole distribution. A zero
    # standard error (every gap alike, or one request) counts as one gap's mass, so that each
    # widening by the caller grows the window until it covers everything.
    sigmas = [max(s, 1 / total) if math.isfinite(s) else math.inf for s in pooled_sigmas(gap_s, gap_row, n, qs)]
    spans = [(q - w * s - 2 / total, q + w * s + 2 / total) for q, w, s in zip(qs, widths, sigmas)]
    kth = sorted({_inverted_index(min(max(p, 0.0), 1.0), total) for span in spans for p in span})
    parted = np.partition(gap_s, kth)
    windows = [(-math.inf if lo <= 0 else float(parted[_inverted_index(lo, total)]),
                math.inf if hi >= 1 else float(parted[_inverted_index(hi, total)]), lo <= 0 and hi >= 1)
               for lo, hi in spans]
    del parted
    bounds = np.unique([b for w in windows for b in w[:2] if math.isfinite(b)])
    # bucket j: bounds[j-1] < gap <= bounds[j] (searchsorted "left" counts the bounds below a gap)
    bucket = np.searchsorted(bounds, gap_s, side="left").astype(np.uint8)
    per_bucket = np.bincount(gap_row * (bounds.size + 1) + bucket, minlength=n * (bounds.size + 1))
    cum = np.cumsum(per_bucket.reshape(n, bounds.size + 1), axis=1)  # gaps <= bounds[j] at column j
    return [_grid(gap_s, gap_row, n, q, per_row, bucket, bounds, cum, t_lo, t_hi, covers)
            for q, (t_lo, t_hi, covers) in zip(qs, windows)]


def _grid(gap_s: np.ndarray, gap_row: np.ndarray, n: int, q: float, per_row: np.ndarray, bucket: np.ndarray,
          bounds: np.ndarray, cum: np.ndarray, t_lo: float, t_hi: float, covers_all: bool) -> PooledGrid:
    lo_j = int(np.searchsorted(bounds, t_lo)) if math.isfinite(t_lo) else -1
    hi_j = int(np.searchsorted(bounds, t_hi)) if math.isfinite(t_hi) else bounds.size
    inside = (bucket > lo_j) & (bucket <= hi_j) if lo_j >= 0 else bucket <= hi_j
    window, rows = gap_s[inside], gap_row[inside]
    below = (cum[:, lo_j] if lo_j >= 0 else np.zeros(n)).astype(np.float32)
    if window.size == 0:
        return PooledGrid(q, np.array([t_lo if math.isfinite(t_lo) else 0.0]), below[:, None], below, per_row,
                          covers_all)
    grid = np.unique(np.quantile(window, np.linspace(0, 1, GRID_POINTS)))
    bins = np.searchsorted(grid, window, side="left")
    k = grid.size
    hist = np.bincount(rows * k + bins, minlength=n * k).reshape(n, k)
    counts = (np.cumsum(hist, axis=1) + below[:, None]).astype(np.float32)
    return PooledGrid(q, grid, counts, below, per_row, covers_all)


def grid_quantile(plan: PooledGrid, weights: np.ndarray) -> tuple[np.ndarray, bool]:
    """Per weight row: the pooled q-quantile interpolated on the grid; and whether any row's
    quantile fell outside the window (then the caller widens it)."""
    total = weights @ plan.per_row
    with np.errstate(invalid="ignore", divide="ignore"):
        cdf = (weights @ plan.counts) / total[:, None]
        below = (weights @ plan.below) / total
    k = (cdf < plan.q).sum(axis=1)
    outside = bool((k >= plan.grid.size).any() or (below >= plan.q).any()) and not plan.covers_all
    hi = np.minimum(k, plan.grid.size - 1)
    lo = np.maximum(hi - 1, 0)
    rows = np.arange(weights.shape[0])
    f_lo, f_hi = cdf[rows, lo], cdf[rows, hi]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(f_hi > f_lo, (plan.q - f_lo) / (f_hi - f_lo), 1.0)
    value = plan.grid[lo] + np.clip(t, 0, 1) * (plan.grid[hi] - plan.grid[lo])
    return np.where((total > 0) & (k > 0), value, plan.grid[0]), outside


def pooled_quantile(gap_s: np.ndarray, gap_row: np.ndarray, weights: np.ndarray, q: float) -> np.ndarray:
    """The pooled q-quantile of all gaps, each weighted by its request's count, per weight row
    (``gap_row`` non-decreasing)."""
    if gap_s.size == 0:
        return np.full(weights.shape[0], np.nan)
    width = 6.0
    while True:
        values, outside = grid_quantile(pooled_grids(gap_s, gap_row, weights.shape[1], [q], [width])[0], weights)
        if not outside:
            return values
        width *= 4


def weighted_statistic(sample: RunSample, h: Headline, weights: np.ndarray) -> np.ndarray:
    values = getattr(sample, h.source).astype(np.float64)
    if h.kind == "rate":
        return (weights @ values.astype(np.float32)) / sample.window_s if sample.window_s > 0 else \
            np.full(weights.shape[0], np.nan)
    valid = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ np.where(valid, values, 0.0).astype(np.float32)) / (weights @ valid.astype(np.float32))


def bootstrap_replicates(
    sample: RunSample, *, replicates: int = DEFAULT_RESAMPLES, seed: int = 0,
    headlines: tuple[Headline, ...] = HEADLINES,
) -> np.ndarray:
    """(replicates, len(headlines)) headline metrics of ``replicates`` request resamples (seeded).

    Per-request quantiles come from order statistics (no weights needed); sums, means and pooled
    quantiles from explicit resample counts, generated in chunks."""
    if replicates < 1:
        raise ValueError(f"bootstrap replicates={replicates} must be >= 1")
    from threadpoolctl import threadpool_limits

    # Many small matrix products: BLAS threads only contend (40x slower on a busy 2-core host).
    with threadpool_limits(1):
        return _replicates(sample, replicates, seed, headlines)


def _replicates(sample: RunSample, replicates: int, seed: int, headlines: tuple[Headline, ...]) -> np.ndarray:
    out = np.full((replicates, len(headlines)), np.nan)
    n = sample.n
    if n == 0:
        return out
    order_rng = np.random.default_rng([seed, 1])
    for j, h in enumerate(headlines):
        if h.kind == "quantile":
            out[:, j] = order_stat_quantiles(getattr(sample, h.source), (h.q,), order_rng, replicates)[:, 0]
    weighted = [j for j, h in enumerate(headlines) if h.kind in ("rate", "mean", "pooled")]
    if weighted:
        out[:, weighted] = _weighted_replicates(sample, [headlines[j] for j in weighted], replicates, seed)
    return out


def _weighted_replicates(sample: RunSample, headlines: list[Headline], replicates: int, seed: int) -> np.ndarray:
    pooled = [j for j, h in enumerate(headlines) if h.kind == "pooled" and sample.gap_s.size]
    widths = {j: 6.0 for j in pooled}
    while True:
        grids = pooled_grids(sample.gap_s, sample.gap_row, sample.n, [headlines[j].q for j in pooled],
                             [widths[j] for j in pooled]) if pooled else []
        out, widen = _weighted_pass(sample, headlines, dict(zip(pooled, grids)), replicates, seed)
        if not widen:
            return out
        for j in widen:
            widths[j] *= 4


def _weighted_pass(sample: RunSample, headlines: list[Headline], plans: dict[int, PooledGrid],
                   replicates: int, seed: int) -> tuple[np.ndarray, set[int]]:
    rng = np.random.default_rng([seed, 2])  # the same replicates on every pass
    out = np.full((replicates, len(headlines)), np.nan)
    chunk = max(1, min(replicates, _CHUNK_ELEMENTS // max(sample.n, 1)))
    widen: set[int] = set()
    for start in range(0, replicates, chunk):
        rows = slice(start, min(start + chunk, replicates))
        weights = resample_counts(rng, sample.n, rows.stop - rows.start)
        for j, h in enumerate(headlines):
            if j in plans:
                out[rows, j], outside = grid_quantile(plans[j], weights)
                if outside:
                    widen.add(j)
            elif h.kind != "pooled":
                out[rows, j] = weighted_statistic(sample, h, weights)
    return out, widen


def interval(replicates: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval per column of replicate values (NaN where a column has no finite value)."""
    check_level(level)
    alpha = (1 - level) / 2
    lo = np.full(replicates.shape[1], np.nan)
    hi = np.full(replicates.shape[1], np.nan)
    for j in range(replicates.shape[1]):
        col = replicates[:, j]
        col = col[np.isfinite(col)]
        if col.size:
            lo[j], hi[j] = np.quantile(col, [alpha, 1 - alpha])
    return lo, hi


def check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"confidence level={level} must be within (0, 1)")


def confidence_intervals(
    sample: RunSample, *, level: float = 0.95, replicates: int = DEFAULT_RESAMPLES, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """``{headline key: (low, high)}`` percentile bootstrap intervals over requests."""
    check_level(level)
    reps = bootstrap_replicates(sample, replicates=replicates, seed=seed)
    lo, hi = interval(reps, level)
    return {h.key: (float(a), float(b)) for h, a, b in zip(HEADLINES, lo, hi) if math.isfinite(a)}


__all__ = [
    "DEFAULT_RESAMPLES",
    "HEADLINES",
    "HEADLINE_KEYS",
    "Headline",
    "RunSample",
    "bootstrap_replicates",
    "confidence_intervals",
    "interval",
    "order_stat_quantiles",
    "weighted_statistic",
    "pooled_quantile",
    "resample_counts",
]
