"""The quickstart as a user runs it: real CLI, real simulator, real Ray actors, MLflow in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from tests.integration.etalon_cli import run_cli


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("quickstart")
    # client=default: the preset runs in-process; this test keeps the Ray actor path covered.
    run = run_cli(tmp, "+experiment=quickstart", "client=default", "workload.num_requests=40",
                  "workload.warmup_requests=4")
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def _records(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def test_quickstart_writes_config_records_and_summary(quickstart) -> None:
    stage_dir = quickstart.run_dir / "benchmark"
    resolved = (quickstart.run_dir / "resolved_config.yaml").read_text()
    assert "experiment_name: quickstart" in resolved
    records = _records(stage_dir / "records.jsonl")
    assert len(records) == 44
    assert sum(r["warmup"] for r in records) == 4
    assert all(r["status"] == "ok" for r in records)
    # Every request got exactly the tokens it asked for (ignore_eos), each one timestamped.
    for r in records:
        assert r["output_tokens"] == r["requested_output_tokens"] == len(r["token_ns"])
        assert r["output_tokens_source"] == "usage"
        assert r["sent_ns"] <= r["first_token_ns"] <= r["token_ns"][-1] <= r["end_ns"]
    summary = json.loads((stage_dir / "summary.json").read_text())
    assert summary["partial"] is False
    assert "fluidity" in quickstart.stdout.lower()


def test_quickstart_ttft_follows_the_simulator_latency_model(quickstart) -> None:
    records = [r for r in _records(quickstart.run_dir / "benchmark" / "records.jsonl") if not r["warmup"]]
    # conf/sim/simple.yaml: TTFT = 0.05 s + 2e-5 s per prompt token, one token every 0.02 s.
    for r in records:
        ttft_s = (r["first_token_ns"] - r["sent_ns"]) / 1e9
        expected_s = 0.05 + 2e-5 * r["prompt_tokens"]
        assert expected_s - 0.001 <= ttft_s <= expected_s + 0.02, (ttft_s, expected_s)


def test_quickstart_is_logged_to_mlflow(quickstart) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=quickstart.mlflow_uri)
    experiment = client.get_experiment_by_name("etalon")
    runs = client.search_runs([experiment.experiment_id])
    pipeline_runs = [r for r in runs if r.data.tags.get("etalon.stage") == "pipeline"]
    stage_runs = [r for r in runs if r.data.tags.get("etalon.stage") == "benchmark"]
    assert len(pipeline_runs) == 1 and len(stage_runs) == 1
    parent, child = pipeline_runs[0], stage_runs[0]
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert parent.data.params["workload.arrival.rate_rps"] == "8.0"
    assert parent.data.tags["etalon.pipeline"] == "benchmark"
    assert len(parent.data.tags["mlflow.source.git.commit"]) in (40, 7) or parent.data.tags[
        "mlflow.source.git.commit"
    ] == "unknown"
    for run in (parent, child):
        assert run.info.status == "FINISHED"
        assert run.data.metrics["ttft_p50_s"] > 0.05
        assert 0.0 <= run.data.metrics["fluidity_index_mean"] <= 1.0
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"records.jsonl", "summary.json"} <= artifacts
    assert any(p.endswith(".png") for p in artifacts)


def test_client_measures_the_simulator_within_3_percent_at_32_streams(tmp_path: Path) -> None:
    run = run_cli(
        tmp_path,
        "+experiment=quickstart",
        "client=default",  # the Ray actor path, as before the preset ran in-process
        "workload=closed_loop",
        "workload.arrival.concurrency=32",
        "workload.lengths.prompt_tokens=500",
        "workload.lengths.output_tokens=64",
        "workload.num_requests=96",
        "workload.warmup_requests=0",
        "tracking=none",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((run.run_dir / "benchmark" / "summary.json").read_text())["scalars"]
    # conf/sim/simple.yaml: TTFT = 0.05 s + 2e-5 s/token * 500 tokens = 0.06 s; TBT = 0.02 s.
    assert summary["ttft_p50_s"] == pytest.approx(0.06, rel=0.03)
    assert summary["tbt_p50_s"] == pytest.approx(0.02, rel=0.03)
    assert summary["requests_ok"] == 96
