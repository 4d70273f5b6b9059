"""The vectorised ragged batch versions agree exactly with the scalar reference on random data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from etalon.core.metrics import (
    deadline_miss_counts,
    gap_miss_rate_matrix,
    miss_counts_ns,
    miss_rate_quantile_curve,
    min_tbt_deadline_to_meet,
    min_tbt_deadlines,
)


def _random_ragged(rng: np.random.Generator, n: int, scale_ns: int):
    """Requests with 0..12 tokens; gaps drawn from {0, 1, 2, 5, 10, 20, 50} * scale (chunks, stalls)."""
    counts = rng.integers(0, 13, n)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    sent = rng.integers(0, 1000, n).astype(np.int64) * scale_ns
    parts = []
    for i, c in enumerate(counts):
        gaps = rng.choice([0, 1, 2, 5, 10, 20, 50], size=c) * scale_ns
        parts.append(sent[i] + rng.integers(0, 60) * scale_ns + np.cumsum(gaps))
    tokens = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
    return tokens, offsets, sent


def _xs_ns(tokens, offsets, sent, i, ttft_mode):
    t = tokens[offsets[i] : offsets[i + 1]]
    return np.diff(np.concatenate([[sent[i]], t])) if ttft_mode else np.diff(t)


@pytest.mark.parametrize("scale_ns", [1, 1_000_000])  # ns-scale ties and realistic ms-scale times
@pytest.mark.parametrize("ttft_mode", [True, False])
def test_batch_counts_and_min_deadlines_match_scalar(scale_ns, ttft_mode):
    rng = np.random.default_rng(7 + scale_ns)
    for _ in range(40):
        n = int(rng.integers(1, 12))
        tokens, offsets, sent = _random_ragged(rng, n, scale_ns)
        dp_ns = rng.integers(0, 40, n) * scale_ns
        dd_ns = int(rng.integers(1, 30)) * scale_ns
        target = float(rng.choice([0.0, 0.1, 0.3, 0.5, 1.0]))
        dp_s = dp_ns / 1e9 if ttft_mode else None
        missed, total = deadline_miss_counts(tokens, offsets, sent, dp_s, dd_ns / 1e9)
        mins = min_tbt_deadlines(tokens, offsets, sent, dp_s, target)
        for i in range(n):
            xs = _xs_ns(tokens, offsets, sent, i, ttft_mode)
            ref = miss_counts_ns(xs.tolist(), int(dp_ns[i]) if ttft_mode else None, dd_ns)
            assert (missed[i], total[i]) == ref
            expected = min_tbt_deadline_to_meet(xs / 1e9, dp_s[i] if ttft_mode else None, target)
            assert mins[i] == expected or (math.isinf(expected) and math.isinf(mins[i]))


def test_batch_per_request_tbt_deadlines():
    rng = np.random.default_rng(3)
    tokens, offsets, sent = _random_ragged(rng, 30, 1_000_000)
    dd_ns = rng.integers(1, 40, 30) * 1_000_000
    missed, total = deadline_miss_counts(tokens, offsets, sent, 0.02, dd_ns / 1e9)
    for i in range(30):
        xs = _xs_ns(tokens, offsets, sent, i, True)
        assert (missed[i], total[i]) == miss_counts_ns(xs.tolist(), 20_000_000, int(dd_ns[i]))


def test_gap_rate_matrix_and_pruned_curve_match_reference():
    rng = np.random.default_rng(11)
    tokens, offsets, sent = _random_ragged(rng, 400, 1_000_000)
    targets_s = rng.permutation(np.arange(1, 61)) / 1000
    rates = gap_miss_rate_matrix(tokens, offsets, targets_s)
    for i in range(0, 400, 37):
        xs = _xs_ns(tokens, offsets, sent, i, False).tolist()
        for col, target_s in enumerate(targets_s):
            missed, total = miss_counts_ns(xs, None, round(target_s * 1e9))
            assert rates[i, col] == (missed / total if total else 0.0)
    has_gaps = np.diff(offsets) >= 2
    for quantile in (0.0, 0.5, 0.9, 0.99, 1.0):
        expected = np.quantile(rates[has_gaps], quantile, axis=0)
        got = miss_rate_quantile_curve(tokens, offsets, targets_s, quantile)
        np.testing.assert_array_equal(got, expected)  # pruning is exact, not approximate


def test_many_blocks_match_one_block(monkeypatch):
    import etalon.core.deadlines as core

    rng = np.random.default_rng(5)
    tokens, offsets, sent = _random_ragged(rng, 300, 1_000_000)
    whole = min_tbt_deadlines(tokens, offsets, sent, 0.03, 0.1)
    monkeypatch.setattr(core, "_BLOCK_TOKENS", 16)
    np.testing.assert_array_equal(min_tbt_deadlines(tokens, offsets, sent, 0.03, 0.1), whole)


def test_batch_rejects_zero_deadline():
    tokens, offsets = np.array([1, 2], dtype=np.int64), np.array([0, 2], dtype=np.int64)
    with pytest.raises(ValueError, match="tbt_deadline_s"):
        deadline_miss_counts(tokens, offsets, np.zeros(1, dtype=np.int64), 1.0, 0.0)
