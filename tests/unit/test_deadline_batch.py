"""The batch layer sends small inputs to numpy and large ones to the compiled kernels, with the same
numbers either way (rows, per-request TTFT deadlines, the whole summary), and a small run's summary
never imports numba."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from etalon.core import deadline_batch as batch
from etalon.core import summary
from etalon.core.records import RecordTable

_BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


def _table(n: int, k: int, seed: int) -> RecordTable:
    sys.path.insert(0, str(_BENCH_DIR))
    try:
        from metrics_bench import synthetic_table
    finally:
        sys.path.remove(str(_BENCH_DIR))
    return synthetic_table(n, k, seed)


@pytest.fixture(scope="module")
def table() -> RecordTable:
    return _table(400, 60, seed=11)


def _both(monkeypatch, call):  # type: ignore[no-untyped-def]
    """``call()`` on the numpy path, then on the compiled one."""
    monkeypatch.setattr(batch, "compiled", lambda tokens: False)
    numpy_result = call()
    monkeypatch.setattr(batch, "compiled", lambda tokens: True)
    return numpy_result, call()


def _equal(a, b) -> bool:  # type: ignore[no-untyped-def]
    if isinstance(a, tuple):
        return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    return np.array_equal(a, b, equal_nan=True)


def test_every_function_gives_the_same_numbers_on_both_paths(table, monkeypatch):
    t = table
    rows = np.flatnonzero(np.random.default_rng(3).random(len(t)) < 0.6)
    dp_s = np.random.default_rng(4).uniform(0.05, 1.0, len(t))  # one TTFT deadline per request
    calls = {
        "miss counts, per-request TTFT": lambda: batch.deadline_miss_counts(t.token_ns, t.token_offsets, t.sent_ns, dp_s, 0.03),
        "miss counts, gaps only": lambda: batch.deadline_miss_counts(t.token_ns, t.token_offsets, t.sent_ns, None, 0.03),
        "min deadlines, per-request TTFT": lambda: batch.min_tbt_deadlines(t.token_ns, t.token_offsets, t.sent_ns, dp_s, 0.1),
        "min deadlines, rows + per-request TTFT": lambda: batch.min_tbt_deadlines(
            t.token_ns, t.token_offsets, t.sent_ns, dp_s, 0.05, rows=rows),
        "min deadlines, rows, gaps only": lambda: batch.min_tbt_deadlines(
            t.token_ns, t.token_offsets, t.sent_ns, None, 0.1, rows=rows),
        "gap rate matrix": lambda: batch.gap_miss_rate_matrix(t.token_ns, t.token_offsets, [0.05, 0.01, 0.03]),
        "quantile curve": lambda: batch.miss_rate_quantile_curve(t.token_ns, t.token_offsets, summary.CURVE_TARGETS_S),
        "quantile curve, rows": lambda: batch.miss_rate_quantile_curve(
            t.token_ns, t.token_offsets, summary.CURVE_TARGETS_S, 0.9, rows=rows),
        "pooled gaps": lambda: batch.pooled_gaps_s(t.token_ns, t.token_offsets),
        "pooled gaps, rows": lambda: batch.pooled_gaps_s(t.token_ns, t.token_offsets, rows),
        "gather": lambda: batch.gather_tokens(t.token_ns, t.token_offsets, rows),
        "gather, no rows": lambda: batch.gather_tokens(t.token_ns, t.token_offsets, np.zeros(0, dtype=np.int64)),
    }
    for name, call in calls.items():
        on_numpy, on_kernels = _both(monkeypatch, call)
        assert _equal(on_numpy, on_kernels), name
    deadlines = _both(monkeypatch, calls["min deadlines, rows + per-request TTFT"])[0]
    assert deadlines.shape == rows.shape and np.isfinite(deadlines).sum() > len(rows) // 2  # real answers
    tokens, offsets = _both(monkeypatch, calls["gather"])[0]
    assert tokens.dtype == np.int64 and np.array_equal(np.diff(offsets), np.diff(t.token_offsets)[rows])


def test_whole_summary_is_the_same_on_both_paths(table, monkeypatch):
    dp_s = np.random.default_rng(5).uniform(0.05, 1.0, len(table))
    on_numpy, on_kernels = _both(monkeypatch, lambda: summary.summarize(
        table, ttft_deadline_s=dp_s, tbt_deadline_s=0.03, target_miss_rate=0.1))
    assert on_numpy.to_dict() == on_kernels.to_dict()
    assert len(on_numpy.scalars()) > 80 and on_numpy.curve_p99_miss_rate


def test_compiled_above_the_threshold_or_once_loaded(monkeypatch):
    monkeypatch.delitem(sys.modules, "etalon.core.deadline_kernels", raising=False)
    assert not batch.compiled(batch.COMPILED_ABOVE_TOKENS)
    assert batch.compiled(batch.COMPILED_ABOVE_TOKENS + 1)
    monkeypatch.setitem(sys.modules, "etalon.core.deadline_kernels", object())
    assert batch.compiled(10)  # loaded: faster at any size


_CHILD = """
import sys
sys.path.insert(0, {bench!r})
from metrics_bench import synthetic_table
from etalon.core import deadline_batch
from etalon.core.summary import summarize
summarize(synthetic_table(128, 75, 1), ttft_deadline_s=1.0, tbt_deadline_s=0.05, target_miss_rate=0.1)
print("small", "numba" in sys.modules)
deadline_batch.COMPILED_ABOVE_TOKENS = 5_000
summarize(synthetic_table(128, 75, 1), ttft_deadline_s=1.0, tbt_deadline_s=0.05, target_miss_rate=0.1)
print("large", "numba" in sys.modules)
"""


def test_a_small_summary_does_not_import_numba():
    out = subprocess.run([sys.executable, "-c", _CHILD.format(bench=str(_BENCH_DIR))],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:2] == ["small False", "large True"]
