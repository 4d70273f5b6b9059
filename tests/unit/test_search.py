"""Capacity search policies against synthetic SLO curves with known crossings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from etalon.core.search import ExpandBisectSearch, Probe, bracket, run_search


def queue_judge(capacity: float, threshold: float = 1.0, service_s: float = 0.2):
    """p99 latency of an M/M/1-like server: service/(1 - rate/capacity), inf past capacity.

    The SLO crossing is where service/(1 - r/cap) == threshold: r* = cap * (1 - service/threshold).
    """

    def judge(load: float) -> Probe:
        rho = load / capacity
        value = service_s / (1.0 - rho) if rho < 1 else math.inf
        return Probe(load=load, passed=value <= threshold, value=value, threshold=threshold)

    return judge, capacity * (1.0 - service_s / threshold)


def step_judge(crossing: float):
    """No usable values (NaN): the search must fall back to bisection and still converge."""

    def judge(load: float) -> Probe:
        return Probe(load=load, passed=load <= crossing)

    return judge


def test_expand_then_bisect_hand_computed_sequence():
    # crossing 5.5; start 1: 1,2,4,8 (fail) then bisect 6 (fail), 5 (pass), 5.5 (pass) -> (5.5, 6]
    search = ExpandBisectSearch(start_rate_rps=1.0, precision=0.1, interpolate=False)
    history = run_search(search, step_judge(5.5))
    assert [p.load for p in history] == [1.0, 2.0, 4.0, 8.0, 6.0, 5.0, 5.5]
    assert search.best(history) == 5.5


@pytest.mark.parametrize("capacity", [3.3, 7.0, 12.5, 41.0, 101.0])
def test_interpolating_search_finds_crossing_within_precision(capacity):
    judge, true_rate = queue_judge(capacity)
    search = ExpandBisectSearch(start_rate_rps=1.0, precision=0.05)
    history = run_search(search, judge)
    lo, hi = bracket(history)
    assert lo is not None and hi is not None
    assert lo.load <= true_rate < hi.load
    assert (hi.load - lo.load) / hi.load <= 0.05
    assert len(history) <= 16


def test_interpolation_needs_fewer_probes_than_plain_bisection():
    capacities = np.geomspace(2.0, 150.0, 25)
    counts = {True: [], False: []}
    for interpolate in (True, False):
        for capacity in capacities:
            judge, true_rate = queue_judge(float(capacity))
            search = ExpandBisectSearch(start_rate_rps=1.0, precision=0.05, interpolate=interpolate)
            history = run_search(search, judge)
            assert search.best(history) <= true_rate
            assert search.best(history) >= true_rate * 0.95 - 1e-9
            counts[interpolate].append(len(history))
    smart, plain = np.mean(counts[True]), np.mean(counts[False])
    print(f"mean probes: interpolating {smart:.2f}, plain bisection {plain:.2f}")
    assert smart <= plain - 1.0
    assert all(s <= p for s, p in zip(counts[True], counts[False]))


def test_nan_values_fall_back_to_bisection():
    history = run_search(ExpandBisectSearch(start_rate_rps=1.0, precision=0.05), step_judge(9.3))
    lo, hi = bracket(history)
    assert lo.load <= 9.3 < hi.load and (hi.load - lo.load) / hi.load <= 0.05


def test_first_probe_failing_shrinks():
    history = run_search(ExpandBisectSearch(start_rate_rps=10.0, precision=0.05), step_judge(1.7))
    assert [p.load for p in history[:4]] == [10.0, 5.0, 2.5, 1.25]
    lo, hi = bracket(history)
    assert lo.load <= 1.7 < hi.load


def test_budget_caps_probes():
    search = ExpandBisectSearch(start_rate_rps=1.0, max_probes=3)
    history = run_search(search, step_judge(1e9))
    assert [p.load for p in history] == [1.0, 2.0, 4.0]


def test_integer_concurrency_search_stops_on_adjacent_levels():
    search = ExpandBisectSearch(start_rate_rps=1, precision=0.01, integer=True)
    history = run_search(search, step_judge(13.0))
    loads = [p.load for p in history]
    assert all(float(x).is_integer() for x in loads)
    assert len(set(loads)) == len(loads)
    assert search.best(history) == 13.0
    assert min(p.load for p in history if not p.passed) == 14.0


def test_integer_search_all_fail_stops_at_one():
    history = run_search(ExpandBisectSearch(start_rate_rps=4, integer=True), step_judge(0.5))
    assert [p.load for p in history] == [4.0, 2.0, 1.0]


@pytest.mark.parametrize("kwargs", [{"start_rate_rps": 0}, {"growth": 1.0}, {"precision": 0}, {"max_probes": 0}])
def test_bad_parameters_name_the_key(kwargs):
    with pytest.raises(ValueError, match="search\\."):
        ExpandBisectSearch(**kwargs)


def test_scale_drives_interpolation_when_values_are_flat():
    # Miss-rate-like value: 0 below the crossing (no slope), but a continuous scale = rate / 10.
    def judge(load):
        return Probe(load=load, passed=load <= 10.0, value=0.0 if load <= 10 else 0.5,
                     threshold=0.1, scale=load / 10.0)

    smart = run_search(ExpandBisectSearch(start_rate_rps=1.0, precision=0.05), judge)
    plain = run_search(ExpandBisectSearch(start_rate_rps=1.0, precision=0.05, interpolate=False), judge)
    assert bracket(smart)[0].load <= 10.0 < bracket(smart)[1].load
    assert len(smart) < len(plain)


def test_runaway_queue_detects_overload_but_not_a_stable_queue():
    from etalon.core.search import runaway_queue

    rng = np.random.default_rng(3)
    sched = np.sort(rng.uniform(0, 10, 200))
    stable = 0.05 + rng.exponential(0.02, 200)
    s_ns = (sched * 1e9).astype(np.int64)
    assert runaway_queue(s_ns, s_ns + (stable * 1e9).astype(np.int64)) is None
    # 1.5x overload: waiting time grows 0.5 s per s of sending.
    overload = 0.05 + 0.5 * sched + rng.exponential(0.02, 200)
    reason = runaway_queue(s_ns, s_ns + (overload * 1e9).astype(np.int64))
    assert reason is not None and "0.5" in reason
    # Too few completed requests: no verdict yet.
    assert runaway_queue(s_ns[:10], s_ns[:10] + (overload[:10] * 1e9).astype(np.int64)) is None


def test_a_late_stall_is_not_a_runaway_queue():
    """24 requests at 4 rps, the last six stalled by 1.5 s (a noisy host, not a queue): the
    least-squares slope (0.27 s/s) and growth pass the old thresholds, but batch medians show a
    jump, not a trend; the same six rising steadily is a runaway."""
    from etalon.core.search import runaway_queue

    sched = np.arange(24) * 0.25
    s_ns = (sched * 1e9).astype(np.int64)
    stalled = np.full(24, 0.05)
    stalled[18:] = 1.5
    assert runaway_queue(s_ns, s_ns + (stalled * 1e9).astype(np.int64)) is None
    rising = 0.05 + 0.5 * sched
    assert runaway_queue(s_ns, s_ns + (rising * 1e9).astype(np.int64)) is not None


def test_short_bracket_end_is_remeasured_at_full_length_and_a_false_pass_is_dropped():
    from etalon.core.search import ExpandBisectSearch, Probe, bracket

    policy = ExpandBisectSearch(start_rate_rps=8.0, precision=0.05)
    history = [Probe(8.0, True, short=True), Probe(16.0, True, short=True), Probe(32.0, True, short=True),
               Probe(64.0, False, short=True)]
    # No slope is trusted from short probes: plain bisection between 32 and 64.
    assert policy.next_load(history) == 48.0
    history += [Probe(load, False) for load in (48.0, 40.0, 36.0, 34.0, 33.0)]
    assert bracket(history) == (history[2], history[-1])
    assert policy.next_load(history) == 32.0  # converged on a short lo: re-measure it at full length
    history.append(Probe(32.0, False))  # the short pass at 32 was false
    lo, hi = bracket(history)
    assert (lo.load, hi.load) == (16.0, 32.0)
    assert policy.next_load(history) == 24.0
    history.append(Probe(31.5, True))
    assert policy.next_load(history) is None  # both ends full-length and 1.6 % apart: done


def test_full_probes_failing_above_a_short_pass_remeasure_it_early():
    """Two full narrowing probes failing just above a short pass make that pass suspect: it is
    re-measured at full length at once, not after bisecting all the way down to it."""
    policy = ExpandBisectSearch(start_rate_rps=8.0, precision=0.05)
    history = [Probe(8.0, True, short=True), Probe(16.0, True, short=True), Probe(32.0, True, short=True),
               Probe(64.0, False, short=True), Probe(48.0, False)]
    assert policy.next_load(history) == 40.0  # one failure is no streak: narrow on
    history.append(Probe(40.0, False))
    assert policy.next_load(history) == 32.0  # two in a row: re-measure the short pass at 32
    history.append(Probe(32.0, False))
    assert bracket(history)[0].load == 16.0 and policy.next_load(history) == 24.0
