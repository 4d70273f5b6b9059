"""LogNormalLengths: log-space medians, sigmas and correlation with fixed seeds, bounds, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from etalon.core.lengths import LengthSampler, LogNormalLengths


def _rng(seed: int = 7) -> np.random.Generator:
    return np.random.default_rng(seed)


def _phi(x: float) -> float:
    """Standard normal CDF."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


@pytest.mark.parametrize("rho", [0.0, 0.6, -0.45])
def test_log_space_statistics_match_the_parameters(rho: float) -> None:
    sampler = LogNormalLengths(prompt_median_tokens=1500, prompt_sigma=1.2, output_median_tokens=300,
                               output_sigma=0.7, correlation=rho)
    prompt, output = sampler.sample(200_000, _rng())
    assert prompt.dtype == np.int64 and output.dtype == np.int64
    assert np.median(prompt) == pytest.approx(1500, rel=0.02)
    assert np.median(output) == pytest.approx(300, rel=0.02)
    log_prompt, log_output = np.log(prompt), np.log(output)
    assert log_prompt.std() == pytest.approx(1.2, abs=0.02)
    assert log_output.std() == pytest.approx(0.7, abs=0.02)
    assert np.corrcoef(log_prompt, log_output)[0, 1] == pytest.approx(rho, abs=0.02)


def test_bounds_are_respected_and_clipped_mass_sits_on_them() -> None:
    sampler = LogNormalLengths(100, 1.0, 100, 1.0, min_tokens=50, max_prompt_tokens=300, max_output_tokens=120)
    prompt, output = sampler.sample(100_000, _rng())
    assert prompt.min() == 50 and prompt.max() == 300
    assert output.min() == 50 and output.max() == 120
    # Clipped, not redrawn: P(prompt == 300) = P(X >= 299.5), P(prompt == 50) = P(X < 50.5), X ~ LogN(ln 100, 1).
    assert np.mean(prompt == 300) == pytest.approx(1 - _phi(math.log(2.995)), abs=0.005)
    assert np.mean(prompt == 50) == pytest.approx(_phi(math.log(0.505)), abs=0.005)
    assert np.mean(output == 120) == pytest.approx(1 - _phi(math.log(1.195)), abs=0.006)
    assert np.median(prompt) == pytest.approx(100, rel=0.03)  # bounds on both sides leave the median alone


def test_zero_sigma_and_perfect_correlation_are_exact() -> None:
    prompt, output = LogNormalLengths(100.4, 0.0, 7.6, 0.0).sample(50, _rng())
    assert prompt.tolist() == [100] * 50 and output.tolist() == [8] * 50
    # correlation 1 with equal parameters: both parts come from the same normal draw.
    prompt, output = LogNormalLengths(400, 0.9, 400, 0.9, correlation=1).sample(10_000, _rng())
    np.testing.assert_array_equal(prompt, output)
    # correlation -1: log(prompt) + log(output) = 2 log(400) up to rounding to integers.
    prompt, output = LogNormalLengths(400, 0.5, 400, 0.5, correlation=-1.0).sample(10_000, _rng())
    np.testing.assert_allclose(np.log(prompt) + np.log(output), 2 * math.log(400), atol=0.03)


def test_same_seed_same_draws_and_no_overflow() -> None:
    sampler = LogNormalLengths(1730, 1.6, 415, 1.0, correlation=0.06, max_prompt_tokens=8141, max_output_tokens=1024)
    first, second = sampler.sample(1000, _rng(3)), sampler.sample(1000, _rng(3))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[0], sampler.sample(1000, _rng(4))[0])
    # A huge sigma without a max cannot overflow int64 or wrap negative.
    prompt, output = LogNormalLengths(10, 80.0, 10, 80.0).sample(10_000, _rng())
    assert prompt.min() >= 1 and output.min() >= 1
    assert prompt.max() == 2**62  # the int64-safe cap; P(capped) = P(Z > (62 ln 2 - ln 10) / 80)
    assert np.mean(prompt == 2**62) == pytest.approx(1 - _phi((62 * math.log(2) - math.log(10)) / 80), abs=0.015)


def test_protocol_and_empty_draw() -> None:
    sampler = LogNormalLengths(10, 0.5, 10, 0.5)
    assert isinstance(sampler, LengthSampler)
    prompt, output = sampler.sample(0, _rng())
    assert prompt.shape == (0,) and output.shape == (0,) and prompt.dtype == np.int64


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt_sigma": -0.1}, r"prompt_sigma must be a finite number >= 0, got -0.1"),
        ({"output_sigma": float("nan")}, "output_sigma must be a finite number >= 0"),
        ({"prompt_median_tokens": 0}, "prompt_median_tokens must be a finite number > 0, got 0"),
        ({"output_median_tokens": "100"}, "output_median_tokens must be a finite number > 0"),
        ({"correlation": 1.5}, r"correlation must be in \[-1, 1\], got 1.5"),
        ({"correlation": -1.01}, r"correlation must be in \[-1, 1\]"),
        ({"min_tokens": 0}, "min_tokens must be an integer >= 1, got 0"),
        ({"min_tokens": 10, "max_prompt_tokens": 5}, "max_prompt_tokens must be an integer >= 10, got 5"),
        ({"max_output_tokens": 2.5}, "max_output_tokens must be an integer >= 1"),
    ],
)
def test_bad_values_name_the_key(kwargs: dict, message: str) -> None:
    params = {"prompt_median_tokens": 100, "prompt_sigma": 1.0, "output_median_tokens": 50, "output_sigma": 0.5}
    with pytest.raises(ValueError, match=message):
        LogNormalLengths(**{**params, **kwargs})


def test_bad_n_raises() -> None:
    with pytest.raises(ValueError, match="n must be an integer >= 0"):
        LogNormalLengths(10, 0.5, 10, 0.5).sample(-1, _rng())
