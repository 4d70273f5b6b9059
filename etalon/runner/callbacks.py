"""Hydra callbacks: a sweep's MLflow parent run, and its comparison table and plot at the end."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from etalon.config import TrackingConfig
from etalon.runner.redaction import redact_overrides
from etalon.runner.stale_runs import process_tags
from etalon.runner.tracking import PARENT_TAG, TrackingState, mlflow_client

log = logging.getLogger("etalon")

PARENT_MARKER = "mlflow_parent_run_id"
BASIC_LAUNCHER = "BasicLauncher"  # hydra._internal.core_plugins.basic_launcher.BasicLauncher


def _swept(config: DictConfig) -> list[str]:
    """The keys the sweep varies: on the command line, or by a sweep preset (`+sweep=rates` fills
    hydra.sweeper.params)."""
    from etalon.runner.closing import sweep_keys

    params = config.hydra.sweeper.get("params") or {}
    return sweep_keys([*config.hydra.overrides.task, *(f"{k}={v}" for k, v in params.items())])


def _tracking(config: DictConfig) -> TrackingConfig | None:
    node = config.get("tracking")
    if node is None:
        return None
    tracking = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrackingConfig), node))
    assert isinstance(tracking, TrackingConfig)
    return tracking if tracking.enabled else None


class SweepServersCallback(Callback):
    """With the basic launcher (jobs one after another in this process) the jobs of a sweep share
    one embedded simulator, reset for each job (``etalon.runner.server_pool``), started ahead of
    the first job and stopped at the end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from etalon.runner import server_pool

        if str(OmegaConf.select(config, "hydra.launcher._target_", default="")).endswith(BASIC_LAUNCHER):
            server_pool.enable()
            server_pool.prestart(config, _swept(config), Path(config.hydra.sweep.dir) / "server.log")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from etalon.runner import server_pool

        server_pool.close(wait=False)  # it exits while the sweep's report is written (the next callback)


class MLflowSweepCallback(Callback):
    """Opens one parent run per multirun; jobs (possibly in other processes) find its id in the
    sweep directory and link themselves to it with the ``mlflow.parentRunId`` tag."""

    def __init__(self) -> None:
        self._parent: tuple[Any, str] | None = None
        self._opening: threading.Thread | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from etalon.runner.closing import SWEEP_KEYS_FILE

        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / SWEEP_KEYS_FILE).write_text("\n".join(dict.fromkeys(_swept(config))) + "\n")
        if config.get("plots", True):
            from etalon.report import figure_pool

            figure_pool.start()  # its fork server imports matplotlib while MLflow connects
        tracking = _tracking(config)
        if tracking is None:
            return
        if str(OmegaConf.select(config, "hydra.launcher._target_", default="")).endswith(BASIC_LAUNCHER):
            # Jobs run in this process, after on_job_start: MLflow imports and connects (~2 s) while
            # the sweeper composes the jobs' configs and the shared simulator starts.
            self._opening = threading.Thread(target=self._open_parent, args=(config, tracking),
                                             name="etalon-mlflow-parent", daemon=True)
            self._opening.start()
        else:  # other launchers start jobs elsewhere, which read the parent's id from the sweep dir
            self._open_parent(config, tracking)

    def _open_parent(self, config: DictConfig, tracking: TrackingConfig) -> None:
        connected = mlflow_client(tracking)
        if connected is None:
            return
        client, experiment_id = connected
        sweep_dir = Path(config.hydra.sweep.dir)
        name = f"sweep-{config.get('experiment_name', 'etalon')}"
        overrides = " ".join(redact_overrides(config.hydra.overrides.task))
        run = TrackingState().guard("create the sweep's parent run", lambda: client.create_run(
            experiment_id,
            run_name=name,
            tags={**process_tags(), "etalon.sweep": "true", "hydra.overrides": overrides[:5000], "etalon.sweep_dir": str(sweep_dir)},
        ))
        if run is None:
            return
        (sweep_dir / PARENT_MARKER).write_text(run.info.run_id)
        self._parent = (client, run.info.run_id)
        print(f"etalon: sweep parent MLflow run {run.info.run_id}", flush=True)

    def _opened(self) -> None:
        """Until the parent run is open (or failed to open): a job links itself to it."""
        opening, self._opening = self._opening, None
        if opening is not None:
            opening.join()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._opened()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from etalon.runner.sweep_end import finish_sweep

        self._opened()
        try:
            files, metrics, params = finish_sweep(Path(config.hydra.sweep.dir),
                                                  plots=bool(config.get("plots", True)))
        except Exception as exc:  # the sweep's own results are in its job directories
            log.warning("sweep report not written: %s: %s", type(exc).__name__, exc)
            files, metrics, params = [], {}, {}
        from etalon.report import figure_pool

        figure_pool.shutdown()
        self._finish_parent(config, files, metrics, params)
        _exit_on_failures(Path(config.hydra.sweep.dir))

    def _finish_parent(self, config: DictConfig, files: list[Path], metrics: dict[str, float],
                       params: dict[str, str]) -> None:
        if self._parent is None:
            return
        client, parent_id = self._parent
        state = TrackingState()
        sweep_dir = Path(config.hydra.sweep.dir)

        def finish() -> None:
            from etalon.runner.comparison import write_comparison

            children = client.search_runs(
                [client.get_run(parent_id).info.experiment_id],
                filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'",
                max_results=10000,
            )
            for path in [*write_comparison(children, sweep_dir), *files]:
                client.log_artifact(parent_id, str(path), "comparison")
            from etalon.runner.tracking import MLflowTracker

            parent = MLflowTracker(client, "", parent_id, state)
            parent.log_metrics(metrics)
            parent.log_params(params)
            client.set_terminated(parent_id, status="FINISHED")

        state.guard("sweep comparison", finish)


def _exit_on_failures(sweep_dir: Path) -> None:
    """Exit 1 when a job failed; else 3 when a job's SLO failed under fail_on_slo=true."""
    from etalon.runner.errors import SLO_FAILED_EXIT, SLO_FAILED_MARKER

    failed = sorted(sweep_dir.glob("*/error.txt"))
    if failed:
        for path in failed:
            print(f"etalon: job {path.parent.name} failed: {path.read_text().strip()}", file=sys.stderr)
        print(f"etalon: {len(failed)} job(s) of the sweep failed; the others finished", file=sys.stderr)
        sys.exit(1)
    slo_failed = sorted(p.parent.name for p in sweep_dir.glob(f"*/{SLO_FAILED_MARKER}"))
    if slo_failed:
        print(f"etalon: the SLO failed in job(s) {', '.join(slo_failed)} (fail_on_slo=true)", file=sys.stderr)
        sys.exit(SLO_FAILED_EXIT)
