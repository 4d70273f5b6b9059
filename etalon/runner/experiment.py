"""Run one experiment (one Hydra job): validate, launch the endpoint, execute the pipeline, track."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from etalon.config import EtalonConfig
from etalon.core.redaction import redact_text
from etalon.loadgen.interrupts import exit_status, signal_name, terminate_as_interrupt
from etalon.loadgen.sink import is_disk_full
from etalon.runner.errors import USER_ERRORS, describe
from etalon.runner.outputs import run_tags, save_resolved_config, tracking_params
from etalon.runner.pipeline import run_pipeline
from etalon.runner.redaction import secrets_of_config
from etalon.runner.tracking import PARENT_TAG, tracked_run

def load_config(dcfg: DictConfig) -> EtalonConfig:
    """Resolve and convert once; every cross-field check runs here, before any request is sent."""
    from etalon.runner.endpoint import assign_port

    assign_port(dcfg)
    cfg = OmegaConf.to_object(dcfg)
    assert isinstance(cfg, EtalonConfig)
    return cfg


def run_experiment(dcfg: DictConfig) -> float | None:
    """The Hydra task function's body. Returns the main metric, or None when the job failed."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = str(hydra_cfg.mode) == "RunMode.MULTIRUN"
    secrets = secrets_of_config(dcfg)
    try:
        with terminate_as_interrupt():
            return _run(dcfg, run_dir, hydra_cfg, secrets)
    except USER_ERRORS as exc:
        message = redact_text(describe(exc), secrets)
        print(f"etalon: error: {message}", file=sys.stderr, flush=True)
        (run_dir / "error.txt").write_text(message + "\n")
        if multirun:
            return None  # the sweep goes on; the job's MLflow run is marked FAILED
        sys.exit(2)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        message = f"disk full: {exc}; records and summary written so far are in {run_dir}"
        print(f"etalon: error: {message}", file=sys.stderr, flush=True)
        if multirun:
            return None
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"etalon: interrupted ({signal_name()}); results measured so far are in {run_dir}",
              file=sys.stderr, flush=True)
        if multirun:
            raise
        sys.exit(exit_status())


def _run(dcfg: DictConfig, run_dir: Path, hydra_cfg: Any, secrets: list[str]) -> float | None:
    from etalon.runner.endpoint import endpoint_key
    from etalon.runner.locks import endpoint_lock

    cfg = _validated(dcfg)
    secrets = sorted(set(secrets) | set(save_resolved_config(dcfg, cfg, run_dir)), key=len, reverse=True)
    tags = run_tags(cfg, hydra_cfg)
    parent_id = _sweep_parent_id(hydra_cfg)
    if parent_id:
        tags[PARENT_TAG] = parent_id
    name = cfg.tracking.run_name or f"{cfg.experiment_name}-{cfg.pipeline.name}"
    # Jobs of a Ray sweep that measure the same endpoint wait for each other here.
    with endpoint_lock(endpoint_key(cfg, cfg.endpoint.base_url or _server_url(cfg))), \
            tracked_run(cfg.tracking, name, tags, secrets) as tracker:
        tracker.log_params(tracking_params(cfg, dcfg, secrets))
        tracker.log_artifacts([run_dir / "resolved_config.yaml"])
        _announce(cfg, tracker)
        check_components(cfg)  # inside the run, so a bad value marks it FAILED with the reason
        try:
            with _endpoint_for(cfg, run_dir) as (endpoint, key):
                tracker.set_tags({"endpoint.base_url": endpoint.base_url})
                if endpoint.server is not None:
                    tracker.log_params(_identity_params(endpoint.server))
                results = run_pipeline(cfg, run_dir, endpoint, key, tracker)
        finally:
            if (run_dir / "server.log").exists():
                tracker.log_artifacts([run_dir / "server.log"])
    last = list(results.values())[-1]
    return last.scalars.get("output_tokens_per_s")


def needs_own_endpoint(cfg: EtalonConfig) -> bool:
    """False when every stage searches its own configs (each launching its own server): the job
    then starts no server of its own, so no two servers run at once on a CPU-only host."""
    return not all(isinstance(s.run, dict) and (s.run.get("configs") or s.run.get("grid"))
                   for s in cfg.pipeline.stages)


def _endpoint_for(cfg: EtalonConfig, run_dir: Path) -> Any:
    from contextlib import nullcontext

    from etalon.clients.base import EndpointSpec
    from etalon.runner.endpoint import live_endpoint

    if needs_own_endpoint(cfg):
        return live_endpoint(cfg, run_dir)
    url = cfg.endpoint.base_url or (cfg.server.base_url if cfg.server is not None else "http://unused")
    return nullcontext((EndpointSpec(base_url=url, model=cfg.model.name), "none"))


def _identity_params(identity: Any) -> dict[str, Any]:
    return {"server.observed.max_model_len": identity.max_model_len,
            "server.observed.version": identity.version,
            "server.observed.command": " ".join(identity.command)[:6000] or None}


def _validated(dcfg: DictConfig) -> EtalonConfig:
    from etalon.config import ConfigError

    try:
        cfg = load_config(dcfg)
    except USER_ERRORS:
        raise
    except Exception as exc:  # OmegaConf validation errors name the key in their message
        raise ConfigError(str(exc).splitlines()[0]) from exc
    return cfg


def check_components(cfg: EtalonConfig) -> None:
    """Build every swappable part once, so a bad value fails before a server starts."""
    from hydra.utils import instantiate

    from etalon.datasets.tokenizers import load_tokenizer
    from etalon.runner.endpoint import launches_simulator
    from etalon.runner.resources import check_cache_dir_writable, check_run_fits_in_memory
    from etalon.stages.benchmark import max_total_tokens

    load_tokenizer(cfg.model.tokenizer)
    if launches_simulator(cfg):
        from etalon.sim.config import sim_config_from_dict

        sim_config_from_dict(cfg.sim)
    arrival, lengths = instantiate(cfg.workload.arrival), instantiate(cfg.workload.lengths)
    check_run_fits_in_memory(cfg, arrival, lengths)
    check_cache_dir_writable(cfg.cache_dir)
    instantiate(cfg.slo)
    for stage in cfg.pipeline.stages:
        instantiate(stage.run)
    max_total_tokens(cfg)


def _server_url(cfg: EtalonConfig) -> str:
    return cfg.server.base_url if cfg.launches_server and cfg.server is not None else ""


def _sweep_parent_id(hydra_cfg: Any) -> str | None:
    if str(hydra_cfg.mode) != "RunMode.MULTIRUN":
        return None
    marker = Path(hydra_cfg.sweep.dir) / "mlflow_parent_run_id"
    return marker.read_text().strip() if marker.exists() else None


def _announce(cfg: EtalonConfig, tracker: Any) -> None:
    if tracker.run_id is None:
        return
    print(f"etalon: MLflow run {tracker.run_id} (experiment {cfg.tracking.experiment_name!r})", flush=True)
    if cfg.tracking.tracking_uri.startswith("sqlite:"):
        print(f"etalon: browse runs with: mlflow ui --backend-store-uri {cfg.tracking.tracking_uri}", flush=True)
