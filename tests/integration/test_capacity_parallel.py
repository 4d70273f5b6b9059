"""Parallel capacity searches on Ray: one comparison row per config at its analytic capacity, probes
of one endpoint key never overlapping, every probe a nested MLflow run under the stage's run."""

from __future__ import annotations

import csv
import itertools

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
        result = capacity_search.run(ctx, configs=CONFIGS, labels=["batch8", "batch16"], runner=runner, **PARAMS)

    rows = list(csv.DictReader(open(result.stage_dir / "capacity_comparison.csv")))
    assert [r["config"] for r in rows] == ["batch8", "batch16"]
    truths = [tiny_engine_capacity_rps({**sim, "max_num_seqs": b}, 64, 20) for b in BATCH_SEQS]
    assert truths == pytest.approx([31.06, 36.76], abs=0.01)
    for row, truth in zip(rows, truths):
        print(f"\n{row['config']}: {row['max_rate_rps']} rps vs analytic {truth:.2f}, {row['probes']} probes")
        assert row["error"] == ""
        assert abs(float(row["max_rate_rps"]) / truth - 1) <= 0.10
        assert float(row["output_tokens_per_s"]) > 0.8 * float(row["max_rate_rps"]) * 20
        assert int(row["new_probes"]) == int(row["probes"]) >= 3
    assert (result.stage_dir / "capacity_comparison.png").stat().st_size > 10_000

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
