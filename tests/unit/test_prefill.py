"""Prefill predictor: recovery of known cost models, sane extrapolation, robust statistics."""

from __future__ import annotations

import numpy as np
import pytest

from etalon.core.prefill import PrefillFitError, PrefillPredictor, fit_prefill, robust_prefill_s

LENGTHS = np.array([256, 512, 1024, 2048, 4096, 8192, 16384])


def test_recovers_quadratic_model_exactly():
    a, b, c = 0.012, 4e-5, 2e-9
    y = a + b * LENGTHS + c * LENGTHS**2.0
    pred = fit_prefill(LENGTHS, y)
    assert pred.a_s == pytest.approx(a, rel=1e-6)
    assert pred.b_s_per_token == pytest.approx(b, rel=1e-6)
    assert pred.c_s_per_token2 == pytest.approx(c, rel=1e-5)
    assert pred.r2 == pytest.approx(1.0)
    assert pred.rmse_s < 1e-9
    assert pred.lengths == tuple(LENGTHS.tolist())


def test_noisy_linear_model_extrapolates_within_10_percent():
    rng = np.random.default_rng(7)
    a, b = 0.02, 6e-5
    p = np.repeat(LENGTHS, 3)
    y = (a + b * p) * (1 + rng.normal(0, 0.01, p.size))
    pred = fit_prefill(p, y)
    assert min(pred.a_s, pred.b_s_per_token, pred.c_s_per_token2) >= 0
    truth = a + b * LENGTHS
    assert np.max(np.abs(pred.predict_s(LENGTHS) / truth - 1)) < 0.03
    far = 2 * 16384
    assert pred.predict_s(far) == pytest.approx(a + b * far, rel=0.10)


def test_decreasing_data_does_not_give_negative_coefficients():
    # Measurements that fall with length (nonsense) must not make a curve that turns down.
    y = 0.5 - 1e-5 * LENGTHS
    pred = fit_prefill(LENGTHS, y)
    assert min(pred.a_s, pred.b_s_per_token, pred.c_s_per_token2) >= 0
    assert np.all(np.diff(pred.predict_s(np.arange(1, 40000, 1000))) >= 0)


def test_round_trip_and_missing_keys():
    pred = PrefillPredictor(0.01, 2e-5, 1e-10, r2=0.99, rmse_s=0.001, lengths=(256, 512))
    assert PrefillPredictor.from_dict(pred.to_dict()) == pred
    with pytest.raises(PrefillFitError, match="b_s_per_token"):
        PrefillPredictor.from_dict({"a_s": 1.0, "c_s_per_token2": 0.0})


def test_robust_statistic_takes_floor_per_length():
    p = np.array([256, 256, 256, 512, 512, 512])
    y = np.array([0.11, 0.10, 0.50, 0.21, 0.20, 0.20])
    lengths, values = robust_prefill_s(p, y, "min")
    assert lengths.tolist() == [256, 512]
    assert values.tolist() == [0.10, 0.20]
    _, p50 = robust_prefill_s(p, y, "p50")
    assert p50.tolist() == [0.11, 0.20]
    with pytest.raises(PrefillFitError, match="statistic"):
        robust_prefill_s(p, y, "median")


def test_fit_needs_two_lengths():
    with pytest.raises(PrefillFitError, match="2 distinct"):
        fit_prefill(np.array([256, 256]), np.array([0.1, 0.1]))
