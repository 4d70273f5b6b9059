"""Hand-computed cases for the deadline miss rate, min TBT deadline, miss-rate curve and throughput views."""

from __future__ import annotations

import math

import numpy as np
import pytest

from etalon.metrics import (
    deadline_miss_rate,
    distribution,
    fluidity_index,
    min_tbt_deadline_to_meet,
    miss_rate_curve,
    pooled_gaps_s,
    throughput_views,
)


@pytest.mark.parametrize(
    ("xs", "dp", "dd", "expected"),
    [
        ([], 1.0, 0.1, (0.0, 0, 0)),  # empty input
        ([0.5], 1.0, 0.1, (0.0, 0, 1)),  # one token, on time
        ([1.0], 1.0, 0.1, (0.0, 0, 1)),  # exactly at the TTFT deadline: met
        ([1.25], 1.0, 0.1, (1.0, 3, 3)),  # late first token: 1 + floor(0.25 / 0.1) = 3 periods
        ([1.3], 1.0, 0.1, (1.0, 4, 4)),  # 1 + floor(0.3 / 0.1): 0.3/0.1 is 2.999... in floats, 3 in ns
        ([0.5, 0.0, 0.0, 0.0], 1.0, 0.1, (0.0, 0, 4)),  # zero gaps: one chunk with 4 tokens
        ([0.2, 0.15, 0.15], 0.3, 0.1, (0.0, 0, 3)),  # banked slack 0.1, then 0.05, last gap exactly meets
        ([0.2, 0.35, 0.05], 0.3, 0.1, (0.5, 2, 4)),  # floor((0.35 - 0.1) / 0.1) = 2, slack reset
        ([1.25, 0.05, 0.3], 1.0, 0.1, (5 / 6, 5, 6)),  # late TTFT (3), early gap banks 0.05, late gap (2)
        ([0.1, 0.25], None, 0.1, (2 / 3, 2, 3)),  # gaps only: 0.1 met, floor(0.25 / 0.1) = 2
        ([0.0, 0.0], None, 0.1, (0.0, 0, 2)),
    ],
)
def test_deadline_miss_rate_hand_cases(xs, dp, dd, expected):
    rate, missed, total = deadline_miss_rate(xs, dp, dd)
    assert (missed, total) == expected[1:]
    assert rate == pytest.approx(expected[0], abs=1e-15)


def test_fluidity_index_is_one_minus_miss_rate():
    assert fluidity_index([1.25, 0.05, 0.3], 1.0, 0.1) == pytest.approx(1 / 6)
    assert fluidity_index([], 1.0, 0.1) == 1.0


@pytest.mark.parametrize("bad", [0.0, -0.1, 1e-10, math.nan, math.inf])
def test_tbt_deadline_must_be_positive(bad):
    with pytest.raises(ValueError, match="tbt_deadline_s"):
        deadline_miss_rate([0.1, 0.1], 1.0, bad)


@pytest.mark.parametrize(
    ("xs", "dp", "target", "expected_s"),
    [
        # all met needs x1 <= D and 0.25 <= D + (D - 0.1): D >= 0.175
        ([0.1, 0.25], None, 0.0, 0.175),
        # one charged period allowed: floor(3.5e8 / D) - 1 <= 1  <=>  D > 3.5e8 / 3 ns
        ([0.1, 0.25], None, 0.5, 0.116666667),
        # late first token: only k0 = 1 + floor(0.5 / D) = 1, i.e. D > 0.5 s, reaches rate 1/2
        ([1.5, 0.01], 1.0, 0.5, 0.500000001),
        # three tokens, none may miss: D >= 0.08 / 3 -> ceil to the ns grid
        ([0.01, 0.02, 0.05], None, 0.1, 0.026666667),
        # TTFT slack (0.3 s) covers the gap for any deadline; trivial and empty cases: 1 ns
        ([0.2, 0.3], 0.5, 0.0, 1e-9),
        ([], 1.0, 0.0, 1e-9),
        ([0.5], 1.0, 0.0, 1e-9),
        ([0.5, 0.0, 0.0], 1.0, 0.0, 1e-9),
        # unattainable: a late first token is always charged once, 1/2 > 0.4
        ([1.5, 0.01], 1.0, 0.4, math.inf),
        ([1.5], 1.0, 0.9, math.inf),
    ],
)
def test_min_tbt_deadline_hand_cases(xs, dp, target, expected_s):
    got = min_tbt_deadline_to_meet(xs, dp, target)
    if math.isinf(expected_s):
        assert math.isinf(got)
    else:
        assert round(got * 1e9) == round(expected_s * 1e9)


def test_min_tbt_deadline_rejects_bad_target():
    with pytest.raises(ValueError, match="target_miss_rate"):
        min_tbt_deadline_to_meet([0.1], 1.0, 1.5)


def test_miss_rate_curve_hand_case():
    lists = [[0.01, 0.02, 0.05], [0.03], []]  # the empty request has no gap and is left out
    # at 10 ms: request 1 charges 0 + 2 + 5 of 8 (7/8), request 2 charges 3 of 3 (1.0)
    # at 20 ms: request 1 banks 0.01 twice then floor((0.05 - 0.01) / 0.02) = 2 of 4; request 2: 1 of 1
    # at 50 ms: nothing misses
    median = miss_rate_curve(lists, [0.01, 0.02, 0.05], quantile=0.5)
    np.testing.assert_allclose(median, [0.9375, 0.75, 0.0], atol=1e-12)
    p99 = miss_rate_curve(lists, [0.05, 0.01], quantile=0.99)  # any target order
    np.testing.assert_allclose(p99, [0.0, 0.875 + 0.99 * 0.125], atol=1e-12)


def test_miss_rate_curve_without_gaps_is_nan():
    assert np.isnan(miss_rate_curve([[], []], [0.01])).all()


def test_throughput_views_hand_case():
    tpot_view, tbt_view, deadline_view = throughput_views([0.02, 0.03], [[0.01, 0.02, 0.05], [0.03]])
    assert tpot_view == pytest.approx(40.0)
    # pooled gaps sorted 0.01, 0.02, 0.03, 0.05; p99 position 2.97
    assert tbt_view == pytest.approx(1 / (0.03 + 0.97 * 0.02))
    # min deadlines at 10 %: 0.026666667 s (none of 3 may miss) and 0.03 s
    assert deadline_view == pytest.approx(1 / (0.026666667 + 0.99 * (0.03 - 0.026666667)))


def test_throughput_views_undefined_are_nan():
    assert all(math.isnan(v) for v in throughput_views([], []))


def test_pooled_gaps_skip_request_boundaries_and_empty_requests():
    tokens = np.array([10, 30, 100, 100, 160], dtype=np.int64)
    offsets = np.array([0, 2, 2, 5], dtype=np.int64)  # request 1 has no token
    np.testing.assert_allclose(pooled_gaps_s(tokens, offsets), [20e-9, 0.0, 60e-9], rtol=1e-12)


def test_distribution_stats_by_hand():
    stats = distribution(np.array([1.0, 2.0, 3.0, 4.0, np.nan]))
    assert stats["mean"] == 2.5 and stats["min"] == 1.0 and stats["max"] == 4.0
    assert stats["p50"] == 2.5
    assert stats["p90"] == pytest.approx(3.7)
    assert stats["p999"] == pytest.approx(3.997)
    assert distribution(np.array([np.nan])) == {}
