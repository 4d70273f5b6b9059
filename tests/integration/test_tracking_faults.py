"""Tracking faults: a tracking server dying mid-run costs one short timeout and one warning, and
several runs may be the first to use a fresh sqlite store at once."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web

from etalon.config import TrackingConfig
from etalon.runner.tracking import tracked_run
from tests.integration.etalon_cli import PROJECT_DIR, cli_env
from tests.integration.threaded_server import ThreadedServer


class TinyMLflowServer(ThreadedServer):
    """Answers the REST calls etalon makes when a run opens (health, experiment, search, create)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    async def _api(self, request: web.Request) -> web.Response:
        self.calls.append(request.path)
        name = request.path.rsplit("/", 1)[-1]
        if name == "health":
            return web.Response(text="OK")
        if name == "get-by-name":
            return web.json_response({"experiment": {"experiment_id": "1", "name": "etalon",
                                                     "lifecycle_stage": "active"}})
        if name == "search":
            return web.json_response({"runs": []})
        if name == "create":
            info = {"run_id": "r1", "run_uuid": "r1", "experiment_id": "1", "status": "RUNNING",
                    "start_time": 0, "lifecycle_stage": "active", "artifact_uri": "file:///nowhere"}
            return web.json_response({"run": {"info": info, "data": {}}})
        return web.json_response({})

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._api)


def test_tracking_server_dying_mid_run_costs_one_short_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    server = TinyMLflowServer()
    server.__enter__()
    artifact = tmp_path / "summary.json"
    artifact.write_text("{}")
    tracking = TrackingConfig(tracking_uri=f"http://127.0.0.1:{server.port}")
    caplog.set_level(logging.WARNING)
    with tracked_run(tracking, "run", {}) as tracker:
        assert tracker.run_id == "r1"
        server.__exit__()  # the tracking server dies while the run measures
        t0 = time.monotonic()
        tracker.log_metrics({"ttft_p50_s": 0.1})
        tracker.set_tags({"a": "b"})
        tracker.log_artifacts([artifact])
        with tracker.child("benchmark") as child:
            child.log_metrics({"x": 1.0})
    elapsed_s = time.monotonic() - t0
    assert elapsed_s < 15, elapsed_s  # MLflow's own retries would take minutes
    warnings = [r for r in caplog.records if "MLflow unavailable" in r.getMessage()]
    assert len(warnings) == 1


WORKER = """
import sys, time
from pathlib import Path
from etalon.config import TrackingConfig
from etalon.runner.tracking import tracked_run
import mlflow.store.tracking.sqlalchemy_store  # imported before the barrier: all start together
folder, index = Path(sys.argv[1]), sys.argv[2]
(folder / f"ready-{index}").touch()
while not (folder / "go").exists():
    time.sleep(0.005)
tracking = TrackingConfig(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
with tracked_run(tracking, f"job-{index}", {}) as tracker:
    print("RUN", tracker.run_id)
"""


def test_concurrent_first_use_of_a_sqlite_store(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    n = 3
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), str(i)], cwd=PROJECT_DIR,
                              env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(n)]
    deadline = time.monotonic() + 180
    while len(list(tmp_path.glob("ready-*"))) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    (tmp_path / "go").touch()
    outputs = [p.communicate(timeout=240) for p in procs]
    ids = [line.split()[1] for out, _ in outputs for line in out.splitlines() if line.startswith("RUN")]
    assert len(ids) == n and "None" not in ids, [err[-1500:] for _, err in outputs]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("etalon")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted(ids)
    assert {r.info.status for r in runs} == {"FINISHED"}


