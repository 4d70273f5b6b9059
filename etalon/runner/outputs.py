"""What a run writes about itself: the redacted resolved config, MLflow params and tags."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from etalon.config import EtalonConfig
from etalon.runner.endpoint import launches_simulator
from etalon.core.redaction import header_secrets
from etalon.runner.redaction import config_secrets, redact_overrides
from etalon.runner.secrets import known_secret_values, redact
from etalon.runner.tracking import flatten

PROJECT_DIR = Path(__file__).resolve().parents[2]


def save_resolved_config(dcfg: DictConfig, cfg: EtalonConfig, run_dir: Path) -> list[str]:
    """Write ``resolved_config.yaml`` (secrets redacted); return the secret values to redact elsewhere."""
    raw = OmegaConf.to_container(dcfg, resolve=True)
    secrets = config_secrets(raw, [cfg.endpoint.api_key_env])
    container = redact(raw, secrets)
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(container), run_dir / "resolved_config.yaml")
    return secrets


def tracking_params(cfg: EtalonConfig, dcfg: DictConfig, secrets: list[str]) -> dict[str, Any]:
    """The flattened resolved config (``workload.arrival.rate_rps``), secrets never, sim only if used."""
    container = redact(OmegaConf.to_container(dcfg, resolve=True), secrets)
    assert isinstance(container, dict)
    if not launches_simulator(cfg):
        container.pop("sim", None)
    if not cfg.launches_server:
        container.pop("server", None)
    return flatten(container)


def run_tags(cfg: EtalonConfig, hydra_cfg: Any) -> dict[str, str]:
    tags = {
        "etalon.pipeline": cfg.pipeline.name,
        "etalon.experiment": cfg.experiment_name,
        "etalon.endpoint": cfg.endpoint.name,
        "etalon.model": cfg.model.name,
        "etalon.stage": "pipeline",
        "mlflow.source.git.commit": git_commit(),
        "hydra.job.name": str(hydra_cfg.job.name),
    }
    num = hydra_cfg.job.get("num")
    if num is not None:
        tags["hydra.job.num"] = str(num)
    overrides = list(hydra_cfg.overrides.task)
    if overrides:
        secrets = known_secret_values([cfg.endpoint.api_key_env]) + header_secrets(cfg.endpoint.headers)
        tags["hydra.overrides"] = " ".join(redact_overrides(overrides, secrets))
    return tags


@lru_cache(maxsize=1)
def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"
