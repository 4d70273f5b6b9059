"""Run summary on a hand-built table: rates, goodput, errors, warm-up exclusion, from-scheduled latencies."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from etalon.core.records import RecordTable, RequestRecord
from etalon.core.summary import summarize

MS = 1_000_000


def _rec(rid, sched_ms, sent_ms, tokens_ms, end_ms, prompt=0, **kw) -> RequestRecord:
    tokens = [t * MS for t in tokens_ms]
    return RequestRecord(
        request_id=rid,
        scheduled_ns=sched_ms * MS,
        sent_ns=sent_ms * MS,
        first_token_ns=tokens[0] if tokens else None,
        token_ns=tokens,
        end_ns=end_ms * MS,
        prompt_tokens=prompt,
        output_tokens=len(tokens),
        **kw,
    )


def hand_table() -> RecordTable:
    """Warm-up + 3 ok + 2 error requests; see the comments in the tests for the hand arithmetic."""
    return RecordTable.from_records(
        [
            _rec(0, 0, 0, [5000], 5000, prompt=99, warmup=True),  # TTFT 5 s: must not show anywhere
            _rec(1, 1000, 1000, [1100, 1120, 1140], 1150, prompt=10),  # x = .1, .02, .02
            _rec(2, 2000, 2010, [2210, 2260, 2270], 2280, prompt=20),  # lag 10 ms; x = .2, .05, .01
            _rec(3, 3000, 3000, [3300, 3300, 3400], 3400, prompt=30),  # x = .3, 0, .1
            _rec(4, 4000, 4000, [], 4050, status="error", http_status=500, error_type="http_error"),
            _rec(5, 5000, 5030, [], 5040, status="error", http_status=429, error_type="rate_limited"),
        ]
    )


@pytest.fixture(scope="module")
def summary():
    return summarize(hand_table(), ttft_deadline_s=0.25, tbt_deadline_s=0.05, target_miss_rate=0.1)


def test_counts_and_warmup_exclusion(summary):
    s = summary.scalars()
    assert (s["requests_total"], s["requests_ok"], s["requests_error"], s["requests_warmup"]) == (5, 3, 2, 1)
    assert s["ttft_max_s"] == pytest.approx(0.3)  # the 5 s warm-up TTFT is excluded
    assert s["ttft_mean_s"] == pytest.approx(0.2)
    assert s["ttft_p50_s"] == pytest.approx(0.2)


def test_offered_vs_achieved_rate_and_tokens(summary):
    s = summary.scalars()
    # five planned sends 1 s apart span 4 s: 4 intervals / 4 s
    assert s["request_rate_offered_rps"] == pytest.approx(1.0)
    # window: first planned send 1.0 s to last end 5.04 s
    assert s["measurement_window_s"] == pytest.approx(4.04)
    assert s["request_rate_achieved_rps"] == pytest.approx(3 / 4.04)
    assert s["input_tokens_per_s"] == pytest.approx(60 / 4.04)
    assert s["output_tokens_per_s"] == pytest.approx(9 / 4.04)
    assert s["total_tokens_per_s"] == pytest.approx(69 / 4.04)


def test_deadline_metrics(summary):
    s = summary.scalars()
    # request 3: TTFT .3 > .25 charges 1 + floor(.05/.05) = 2 of 2; the zero gap banks .05; .1 meets
    # exactly -> 2 missed of 4. Requests 1 and 2 miss nothing (3 judged each): 2 / 10.
    assert s["service_miss_rate"] == pytest.approx(0.2)
    assert s["fluidity_index_min"] == pytest.approx(0.5)
    assert s["fluidity_index_mean"] == pytest.approx(2.5 / 3)
    # low tail over fluidity 0.5, 1, 1: p1 at position 0.02, p10 at 0.2
    assert s["fluidity_index_p1"] == pytest.approx(0.51)
    assert s["fluidity_index_p10"] == pytest.approx(0.6)
    # min TBT deadline at 10 %: request 1 any (1 ns); request 2 needs .01 <= 2 D -> 5 ms;
    # request 3 is unattainable (late TTFT keeps the rate >= 1/3) and is left out of the stats
    assert s["min_tbt_deadline_max_s"] == pytest.approx(0.005)
    assert s["min_tbt_deadline_min_s"] == pytest.approx(1e-9)
    assert s["min_tbt_deadline_unattainable_fraction"] == pytest.approx(1 / 3)


def test_goodput_default_and_with_slo_mask():
    table = hand_table()
    default = summarize(table, ttft_deadline_s=0.25, tbt_deadline_s=0.05).scalars()
    assert default["goodput_rps"] == pytest.approx(2 / 4.04)  # requests 1 and 2
    assert default["goodput_fraction"] == pytest.approx(2 / 5)
    mask = np.array([True, False, False, True, True, True])  # over the table's rows, warm-up included
    masked = summarize(table, ttft_deadline_s=0.25, tbt_deadline_s=0.05, slo_ok=mask).scalars()
    assert masked["goodput_rps"] == pytest.approx(1 / 4.04)  # only request 3 is ok and in the mask


def test_error_counts(summary):
    assert summary.scalars()["error_rate"] == pytest.approx(0.4)
    assert summary.errors_by_status == {"ok": 3, "error": 2}
    assert summary.errors_by_http_status == {"429": 1, "500": 1}
    assert summary.errors_by_type == {"http_error": 1, "rate_limited": 1}


def test_latencies_from_scheduled_and_dispatch_lag(summary):
    s = summary.scalars()
    # from planned send: TTFT .1, .21, .3 and e2e .15, .28, .4 (request 2 was sent 10 ms late)
    assert s["ttft_from_scheduled_p50_s"] == pytest.approx(0.21)
    assert s["e2e_from_scheduled_p50_s"] == pytest.approx(0.28)
    assert s["e2e_p50_s"] == pytest.approx(0.27)
    # lag over all measured rows: 0, .01, 0, 0, .03
    assert s["dispatch_lag_max_s"] == pytest.approx(0.03)
    assert s["dispatch_lag_mean_s"] == pytest.approx(0.008)
    assert s["dispatch_lag_p99_s"] == pytest.approx(0.01 + 0.96 * 0.02)


def test_tbt_tpot_and_throughput_views(summary):
    s = summary.scalars()
    # pooled gaps .02 .02 .05 .01 0 .1
    assert s["tbt_mean_s"] == pytest.approx(0.2 / 6)
    assert s["tbt_min_s"] == 0.0
    assert s["tbt_p50_s"] == pytest.approx(0.02)
    assert s["tpot_mean_s"] == pytest.approx((0.02 + 0.03 + 0.05) / 3)
    assert s["throughput_tpot_tokens_per_s"] == pytest.approx(30.0)
    assert s["normalized_e2e_max_s"] == pytest.approx(0.4 / 3)
    assert s["output_throughput_max_tokens_per_s"] == pytest.approx(20.0)


def test_curve_and_json(summary):
    d = summary.to_dict()
    json.dumps(d)  # serialisable
    assert len(d["miss_rate_curve"]["target_tbt_s"]) == 100
    assert d["miss_rate_curve"]["p99_miss_rate"][-1] == 0.0  # every gap <= 100 ms
    assert all(math.isfinite(v) for v in summary.scalars().values())


def test_per_row_ttft_deadline_and_partial_flag():
    table = hand_table()
    dp = np.array([9.0, 0.25, 0.25, 0.35, 0.25, 0.25])  # request 3 gets a looser TTFT deadline
    s = summarize(table, ttft_deadline_s=dp, tbt_deadline_s=0.05, partial=True)
    assert s.scalars()["service_miss_rate"] == 0.0
    assert s.scalars()["partial"] == 1.0 and s.to_dict()["partial"] is True
    with pytest.raises(ValueError, match="ttft_deadline_s"):
        summarize(table, ttft_deadline_s=np.ones(3), tbt_deadline_s=0.05)


def test_empty_and_all_error_runs_do_not_raise():
    empty = summarize(RecordTable.from_records([]), ttft_deadline_s=1.0, tbt_deadline_s=0.05)
    assert empty.scalars()["requests_total"] == 0.0
    assert "ttft_p99_s" not in empty.scalars()
    json.dumps(empty.to_dict())
    errors = RecordTable.from_records(
        [_rec(i, i * 100, i * 100, [], i * 100 + 5, status="error", http_status=503) for i in range(4)]
    )
    s = summarize(errors, ttft_deadline_s=1.0, tbt_deadline_s=0.05)
    assert s.scalars()["error_rate"] == 1.0
    assert s.scalars()["request_rate_achieved_rps"] == 0.0
    assert "service_miss_rate" not in s.scalars()
    assert s.errors_by_http_status == {"503": 4}
    assert all(math.isfinite(v) for v in s.scalars().values())
    json.dumps(s.to_dict())


def test_tpot_is_zero_below_two_tokens_as_in_the_contract_and_the_slo():
    """DESIGN: tpot = mean(x_1..x_{n-1}), 0 if n < 2; the TTFT/TPOT SLO judges it so too."""
    from etalon.core.slo import TtftTpotSlo, tpot_s

    table = RecordTable.from_records([
        _rec(0, 0, 0, [100], 100),  # one token: TPOT 0
        _rec(1, 1000, 1000, [1100, 1140, 1200], 1200),  # gaps .04 .06: TPOT .05
    ])
    s = summarize(table, ttft_deadline_s=1.0, tbt_deadline_s=0.05)
    assert s.requests.tpot_s.tolist() == pytest.approx([0.0, 0.05])
    assert s.scalars()["tpot_mean_s"] == pytest.approx(0.025)
    assert s.scalars()["tpot_min_s"] == 0.0
    assert tpot_s(table).tolist() == pytest.approx(s.requests.tpot_s.tolist())
    verdict = TtftTpotSlo(ttft_s=1.0, tpot_s=1.0, quantile=0.5).judge(table)
    assert verdict.values["tpot_p50_s"] == pytest.approx(0.0)  # lower median of [0, .05]
    # The 1 / mean(TPOT) throughput view is over requests that have a gap.
    assert s.scalars()["throughput_tpot_tokens_per_s"] == pytest.approx(20.0)


def test_requests_the_client_cancelled_are_counted_not_measured():
    """Ctrl-C cancels in-flight requests: they are the client's doing, not server errors."""
    records = [
        _rec(1, 1000, 1000, [1100, 1120], 1150),
        _rec(2, 1500, 1500, [1700], 2000, status="error", error_type="cancelled"),
        _rec(3, 1900, 2600, [], 2600, status="error", error_type="cancelled"),  # never started
    ]
    s = summarize(RecordTable.from_records(records), ttft_deadline_s=1.0, tbt_deadline_s=0.05).scalars()
    assert (s["requests_total"], s["requests_ok"], s["requests_error"], s["requests_cancelled"]) == (1, 1, 0, 1 + 1)
    assert s["error_rate"] == 0.0
    assert s["dispatch_lag_max_s"] == 0.0  # the never-started one's 0.7 s "lag" is not a measurement
    assert s["ttft_max_s"] == pytest.approx(0.1)
