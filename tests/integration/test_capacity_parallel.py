"""Parallel capacity searches on Ray: one comparison row per config at its analytic capacity, probes
of one endpoint key never overlapping, every probe a nested MLflow run under the stage's run."""

from __future__ import annotations

import csv
import itertools

import numpy as np
import orjson
import pytest
from omegaconf import OmegaConf

from tests.integration.test_capacity_search import tiny_engine_capacity_rps
from tests.integration.test_prefill_profile import live_context

# tiny_engine, FixedLengths(64, 20), tbt_ttft (1 s, 100 ms): conf/experiment/capacity_sim.yaml.
BASE = ["+experiment=capacity_sim", "client=local", "client.progress=false", "client.start_delay_s=0.2"]
CONFIGS = [[], ["sim.max_num_seqs=16"]]
BATCH_SEQS = [8, 16]
PARAMS = dict(search="rate", start_rate_rps=8.0, precision=0.05, max_probes=10, probe_requests=200,
              probe_duration_s=3.0, early_stop=True)


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def realised_step_slowdown(log_path, batch: int, modelled_step_s: float) -> float:
    """How much longer the simulator's full-batch engine steps really took than modelled, from its
    emission log: one step writes every running sequence's token in one pass (a burst), bursts are
    a step apart. A loaded machine makes the simulator itself slower, and its capacity with it."""
    times_ns = np.sort(np.fromiter((t for line in log_path.read_bytes().splitlines()
                                    for t in orjson.loads(line)["token_ns"]), dtype=np.int64))
    gaps_ns = np.diff(times_ns)
    starts = np.flatnonzero(np.concatenate([[True], gaps_ns > 2_000_000]))  # a new step after 2 ms
    counts = np.diff(np.append(starts, times_ns.size))
    step_ns = times_ns[starts]
    full = (counts[1:] == batch) & (counts[:-1] == batch)
    durations_s = np.diff(step_ns)[full] / 1e9
    durations_s = durations_s[durations_s < 5 * modelled_step_s]  # not across an idle gap
    assert durations_s.size >= 50, durations_s.size
    return float(np.mean(durations_s)) / modelled_step_s


@pytest.mark.heavy
def test_parallel_searches_compare_configs_without_overlapping_probes(tmp_path, ray_cluster):
    from mlflow.tracking import MlflowClient

    from etalon.config import TrackingConfig
    from etalon.runner.parallel import RaySearchRunner
    from etalon.runner.tracking import tracked_run
    from etalon.stages import capacity_search

    tracking = TrackingConfig(enabled=True, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                              experiment_name="parallel")
    runner = RaySearchRunner(num_cpus=0.25, base_overrides=BASE)
    with live_context(tmp_path, BASE, "capacity_compare") as make, \
            tracked_run(tracking, "root", {}) as root, root.child("capacity_compare") as stage_tracker:
        ctx = make()
        ctx.cfg.tracking, ctx.tracker = tracking, stage_tracker
        sim = OmegaConf.to_container(OmegaConf.create(ctx.cfg.sim), resolve=True)
        logs = [tmp_path / f"emissions-{b}.jsonl" for b in BATCH_SEQS]
        configs = [[*c, f"sim.emission_log_path={log}"] for c, log in zip(CONFIGS, logs)]
        result = capacity_search.run(ctx, configs=configs, labels=["batch8", "batch16"], runner=runner, **PARAMS)

    rows = list(csv.DictReader(open(result.stage_dir / "capacity_comparison.csv")))
    assert [r["config"] for r in rows] == ["batch8", "batch16"]
    truths = [tiny_engine_capacity_rps({**sim, "max_num_seqs": b}, 64, 20) for b in BATCH_SEQS]
    assert truths == pytest.approx([31.06, 36.76], abs=0.01)
    for row, truth, batch, log in zip(rows, truths, BATCH_SEQS, logs):
        lat = sim["latency"]
        modelled_step_s = lat["step_overhead_s"] + batch * (19 * lat["per_decode_seq_s"] + 64 * lat["per_prefill_token_s"]) / 20
        slowdown = realised_step_slowdown(log, batch, modelled_step_s)
        realised = truth / slowdown  # the capacity the simulator actually had in this run
        print(f"\n{row['config']}: {row['max_rate_rps']} rps vs analytic {truth:.2f}, realised "
              f"{realised:.2f} (steps x{slowdown:.3f}), {row['probes']} probes")
        assert row["error"] == ""
        assert slowdown > 0.97  # the simulator is never faster than its model
        assert abs(float(row["max_rate_rps"]) / realised - 1) <= 0.10
        assert float(row["output_tokens_per_s"]) > 0.8 * float(row["max_rate_rps"]) * 20
        assert int(row["new_probes"]) == int(row["probes"]) >= 3
    assert (result.stage_dir / "capacity_comparison.png").stat().st_size > 10_000
    # The stage ends with the A/B against the first config: 16 seqs carry detectably more (the
    # brackets are disjoint when both are within 10% of 31.06 and 36.76 rps at 5% precision).
    ab = __import__("orjson").loads((result.stage_dir / "capacity_ab.json").read_bytes())
    cap = ab["B=batch16 vs A=batch8"][0]
    assert cap["key"] == "max_rate_rps" and cap["a"] == float(rows[0]["max_rate_rps"])
    assert cap["verdict"] == "better" and cap["low"] > 0
    assert {d["key"] for d in ab["B=batch16 vs A=batch8"][1:]} >= {"ttft_p50_s", "tbt_p99_s", "output_tokens_per_s"}
    assert result.data["ab"][0].startswith("capacity B=batch16 vs A=batch8: +")

    # Every simulator on this host is one endpoint key: no two probes may have overlapped in time.
    searches = result.data["comparison"]
    assert {r["endpoint_key"] for r in searches} == {ctx.endpoint_key}
    saved = __import__("orjson").loads((result.stage_dir / "capacity_comparison.json").read_bytes())
    windows = sorted((p["started_ns"], p["ended_ns"]) for s in saved["searches"].values() for p in s["probes"])
    assert len(windows) == sum(int(r["probes"]) for r in rows)
    for (_, end_a), (start_b, _) in itertools.pairwise(windows):
        assert end_a <= start_b, "two probes of one endpoint key overlapped"
    # Both searches probed (the lock is not FIFO, so one may hold the endpoint probe after probe).
    owners = {label for label, srch in saved["searches"].items() if srch["probes"]}
    assert owners == {"batch8", "batch16"}

    client = MlflowClient(tracking_uri=tracking.tracking_uri)
    experiment = client.get_experiment_by_name("parallel")
    runs = client.search_runs([experiment.experiment_id])
    search_runs = {r.data.tags["etalon.config"]: r for r in runs if "etalon.config" in r.data.tags}
    assert set(search_runs) == {"batch8", "batch16"}
    for label, run in search_runs.items():
        assert run.data.tags["mlflow.parentRunId"] == stage_tracker.run_id
        probes = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == run.info.run_id]
        assert len(probes) == int(next(r["probes"] for r in rows if r["config"] == label))
        assert run.data.metrics["max_rate_rps"] == pytest.approx(float(
            next(r["max_rate_rps"] for r in rows if r["config"] == label)))
