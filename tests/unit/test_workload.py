"""build_schedule: bit-for-bit determinism, independent streams, warm-up, bounds and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from etalon.core.arrivals import ClosedLoop, ConstantArrivals, GammaArrivals, PoissonArrivals
from etalon.core.lengths import FixedLengths, UniformLengths, ZipfLengths
from etalon.core.workload import (
    CLOSED_LOOP_MAX_REQUESTS,
    CLOSED_LOOP_REQUESTS_PER_USER_S,
    Schedule,
    build_schedule,
)

UNIFORM = UniformLengths(64, 512, 32, 128)


def _build(arrival=PoissonArrivals(8.0), lengths=UNIFORM, **overrides) -> Schedule:
    kwargs = dict(num_requests=120, duration_s=None, warmup_requests=8, max_total_tokens=None, seed=42)
    kwargs.update(overrides)
    return build_schedule(arrival, lengths, **kwargs)


def _assert_identical(a: Schedule, b: Schedule) -> None:
    assert (a.offsets_ns is None) == (b.offsets_ns is None)
    if a.offsets_ns is not None:
        assert a.offsets_ns.tobytes() == b.offsets_ns.tobytes()
    assert a.prompt_tokens.tobytes() == b.prompt_tokens.tobytes()
    assert a.output_tokens.tobytes() == b.output_tokens.tobytes()


def test_same_seed_same_schedule_bit_for_bit() -> None:
    _assert_identical(_build(), _build())
    _assert_identical(_build(arrival=GammaArrivals(3.0, 2.0), duration_s=30.0, num_requests=None),
                      _build(arrival=GammaArrivals(3.0, 2.0), duration_s=30.0, num_requests=None))
    other = _build(seed=43)
    assert not np.array_equal(other.prompt_tokens, _build().prompt_tokens)
    assert not np.array_equal(other.offsets_ns, _build().offsets_ns)


def test_open_loop_schedule_shape_and_units() -> None:
    schedule = _build()
    assert len(schedule) == 128 and schedule.measured_requests == 120 and schedule.warmup_requests == 8
    assert schedule.offsets_ns.dtype == np.int64 and schedule.prompt_tokens.dtype == np.int64
    assert schedule.offsets_ns[0] == 0 and np.all(np.diff(schedule.offsets_ns) >= 0)
    assert schedule.concurrency is None and not schedule.closed_loop
    # 127 gaps at 8 rps: about 16 s.
    assert schedule.offsets_ns[-1] / 1e9 == pytest.approx(127 / 8.0, rel=0.25)


def test_offsets_are_exact_nanoseconds_of_the_arrival_offsets() -> None:
    schedule = _build(arrival=ConstantArrivals(3.0), num_requests=4, warmup_requests=0)
    assert schedule.offsets_ns.tolist() == [0, 333_333_333, 666_666_667, 1_000_000_000]


def test_lengths_do_not_depend_on_the_arrival_process() -> None:
    poisson = _build(arrival=PoissonArrivals(2.0))
    gamma = _build(arrival=GammaArrivals(20.0, 4.0))
    closed = _build(arrival=ClosedLoop(concurrency=3))
    np.testing.assert_array_equal(poisson.prompt_tokens, gamma.prompt_tokens)
    np.testing.assert_array_equal(poisson.output_tokens, closed.output_tokens)
    # ...and arrivals do not depend on the length sampler.
    zipf = _build(lengths=ZipfLengths(0.6, 10, 4000, 3.0))
    np.testing.assert_array_equal(poisson.offsets_ns, _build(arrival=PoissonArrivals(2.0),
                                                             lengths=ZipfLengths(0.7, 5, 900, 1.0)).offsets_ns)
    assert zipf.offsets_ns.tobytes() == _build().offsets_ns.tobytes()


def test_duration_bounds_an_open_loop() -> None:
    schedule = _build(num_requests=None, duration_s=10.0, warmup_requests=5)
    assert np.all(schedule.offsets_ns < 10 * 1_000_000_000)
    assert abs(len(schedule) - 80) < 4 * math.sqrt(80)
    assert schedule.duration_s == 10.0 and schedule.warmup_requests == 5
    capped = _build(num_requests=1000, duration_s=2.0)
    assert len(capped) < 40


def test_closed_loop_schedule() -> None:
    schedule = _build(arrival=ClosedLoop(concurrency=4, think_time_s=0.5))
    assert schedule.offsets_ns is None and schedule.closed_loop
    assert (schedule.concurrency, schedule.think_time_s, len(schedule)) == (4, 0.5, 128)
    by_time = _build(arrival=ClosedLoop(concurrency=4), num_requests=None, duration_s=30.0, warmup_requests=2)
    assert len(by_time) == 2 + 4 * math.ceil(30.0 * CLOSED_LOOP_REQUESTS_PER_USER_S)
    huge = _build(arrival=ClosedLoop(concurrency=1000), num_requests=None, duration_s=3600.0, warmup_requests=0)
    assert len(huge) == CLOSED_LOOP_MAX_REQUESTS


def test_max_total_tokens_clips_every_request() -> None:
    schedule = _build(lengths=FixedLengths(3000, 1000), max_total_tokens=2000)
    assert set(schedule.prompt_tokens.tolist()) == {1500} and set(schedule.output_tokens.tolist()) == {500}
    unclipped = _build(lengths=FixedLengths(3000, 1000))
    assert set(unclipped.prompt_tokens.tolist()) == {3000}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_requests": None, "duration_s": None}, "num_requests or workload.duration_s"),
        ({"num_requests": 0}, "num_requests must be an integer >= 1, got 0"),
        ({"duration_s": -5.0}, "duration_s must be a finite number > 0"),
        ({"warmup_requests": -1}, "warmup_requests must be"),
        ({"max_total_tokens": 1}, "max_total_tokens must be an integer >= 2"),
        ({"seed": None}, "seed must be an integer >= 0, got None"),
    ],
)
def test_bad_values_raise_one_clear_error(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _build(**overrides)


def test_schedule_rejects_mismatched_arrays() -> None:
    with pytest.raises(ValueError, match="one entry per request"):
        Schedule(np.zeros(3, np.int64), np.ones(2, np.int64), np.ones(2, np.int64), 0, None, 0.0, None)
