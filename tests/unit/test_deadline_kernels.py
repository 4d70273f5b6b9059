"""The compiled deadline kernels give exactly the numbers of the vectorised numpy versions they
replaced (etalon.core.deadlines), on the same random input: per request, curve and whole summary."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from etalon.core import deadline_kernels as kernels
from etalon.core import deadlines as reference
from etalon.core import metrics, summary
from etalon.core.records import RecordTable

_BENCH = Path(__file__).resolve().parents[2] / "bench" / "metrics_bench.py"


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("metrics_bench", _BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _synthetic_table(n: int, k: int, seed: int) -> RecordTable:
    return _bench().synthetic_table(n, k, seed)


@pytest.fixture(scope="module")
def table() -> RecordTable:
    return _synthetic_table(1500, 120, seed=7)


def test_counts_and_min_deadlines_equal_numpy(table):
    dp_s = np.random.default_rng(1).uniform(0.01, 1.0, len(table))
    args = (table.token_ns, table.token_offsets, table.sent_ns)
    for ttft in (dp_s, 0.3, None):
        old = reference.deadline_miss_counts(*args, ttft, 0.02)
        new = kernels.deadline_miss_counts(*args, ttft, 0.02)
        assert all(np.array_equal(a, b) for a, b in zip(old, new))
        for target in (0.0, 0.05, 0.1, 0.5):
            old_dd = reference.min_tbt_deadlines(*args, ttft, target)
            assert np.array_equal(old_dd, kernels.min_tbt_deadlines(*args, ttft, target))
    assert np.isinf(old_dd).sum() + (old_dd < 1e-3).sum() < len(table)  # a real spread of answers


@pytest.mark.parametrize("quantile", [0.5, 0.9, 0.99, 0.999])
@pytest.mark.parametrize("rows", [1, 2, 3, 101, 1500])
def test_curve_and_gap_rates_equal_numpy(table, quantile, rows):
    tokens, offsets = table.token_ns, table.token_offsets[: rows + 1]
    targets = summary.CURVE_TARGETS_S
    old = reference.miss_rate_quantile_curve(tokens, offsets, targets, quantile)
    assert np.array_equal(old, kernels.miss_rate_quantile_curve(tokens, offsets, targets, quantile))
    shuffled = np.random.default_rng(rows).permutation(targets)  # any target order
    assert np.array_equal(
        reference.gap_miss_rate_matrix(tokens, offsets, shuffled),
        kernels.gap_miss_rate_matrix(tokens, offsets, shuffled),
    )


def test_pooled_gaps_and_select_equal_numpy(table):
    assert np.array_equal(
        reference.pooled_gaps_s(table.token_ns, table.token_offsets),
        metrics.pooled_gaps_s(table.token_ns, table.token_offsets),
    )
    rows = np.flatnonzero(np.random.default_rng(2).random(len(table)) < 0.7)
    counts = np.diff(table.token_offsets)[rows]
    gather = np.repeat(table.token_offsets[rows] - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    expected = table.token_ns[gather + np.arange(counts.sum())]
    tokens, offsets = kernels.gather_tokens(table.token_ns, table.token_offsets, rows)
    assert np.array_equal(tokens, expected) and np.array_equal(np.diff(offsets), counts)


def test_rows_argument_equals_repacked_rows(table):
    rows = np.flatnonzero(np.random.default_rng(5).random(len(table)) < 0.5)
    tokens, offsets = kernels.gather_tokens(table.token_ns, table.token_offsets, rows)
    targets = summary.CURVE_TARGETS_S
    assert np.array_equal(
        kernels.miss_rate_quantile_curve(table.token_ns, table.token_offsets, targets, rows=rows),
        reference.miss_rate_quantile_curve(tokens, offsets, targets),
    )
    zeros = np.zeros(len(table), dtype=np.int64)
    assert np.array_equal(
        kernels.min_tbt_deadlines(table.token_ns, table.token_offsets, zeros, None, 0.1, rows=rows),
        reference.min_tbt_deadlines(tokens, offsets, zeros[rows], None, 0.1),
    )
    assert np.array_equal(
        kernels.pooled_gaps_s(table.token_ns, table.token_offsets, rows), reference.pooled_gaps_s(tokens, offsets)
    )


def test_empty_and_degenerate_inputs():
    tokens = np.array([5, 5, 9], dtype=np.int64)
    offsets = np.array([0, 0, 1, 3], dtype=np.int64)  # no token, one token, two tokens
    sent = np.zeros(3, dtype=np.int64)
    for fn in (reference, kernels):
        assert fn.min_tbt_deadlines(tokens, offsets, sent, None, 0.1).tolist() == [1e-9, 1e-9, 4e-9]  # one 4 ns gap
    assert np.isnan(reference.miss_rate_quantile_curve(tokens, offsets[:3], [0.001])).all()
    assert np.isnan(kernels.miss_rate_quantile_curve(tokens, offsets[:3], [0.001])).all()  # no gap
    with pytest.raises(ValueError, match="at least 1 ns"):
        kernels.gap_miss_rate_matrix(tokens, offsets, [0.0])


def test_whole_summary_equals_numpy_summary(table, monkeypatch):
    dp_s = np.random.default_rng(3).uniform(0.05, 1.0, len(table))
    new = summary.summarize(table, ttft_deadline_s=dp_s, tbt_deadline_s=0.03, target_miss_rate=0.1)
    for name, fn in _bench().reference_functions().items():
        monkeypatch.setattr(metrics, name, fn)
    old = summary.summarize(table, ttft_deadline_s=dp_s, tbt_deadline_s=0.03, target_miss_rate=0.1)
    assert new.to_dict() == old.to_dict()
    assert len(new.scalars()) > 80 and new.curve_p99_miss_rate
    for name, values in new.requests.columns().items():
        assert np.array_equal(values, old.requests.columns()[name], equal_nan=True), name
