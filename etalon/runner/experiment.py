"""Run one experiment (one Hydra job): validate, launch the endpoint, execute the pipeline, track."""

from __future__ import annotations

import logging
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from etalon.config import ConfigError, EtalonConfig
from etalon.core.redaction import redact_text
from etalon.loadgen.interrupts import exit_status, signal_name, terminate_as_interrupt
from etalon.loadgen.sink import is_disk_full
from etalon.runner.closing import closing_verdict, run_name
from etalon.runner.config_checks import check_output_dirs, check_schema_keys, remove_unstarted_run_dir
from etalon.runner.errors import SLO_FAILED_EXIT, SLO_FAILED_MARKER, USER_ERRORS, describe
from etalon.runner.outputs import run_tags, save_resolved_config, tracking_params
from etalon.runner.pipeline import run_pipeline
from etalon.runner.redaction import secrets_of_config
from etalon.runner.stage_params import check_stage_params
from etalon.runner.tracking import PARENT_TAG, connect_in_background, tracked_run

def load_config(dcfg: DictConfig) -> EtalonConfig:
    """Resolve and convert once; every cross-field check runs here, before any request is sent."""
    from etalon.runner.endpoint import assign_port

    assign_port(dcfg)
    cfg = OmegaConf.to_object(dcfg)
    assert isinstance(cfg, EtalonConfig)
    return cfg


def _log_traceback(message: str) -> None:
    """The terminal gets one line; the run's log file keeps where it came from (a logger outside
    ``etalon`` reaches only the file handler at this level)."""
    logging.getLogger("etalon_traceback").info("error: %s", message, exc_info=True)


def run_experiment(dcfg: DictConfig) -> float | None:
    """The Hydra task function's body. Returns the main metric, or None when the job failed."""
    from hydra.core.hydra_config import HydraConfig

    logging.captureWarnings(True)  # libraries' warnings go to the run's log file, not the terminal
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = str(hydra_cfg.mode) == "RunMode.MULTIRUN"
    secrets = secrets_of_config(dcfg)
    try:
        with terminate_as_interrupt():
            value, slo_failed = _run(dcfg, run_dir, hydra_cfg, secrets)
            from etalon.report import figure_pool

            figure_pool.wait()  # every file of the run is written before it says so
        print(f"etalon: done; results in {run_dir.resolve()}", flush=True)
    except USER_ERRORS as exc:
        message = redact_text(describe(exc), secrets)
        print(f"etalon: error: {message}", file=sys.stderr, flush=True)
        _log_traceback(message)
        if multirun:
            (run_dir / "error.txt").write_text(message + "\n")  # the sweep's summary names it
            return None  # the sweep goes on; the job's MLflow run is marked FAILED
        if not remove_unstarted_run_dir(run_dir):
            (run_dir / "error.txt").write_text(message + "\n")
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
    if slo_failed:
        (run_dir / SLO_FAILED_MARKER).write_text("the SLO failed\n")
        if not multirun:
            sys.exit(SLO_FAILED_EXIT)  # the verdict block printed last says so
    return value


def _start_figure_workers(cfg: EtalonConfig, multirun: bool) -> None:
    """A single run's figures are saved by the figure pool too (a sweep starts it once for all its
    jobs): its fork server imports matplotlib on another core while MLflow connects and the
    endpoint starts, and after the load the workers save the ~8 figures (~1.2 s of drawing) while
    this process writes the tables, the summary and MLflow's records. It is stopped at exit."""
    if multirun or not cfg.plots:
        return
    import atexit

    from etalon.report import figure_pool

    figure_pool.start()
    atexit.register(figure_pool.shutdown)


def _run(dcfg: DictConfig, run_dir: Path, hydra_cfg: Any, secrets: list[str]) -> tuple[float | None, bool]:
    """(main metric, whether the SLO failed with fail_on_slo=true)."""
    from etalon.runner.endpoint import endpoint_key
    from etalon.runner.locks import endpoint_lock

    cfg = _validated(dcfg)
    _start_figure_workers(cfg, str(hydra_cfg.mode) == "RunMode.MULTIRUN")
    print(f"etalon: run directory {run_dir.resolve()}", flush=True)
    secrets = sorted(set(secrets) | set(save_resolved_config(dcfg, cfg, run_dir)), key=len, reverse=True)
    tags = run_tags(cfg, hydra_cfg)
    parent_id = _sweep_parent_id(hydra_cfg)
    if parent_id:
        tags[PARENT_TAG] = parent_id
    name = cfg.tracking.run_name or run_name(cfg, hydra_cfg)
    url: list[str] = []
    # Jobs of a Ray sweep that measure the same endpoint wait for each other here.
    with endpoint_lock(endpoint_key(cfg, cfg.endpoint.base_url or _server_url(cfg))), ExitStack() as stack:
        connect_in_background(cfg.tracking)  # MLflow connects while the endpoint starts
        try:
            check_components(cfg)
            endpoint, key = stack.enter_context(_endpoint_for(cfg, run_dir))
        except USER_ERRORS:
            with tracked_run(cfg.tracking, name, tags, secrets) as tracker:  # a FAILED run with the reason
                tracker.log_params(tracking_params(cfg, dcfg, secrets))
                if (run_dir / "server.log").exists():
                    tracker.log_artifacts([run_dir / "server.log"])
                raise
        tracker = stack.enter_context(tracked_run(cfg.tracking, name, tags, secrets))
        stack.callback(_log_server_log, tracker, run_dir)  # also after a failure or Ctrl-C
        # Exits first (the stack unwinds in reverse): report.html and the verdict, on success or failure.
        outcome = stack.enter_context(closing_verdict(cfg, run_dir, url, tracker, secrets))
        url.append(endpoint.base_url)
        tracker.log_params(tracking_params(cfg, dcfg, secrets))
        tracker.log_artifacts([run_dir / "resolved_config.yaml"])
        _announce(cfg, tracker)
        tracker.set_tags({"endpoint.base_url": endpoint.base_url})
        if endpoint.server is not None:
            tracker.log_params(_identity_params(endpoint.server))
        results = run_pipeline(cfg, run_dir, endpoint, key, tracker)
    last = list(results.values())[-1]
    return last.scalars.get("output_tokens_per_s"), cfg.fail_on_slo and outcome.slo_failed


def needs_own_endpoint(cfg: EtalonConfig) -> bool:
    """False when every stage searches its own configs (each launching its own server): the job
    then starts no server of its own, so no two servers run at once on a CPU-only host."""
    return not all(isinstance(s.run, dict) and (s.run.get("configs") or s.run.get("grid"))
                   for s in cfg.pipeline.steps())


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

    check_schema_keys(dcfg)
    try:
        cfg = load_config(dcfg)
    except USER_ERRORS:
        raise
    except Exception as exc:  # OmegaConf validation errors name the key in their message
        raise ConfigError(str(exc).splitlines()[0]) from exc
    check_stage_params(cfg.pipeline)
    check_output_dirs(cfg)
    return cfg


def check_components(cfg: EtalonConfig) -> None:
    """Build every swappable part once, so a bad value fails before a server starts."""
    from etalon.datasets.tokenizers import load_tokenizer
    from etalon.runner.endpoint import launches_simulator
    from etalon.runner.resources import check_run_fits_in_memory
    from etalon.stages.benchmark import max_total_tokens

    load_tokenizer(cfg.model.tokenizer)
    if launches_simulator(cfg):
        from etalon.sim.config import sim_config_from_dict

        sim_config_from_dict(cfg.sim)
    arrival = _build(cfg.workload.arrival, "workload.arrival")
    lengths = _build(cfg.workload.lengths, "workload.lengths")
    check_run_fits_in_memory(cfg, arrival, lengths)  # cache_dir: check_output_dirs, before this
    _build(cfg.slo, "slo")
    for stage in cfg.pipeline.steps():
        _build(stage.run, f"pipeline.stages.{stage.name}")
    max_total_tokens(cfg)


def _log_server_log(tracker: Any, run_dir: Path) -> None:
    if (run_dir / "server.log").exists():
        tracker.log_artifacts([run_dir / "server.log"])


def _server_url(cfg: EtalonConfig) -> str:
    return cfg.server.base_url if cfg.launches_server and cfg.server is not None else ""


def _build(node: Any, key: str) -> Any:
    """``instantiate(node)``; a value the class rejects becomes one line naming the config key."""
    from hydra.utils import instantiate

    try:
        return instantiate(node)
    except USER_ERRORS as exc:
        message = describe(exc)
        if isinstance(exc, ConfigError) or message.startswith(("trace ", key)):
            raise
        raise ConfigError(f"{key}: {message}") from exc


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
