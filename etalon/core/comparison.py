"""A/B comparison of runs' headline metrics: bootstrap deltas with simultaneous intervals and a verdict."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from etalon.core.bootstrap import (
    DEFAULT_RESAMPLES,
    HEADLINES,
    RunSample,
    bootstrap_replicates,
    check_level,
    weighted_statistic,
)

BETTER, WORSE, SAME = "better", "worse", "no detectable difference"
# Simultaneous over every metric compared: identical services are called different on any metric
# in at most 1% of comparisons (a CI gate should rarely cry wolf).
DEFAULT_LEVEL = 0.99


@dataclass(frozen=True)
class MetricDelta:
    """One headline metric of run B against baseline A: ``delta = b - a`` and its interval.

    ``verdict`` says whether B is better, worse, or not detectably different, judged by whether the
    interval excludes 0 and the metric's direction (lower latency, higher throughput is better).
    """

    key: str
    a: float
    b: float
    delta: float
    relative: float
    low: float
    high: float
    verdict: str
    lower_is_better: bool

    def as_dict(self) -> dict[str, float | str | bool]:
        return dict(self.__dict__)


def point_estimates(sample: RunSample) -> np.ndarray:
    """The headline metrics of the sample itself (one replicate with every request once)."""
    out = np.full(len(HEADLINES), np.nan)
    for j, h in enumerate(HEADLINES):
        values = getattr(sample, h.source)
        if h.kind in ("quantile", "pooled") and values.size:
            finite = values[np.isfinite(values)]
            if finite.size:
                out[j] = float(np.quantile(finite, h.q, method="inverted_cdf"))  # type: ignore[call-overload]
    ones = np.ones((1, sample.n), dtype=np.float32)
    for j, h in enumerate(HEADLINES):
        if h.kind in ("rate", "mean") and sample.n:
            out[j] = weighted_statistic(sample, h, ones)[0]
    return out


def compare_samples(
    a: RunSample, b: RunSample, *, level: float = DEFAULT_LEVEL, replicates: int = DEFAULT_RESAMPLES, seed: int = 0,
) -> list[MetricDelta]:
    """Every headline metric of ``b`` against ``a``: ``delta = b - a`` with an interval from the
    bootstrap standard error (independent request resamples of both runs). Intervals are
    simultaneous at ``level`` over all metrics compared (Bonferroni), so identical services are
    called different on *any* metric in at most 1 - ``level`` of comparisons."""
    check_level(level)
    pa, pb = point_estimates(a), point_estimates(b)
    compared = [j for j in range(len(HEADLINES)) if math.isfinite(pa[j]) and math.isfinite(pb[j])]
    adjusted = 1 - (1 - level) / max(len(compared), 1)
    ra = bootstrap_replicates(a, replicates=replicates, seed=seed)
    rb = bootstrap_replicates(b, replicates=replicates, seed=seed + 1)
    # Normal interval on the bootstrap standard error: a Bonferroni tail (0.04% for 13 metrics
    # at 99%) is far beyond what 1000 replicates' percentiles resolve, their spread is not.
    z = NormalDist().inv_cdf(1 - (1 - adjusted) / 2)
    with np.errstate(invalid="ignore"):
        se = np.nanstd(rb - ra, axis=0, ddof=1)
    delta_all = pb - pa
    lo, hi = delta_all - z * se, delta_all + z * se
    out = []
    for j in compared:
        h = HEADLINES[j]
        delta = float(pb[j] - pa[j])
        out.append(MetricDelta(h.key, float(pa[j]), float(pb[j]), delta,
                               delta / pa[j] if pa[j] else math.nan, float(lo[j]), float(hi[j]),
                               _verdict(float(lo[j]), float(hi[j]), h.lower_is_better), h.lower_is_better))
    return out


def _verdict(low: float, high: float, lower_is_better: bool) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return SAME
    if low > 0:
        return WORSE if lower_is_better else BETTER
    if high < 0:
        return BETTER if lower_is_better else WORSE
    return SAME


__all__ = ["BETTER", "DEFAULT_LEVEL", "SAME", "WORSE", "MetricDelta", "compare_samples", "point_estimates"]
