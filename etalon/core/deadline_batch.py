"""Batch deadline maths over a table's ragged tokens: numpy for small inputs, compiled for large ones.

One contract, two implementations that give the same numbers (``tests/unit/test_deadline_kernels.py``
compares them exactly): ``etalon.core.deadlines`` (vectorised numpy) and
``etalon.core.deadline_kernels`` (numba). numba costs every process ~0.5-0.6 s before its first
answer (its import and the load of the cached kernels), while the numpy versions summarise a
128-request run in ~0.03 s and a 5,000-request one (375k tokens) in ~0.3 s (``python
bench/metrics_bench.py --cold-sizes ...`` prints both in fresh processes). So an input of up to
``COMPILED_ABOVE_TOKENS`` tokens is computed with numpy, unless this process has loaded the kernels
already (they are then faster at any size), and a larger one by the kernels.

The signatures are the kernels': ``rows`` selects requests (indices, in order) as if the table
held just them.
"""

from __future__ import annotations

import sys
from typing import Sequence

import numpy as np

from etalon.core import deadlines

__all__ = [
    "COMPILED_ABOVE_TOKENS",
    "compiled",
    "deadline_miss_counts",
    "gap_miss_rate_matrix",
    "gather_tokens",
    "min_tbt_deadlines",
    "miss_rate_quantile_curve",
    "pooled_gaps_s",
]

# In a fresh process the two break even at ~450-550k tokens here (10k requests x 75 tokens: numpy
# 1.03 s, kernels 0.61 s; 5k x 75: numpy 0.34 s, kernels 0.57 s).
COMPILED_ABOVE_TOKENS = 500_000
_KERNELS = "etalon.core.deadline_kernels"


def compiled(tokens: int) -> bool:
    """Whether an input of ``tokens`` tokens goes to the compiled kernels."""
    return tokens > COMPILED_ABOVE_TOKENS or _KERNELS in sys.modules


def _kernels():  # type: ignore[no-untyped-def]
    from etalon.core import deadline_kernels

    return deadline_kernels


def _packed(token_ns: np.ndarray, token_offsets: np.ndarray, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    return (token_ns, token_offsets) if rows is None else deadlines._select_ragged(token_ns, token_offsets, rows)


def _rows_of(value: np.ndarray | float | None, rows: np.ndarray | None) -> np.ndarray | float | None:
    """A per-request value restricted to ``rows`` (a scalar or None as it is)."""
    if rows is None or value is None or np.ndim(value) == 0:
        return value
    return np.asarray(value)[rows]


def deadline_miss_counts(
    token_ns: np.ndarray,
    token_offsets: np.ndarray,
    sent_ns: np.ndarray,
    ttft_deadline_s: np.ndarray | float | None,
    tbt_deadline_s: np.ndarray | float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per request ``(missed[], total[])`` (int64); see ``deadlines.deadline_miss_counts``."""
    impl = _kernels() if compiled(token_ns.shape[0]) else deadlines
    return impl.deadline_miss_counts(token_ns, token_offsets, sent_ns, ttft_deadline_s, tbt_deadline_s)


def min_tbt_deadlines(
    token_ns: np.ndarray,
    token_offsets: np.ndarray,
    sent_ns: np.ndarray,
    ttft_deadline_s: np.ndarray | float | None,
    target_miss_rate: float,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Per request, the smallest TBT deadline (s) meeting the target (1e-9 when 1 ns suffices, inf
    when unattainable); see ``deadlines.min_tbt_deadlines``."""
    if compiled(token_ns.shape[0]):
        return _kernels().min_tbt_deadlines(token_ns, token_offsets, sent_ns, ttft_deadline_s, target_miss_rate, rows)
    sent = sent_ns if rows is None else np.asarray(sent_ns)[rows]
    return deadlines.min_tbt_deadlines(
        *_packed(token_ns, token_offsets, rows), sent, _rows_of(ttft_deadline_s, rows), target_miss_rate
    )


def gap_miss_rate_matrix(
    token_ns: np.ndarray, token_offsets: np.ndarray, targets_s: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Miss rate on the TBT gaps alone, shape (requests, targets), unitless."""
    impl = _kernels() if compiled(token_ns.shape[0]) else deadlines
    return impl.gap_miss_rate_matrix(token_ns, token_offsets, targets_s)


def miss_rate_quantile_curve(
    token_ns: np.ndarray,
    token_offsets: np.ndarray,
    targets_s: Sequence[float] | np.ndarray,
    quantile: float = 0.99,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Per target TBT (s), the ``quantile`` over requests with a gap of the gaps-only miss rate."""
    if compiled(token_ns.shape[0]):
        return _kernels().miss_rate_quantile_curve(token_ns, token_offsets, targets_s, quantile, rows)
    return deadlines.miss_rate_quantile_curve(*_packed(token_ns, token_offsets, rows), targets_s, quantile)


def pooled_gaps_s(token_ns: np.ndarray, token_offsets: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """TBT gaps of requests ``rows`` (all when None), pooled in order (s, float64)."""
    if compiled(token_ns.shape[0]):
        return _kernels().pooled_gaps_s(token_ns, token_offsets, rows)
    return deadlines.pooled_gaps_s(*_packed(token_ns, token_offsets, rows))


def gather_tokens(token_ns: np.ndarray, token_offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ragged tokens of ``rows`` re-packed: ``(token_ns, token_offsets)`` (int64)."""
    if compiled(token_ns.shape[0]):
        return _kernels().gather_tokens(token_ns, token_offsets, rows)
    tokens, offsets = deadlines._select_ragged(token_ns, token_offsets, np.asarray(rows, dtype=np.int64))
    return tokens.astype(np.int64, copy=False), offsets
