"""Hypothesis properties of the deadline miss rate and the minimum TBT deadline."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from etalon.metrics import deadline_miss_rate, min_tbt_deadline_to_meet

# Times on the ns grid (so seconds round-trip exactly): gaps 0..200 ms with occasional 2 s stalls.
_gap_ns = st.one_of(st.integers(0, 200_000_000), st.integers(0, 2_000_000_000))
_times_s = st.lists(_gap_ns, max_size=40).map(lambda xs: [x / 1e9 for x in xs])
_ttft_deadline_s = st.one_of(st.none(), st.integers(0, 2_000_000_000).map(lambda x: x / 1e9))
_tbt_deadline_ns = st.integers(1, 300_000_000)


@settings(max_examples=200, deadline=None)
@given(_times_s, _ttft_deadline_s, _tbt_deadline_ns, _tbt_deadline_ns)
def test_miss_rate_bounded_and_non_increasing_in_deadline(xs, dp, d1_ns, d2_ns):
    small, large = sorted((d1_ns, d2_ns))
    rate_small, missed, total = deadline_miss_rate(xs, dp, small / 1e9)
    rate_large = deadline_miss_rate(xs, dp, large / 1e9)[0]
    assert 0.0 <= rate_large <= rate_small <= 1.0
    assert 0 <= missed <= total and total >= len(xs)


@settings(max_examples=150, deadline=None)
@given(_times_s, _ttft_deadline_s, st.sampled_from([0.0, 0.01, 0.1, 0.25, 0.5, 1.0]))
def test_min_deadline_meets_target_and_is_minimal(xs, dp, target):
    found = min_tbt_deadline_to_meet(xs, dp, target)
    if math.isinf(found):  # unattainable only when a late first token keeps the rate above target
        assert dp is not None and xs and xs[0] > dp
        assert deadline_miss_rate(xs, dp, 1e3)[0] > target
        return
    assert deadline_miss_rate(xs, dp, found)[0] <= target
    if found - 1e-4 >= 1e-9:
        assert deadline_miss_rate(xs, dp, found - 1e-4)[0] > target
    if found > 1e-9:  # exact: one ns less already misses the target
        assert deadline_miss_rate(xs, dp, found - 1e-9)[0] > target
