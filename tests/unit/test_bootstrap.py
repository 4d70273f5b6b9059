"""Bootstrap intervals and A/B comparison over requests: exactness of the fast paths, coverage, verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from etalon.core.bootstrap import (
    HEADLINE_KEYS,
    RunSample,
    confidence_intervals,
    order_stat_quantiles,
    pooled_quantile,
    resample_counts,
)
from etalon.core.comparison import BETTER, SAME, WORSE, compare_samples, point_estimates


def synthetic_run(seed: int, requests: int = 200, tbt_s: float = 0.02) -> RunSample:
    """A run of ``requests`` with their own decode speeds, lognormal TTFT, 20..60 tokens each."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(20, 61, requests)
    gap_row = np.repeat(np.arange(requests), tokens - 1)
    base = rng.lognormal(np.log(tbt_s), 0.2, requests)
    gap_s = base[gap_row] * rng.lognormal(0.0, 0.1, gap_row.size)
    ttft_s = rng.lognormal(np.log(0.2), 0.4, requests)
    e2e_s = ttft_s + np.bincount(gap_row, weights=gap_s, minlength=requests)
    return RunSample(ttft_s=ttft_s, e2e_s=e2e_s, fluidity_index=np.clip(rng.normal(0.95, 0.04, requests), 0, 1),
                     output_tokens=tokens, good=rng.random(requests) < 0.9, gap_s=gap_s, gap_row=gap_row,
                     window_s=requests / 4.0)


def test_resample_counts_rows_sum_to_n_and_are_seeded() -> None:
    a = resample_counts(np.random.default_rng(5), 50, 7)
    b = resample_counts(np.random.default_rng(5), 50, 7)
    assert a.shape == (7, 50) and np.array_equal(a, b)
    assert (a.sum(axis=1) == 50).all()


def test_order_statistic_quantiles_match_explicit_resampling() -> None:
    """The O(replicates) Beta order-statistic draw has the distribution of resample-then-quantile."""
    rng = np.random.default_rng(0)
    values = rng.lognormal(0, 1, 400)
    values[::10] = np.nan  # failed requests: drawn, not counted
    fast = order_stat_quantiles(values, (0.5, 0.99), np.random.default_rng(1), 4000)
    idx = np.random.default_rng(2).integers(0, values.size, (4000, values.size))
    drawn = values[idx]
    slow = np.stack([[np.quantile(row[np.isfinite(row)], q, method="inverted_cdf") for q in (0.5, 0.99)]
                     for row in drawn])
    for j in range(2):
        assert np.mean(fast[:, j]) == pytest.approx(np.mean(slow[:, j]), rel=0.01)
        assert np.std(fast[:, j]) == pytest.approx(np.std(slow[:, j]), rel=0.1)
        assert set(np.unique(fast[:, j])) <= set(values[np.isfinite(values)])


def test_pooled_quantile_matches_direct_resampled_quantile() -> None:
    s = synthetic_run(3, requests=300)
    weights = resample_counts(np.random.default_rng(4), s.n, 6)
    for q in (0.5, 0.9, 0.99):
        fast = pooled_quantile(s.gap_s, s.gap_row, weights, q)
        for b in range(6):
            direct = np.quantile(np.repeat(s.gap_s, weights[b].astype(np.int64)[s.gap_row]), q, method="inverted_cdf")
            assert fast[b] == pytest.approx(direct, rel=5e-3)


def test_intervals_are_seeded_and_contain_the_point_estimate() -> None:
    s = synthetic_run(7)
    a = confidence_intervals(s, level=0.9, replicates=300, seed=11)
    b = confidence_intervals(s, level=0.9, replicates=300, seed=11)
    assert a == b and set(a) == set(HEADLINE_KEYS)
    point = dict(zip(HEADLINE_KEYS, point_estimates(s)))
    for key, (lo, hi) in a.items():
        assert lo <= point[key] <= hi, key
    # a rate over a fixed window: tokens / window, the interval brackets it
    assert point["output_tokens_per_s"] == pytest.approx(s.output_tokens.sum() / s.window_s)


def test_a_known_tbt_slowdown_is_worse_and_its_interval_excludes_zero() -> None:
    rows = {r.key: r for r in compare_samples(synthetic_run(1, 400), synthetic_run(2, 400, tbt_s=0.022),
                                              replicates=400, seed=0)}
    for key in ("tbt_p50_s", "tbt_p90_s"):
        assert rows[key].verdict == WORSE and rows[key].low > 0, rows[key]
    assert rows["tbt_p50_s"].relative == pytest.approx(0.1, abs=0.04)
    assert rows["ttft_p50_s"].verdict == SAME


def test_identical_configs_get_no_detectable_difference_in_95_of_100_comparisons() -> None:
    clean = 0
    for i in range(100):
        rows = compare_samples(synthetic_run(1000 + 2 * i), synthetic_run(1001 + 2 * i), replicates=300, seed=i)
        assert len(rows) == len(HEADLINE_KEYS)
        clean += all(r.verdict == SAME for r in rows)
    assert clean >= 95, clean


def test_verdict_direction_follows_the_metric() -> None:
    a, b = synthetic_run(1, 400), synthetic_run(2, 400)
    faster = RunSample(**{**b.__dict__, "output_tokens": b.output_tokens * 2})
    rows = {r.key: r for r in compare_samples(a, faster, replicates=300)}
    assert rows["output_tokens_per_s"].verdict == BETTER


def test_pooled_grids_without_a_standard_error_cover_the_whole_distribution(monkeypatch) -> None:
    # A 2-request benchmark had no standard error of the pooled CDF (NaN) and failed with
    # int(NaN) after its load ran; without one the grid window is the whole distribution.
    from etalon.core import bootstrap

    monkeypatch.setattr(bootstrap, "pooled_sigmas", lambda *args: [float("nan"), float("nan")])
    gap_s = np.array([0.02, 0.03, 0.025], dtype=np.float64)
    grids = bootstrap.pooled_grids(gap_s, np.array([0, 0, 1]), 2, [0.5, 0.99], [3.0, 3.0])
    assert len(grids) == 2


def test_two_requests_with_identical_gaps_give_a_point_interval() -> None:
    # Two requests whose gaps are alike have a zero standard error of the pooled CDF: the grid
    # window used to widen by 4x per pass until 0 * inf made it NaN (int(NaN) after a 2-request run).
    gaps = np.array([0.020, 0.021, 0.019, 0.020, 0.022])
    sample = RunSample(ttft_s=np.array([0.05, 0.06]), e2e_s=np.array([0.15, 0.16]),
                       fluidity_index=np.array([1.0, 1.0]), output_tokens=np.array([6, 6]),
                       good=np.array([True, True]), gap_s=np.concatenate([gaps, gaps]),
                       gap_row=np.repeat(np.arange(2), gaps.size), window_s=1.0)
    cis = confidence_intervals(sample, replicates=200, seed=3)
    lo, hi = cis["tbt_p99_s"]
    assert lo == pytest.approx(0.022, rel=5e-3) and hi == pytest.approx(0.022, rel=5e-3)  # every resample has the same gaps
    lo, hi = cis["tbt_p50_s"]
    assert lo == pytest.approx(0.020, rel=5e-3) and hi == pytest.approx(0.020, rel=5e-3)
