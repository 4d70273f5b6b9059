"""Capacity answers rest on trustworthy probes: a short pass is re-measured at full length, a
search out of probes says it is unconverged, and a probe that did not carry its load fails."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from etalon.core.search import Probe
from etalon.stages import capacity_search
from etalon.stages.base import NullTracker, StageContext
from tests.integration.test_prefill_profile import compose_config, live_context


def _offline_context(tmp_path: Path) -> StageContext:
    cfg, _ = compose_config(["+experiment=capacity_sim"])
    return StageContext(cfg=cfg, run_dir=tmp_path, stage_name="capacity_search", stage_dir=tmp_path / "capacity_search",
                        endpoint=None, endpoint_key="fake", results={}, tracker=NullTracker(),  # type: ignore[arg-type]
                        cache_dir=tmp_path / "cache")


def _fake_endpoint(monkeypatch: pytest.MonkeyPatch, full_limit: float, short_limit: float) -> list[tuple[float, bool]]:
    """Probes pass below ``full_limit`` at full length and below ``short_limit`` when short (a
    queue that a short probe does not see grow): the short probe is fooled between the two."""
    calls: list[tuple[float, bool]] = []

    def probe(ctx, slo, settings, base, lengths, load, index, *, short=False):  # noqa: ANN001
        calls.append((load, short))
        limit = short_limit if short else full_limit
        p = Probe(load=load, passed=load < limit, value=load / limit, threshold=1.0, short=short)
        return capacity_search.ProbeRun(p, {"output_tokens_per_s": 20 * load}, {}, None, Path("records.jsonl"),
                                        extra={"metric": "ttft_p99_s"})

    monkeypatch.setattr(capacity_search, "probe", probe)
    return calls


def test_short_pass_that_fails_at_full_length_is_not_the_answer(tmp_path: Path, monkeypatch) -> None:
    calls = _fake_endpoint(monkeypatch, full_limit=10.0, short_limit=12.0)
    result = capacity_search.run(_offline_context(tmp_path), search="rate", start_rate_rps=5.0, growth=2.0,
                                 precision=0.05, max_probes=20, probe_requests=200, early_stop=True)
    found = result.data["max_rate_rps"]
    assert (10.0, True) in calls and (10.0, False) in calls  # 10 passed short, then failed at full length
    rows = result.data["probes"]
    assert any(r["load"] == 10.0 and r["short"] and r["passed"] for r in rows)
    assert any(r["load"] == 10.0 and not r["short"] and not r["passed"] for r in rows)
    assert 9.5 <= found < 10.0  # the full-length answer, at the stated precision
    best = next(r for r in rows if r["load"] == found)
    assert best["passed"] and not best["short"]
    assert result.data["converged"] is True and result.data["unconverged_reason"] is None


def test_probes_running_out_remeasure_a_short_answer_and_say_unconverged(tmp_path: Path, monkeypatch) -> None:
    calls = _fake_endpoint(monkeypatch, full_limit=10.0, short_limit=40.0)
    result = capacity_search.run(_offline_context(tmp_path), search="rate", start_rate_rps=4.0, growth=2.0,
                                 precision=0.05, max_probes=3, probe_requests=200, early_stop=True)
    # 4, 8, 16 short passes; out of probes: 16 re-measured full (fails), then 8 full (passes).
    assert calls == [(4.0, True), (8.0, True), (16.0, True), (16.0, False), (8.0, False)]
    assert result.data["max_rate_rps"] == 8.0
    assert result.data["converged"] is False
    assert "probes ran out (max_probes=3) with the bracket [8, 16]" in result.data["unconverged_reason"]
    assert result.scalars["converged"] == 0.0


def test_probe_over_capacity_fails_on_achieved_vs_offered(tmp_path: Path) -> None:
    """tiny_engine carries ~31 rps of 64 -> 20 tokens; 2 s at 62 rps under an SLO it cannot miss
    (TTFT and TBT p99 <= 100 s): the verdict passes, but the completions come at about half the
    offered rate, so the probe fails and says why."""
    from etalon.core.arrivals import PoissonArrivals
    from etalon.core.lengths import FixedLengths
    from etalon.core.slo import TbtTtftSlo

    with live_context(tmp_path, ["+experiment=capacity_sim", "client.start_delay_s=0.2"], "capacity_search") as make:
        ctx = make()
        settings = capacity_search.SearchSettings(probe_requests=124, probe_duration_s=None, early_stop=False,
                                                  min_probe_requests=20)
        slo = TbtTtftSlo(ttft_s=100.0, tbt_s=100.0)
        run = capacity_search.probe(ctx, slo, settings, PoissonArrivals(rate_rps=1.0), FixedLengths(64, 20), 62.0, 0)
    assert run.probe.value <= run.probe.threshold == 100.0  # the SLO verdict itself passed
    assert not run.probe.passed and math.isinf(run.probe.scale)
    assert run.extra["achieved_rps"] < 0.75 * run.extra["offered_rps"]
    assert any(v.startswith("achieved") for v in run.extra["vetoes"]), run.extra["vetoes"]


def test_probe_cache_knows_the_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same search again reuses its probes and says so; after changing one engine coefficient
    of the simulator, nothing is reused."""
    params = dict(search="rate", start_rate_rps=8.0, max_probes=2, probe_requests=40, probe_duration_s=2.0,
                  min_probe_requests=20, early_stop=True)
    base = ["+experiment=capacity_sim", "client.start_delay_s=0.2"]

    def search(extra: list[str], name: str) -> dict:
        with live_context(tmp_path, base + extra, "capacity_search") as make:
            ctx = make(run_dir=tmp_path / name)
            return capacity_search.run(ctx, **params).data

    first = search([], "a")
    probes = len(first["probes"])  # 8 and 16 short, then 16 at full length
    assert first["new_probes"] == probes == 3
    capsys.readouterr()
    again = search([], "b")
    assert again["new_probes"] == 0
    told = capsys.readouterr().out
    assert "etalon: reused 3 probes measured at " in told and "etalon-sim (max_model_len 8192)" in told
    changed = search(["sim.latency.per_decode_seq_s=0.0011"], "c")
    assert changed["new_probes"] == len(changed["probes"]) >= 2 and "reused" not in capsys.readouterr().out


def test_benchmark_at_a_capacity_that_fails_its_slo_is_flagged(tmp_path: Path, caplog) -> None:
    from types import SimpleNamespace

    from etalon.core.slo import SloVerdict
    from etalon.stages.base import StageResult
    from etalon.stages.benchmark import verify_capacity

    ctx = _offline_context(tmp_path)
    ctx.results["capacity_search"] = StageResult("capacity_search", tmp_path, data={
        "max_rate_rps": 3.0, "verdict_at_max": {"miss_rate_p99": 0.08}})
    failing = SloVerdict(passed=False, metric="miss_rate_p99", value=0.4, threshold=0.1, values={"miss_rate_p99": 0.4})
    m = SimpleNamespace(verdict=failing, interrupted=False, summary=SimpleNamespace(rates={"goodput_fraction": 0.325}))
    check = verify_capacity(ctx, "capacity_search", m)  # type: ignore[arg-type]
    assert check == {"verified": False, "load": 3.0, "search_verdict": {"miss_rate_p99": 0.08},
                     "benchmark_verdict": {"miss_rate_p99": 0.4}, "benchmark_goodput_fraction": 0.325}
    assert "FAILS the SLO at the capacity capacity_search found (3)" in caplog.text
    assert "goodput fraction 0.325" in caplog.text
    passing = SloVerdict(passed=True, metric="miss_rate_p99", value=0.05, threshold=0.1, values={"miss_rate_p99": 0.05})
    ok = verify_capacity(ctx, "capacity_search", SimpleNamespace(verdict=passing, interrupted=False,  # type: ignore[arg-type]
                                                                 summary=SimpleNamespace(rates={})))
    assert ok is not None and ok["verified"] is True
