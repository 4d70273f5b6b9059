"""capacity_compare's closing A/B: the capacity delta from two brackets, metrics at capacity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from etalon.core.bootstrap import RunSample
from etalon.stages.analysis import load_sample, save_sample
from etalon.core.comparison import BETTER, SAME, WORSE
from etalon.stages.capacity_ab import capacity_ab, capacity_delta, capacity_range, verdict_line

RATE = "max_rate_rps"


def test_the_range_is_the_bracket_or_the_reprobed_interval() -> None:
    assert capacity_range({RATE: 8.0, "lowest_failing": 9.0}, RATE) == (8.0, 9.0)
    assert capacity_range({RATE: 8.0, "lowest_failing": None}, RATE) == (8.0, math.inf)  # never failed
    assert capacity_range({RATE: 8.0, "lowest_failing": 9.0, "capacity_interval": [7.5, 9.5]}, RATE) == (7.5, 9.5)
    assert capacity_range({RATE: 8.0, "capacity_interval": [None, 9.0]}, RATE) == (0.0, 9.0)
    assert capacity_range({RATE: None, "lowest_failing": 1.0}, RATE) is None


def test_disjoint_brackets_are_a_difference_and_overlapping_ones_are_not() -> None:
    a = {RATE: 8.0, "lowest_failing": 9.0}
    better = capacity_delta(a, {RATE: 10.0, "lowest_failing": 11.0}, RATE)
    assert better is not None
    assert (better.delta, better.relative, better.low, better.high) == (2.0, 0.25, 1.0, 3.0)
    assert better.verdict == BETTER
    worse = capacity_delta(a, {RATE: 6.0, "lowest_failing": 7.0}, RATE)
    assert worse is not None and (worse.low, worse.high, worse.verdict) == (-3.0, -1.0, WORSE)
    overlap = capacity_delta(a, {RATE: 8.5, "lowest_failing": 9.5}, RATE)
    assert overlap is not None and (overlap.low, overlap.high, overlap.verdict) == (-0.5, 1.5, SAME)
    unbounded = capacity_delta(a, {RATE: 12.0, "lowest_failing": None}, RATE)
    assert unbounded is not None and unbounded.verdict == BETTER and unbounded.high == math.inf


def _sample(seed: int, tbt_s: float, n: int = 300) -> RunSample:
    rng = np.random.default_rng(seed)
    tokens = np.full(n, 40)
    gap_row = np.repeat(np.arange(n), tokens - 1)
    gap_s = tbt_s * rng.lognormal(0.0, 0.05, gap_row.size)
    ttft = rng.lognormal(np.log(0.1), 0.2, n)
    return RunSample(ttft_s=ttft, e2e_s=ttft + np.bincount(gap_row, weights=gap_s, minlength=n),
                     fluidity_index=np.ones(n), output_tokens=tokens, good=np.ones(n, dtype=bool),
                     gap_s=gap_s, gap_row=gap_row, window_s=60.0)


def test_samples_round_trip_and_metrics_at_capacity_are_compared(tmp_path) -> None:
    a_path, b_path = tmp_path / "a.npz", tmp_path / "b.npz"
    save_sample(a_path, _sample(1, 0.020))
    save_sample(b_path, _sample(2, 0.030))  # B decodes 50% slower
    back = load_sample(a_path)
    assert back.window_s == 60.0 and np.array_equal(back.gap_row, _sample(1, 0.020).gap_row)
    a = {RATE: 8.0, "lowest_failing": 9.0, "slo": "tbt_ttft", "at_capacity_sample": str(a_path)}
    b = {RATE: 8.5, "lowest_failing": 9.5, "slo": "tbt_ttft", "at_capacity_sample": str(b_path)}
    c = {RATE: None, "lowest_failing": 1.0, "slo": "tbt_ttft"}  # found no capacity: no row
    ab = capacity_ab(["A", "B", "C"], [a, b, c], RATE)
    assert list(ab) == ["B=B vs A=A"]
    deltas = {d.key: d for d in ab["B=B vs A=A"]}
    assert deltas[RATE].verdict == SAME
    assert deltas["tbt_p50_s"].verdict == WORSE
    assert deltas["tbt_p50_s"].relative == pytest.approx(0.5, abs=0.03)
    line = verdict_line("B=B vs A=A", ab["B=B vs A=A"])
    assert line.startswith("capacity B=B vs A=A: +6.2% (no detectable difference); at capacity: ")
    assert "tbt_p50_s worse" in line
    # Different SLOs judge goodput differently: the capacity row only.
    ab2 = capacity_ab(["A", "B"], [a, {**b, "slo": "deadline"}], RATE)
    assert [d.key for d in ab2["B=B vs A=A"]] == [RATE]
