"""Sweeps on the Ray launcher land in MLflow as one parent and one child per job; secrets never do."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from etalon.config import TrackingConfig
from tests.integration.etalon_cli import cli_env, free_port, run_cli

SWEEP = ("+experiment=quickstart", "workload.num_requests=12", "workload.warmup_requests=0", "client.progress=false")
SECRET = "sk-etalon-test-4f9c2e7a91d3"


def _runs(uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("etalon")
    return client, client.search_runs([experiment.experiment_id], max_results=1000)


@pytest.fixture(scope="module")
def rates_sweep(tmp_path_factory: pytest.TempPathFactory):
    """The reusable `+sweep=rates` (2, 4, 8, 16 rps) on the Ray launcher, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("rates_sweep")
    run = run_cli(tmp, *SWEEP, "+sweep=rates", "client=local", "workload.num_requests=8", "hydra/launcher=ray_local",
                  "plots=true",
                  "hydra.launcher.ray.init.num_cpus=2",
                  multirun=True, timeout_s=400)
    assert run.returncode == 0, run.stderr[-4000:]
    return run, tmp


def test_ray_launcher_sweep_gives_one_parent_and_a_child_per_job(rates_sweep) -> None:
    run, tmp_path = rates_sweep
    client, runs = _runs(run.mlflow_uri)
    parents = [r for r in runs if r.data.tags.get("etalon.sweep") == "true"]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4
    rates = sorted(float(c.data.params["workload.arrival.rate_rps"]) for c in children)
    assert rates == [2.0, 4.0, 8.0, 16.0]  # the values conf/sweep/rates.yaml declares
    assert sorted(c.data.tags["hydra.job.num"] for c in children) == ["0", "1", "2", "3"]
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.metrics["ttft_p50_s"] > 0.05
        assert "output_tokens_per_s" in child.data.metrics
        stage_runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == child.info.run_id]
        assert len(stage_runs) == 1
        artifacts = {a.path for a in client.list_artifacts(stage_runs[0].info.run_id)}
        assert "records.jsonl" in artifacts
    comparison = {a.path for a in client.list_artifacts(parent.info.run_id, "comparison")}
    assert {"comparison/sweep_comparison.csv", "comparison/sweep_metrics.png",
            "comparison/sweep_latency_throughput.png", "comparison/sweep_report.html"} <= comparison
    table = Path(client.download_artifacts(parent.info.run_id, "comparison/sweep_comparison.csv", str(tmp_path)))
    lines = table.read_text().splitlines()
    assert "workload.arrival.rate_rps" in lines[0] and len(lines) == 5


def test_sweep_ends_with_its_table_report_and_named_runs(rates_sweep) -> None:
    import re

    from mlflow.tracking import MlflowClient

    run, tmp_path = rates_sweep
    sweep = tmp_path / "sweep"
    tail = run.stdout[run.stdout.rindex("etalon sweep"):]
    assert re.search(r"^\s+0\s+2\s", tail, re.M) and re.search(r"^\s+3\s+16\s", tail, re.M)
    assert (sweep / "sweep_report.html").exists() and (sweep / "comparison" / "sweep_latency_throughput.png").exists()
    client = MlflowClient(tracking_uri=run.mlflow_uri)
    experiment = client.get_experiment_by_name("etalon")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id])
    names = sorted(r.info.run_name for r in runs if r.data.tags.get("etalon.stage") == "pipeline")
    assert names == [f"quickstart rate_rps={r}" for r in (16, 2, 4, 8)]  # sorted as text
    parent = next(r for r in runs if r.data.tags.get("etalon.sweep") == "true")
    assert "ab_job1_ttft_p50_s" in parent.data.params and "ab_job3_tbt_p50_s_rel" in parent.data.metrics
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "comparison")}
    assert "comparison/sweep_report.html" in logged


def test_failed_job_is_marked_and_the_sweep_goes_on(tmp_path: Path) -> None:
    run = run_cli(tmp_path, *SWEEP, "client=local", "workload.arrival.rate_rps=8,-1", multirun=True)
    assert run.returncode == 1
    assert "rate_rps" in run.stderr and "1 job(s) of the sweep failed" in run.stderr
    _, runs = _runs(run.mlflow_uri)
    children = [r for r in runs if r.data.tags.get("etalon.stage") == "pipeline"]
    statuses = sorted(r.info.status for r in children)
    assert statuses == ["FAILED", "FINISHED"]
    failed = next(r for r in children if r.info.status == "FAILED")
    assert "rate_rps" in failed.data.tags["etalon.error"]
    # plots=false (run_cli's default) holds for the sweep's own figures too: report, no PNG
    sweep = tmp_path / "sweep"
    assert (sweep / "sweep_report.html").exists() and not list((sweep / "comparison").glob("*.png"))


def test_api_key_from_environment_never_reaches_params_tags_artifacts_or_files(tmp_path: Path) -> None:
    run = run_cli(
        tmp_path,
        "+experiment=quickstart",
        "workload.num_requests=6",
        "client=local",
        "endpoint.api_key_env=ETALON_TEST_API_KEY",
        "+endpoint.headers.x-api-key=${oc.env:ETALON_TEST_API_KEY}",
        env={"ETALON_TEST_API_KEY": SECRET},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert SECRET not in run.stdout + run.stderr
    client, runs = _runs(run.mlflow_uri)
    assert len(runs) == 2
    for r in runs:
        assert SECRET not in orjson.dumps([r.data.params, r.data.tags]).decode()
    assert all(r.data.params for r in runs if r.data.tags.get('etalon.stage') == 'pipeline')
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix != ".db":
            assert SECRET.encode() not in path.read_bytes(), path
    db = (tmp_path / "mlflow.db").read_bytes()
    assert SECRET.encode() not in db


def test_unreachable_mlflow_warns_and_keeps_local_results(tmp_path: Path) -> None:
    closed_port = free_port()
    run = run_cli(
        tmp_path,
        "+experiment=quickstart",
        "workload.num_requests=6",
        "client=local",
        f"tracking.tracking_uri=http://127.0.0.1:{closed_port}",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert (run.stdout + run.stderr).count("MLflow unavailable") == 1
    assert (run.run_dir / "benchmark" / "summary.json").exists()


@pytest.fixture
def mlflow_server(tmp_path: Path):
    port = free_port()
    env = cli_env({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination", str(tmp_path / "server-artifacts"),
        ],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/health", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode()[-2000:])
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("mlflow server did not start in 90 s")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.slow
def test_runs_logged_over_http_read_back_through_rest(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from etalon.runner.tracking import tracked_run

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    tracking = TrackingConfig(tracking_uri=mlflow_server, experiment_name="etalon-http")
    with tracked_run(tracking, "http-run", {"etalon.stage": "pipeline"}) as tracker:
        tracker.log_params({"workload.arrival.rate_rps": 4.0})
        tracker.log_metrics({"ttft_p99_s": 0.125, "output_tokens_per_s": 812.5})
        with tracker.child("benchmark", {"etalon.stage": "benchmark"}) as child:
            child.log_metrics({"tbt_p50_s": 0.02})
        run_id = tracker.run_id
    assert run_id
    with urllib.request.urlopen(f"{mlflow_server}/api/2.0/mlflow/runs/get?run_id={run_id}", timeout=10) as r:
        run = orjson.loads(r.read())["run"]
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert metrics == {"ttft_p99_s": 0.125, "output_tokens_per_s": 812.5}
    assert params == {"workload.arrival.rate_rps": "4.0"}
    assert run["info"]["status"] == "FINISHED"
    body = orjson.dumps({"experiment_ids": [run["info"]["experiment_id"]], "filter": f"tags.`mlflow.parentRunId` = '{run_id}'"})
    request = urllib.request.Request(
        f"{mlflow_server}/api/2.0/mlflow/runs/search", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        children = orjson.loads(r.read())["runs"]
    assert len(children) == 1
    assert {m["key"]: m["value"] for m in children[0]["data"]["metrics"]} == {"tbt_p50_s": 0.02}


def test_local_sweep_figures_come_from_the_pool_complete(tmp_path: Path) -> None:
    """A basic-launcher sweep hands its figures to worker processes: every job's PNGs are whole
    when its report inlines them and MLflow copies them, and the sweep's own figures too."""
    import base64
    import re

    run = run_cli(tmp_path, *SWEEP, "client=local", "plots=true", "workload.num_requests=8",
                  "workload.arrival.rate_rps=4,8", multirun=True, timeout_s=300)
    assert run.returncode == 0, run.stderr[-3000:]
    client, runs = _runs(run.mlflow_uri)
    stage_runs = {r.info.run_id for r in runs if r.data.tags.get("etalon.stage") == "benchmark"}
    assert len(stage_runs) == 2
    for job in ("0", "1"):
        pngs = sorted((tmp_path / "sweep" / job / "benchmark").glob("*.png"))
        assert {"latency_cdfs.png", "token_timeline.png", "timeseries.png"} <= {p.name for p in pngs}
        page = (tmp_path / "sweep" / job / "report.html").read_text()
        inlined = [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]
        for png in pngs:
            data = png.read_bytes()
            assert data.startswith(b"\x89PNG") and data.endswith(b"IEND\xaeB`\x82")  # whole files
            assert data in inlined
    for run_id in stage_runs:
        logged = {a.path for a in client.list_artifacts(run_id)}
        assert {"latency_cdfs.png", "token_timeline.png"} <= logged
    assert (tmp_path / "sweep" / "comparison" / "sweep_latency_throughput.png").stat().st_size > 5000
