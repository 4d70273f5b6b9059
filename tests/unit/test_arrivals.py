"""Arrival processes: statistical shape with fixed seeds, exact spacing and scaling, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from etalon.core.arrivals import (
    ClosedLoop,
    ConstantArrivals,
    GammaArrivals,
    OpenLoopArrivals,
    PoissonArrivals,
    ReplayArrivals,
)


def _rng(seed: int = 7) -> np.random.Generator:
    return np.random.default_rng(seed)


def _gap_stats(offsets_s: np.ndarray) -> tuple[float, float]:
    gaps = np.diff(offsets_s)
    return float(gaps.mean()), float(gaps.std() / gaps.mean())


def test_poisson_mean_rate_and_unit_cv() -> None:
    offsets = PoissonArrivals(rate_rps=10.0).offsets_s(50_000, None, _rng())
    assert offsets.shape == (50_000,) and offsets.dtype == np.float64
    assert offsets[0] == 0.0 and np.all(np.diff(offsets) >= 0)
    mean_gap_s, cv = _gap_stats(offsets)
    assert mean_gap_s == pytest.approx(0.1, rel=0.02)
    assert cv == pytest.approx(1.0, abs=0.03)


def test_gamma_has_requested_rate_and_cv() -> None:
    offsets = GammaArrivals(rate_rps=4.0, cv=3.0).offsets_s(200_000, None, _rng())
    mean_gap_s, cv = _gap_stats(offsets)
    assert mean_gap_s == pytest.approx(0.25, rel=0.03)
    assert cv == pytest.approx(3.0, rel=0.05)
    smooth = GammaArrivals(rate_rps=4.0, cv=0.5).offsets_s(50_000, None, _rng())
    assert _gap_stats(smooth)[1] == pytest.approx(0.5, rel=0.03)


def test_constant_spacing_is_exact() -> None:
    offsets = ConstantArrivals(rate_rps=4.0).offsets_s(9, None, _rng())
    np.testing.assert_array_equal(offsets, np.array([0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]))
    by_duration = ConstantArrivals(rate_rps=4.0).offsets_s(None, 2.5, _rng())
    np.testing.assert_array_equal(by_duration, np.arange(10) / 4.0)  # 0 .. 2.25, none at 2.5
    # No drift over many requests: offset i is exactly i / rate.
    many = ConstantArrivals(rate_rps=3.0).offsets_s(30_001, None, _rng())
    assert many[30_000] == 10_000.0


def test_duration_cuts_and_count_bounds_combine() -> None:
    poisson = PoissonArrivals(rate_rps=5.0)
    by_time = poisson.offsets_s(None, 100.0, _rng())
    assert np.all(by_time < 100.0)
    assert abs(by_time.size - 500) < 4 * np.sqrt(500)
    assert by_time[-1] > 95.0  # filled up to the end, not stopped at a chunk boundary
    both = poisson.offsets_s(50, 100.0, _rng())
    assert both.size == 50
    short = poisson.offsets_s(10_000, 3.0, _rng())
    assert short.size < 40 and np.all(short < 3.0)


def test_duration_only_is_deterministic_and_long_runs_extend_past_first_chunk() -> None:
    a = GammaArrivals(rate_rps=50.0, cv=4.0).offsets_s(None, 60.0, _rng(3))
    b = GammaArrivals(rate_rps=50.0, cv=4.0).offsets_s(None, 60.0, _rng(3))
    np.testing.assert_array_equal(a, b)
    assert a[-1] < 60.0 and a.size > 1000


def test_replay_shifts_and_scales_time_exactly() -> None:
    replay = ReplayArrivals([10.0, 11.0, 13.0, 17.0], time_scale=0.5)
    np.testing.assert_array_equal(replay.offsets_s(None, 100.0, _rng()), [0.0, 0.5, 1.5, 3.5])
    np.testing.assert_array_equal(replay.offsets_s(2, None, _rng()), [0.0, 0.5])
    np.testing.assert_array_equal(replay.offsets_s(None, 1.5, _rng()), [0.0, 0.5])
    assert replay.rate_rps == pytest.approx(3 / 3.5)
    assert replay.num_arrivals == 4


def test_replay_with_rate_scales_time_to_the_new_mean_rate() -> None:
    replay = ReplayArrivals([0.0, 1.0, 3.0, 7.0])
    faster = replay.with_rate(replay.rate_rps * 2)
    assert faster.rate_rps == pytest.approx(2 * replay.rate_rps)
    np.testing.assert_allclose(faster.offsets_s(4, None, _rng()), [0.0, 0.5, 1.5, 3.5])
    with pytest.raises(ValueError, match="more than the trace's 4 arrivals"):
        replay.offsets_s(5, None, _rng())


def test_with_rate_keeps_the_process_and_other_parameters() -> None:
    gamma = GammaArrivals(rate_rps=2.0, cv=2.5).with_rate(8.0)
    assert gamma == GammaArrivals(rate_rps=8.0, cv=2.5)
    assert PoissonArrivals(1.0).with_rate(3.0).rate_rps == 3.0
    assert isinstance(ConstantArrivals(1.0).with_rate(2.0), ConstantArrivals)


def test_closed_and_open_loop_flags() -> None:
    assert ClosedLoop(concurrency=4).closed_loop is True
    for process in (PoissonArrivals(1.0), GammaArrivals(1.0, 2.0), ConstantArrivals(1.0),
                    ReplayArrivals([0.0, 1.0])):
        assert process.closed_loop is False
        assert isinstance(process, OpenLoopArrivals)
    assert not hasattr(ClosedLoop(concurrency=2), "offsets_s")


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: PoissonArrivals(rate_rps=-1), "rate_rps must be a finite number > 0, got -1"),
        (lambda: PoissonArrivals(rate_rps=0), "rate_rps"),
        (lambda: ConstantArrivals(rate_rps=float("inf")), "rate_rps"),
        (lambda: GammaArrivals(rate_rps=1.0, cv=0.0), "cv must be"),
        (lambda: ClosedLoop(concurrency=0), "concurrency must be an integer >= 1, got 0"),
        (lambda: ClosedLoop(concurrency=2, think_time_s=-0.5), "think_time_s"),
        (lambda: ReplayArrivals([0.0, 2.0, 1.0]), "non-decreasing"),
        (lambda: ReplayArrivals([1.0]), "at least 2"),
        (lambda: ReplayArrivals([3.0, 3.0]), "positive time"),
        (lambda: ReplayArrivals([0.0, 1.0], time_scale=0), "time_scale"),
        (lambda: PoissonArrivals(1.0).offsets_s(None, None, _rng()), "num_requests or duration_s"),
        (lambda: PoissonArrivals(1.0).offsets_s(-3, None, _rng()), "num_requests must be"),
        (lambda: PoissonArrivals(1.0).offsets_s(None, -1.0, _rng()), "duration_s must be"),
    ],
)
def test_bad_values_raise_one_clear_error(factory, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        factory()
