"""Hydra callbacks: a sweep's MLflow parent run, and its comparison table and plot at the end."""

from __future__ import annotations

import logging
import sys
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


def _tracking(config: DictConfig) -> TrackingConfig | None:
    node = config.get("tracking")
    if node is None:
        return None
    tracking = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrackingConfig), node))
    assert isinstance(tracking, TrackingConfig)
    return tracking if tracking.enabled else None


class MLflowSweepCallback(Callback):
    """Opens one parent run per multirun; jobs (possibly in other processes) find its id in the
    sweep directory and link themselves to it with the ``mlflow.parentRunId`` tag."""

    def __init__(self) -> None:
        self._parent: tuple[Any, str] | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        tracking = _tracking(config)
        if tracking is None:
            return
        connected = mlflow_client(tracking)
        if connected is None:
            return
        client, experiment_id = connected
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        name = f"sweep-{config.get('experiment_name', 'etalon')}"
        overrides = " ".join(redact_overrides(config.hydra.overrides.task))
        run = client.create_run(
            experiment_id,
            run_name=name,
            tags={**process_tags(), "etalon.sweep": "true", "hydra.overrides": overrides[:5000], "etalon.sweep_dir": str(sweep_dir)},
        )
        (sweep_dir / PARENT_MARKER).write_text(run.info.run_id)
        self._parent = (client, run.info.run_id)
        print(f"etalon: sweep parent MLflow run {run.info.run_id}", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish_parent(config)
        failed = sorted(Path(config.hydra.sweep.dir).glob("*/error.txt"))
        if failed:
            for path in failed:
                print(f"etalon: job {path.parent.name} failed: {path.read_text().strip()}", file=sys.stderr)
            print(f"etalon: {len(failed)} job(s) of the sweep failed; the others finished", file=sys.stderr)
            sys.exit(1)

    def _finish_parent(self, config: DictConfig) -> None:
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
            files = write_comparison(children, sweep_dir)
            for path in files:
                client.log_artifact(parent_id, str(path), "comparison")
            client.set_terminated(parent_id, status="FINISHED")

        state.guard("sweep comparison", finish)
