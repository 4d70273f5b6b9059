"""Probe trust checks: minimum requests from the SLO quantile, achieved vs offered, growing queue."""

from __future__ import annotations

import math

import numpy as np
import pytest

from etalon.core.probe_checks import (
    check_probe,
    default_min_requests,
    fitted_rate_rps,
    growing_queue,
)
from etalon.core.records import RecordTable, RequestRecord
from etalon.core.server_metrics import inflight_at

S = 1_000_000_000


def test_default_min_requests_from_quantile() -> None:
    assert default_min_requests(0.99) == 100
    assert default_min_requests(0.999) == 1000
    assert default_min_requests(0.95) == 20 and default_min_requests(0.5) == 20  # the floor
    assert default_min_requests(1.0) == 20
    with pytest.raises(ValueError):
        default_min_requests(0.0)


def test_fitted_rate_of_a_constant_process_is_exact() -> None:
    assert fitted_rate_rps(np.arange(50) * (S // 4)) == pytest.approx(4.0)
    assert math.isnan(fitted_rate_rps(np.array([0, S])))


def test_inflight_at_hand_counted() -> None:
    sent = np.array([0, 1, 2]) * S
    end = np.array([5, 2, 3]) * S
    # at t=0: #0; t=1.5: #0 #1; t=2: #1 ended, #2 started; t=4: #0 only.
    times = np.array([0, 1.5 * S, 2 * S, 4 * S]).astype(np.int64)
    assert inflight_at(sent, end, times).tolist() == [1, 2, 2, 1]


def _table(sched_s: np.ndarray, end_s: np.ndarray, generation_s: float = 0.1) -> RecordTable:
    """Requests sent as planned; the first token ``generation_s`` before the end (the rest is waiting)."""
    recs = []
    for i, (s, e) in enumerate(zip(sched_s, end_s)):
        first = int(max(e - generation_s, s) * S)
        recs.append(RequestRecord(request_id=i, scheduled_ns=int(s * S), sent_ns=int(s * S), end_ns=int(e * S),
                                  first_token_ns=first, token_ns=[first]))
    return RecordTable.from_records(recs)


def test_server_keeping_up_passes_every_check() -> None:
    sched = np.arange(200) / 10.0  # 10 rps for 20 s, each served in 0.5 s
    checks = check_probe(_table(sched, sched + 0.5), min_requests=100, open_loop=True)
    assert checks.offered_rps == pytest.approx(10.0) and checks.achieved_rps == pytest.approx(10.0)
    assert checks.vetoes(short=False, rate_tolerance=0.1) == []


def test_overloaded_server_fails_on_achieved_and_queue() -> None:
    sched = np.arange(200) / 10.0  # 10 rps offered, served one after another at 5 rps
    end = np.zeros(200)
    t = 0.0
    for i, s in enumerate(sched):
        t = max(t, s) + 0.2
        end[i] = t
    checks = check_probe(_table(sched, end), min_requests=100, open_loop=True)
    assert checks.achieved_rps == pytest.approx(5.0, rel=1e-6)
    vetoes = checks.vetoes(short=True, rate_tolerance=0.1)
    assert any(v.startswith("achieved 5 rps < 0.9 x offered 10 rps") for v in vetoes), vetoes
    assert growing_queue(_table(sched, end)) is not None and any("queue grows" in v for v in vetoes)


def test_thin_full_probe_is_vetoed_a_thin_short_one_is_not() -> None:
    sched = np.arange(40) / 10.0
    checks = check_probe(_table(sched, sched + 0.1), min_requests=100, open_loop=True)
    assert checks.vetoes(short=False, rate_tolerance=0.1) == ["thin: 40 measured requests < 100 needed"]
    assert checks.vetoes(short=True, rate_tolerance=0.1) == []


def test_output_length_jitter_widens_the_rate_tolerance() -> None:
    """Generation times of 0.1..3.1 s over a 6 s probe stretch the completions by chance; p90 - p10
    of the early generation times (2.4 s) over the 5.9 s span widens the floor to 0.9 - 0.41."""
    sched = np.arange(60) / 10.0
    gen = 0.1 + (np.arange(60) * 7 % 31) / 10.0
    checks = check_probe(_table(sched, sched + gen, generation_s=10.0), min_requests=20, open_loop=True)
    assert checks.latency_spread == pytest.approx(2.4 / 5.9, abs=0.01)
    assert checks.vetoes(short=False, rate_tolerance=0.1) == []


def test_closed_loop_has_no_rate_checks() -> None:
    sched = np.arange(200) / 10.0
    checks = check_probe(_table(sched, sched * 3), min_requests=100, open_loop=False)
    assert math.isnan(checks.offered_rps) and checks.queue is None
    assert checks.vetoes(short=False, rate_tolerance=0.1) == []


def test_arrivals_that_speed_up_by_chance_are_not_a_growing_queue() -> None:
    # Found on real vLLM: one seeded Poisson sample, scaled to every probed rate, sent its last
    # third up to 1.9x faster than its middle third; in-flight rose by that much at a steady latency
    # (Little's law) and the probe was vetoed far below saturation.
    sched = np.concatenate([np.arange(200) / 10.0, 20.0 + np.arange(100) / 25.0])  # 10 rps, last third 25 rps
    latency_s = 2.0  # steady: every request served in 2 s, whenever it arrives
    assert growing_queue(_table(sched, sched + latency_s)) is None
    # The same arrivals with latency that keeps growing are a growing queue.
    growing = sched + 2.0 + 0.3 * np.maximum(sched - 10.0, 0.0)
    assert growing_queue(_table(sched, growing)) is not None


def test_a_handful_of_requests_is_no_evidence_of_a_queue() -> None:
    sched = np.arange(15) / 1.0  # 15 requests at 1 rps, the wait rising steadily
    wait = 0.05 + 0.02 * np.arange(15)
    assert growing_queue(_table(sched, sched + wait + 0.1)) is None
    sched = np.arange(30) / 1.0  # 30 with the same rise are judged
    assert growing_queue(_table(sched, sched + 0.05 + 0.02 * np.arange(30) + 0.1)) is not None


def test_a_noisy_steady_wait_is_not_a_growing_queue() -> None:
    """Host noise on a steady server: heavy-tailed waits and bursts of slow requests anywhere in the
    probe (the old rule, last third's median > 1.5 x middle's + 50 ms, fired on such bursts)."""
    rng = np.random.default_rng(7)
    flagged = 0
    for _ in range(200):
        sched = np.sort(rng.uniform(0.0, 10.0, 200))
        wait = rng.lognormal(np.log(0.08), 0.8, 200)
        burst = rng.integers(60, 180)
        wait[burst:burst + 20] += rng.uniform(0.1, 0.4)
        flagged += growing_queue(_table(sched, sched + wait + 0.1)) is not None
    assert flagged <= 4  # about 1% of steady probes by the test's own level, bursts and all


def test_a_slowly_growing_queue_is_found() -> None:
    """Offered 8% above what the server carries: the wait rises (1 - 1/1.08) s per second of the
    probe, under the same heavy-tailed noise, and each probe is caught."""
    rng = np.random.default_rng(8)
    for _ in range(50):
        sched = np.sort(rng.uniform(0.0, 20.0, 200))
        wait = rng.lognormal(np.log(0.08), 0.8, 200) + (1 - 1 / 1.08) * sched
        reason = growing_queue(_table(sched, sched + wait + 0.1))
        assert reason is not None and reason.startswith("queue grows: the wait for the first token rises")
