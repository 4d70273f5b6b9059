"""Keep other libraries' log lines off the terminal of a sweep's driver process."""

from __future__ import annotations

import os
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class QuietLibrariesCallback(Callback):
    """Before a sweep launches (the Ray launcher starts Ray right after this), route Ray's logger
    to the root logger, whose terminal handler only shows errors (conf/hydra/hydra_logging)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if "ray" in str(config.hydra.get("launcher", {}).get("_target_", "")).lower():
            from etalon.loadgen.ray_init import quiet_ray_logging

            quiet_ray_logging()


__all__ = ["QuietLibrariesCallback"]
