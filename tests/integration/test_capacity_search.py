"""capacity_search against the simulator's tiny engine: finds the analytic capacity under each SLO,
caches probes (a re-run and an SLO change perform zero new probes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from etalon.stages.base import StageResult
from tests.integration.test_prefill_profile import live_context

# tiny_engine + FixedLengths(64, 20) from conf/experiment/capacity_sim.yaml; short probes.
OVERRIDES = ["+experiment=capacity_sim", "client.start_delay_s=0.2"]
PARAMS = dict(search="rate", start_rate_rps=8.0, precision=0.05, max_probes=12, probe_requests=300,
              probe_duration_s=3.0, early_stop=True)


def tiny_engine_capacity_rps(sim: dict, prompt_tokens: int, output_tokens: int) -> float:
    """Throughput limit of the chunked engine with a full batch: every request occupies one batch
    slot for ``output_tokens`` steps (its prefill step makes the first token), so per step
    B / output_tokens requests finish, and a full step costs overhead + B * (mean slot cost)."""
    lat, batch = sim["latency"], sim["max_num_seqs"]
    slot_s = ((output_tokens - 1) * lat["per_decode_seq_s"] + prompt_tokens * lat["per_prefill_token_s"]) / output_tokens
    step_s = lat["step_overhead_s"] + batch * slot_s
    return batch / output_tokens / step_s


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One simulator and one probe cache for every test in this module."""
    tmp = tmp_path_factory.mktemp("capacity")
    with live_context(tmp, OVERRIDES, "capacity_search") as make:
        yield make, tmp


def _search(make, run_dir: Path, slo: dict | None = None, predictor: dict | None = None,
            **params: object) -> StageResult:
    from omegaconf import OmegaConf

    from etalon.stages import capacity_search

    ctx = make(run_dir=run_dir)
    if slo is not None:
        ctx.cfg.slo = slo
    if predictor is not None:
        ctx.results["prefill_profile"] = StageResult("prefill_profile", run_dir, data={"predictor": predictor})
    sim = OmegaConf.to_container(OmegaConf.create(ctx.cfg.sim), resolve=True)
    result = capacity_search.run(ctx, **{**PARAMS, **params})
    result.data["true_capacity_rps"] = tiny_engine_capacity_rps(sim, 64, 20)
    return result


def _report(name: str, result: StageResult) -> None:
    probes = result.data["probes"]
    print(f"\n{name}: max {result.data['max_rate_rps']} rps vs analytic {result.data['true_capacity_rps']:.2f}; "
          f"{len(probes)} probes ({result.data['new_probes']} new): "
          + ", ".join(f"{p['load']:.3g}{'+' if p['passed'] else '-'}{'s' if p['early_stopped'] else ''}" for p in probes))


@pytest.mark.heavy
@pytest.mark.parametrize("slo_name", ["tbt_ttft", "ttft_tpot", "deadline"])
def test_search_finds_analytic_capacity_under_each_slo(shared, slo_name):
    make, tmp = shared
    slo = {
        "tbt_ttft": {"_target_": "etalon.core.slo.TbtTtftSlo", "ttft_s": 1.0, "tbt_s": 0.1, "quantile": 0.99},
        "ttft_tpot": {"_target_": "etalon.core.slo.TtftTpotSlo", "ttft_s": 1.0, "tpot_s": 0.05, "quantile": 0.99},
        "deadline": {"_target_": "etalon.core.slo.DeadlineSlo", "tbt_deadline_s": 0.05, "ttft_slack_s": 0.5,
                     "target_miss_rate": 0.1, "quantile": 0.99, "prefill_profile": None},
    }[slo_name]
    # The tiny engine's lone 64-token prefill: one 4 ms step + 64 * 50 us.
    predictor = {"a_s": 0.004, "b_s_per_token": 5e-05, "c_s_per_token2": 0.0}
    result = _search(make, tmp / f"run_{slo_name}", slo, predictor if slo_name == "deadline" else None)
    _report(slo_name, result)
    true_rps = result.data["true_capacity_rps"]
    assert true_rps == pytest.approx(31.06, abs=0.01)
    found = result.data["max_rate_rps"]
    assert found is not None and abs(found / true_rps - 1) <= 0.10
    lowest_fail = result.data["lowest_failing"]
    assert (lowest_fail - found) / lowest_fail <= 0.05  # stated precision reached
    rows = {p["load"]: p for p in result.data["probes"] if not p["short"]}  # full-length probes decide
    assert all(not p["passed"] for load, p in rows.items() if load > 1.1 * true_rps)
    assert all(p["passed"] for load, p in rows.items() if load < 0.5 * true_rps)
    assert any(p["early_stopped"] for p in rows.values())
    tokens_key = "fluid_token_generation_rate_tokens_per_s" if slo_name == "deadline" else "output_tokens_per_s"
    assert result.data[tokens_key] > 0.8 * 20 * min(found, true_rps)
    assert (result.stage_dir / "capacity.png").stat().st_size > 10_000
    csv_lines = (result.stage_dir / "probes.csv").read_text().splitlines()
    assert csv_lines[0].startswith("rate_rps,passed,") and len(csv_lines) == len(result.data["probes"]) + 1
    saved = orjson.loads((result.stage_dir / "capacity.json").read_bytes())
    assert saved["max_rate_rps"] == found


def test_second_run_performs_zero_new_probes(shared):
    make, tmp = shared
    slo = {"_target_": "etalon.core.slo.TbtTtftSlo", "ttft_s": 1.0, "tbt_s": 0.1, "quantile": 0.99}
    # A coarse search (30% precision, short probes): reuse does not depend on how fine it is.
    coarse = dict(start_rate_rps=20.0, precision=0.3, probe_duration_s=1.5, probe_requests=120)
    first = _search(make, tmp / "rerun_a", slo, **coarse)
    assert first.data["max_rate_rps"] is not None and first.data["new_probes"] == len(first.data["probes"]) >= 3
    again = _search(make, tmp / "rerun_b", slo, **coarse)
    _report("rerun", again)
    assert again.data["new_probes"] == 0
    assert all(p["cached"] for p in again.data["probes"])
    assert again.data["max_rate_rps"] == first.data["max_rate_rps"]
    assert [p["load"] for p in again.data["probes"]] == [p["load"] for p in first.data["probes"]]
    # A stricter TTFT only re-judges stored records: the search narrows lower, reusing what it can.
    strict = dict(slo, ttft_s=0.2)
    tighter = _search(make, tmp / "rerun_c", strict, **coarse)
    _report("strict", tighter)
    assert tighter.data["max_rate_rps"] <= first.data["max_rate_rps"]
    assert tighter.data["new_probes"] < len(tighter.data["probes"])


def test_deadline_slo_without_profile_fails_before_probing(shared):
    from etalon.core.slo import NO_PROFILE_MESSAGE, SloConfigError

    make, tmp = shared
    slo = {"_target_": "etalon.core.slo.DeadlineSlo", "tbt_deadline_s": 0.05, "ttft_slack_s": 0.5}
    with pytest.raises(SloConfigError, match="prefill profile"):
        _search(make, tmp / "noprofile", slo)
    assert not (tmp / "noprofile" / "capacity_search").exists()
    assert "pipeline=characterize" in NO_PROFILE_MESSAGE


@pytest.mark.heavy
def test_concurrency_search_finds_the_engine_batch_limit(shared, tmp_path: Path) -> None:
    """Closed loop on tiny_engine (max_num_seqs 8, FixedLengths 64 -> 20): up to 8 users all run in
    the batch and get their first token within ~2 engine steps (< 40 ms); a 9th user waits for a
    slot, a whole request (~20 steps, ~0.26 s), so with a 0.1 s TTFT limit at p99 exactly 8 passes."""
    from etalon.stages import capacity_search

    make, _ = shared
    ctx = make(run_dir=tmp_path / "run")
    ctx.cfg.workload.arrival = {"_target_": "etalon.core.arrivals.ClosedLoop", "concurrency": 1}
    ctx.cfg.slo = {"_target_": "etalon.core.slo.TbtTtftSlo", "ttft_s": 0.1, "tbt_s": 0.1, "quantile": 0.99}
    result = capacity_search.run(
        ctx, search="concurrency", start_rate_rps=2, precision=0.05, max_probes=12, probe_requests=160,
        probe_duration_s=3.0, early_stop=True,
    )
    assert result.data["max_concurrency"] == 8
    loads = {p["load"]: p["passed"] for p in result.data["probes"] if not p["short"]}
    assert loads.get(8.0) is True and loads.get(9.0) is False


@pytest.mark.parametrize("stop_reason, interrupted", [("load actor failed: RuntimeError: boom", False),
                                                      ("interrupted", True)])
def test_truncated_probe_never_passes(tmp_path: Path, stop_reason: str, interrupted: bool) -> None:
    """A probe cut short by an actor failure or Ctrl-C judged only the requests that finished
    early; they may look fine, but the load was not carried: not a pass, and the summary is partial."""
    from etalon.core.records import RecordTable, RequestRecord
    from etalon.core.slo import TbtTtftSlo
    from etalon.stages.capacity_search import judge_probe

    ms = 1_000_000
    fast = [RequestRecord(request_id=i, scheduled_ns=i * 100 * ms, sent_ns=i * 100 * ms,
                          first_token_ns=i * 100 * ms + 10 * ms, token_ns=[i * 100 * ms + 10 * ms, i * 100 * ms + 20 * ms],
                          end_ns=i * 100 * ms + 20 * ms, output_tokens=2, requested_output_tokens=2) for i in range(5)]
    meta = {"stop_reason": stop_reason, "stop_kind": None, "interrupted": interrupted, "measured_s": 0.5}
    slo = TbtTtftSlo(ttft_s=1.0, tbt_s=0.1)
    run = judge_probe(slo, RecordTable.from_records(fast), 4.0, meta, cached=False, duration_s=0.5,
                      records_path=tmp_path / "records.jsonl")
    assert not run.probe.passed
    assert run.scalars["partial"] == 1.0
    complete = judge_probe(slo, RecordTable.from_records(fast), 4.0, {**meta, "stop_reason": None, "interrupted": False},
                           cached=False, duration_s=0.5, records_path=tmp_path / "records.jsonl")
    assert complete.probe.passed and complete.scalars["partial"] == 0.0
