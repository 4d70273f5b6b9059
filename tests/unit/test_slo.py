"""SLO verdicts, goodput rows and early-stop certainty on hand-built records."""

from __future__ import annotations

import math

import numpy as np
import pytest

from etalon.core.prefill import PrefillPredictor
from etalon.core.records import STATUS_ERROR, RecordTable, RequestRecord
from etalon.core.slo import (
    NO_PROFILE_MESSAGE,
    DeadlineSlo,
    SloConfigError,
    TbtTtftSlo,
    TtftTpotSlo,
    violations_to_lose,
)

MS = 1_000_000


def rec(i: int, xs_ms: list[float], *, prompt=100, ok=True, warmup=False, out=None) -> RequestRecord:
    """A request sent at i s whose first token comes xs[0] ms later, then gaps xs[1:]."""
    sent = i * 1_000 * MS
    times = (sent + np.cumsum(np.array(xs_ms) * MS)).astype(np.int64).tolist() if ok else []
    return RequestRecord(
        request_id=i, sent_ns=sent, scheduled_ns=sent, first_token_ns=times[0] if times else None,
        token_ns=times, end_ns=times[-1] if times else sent, prompt_tokens=prompt,
        output_tokens=len(times), requested_output_tokens=out or len(xs_ms),
        status="ok" if ok else STATUS_ERROR, warmup=warmup,
    )


def table(*records: RequestRecord) -> RecordTable:
    return RecordTable.from_records(records)


def test_violations_to_lose_matches_numpy_lower_quantile():
    rng = np.random.default_rng(0)
    for n in (1, 2, 10, 99, 100, 101, 1000):
        for q in (0.5, 0.9, 0.99):
            k = violations_to_lose(n, q)
            values = np.zeros(n)
            values[: k - 1] = 10.0
            rng.shuffle(values)
            assert np.quantile(values, q, method="lower") == 0.0
            values[np.flatnonzero(values == 0)[0]] = 10.0
            assert np.quantile(values, q, method="lower") == 10.0


def test_tbt_ttft_verdict_hand_computed():
    # 10 requests: TTFT 100 ms, gaps 20 ms; one request has TTFT 900 ms and one gap of 300 ms.
    rows = [rec(i, [100, 20, 20, 20]) for i in range(9)] + [rec(9, [900, 300, 20, 20])]
    slo = TbtTtftSlo(ttft_s=0.5, tbt_s=0.2, quantile=0.9)
    verdict = slo.judge(table(*rows))
    # lower p90 of 10 TTFTs = sorted[floor(0.9*9)=8] = 0.1; of 30 gaps = sorted[26] = 0.02
    assert verdict.passed
    assert verdict.values["ttft_p90_s"] == pytest.approx(0.1)
    assert verdict.values["tbt_p90_s"] == pytest.approx(0.02)
    strict = TbtTtftSlo(ttft_s=0.5, tbt_s=0.2, quantile=1.0).judge(table(*rows))
    assert not strict.passed
    assert strict.metric == "ttft_p100_s" and strict.value == pytest.approx(0.9)
    assert strict.scale == pytest.approx(0.9 / 0.5)
    ok = slo.request_ok(table(*rows))
    assert ok.tolist() == [True] * 9 + [False]


def test_errors_violate_and_warmup_is_ignored():
    rows = [rec(i, [100, 20]) for i in range(4)]
    slo = TtftTpotSlo(ttft_s=0.5, tpot_s=0.05, quantile=1.0)
    assert slo.judge(table(*rows, rec(9, [5000, 900], warmup=True))).passed
    failed = slo.judge(table(*rows, rec(5, [100, 20], ok=False)))
    assert not failed.passed and math.isinf(failed.value)
    assert slo.request_ok(table(*rows, rec(5, [1], ok=False))).tolist() == [True] * 4 + [False]


def test_ttft_tpot_tpot_is_mean_gap():
    # gaps 10, 10, 100 ms -> TPOT 40 ms; limit 50 ms passes though one gap is 100 ms.
    slo = TtftTpotSlo(ttft_s=1.0, tpot_s=0.05, quantile=1.0)
    verdict = slo.judge(table(rec(0, [100, 10, 10, 100])))
    assert verdict.passed and verdict.values["tpot_p100_s"] == pytest.approx(0.04)


def test_deadline_slo_uses_predicted_prefill_and_miss_rate():
    # Dp = 0.1 + 0.001 * 100 + 0.05 slack = 0.25 s; Dd = 0.1 s.
    pred = PrefillPredictor(a_s=0.1, b_s_per_token=0.001, c_s_per_token2=0.0)
    slo = DeadlineSlo(tbt_deadline_s=0.1, ttft_slack_s=0.05, target_miss_rate=0.2, quantile=1.0)
    slo = slo.with_predictor(pred)
    assert slo.ttft_deadlines_s(np.array([100, 200])) == pytest.approx([0.25, 0.35])
    on_time = rec(0, [240, 100, 100, 100, 100])
    # TTFT 240 (met, slack 10); gap 350 late: k = floor((350 - 10) / 100) = 3 missed,
    # tokens: x0 met (total 1), x1=350 late -> missed 3 total 4, then two met -> 3 / 6 = 0.5
    late = rec(1, [240, 350, 100, 100])
    rates = slo.miss_rates(table(on_time, late))
    assert rates.tolist() == pytest.approx([0.0, 0.5])
    verdict = slo.judge(table(on_time, late))
    assert not verdict.passed and verdict.value == pytest.approx(0.5)
    assert verdict.values["fluidity_index_p0"] == pytest.approx(0.5)
    assert slo.judge(table(on_time)).passed


def test_deadline_scale_crosses_one_exactly_at_pass_boundary():
    pred = PrefillPredictor(a_s=0.1, b_s_per_token=0.0, c_s_per_token2=0.0)
    slo = DeadlineSlo(tbt_deadline_s=0.1, ttft_slack_s=0.0, target_miss_rate=0.0, quantile=1.0).with_predictor(pred)
    # TTFT 150 ms vs Dp 100 ms: needs scale 1.5; gaps 100 ms fine at 1.5.
    scales = slo.deadline_scales(table(rec(0, [150, 100, 100])))
    assert scales[0] == pytest.approx(1.5, rel=1e-3)
    assert slo.judge(table(rec(0, [150, 100, 100]))).scale == pytest.approx(1.5, rel=1e-3)


def test_deadline_without_profile_raises_clear_error():
    slo = DeadlineSlo()
    with pytest.raises(SloConfigError) as err:
        slo.judge(table(rec(0, [100, 20])))
    assert str(err.value) == NO_PROFILE_MESSAGE


def test_certainly_lost_counts_exact_threshold():
    slo = TbtTtftSlo(ttft_s=0.5, tbt_s=0.2, quantile=0.99)
    # 100 expected requests, lower p99 = sorted[98]: two TTFT violations are needed.
    one = table(rec(0, [900, 10]), *[rec(i, [100, 10], out=2) for i in range(1, 20)])
    assert slo.certainly_lost(one, expected_requests=100) is None
    two = table(rec(0, [900, 10]), rec(1, [10, 10], ok=False), *[rec(i, [100, 10]) for i in range(2, 20)])
    reason = slo.certainly_lost(two, expected_requests=100)
    assert reason is not None and "TTFT" in reason and "p99" in reason
    # ... and the full run with those two violations indeed fails.
    full = table(*[rec(i, [100, 10]) for i in range(2, 100)], rec(0, [900, 10]), rec(1, [1], ok=False))
    assert not slo.judge(full).passed


def test_certainly_lost_pooled_tbt_uses_upper_bound_on_gaps():
    slo = TbtTtftSlo(ttft_s=5.0, tbt_s=0.2, quantile=0.9)
    # 10 expected requests with 11 tokens each -> at most 100 gaps; lower p90 index 89: 11 late needed.
    ten_late = table(rec(0, [10] + [300] * 10, out=11))
    assert slo.certainly_lost(ten_late, expected_requests=10, max_output_tokens=11) is None
    eleven = table(rec(0, [10] + [300] * 10, out=11), rec(1, [10, 300, 10], out=11))
    assert slo.certainly_lost(eleven, expected_requests=10, max_output_tokens=11) is not None


@pytest.mark.parametrize("make", [
    lambda: TbtTtftSlo(ttft_s=0), lambda: TtftTpotSlo(tpot_s=-1), lambda: TbtTtftSlo(quantile=1.5),
    lambda: DeadlineSlo(target_miss_rate=1.0), lambda: DeadlineSlo(ttft_slack_s=-0.1),
])
def test_bad_values_name_the_key(make):
    with pytest.raises(SloConfigError, match="slo\\."):
        make()



def test_certainly_lost_pooled_tbt_bound_uses_the_schedule_not_the_finished_rows():
    # Short requests finish first: 10 done with 4 tokens (3 gaps) each, every gap late = 30 late.
    # The 10 still to come ask for 1000 tokens each; if all their gaps are fast, the lower p99 of
    # 30 + 10 * 999 gaps is fast, so the probe can still pass and must not be stopped.
    slo = TbtTtftSlo(ttft_s=5.0, tbt_s=0.2, quantile=0.99)
    done = [rec(i, [10, 300, 300, 300], out=4) for i in range(10)]
    # Without the schedule's maximum nothing bounds the remaining gaps: no early verdict.
    assert slo.certainly_lost(table(*done), expected_requests=20) is None
    assert slo.certainly_lost(table(*done), expected_requests=20, max_output_tokens=1000) is None
    full = table(*done, *[rec(i, [10] + [20] * 999, out=1000) for i in range(10, 20)])
    assert slo.judge(full).passed  # ... and indeed the full run passes
    # With short remaining requests the 30 late gaps are enough: 30 + 10 * 3 gaps, 2 needed.
    assert slo.certainly_lost(table(*done), expected_requests=20, max_output_tokens=4) is not None
    # Once every request is in, the count is exact and the verdict certain.
    assert slo.certainly_lost(table(*done), expected_requests=10) is not None
