"""Length samplers and clipping: bounds, distribution shape with fixed seeds, invariants."""

from __future__ import annotations

import numpy as np
import pytest

from etalon.core.lengths import (
    EmpiricalLengths,
    FixedLengths,
    LengthSampler,
    UniformLengths,
    ZipfLengths,
    clip_lengths,
)


def _rng(seed: int = 11) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_fixed_lengths() -> None:
    prompt, output = FixedLengths(prompt_tokens=512, output_tokens=128).sample(5, _rng())
    assert prompt.dtype == np.int64 and output.dtype == np.int64
    assert prompt.tolist() == [512] * 5 and output.tolist() == [128] * 5


def test_uniform_lengths_are_inclusive_and_centered() -> None:
    prompt, output = UniformLengths(64, 512, 32, 128).sample(40_000, _rng())
    assert prompt.min() == 64 and prompt.max() == 512
    assert output.min() == 32 and output.max() == 128
    assert prompt.mean() == pytest.approx(288, rel=0.01)
    assert output.mean() == pytest.approx(80, rel=0.01)
    assert abs(np.corrcoef(prompt, output)[0, 1]) < 0.03  # drawn independently


def test_zipf_bounds_and_head_probabilities() -> None:
    sampler = ZipfLengths(theta=0.6, min_tokens=100, max_tokens=1099, prefill_to_decode_ratio=3.0)
    totals = sampler.sample_totals(200_000, _rng())
    assert totals.min() == 100 and totals.max() <= 1099
    # Gray et al.'s generator is exact for the two most frequent values: P(rank k) = k^-theta / zeta_n.
    zeta_n = float(np.sum(1.0 / np.arange(1, 1001) ** 0.6))
    assert np.mean(totals == 100) == pytest.approx(1.0 / zeta_n, rel=0.05)
    assert np.mean(totals == 101) == pytest.approx(2**-0.6 / zeta_n, rel=0.07)
    # Heavy head: the lowest tenth of the range holds far more than a tenth of the mass.
    assert np.mean(totals < 200) > 0.25
    # Frequency falls with rank (coarse buckets, so sampling noise cannot reorder them).
    counts = np.bincount((totals - 100) // 100, minlength=10)
    assert np.all(np.diff(counts) < 0)


def test_zipf_split_follows_prefill_to_decode_ratio() -> None:
    sampler = ZipfLengths(theta=0.9, min_tokens=50, max_tokens=4096, prefill_to_decode_ratio=4.0)
    prompt, output = sampler.sample(10_000, _rng())
    totals = ZipfLengths(theta=0.9, min_tokens=50, max_tokens=4096, prefill_to_decode_ratio=4.0).sample_totals(
        10_000, _rng())
    np.testing.assert_array_equal(prompt + output, totals)
    np.testing.assert_array_equal(output, np.rint(totals / 5.0).astype(np.int64))
    assert np.all(prompt >= 1) and np.all(output >= 1)


def test_zipf_scramble_spreads_popular_values_but_keeps_bounds() -> None:
    plain = ZipfLengths(0.8, 10, 1009, 1.0).sample_totals(50_000, _rng())
    mixed = ZipfLengths(0.8, 10, 1009, 1.0, scramble=True).sample_totals(50_000, _rng())
    assert mixed.min() >= 10 and mixed.max() <= 1009
    top_plain = np.bincount(plain).argmax()
    top_mixed = np.bincount(mixed).argmax()
    assert top_plain == 10 and top_mixed != 10
    # Same rank frequencies, relabelled: the sorted histogram heights match closely.
    heights_plain = np.sort(np.bincount(plain - 10, minlength=1000))[::-1][:5]
    heights_mixed = np.sort(np.bincount(mixed - 10, minlength=1000))[::-1][:5]
    np.testing.assert_allclose(heights_mixed, heights_plain, rtol=0.1)


def test_empirical_lengths_ordered_and_resampled() -> None:
    sampler = EmpiricalLengths([10, 20, 30], [1, 2, 3], ordered=True)
    prompt, output = sampler.sample(7, _rng())
    assert prompt.tolist() == [10, 20, 30, 10, 20, 30, 10]
    assert output.tolist() == [1, 2, 3, 1, 2, 3, 1]
    prompt, output = EmpiricalLengths([10, 20, 30], [1, 2, 3]).sample(30_000, _rng())
    np.testing.assert_array_equal(output * 10, prompt)  # rows stay paired
    assert np.bincount(output)[1:].tolist() == pytest.approx([10_000] * 3, rel=0.05)


def test_all_samplers_satisfy_the_protocol_and_empty_draws() -> None:
    for sampler in (FixedLengths(1, 1), UniformLengths(1, 2, 1, 2), ZipfLengths(0.5, 2, 9, 1.0),
                    EmpiricalLengths([5], [6])):
        assert isinstance(sampler, LengthSampler)
        prompt, output = sampler.sample(0, _rng())
        assert prompt.shape == (0,) and output.shape == (0,)


def test_clip_hand_computed_examples() -> None:
    # Excess 2000 split 3:1 -> prompt 3000-1500, output 1000-500 (as in the etalon tool).
    prompt, output = clip_lengths(np.array([3000]), np.array([1000]), 2000)
    assert (prompt.tolist(), output.tolist()) == ([1500], [500])
    # Shares are rounded up, so both lose a token for an excess of 1.
    prompt, output = clip_lengths(np.array([1001]), np.array([1000]), 2000)
    assert (prompt.tolist(), output.tolist()) == ([1000], [999])
    # A tiny share still keeps one token.
    prompt, output = clip_lengths(np.array([1]), np.array([10_000]), 100)
    assert (prompt.tolist(), output.tolist()) == ([1], [99])
    # Under the limit: untouched.
    prompt, output = clip_lengths(np.array([10, 20]), np.array([5, 7]), 100)
    assert (prompt.tolist(), output.tolist()) == ([10, 20], [5, 7])


def test_clip_invariants_on_random_lengths() -> None:
    rng = _rng(5)
    for max_total in (2, 3, 17, 1000, 8192):
        prompt = rng.integers(1, 20_000, size=5000)
        output = rng.integers(1, 20_000, size=5000)
        clipped_p, clipped_o = clip_lengths(prompt, output, max_total)
        assert np.all(clipped_p >= 1) and np.all(clipped_o >= 1)
        assert np.all(clipped_p + clipped_o <= max_total)
        assert np.all(clipped_p <= prompt) and np.all(clipped_o <= output)
        fits = prompt + output <= max_total
        np.testing.assert_array_equal(clipped_p[fits], prompt[fits])
    big_p, big_o = clip_lengths(np.array([6000]), np.array([2000]), 4000)
    assert big_p[0] / big_o[0] == pytest.approx(3.0, rel=0.01)  # proportion kept


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: FixedLengths(0, 10), "prompt_tokens must be an integer >= 1, got 0"),
        (lambda: UniformLengths(100, 10, 1, 2), "prompt_tokens_min must be <= prompt_tokens_max"),
        (lambda: UniformLengths(1, 2, 0, 2), "output_tokens_min"),
        (lambda: ZipfLengths(1.0, 1, 10, 1.0), "theta must be in"),
        (lambda: ZipfLengths(0.5, 1, 10, -2.0), "prefill_to_decode_ratio"),
        (lambda: ZipfLengths(0.5, 20, 10, 1.0), "min_tokens must be <= max_tokens"),
        (lambda: EmpiricalLengths([1, 2], [3]), "equal length"),
        (lambda: EmpiricalLengths([0, 2], [3, 4]), "prompt_tokens must be integers >= 1"),
        (lambda: clip_lengths(np.array([1]), np.array([1]), 1), "max_total_tokens must be an integer >= 2"),
        (lambda: FixedLengths(1, 1).sample(-1, _rng()), "n must be"),
    ],
)
def test_bad_values_raise_one_clear_error(factory, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        factory()
