"""Server-side metrics maths: histogram quantiles, window deltas, series mapping, in-flight counts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from etalon.core.calibration import (decode_step_s, engine_latency, fit_decode, fit_per_new_seq, fit_prefill_linear,
                                     modelled_request_s, usable_points)
from etalon.core.health import endpoint_gone
from etalon.core.records import RequestRecord
from etalon.core.server_metrics import (
    Scrape,
    common_series,
    histogram_quantile,
    inflight_at,
    mean_inflight,
    window_quantiles,
)


def test_histogram_quantile_interpolates_inside_the_bucket() -> None:
    # 10 in (0, 0.1], 10 in (0.1, 1.0]: the median is the top of the first bucket, p75 halfway up the second
    cumulative = {0.1: 10.0, 1.0: 20.0, math.inf: 20.0}
    assert histogram_quantile(0.5, cumulative) == pytest.approx(0.1)
    assert histogram_quantile(0.75, cumulative) == pytest.approx(0.55)
    assert histogram_quantile(0.25, cumulative) == pytest.approx(0.05)


def test_histogram_quantile_in_the_inf_bucket_is_the_highest_finite_bound() -> None:
    assert histogram_quantile(0.99, {0.5: 1.0, math.inf: 10.0}) == 0.5
    assert math.isnan(histogram_quantile(0.5, {0.5: 0.0, math.inf: 0.0}))


def _hist(name: str, counts: dict[str, float]) -> dict[str, list]:
    return {f"{name}_bucket": [((("le", le),), v) for le, v in counts.items()]}


def test_window_quantiles_use_bucket_deltas_between_two_scrapes() -> None:
    name = "vllm:time_to_first_token_seconds"
    before = _hist(name, {"0.1": 100.0, "1.0": 100.0, "+Inf": 100.0})  # 100 old fast requests
    after = _hist(name, {"0.1": 100.0, "1.0": 110.0, "+Inf": 110.0})  # 10 new ones in (0.1, 1]
    q = window_quantiles(before, after)
    assert q["server_ttft_count"] == 10
    assert q["server_ttft_p50_s"] == pytest.approx(0.1 + 0.9 * 0.5)
    assert "server_itl_p50_s" not in q


def test_common_series_maps_engine_names_and_turns_counters_into_rates() -> None:
    def scrape(t_s: float, tokens: float, hits: float, queries: float) -> Scrape:
        return Scrape(int(t_s * 1e9), {
            "vllm:num_requests_running": [((), 3.0)], "vllm:num_requests_waiting": [((), 1.0)],
            "vllm:kv_cache_usage_perc": [((("engine", "0"),), 0.2), ((("engine", "1"),), 0.4)],
            "vllm:generation_tokens_total": [((), tokens)],
            "vllm:prefix_cache_hits_total": [((), hits)], "vllm:prefix_cache_queries_total": [((), queries)]})

    s = common_series([scrape(0, 100, 0, 0), scrape(0.5, 150, 30, 100)])
    assert s["running"].tolist() == [3.0, 3.0] and s["waiting"].tolist() == [1.0, 1.0]
    assert s["kv_cache_usage"][0] == pytest.approx(0.3)  # a fraction is averaged over engines, not summed
    assert math.isnan(s["generation_tokens_per_s"][0]) and s["generation_tokens_per_s"][1] == pytest.approx(100.0)
    assert s["prefix_cache_hit_rate"][1] == pytest.approx(0.3)
    assert np.isnan(s["preemptions"]).all()


def test_inflight_at_and_its_exact_time_average() -> None:
    sent = np.array([0, 10, 20], dtype=np.int64)
    end = np.array([30, 15, 40], dtype=np.int64)
    assert inflight_at(sent, end, np.array([0, 12, 16, 25, 35, 40])).tolist() == [1, 2, 1, 2, 1, 0]
    # busy time 30 + 5 + 20 = 55 over a 40 ns window
    assert mean_inflight(sent, end, 0, 40) == pytest.approx(55 / 40)


def _rec(i: int, end_ns: int, error_type: str | None) -> RequestRecord:
    return RequestRecord(request_id=i, scheduled_ns=0, end_ns=end_ns, status="error" if error_type else "ok",
                         error_type=error_type, error_message="Cannot connect" if error_type else None)


def test_endpoint_gone_needs_the_latest_window_all_refused() -> None:
    ok_then_refused = [_rec(i, i, None) for i in range(10)] + [_rec(10 + i, 10 + i, "connection_error") for i in range(5)]
    assert "could not connect" in (endpoint_gone(ok_then_refused) or "")
    # one success among the last five: still there
    mixed = ok_then_refused[:-1] + [_rec(99, 14, None)]
    assert endpoint_gone(mixed) is None
    # dropped streams and timeouts are data, not a dead server
    assert endpoint_gone([_rec(i, i, "stream_broken") for i in range(8)]) is None
    assert endpoint_gone([_rec(i, i, "connection_error") for i in range(4)]) is None


def test_calibration_fits_recover_known_coefficients() -> None:
    overhead, seq, ctx = 0.004, 0.001, 2e-6
    decode = [(b, b * p, overhead + seq * b + ctx * b * p) for b in (1, 2, 4) for p in (100, 600)]
    assert fit_decode(decode) == pytest.approx((overhead, seq, ctx), rel=1e-6)
    prefill = [(p, 0.01 + 5e-5 * p) for p in (64, 128, 512)]
    assert fit_prefill_linear(prefill) == pytest.approx((0.01, 5e-5), rel=1e-6)
    latency = engine_latency(prefill, decode)
    assert latency["per_prefill_token_s"] == pytest.approx(5e-5 - ctx, rel=1e-6)


def test_decode_step_reads_windows_so_coalesced_chunks_do_not_bias_it() -> None:
    ms = 1_000_000
    # 10 ms steps; every other pair of tokens arrives in one chunk (gaps 0, 20, 0, 20, ...): the
    # median gap would be 0 or 20 ms, a 4-token window's mean is exactly 10 ms.
    coalesced = [0, 0, 20, 20, 40, 40, 60, 60, 80, 80, 100]
    # a second request whose third step carried another request's prefill (+50 ms)
    stalled = [0, 10, 20, 80, 90, 100, 110, 120, 130, 140, 150, 160, 170, 180]
    token_ns = np.array(coalesced + stalled, dtype=np.int64) * ms
    offsets = np.array([0, len(coalesced), len(coalesced) + len(stalled)])
    assert decode_step_s(token_ns, offsets) == pytest.approx(0.010)
    # no request has more than 4 tokens, or every token came at once: nothing to measure
    assert decode_step_s(np.array([0, 1, 2, 3]) * ms, np.array([0, 4])) is None
    assert decode_step_s(np.zeros(6, dtype=np.int64), np.array([0, 6])) is None


def test_points_without_a_measurable_duration_are_dropped() -> None:
    kept, dropped = usable_points([(1.0, 64.0, 0.01), (2.0, 128.0, float("nan")), (4.0, 256.0, 0.0)])
    assert kept == [(1.0, 64.0, 0.01)] and len(dropped) == 2


def test_per_new_seq_is_what_the_step_model_leaves_of_a_saturated_engines_time() -> None:
    latency = {"step_overhead_s": 0.008, "per_prefill_token_s": 3e-5, "per_decode_seq_s": 4e-4,
               "per_context_token_s": 1e-6}
    # by hand, batch 16, 64 + 32 tokens: 0.008 * 2 + 4e-4 * 31 + 3e-5 * 64 + 1e-6 * 32 * 80 = 0.03288 s
    assert modelled_request_s(latency, 16, 64, 32) == pytest.approx(0.03288)
    saturated = 1 / (0.03288 + 0.005)
    assert fit_per_new_seq(latency, 16, 64, 32, saturated, 0.05) == pytest.approx(0.005)  # 5 ms < 50 - 8
    # a lone request's TTFT intercept of 11 ms leaves 3 ms above the step overhead: the lower bound wins
    assert fit_per_new_seq(latency, 16, 64, 32, saturated, 0.011) == pytest.approx(0.003)
    assert fit_per_new_seq(latency, 16, 64, 32, 40.0, 0.05) == 0.0  # faster than the model: no negative cost
    with pytest.raises(ValueError, match="throughput"):
        fit_per_new_seq(latency, 16, 64, 32, float("nan"), 0.05)
