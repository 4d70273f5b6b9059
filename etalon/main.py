"""Command-line entry point: `python -m etalon.main +experiment=NAME key=value ...`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from etalon.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from etalon.runner.experiment import run_experiment

    return run_experiment(cfg)


if __name__ == "__main__":
    main()
