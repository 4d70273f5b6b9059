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
    """60 requests at 10 rps, the last 15 stalled by 1.5 s (a noisy host, not a queue): the
    least-squares slope and growth pass the thresholds, but batch medians show a jump, not a
    trend; the same requests rising steadily are a runaway."""
    from etalon.core.search import runaway_queue

    sched = np.arange(60) * 0.1
    s_ns = (sched * 1e9).astype(np.int64)
    stalled = np.full(60, 0.05)
    stalled[45:] = 1.5
    assert np.polyfit(sched[20:], stalled[20:], 1)[0] > 0.25
    assert runaway_queue(s_ns, s_ns + (stalled * 1e9).astype(np.int64)) is None
    rising = 0.05 + 0.5 * sched
    assert runaway_queue(s_ns, s_ns + (rising * 1e9).astype(np.int64)) is not None


def test_the_ramp_from_idle_is_not_a_runaway_queue():
    """TTFT climbs from 50 to 500 ms while the batch fills, then holds (found on vLLM at 24 rps):
    judged on any prefix of the probe, that is no runaway; the climb continuing is one."""
    from etalon.core.search import runaway_queue

    sched = np.arange(120) / 20.0
    s_ns = (sched * 1e9).astype(np.int64)
    noise = np.random.default_rng(0).exponential(0.01, 120)
    ramp = np.concatenate([np.full(4, 0.05), np.linspace(0.05, 0.5, 14), np.full(102, 0.5)]) + noise
    for n in range(16, 121, 4):
        assert runaway_queue(s_ns[:n], s_ns[:n] + (ramp[:n] * 1e9).astype(np.int64)) is None, n
    climbing = 0.05 + 0.5 * sched + noise
    assert runaway_queue(s_ns, s_ns + (climbing * 1e9).astype(np.int64)) is not None
