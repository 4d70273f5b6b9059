"""A server that echoes the API key, and a key given on the command line: the key appears in
nothing etalon prints or writes (terminal, error.txt, records, .hydra files, logs, MLflow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.etalon_cli import run_cli
from tests.integration.test_hostile_server import HostileServer

KEY = "sk-echoed-9c1e77d3b2"
FAST = ("client=local", "workload.num_requests=3", "workload.warmup_requests=0",
        "endpoint=openai_chat", "model.name=echo-key")


@pytest.fixture(scope="module")
def hostile() -> Any:
    with HostileServer() as srv:
        yield srv


def _everything_written(tmp_path: Path, run: Any) -> str:
    from mlflow.tracking import MlflowClient

    texts = [run.stdout, run.stderr]
    texts += [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()
              and p.suffix in (".txt", ".yaml", ".jsonl", ".json", ".log", ".csv")]
    client = MlflowClient(tracking_uri=run.mlflow_uri)
    for experiment in client.search_experiments():
        for found in client.search_runs([experiment.experiment_id]):
            texts += [str(found.data.tags), str(found.data.params)]
    return "\n".join(texts)


def test_key_echoed_mid_run_and_given_as_header_leaks_nowhere(hostile: HostileServer,
                                                               tmp_path: Path) -> None:
    run = run_cli(tmp_path, *FAST, f"endpoint.base_url=http://127.0.0.1:{hostile.port}/v1",
                  "endpoint.api_key_env=ETALON_TEST_KEY", f"+endpoint.headers.x-api-key={KEY}x",
                  env={"ETALON_TEST_KEY": KEY}, timeout_s=120)
    assert run.returncode == 0, run.stderr[-2000:]
    records = (run.run_dir / "benchmark" / "records.jsonl").read_text()
    assert records.count('"http_status":401') == 3 and "REDACTED" in records
    written = _everything_written(tmp_path, run)
    assert KEY not in written
    assert "x-api-key=***REDACTED***" in (run.run_dir / ".hydra" / "overrides.yaml").read_text()


def test_key_echoed_at_preflight_leaks_nowhere(hostile: HostileServer, tmp_path: Path) -> None:
    hostile.models_mode = "echo-key"
    try:
        run = run_cli(tmp_path, *FAST, f"endpoint.base_url=http://127.0.0.1:{hostile.port}/v1",
                      "endpoint.api_key_env=ETALON_TEST_KEY", env={"ETALON_TEST_KEY": KEY},
                      timeout_s=120)
    finally:
        hostile.models_mode = "ok"
    assert run.returncode == 2 and "HTTP 401" in run.stderr and "REDACTED" in run.stderr
    # A run that measured nothing leaves no run directory (issue 13); where one is kept, its
    # error.txt carries the redacted message.
    error = run.run_dir / "error.txt"
    assert not run.run_dir.exists() or "REDACTED" in error.read_text()
    assert KEY not in _everything_written(tmp_path, run)


def test_key_override_in_a_sweep_stays_out_of_hydra_log(hostile: HostileServer, tmp_path: Path) -> None:
    run = run_cli(tmp_path, *FAST, f"endpoint.base_url=http://127.0.0.1:{hostile.port}/v1",
                  f"+endpoint.headers.Authorization=Bearer {KEY}", "workload.seed=1,2",
                  multirun=True, timeout_s=400)
    assert "Launching 2 jobs" in run.stdout + run.stderr  # Hydra's launcher log was printed
    assert KEY not in _everything_written(tmp_path, run)
