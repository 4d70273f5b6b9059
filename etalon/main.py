"""Command-line entry point: `etalon +experiment=NAME key=value ...` (or `python -m etalon.main`)."""

from __future__ import annotations

import os

# Before MLflow is imported anywhere (also in Ray workers, which inherit the environment): its
# records then go to the run's log file rather than straight to the terminal.
os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
# MLflow 3's usage telemetry posts from a thread of the measuring process (and fetches its config
# over the network at start): off unless the user sets MLFLOW_DISABLE_TELEMETRY=false.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from etalon.config import register_configs  # noqa: E402
from etalon.runner.cli import config_dir, install_error_reporting  # noqa: E402
from etalon.runner.compose_once import install_compose_once  # noqa: E402
from etalon.runner.heap import tune_collector  # noqa: E402

register_configs()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def app(cfg: DictConfig) -> float | None:
    from etalon.runner.experiment import run_experiment

    return run_experiment(cfg)


def main() -> None:
    """The `etalon` console script."""
    tune_collector()
    install_error_reporting()
    install_compose_once()
    app()


if __name__ == "__main__":
    main()
