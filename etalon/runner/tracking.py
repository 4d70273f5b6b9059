"""MLflow tracking behind the stages' Tracker interface: batched calls, nested runs, no lost results."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

from etalon.config import TrackingConfig
from etalon.core.redaction import redact_text
from etalon.runner.stale_runs import fail_dead_runs, process_tags
from etalon.runner.store_template import fresh_sqlite_db, save_template, seed_store
from etalon.stages.base import NullTracker

log = logging.getLogger(__name__)
# MLflow's own stderr handler would print its store-migration INFO lines on every run; with this
# its records go through the root logger (the run's log file).
os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no usage posts from the measuring process

PARAM_BATCH = 100
METRIC_BATCH = 1000
PARAM_VALUE_MAX_CHARS = 6000
PARENT_TAG = "mlflow.parentRunId"
# MLflow 3 opens an experiment on its GenAI (traces) or ML (runs) view by this tag: etalon's
# results are runs with params and metrics, so the runs view.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
HTTP_MAX_RETRIES = 0
HTTP_TIMEOUT_S = 10


class TrackingState:
    """Shared by a run and its children: once MLflow fails, warn once and stop trying."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        self.broken = False
        self.secrets = list(secrets or [])  # scrubbed from every tag value

    def guard(self, what: str, fn: Callable[[], Any]) -> Any:
        if self.broken:
            return None
        try:
            return fn()
        except Exception as exc:  # any MLflow/network failure: local results must survive
            self.broken = True
            log.warning("MLflow unavailable (%s failed: %s); results stay in the run directory only", what, exc)
            return None


class MLflowTracker:
    """One MLflow run; ``child`` opens a nested run linked with ``mlflow.parentRunId``."""

    def __init__(self, client: Any, experiment_id: str, run_id: str | None, state: TrackingState) -> None:
        self._client = client
        self._experiment_id = experiment_id
        self._run_id = run_id
        self._state = state

    @property
    def run_id(self) -> str | None:
        return self._run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k[:250], str(v)[:PARAM_VALUE_MAX_CHARS]) for k, v in params.items()]
        for i in range(0, len(items), PARAM_BATCH):
            self._call("log_params", partial(self._client.log_batch, self._run_id, params=items[i : i + PARAM_BATCH]))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.log_metric_steps([metrics], first_step=step or 0)

    def log_metric_steps(self, steps: list[dict[str, float]], first_step: int = 0) -> None:
        """``steps[i]`` at step ``first_step + i``, finite values only, METRIC_BATCH per call."""
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        items = [Metric(k[:250], float(v), now_ms, first_step + i) for i, metrics in enumerate(steps)
                 for k, v in metrics.items() if v is not None and math.isfinite(float(v))]
        for i in range(0, len(items), METRIC_BATCH):
            self._call("log_metrics", partial(self._client.log_batch, self._run_id, metrics=items[i : i + METRIC_BATCH]))

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        secrets = self._state.secrets
        items = [RunTag(k, redact_text(str(v), secrets)[:5000]) for k, v in tags.items()]
        self._call("set_tags", lambda: self._client.log_batch(self._run_id, tags=items))

    def log_artifacts(self, paths: list[Path], artifact_path: str | None = None) -> None:
        from etalon.report import figure_pool

        figure_pool.wait()  # figures among the paths may still be being saved by workers
        for path in paths:
            path = Path(path)
            if not path.exists():
                continue
            upload = self._client.log_artifacts if path.is_dir() else self._client.log_artifact
            self._call("log_artifacts", partial(upload, self._run_id, str(path), artifact_path))

    def log_model(self, python_model: Any, name: str, input_example: Any = None) -> None:
        def log() -> None:
            import mlflow

            mlflow.set_tracking_uri(self._client.tracking_uri)
            with mlflow.start_run(run_id=self._run_id, nested=True):
                mlflow.pyfunc.log_model(name=name, python_model=python_model, input_example=input_example)

        self._call("log_model", log)

    @contextmanager
    def child(self, name: str, tags: dict[str, str] | None = None) -> Iterator[Any]:
        all_tags = {PARENT_TAG: self._run_id or "", **(tags or {})}
        with open_run(self._client, self._experiment_id, name, all_tags, self._state) as tracker:
            yield tracker

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        if self._run_id is None:
            return None
        return self._state.guard(what, fn)


@contextmanager
def open_run(
    client: Any, experiment_id: str, name: str, tags: dict[str, str], state: TrackingState
) -> Iterator[MLflowTracker]:
    """Create a run, yield its tracker, end it FINISHED, or FAILED (with the error as a tag)."""
    tags = {**process_tags(), **{k: redact_text(str(v), state.secrets) for k, v in tags.items()}}
    run = state.guard("create_run", lambda: client.create_run(experiment_id, run_name=name, tags=tags))
    tracker = MLflowTracker(client, experiment_id, run.info.run_id if run is not None else None, state)
    try:
        yield tracker
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        tracker.set_tags({"etalon.error": f"{type(exc).__name__}: {exc}"[:5000]})
        tracker._call("end_run", lambda: client.set_terminated(tracker.run_id, status=status))
        raise
    tracker._call("end_run", lambda: client.set_terminated(tracker.run_id, status="FINISHED"))


# One client per store and experiment for the whole process: every job of a sweep (and every
# search task a Ray worker runs) reuses its connection instead of re-opening and re-checking the
# store's schema.
_CLIENTS: dict[tuple[str, str, str | None], tuple[Any, str]] = {}


_CONNECT_LOCK = threading.Lock()
FAILED_CONNECT_TTL_S = 60.0  # a store that failed is tried again after this (the next sweep job)
_FAILED: dict[tuple[str, str, str | None], float] = {}


def mlflow_client(tracking: TrackingConfig) -> tuple[Any, str] | None:
    """An MlflowClient and the experiment id, or None (with one warning) if the store is unreachable."""
    key = (tracking.tracking_uri, tracking.experiment_name, tracking.artifact_location)
    with _CONNECT_LOCK:  # a connection started by connect_in_background is waited for, not repeated
        if key in _CLIENTS:
            return _CLIENTS[key]
        if time.monotonic() - _FAILED.get(key, -FAILED_CONNECT_TTL_S) < FAILED_CONNECT_TTL_S:
            return None
        connected = _connect(tracking)
        if connected is None:
            _FAILED[key] = time.monotonic()
        else:
            _CLIENTS[key] = connected
        return connected


def connect_in_background(tracking: TrackingConfig) -> None:
    """Start connecting to the store (importing MLflow, creating or checking its schema) on a
    thread, so that it overlaps the endpoint's start-up; ``mlflow_client`` then waits for it."""
    if tracking.enabled:
        threading.Thread(target=mlflow_client, args=(tracking,), name="etalon-mlflow-connect", daemon=True).start()


def _connect(tracking: TrackingConfig) -> tuple[Any, str] | None:
    state = TrackingState()

    def connect() -> tuple[Any, str]:
        from mlflow.tracking import MlflowClient

        uri = tracking.tracking_uri
        _ensure_sqlite_dir(uri)
        _check_reachable(uri)
        bound_http_requests(uri)
        # The first use of a fresh sqlite store creates and migrates its schema: two runs doing it
        # at once corrupt it ("duplicate column name"), so creation and migration hold a file lock.
        with store_lock(uri):
            fresh = fresh_sqlite_db(uri)
            seeded = fresh is not None and seed_store(fresh)
            client = MlflowClient(tracking_uri=uri)
            experiment = client.get_experiment_by_name(tracking.experiment_name)  # creates a fresh schema
            if fresh is not None and not seeded:
                save_template(fresh)
            if experiment is not None:
                if EXPERIMENT_KIND_TAG not in experiment.tags:
                    client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
                return client, experiment.experiment_id
            return client, client.create_experiment(
                tracking.experiment_name, artifact_location=artifact_location(tracking),
                tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
            )

    connected = state.guard("connect", connect)
    if connected is not None:
        state.guard("fail_dead_runs", lambda: fail_dead_runs(*connected))
    return connected


def artifact_location(tracking: TrackingConfig) -> str | None:
    """Artifacts beside a local sqlite store (outputs/mlflow-artifacts) unless configured."""
    if tracking.artifact_location:
        return tracking.artifact_location
    if tracking.tracking_uri.startswith("sqlite:///"):
        db = Path(tracking.tracking_uri[len("sqlite:///") :])
        return (db.parent.resolve() / "mlflow-artifacts").as_uri()
    return None


def _check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """An HTTP tracking server must answer quickly; MLflow's own retries would stall for minutes."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.request

    with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as response:
        response.read()


def bound_http_requests(uri: str) -> None:
    """A tracking server that dies mid-run costs one short timeout, not minutes of retries: MLflow
    retries each HTTP call 7 times with exponential backoff by default. Values the user set win."""
    if uri.startswith(("http://", "https://")):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(HTTP_MAX_RETRIES))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(HTTP_TIMEOUT_S))


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock on ``<db>.lock`` beside a sqlite store (other stores: nothing to lock)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    lock_path = Path(uri[len("sqlite:///") :] + ".lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _ensure_sqlite_dir(uri: str) -> None:
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)


@contextmanager
def tracked_run(
    tracking: TrackingConfig, name: str, tags: dict[str, str], secrets: list[str] | None = None
) -> Iterator[Any]:
    """The root run of one pipeline execution (a child of the sweep's parent when tags say so)."""
    if not tracking.enabled:
        yield NullTracker()
        return
    connected = mlflow_client(tracking)
    if connected is None:
        yield NullTracker()
        return
    client, experiment_id = connected
    with open_run(client, experiment_id, name, tags, TrackingState(secrets)) as tracker:
        yield tracker


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists keep their index (``a.0``)."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(obj, (list, tuple)) and obj and any(isinstance(v, (dict, list)) for v in obj):
        for i, value in enumerate(obj):
            out.update(flatten(value, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = obj
    return out
