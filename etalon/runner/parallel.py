"""Run capacity searches as Ray tasks: each composes nothing, launches its own endpoint, locks per probe."""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from etalon.config import EtalonConfig, TrackingConfig
from etalon.stages.base import NullTracker, StageContext, StageError, StageResult
from etalon.stages.capacity_parallel import SearchConfig, SearchOutcome

log = logging.getLogger("etalon")



@dataclass
class SearchJob:
    """Everything one search task needs, composed and resolved in the driver (picklable)."""

    config: SearchConfig
    cfg: EtalonConfig
    params: dict[str, Any]
    stage_dir: Path
    run_dir: Path
    results: dict[str, StageResult]
    tracking: TrackingConfig | None
    parent_run_id: str | None
    # A key the driver's job already holds (a Ray sweep job locks its endpoint for the whole run):
    # tasks then serialise among themselves on a sub-key instead of waiting for the driver forever.
    held_keys: frozenset[str]
    lock_scope: str
    # GPUs the task asks Ray for (tp x pp of a launched engine; 0 for the simulator or no launch).
    gpus: int = 0
    # A host-wide lock around the server's whole life: on a host without GPUs one server at a time.
    serial_key: str | None = None


@dataclass
class RaySearchRunner:
    """Runs each config's capacity search as one Ray task (``num_cpus`` each, so several share a
    core while they mostly wait on the endpoint). ``base_overrides``: the overrides each config is
    composed on top of; None takes the running Hydra job's own overrides (the experiment)."""

    num_cpus: float = 0.25
    base_overrides: list[str] | None = None
    ray_address: str | None = None
    # Overrides of the base whose key starts with one of these are dropped (the twin replaces the
    # real server: its server.args.* would not fit the sim template).
    drop_overrides: list[str] | None = None

    def run_searches(
        self, ctx: StageContext, configs: list[SearchConfig], params: dict[str, Any]
    ) -> list[SearchOutcome]:
        jobs = [self._job(ctx, c, params) for c in configs]  # compose and validate all before any task
        ray = _ray(self.ray_address)
        place_servers(jobs, float(ray.cluster_resources().get("GPU", 0)), uuid.uuid4().hex[:12])
        task = ray.remote(search_task)
        refs = [task.options(num_cpus=self.num_cpus, num_gpus=job.gpus, max_retries=0).remote(job) for job in jobs]
        log.info("capacity_search: %d searches started as Ray tasks", len(refs))
        try:
            return [_outcome(ray, ref, job) for ref, job in zip(refs, jobs)]
        except KeyboardInterrupt:
            for ref in refs:
                ray.cancel(ref, force=True)
            raise

    def _job(self, ctx: StageContext, config: SearchConfig, params: dict[str, Any]) -> SearchJob:
        from etalon.runner.locks import held_keys

        base = job_overrides() if self.base_overrides is None else list(self.base_overrides)
        drop = tuple(self.drop_overrides or ())
        base = [o for o in base if not (drop and o.lstrip("+~").startswith(drop))]
        cfg = compose_config([*base, *config.overrides])
        cfg.cache_dir = str(Path(ctx.cache_dir).resolve())
        cfg.tracking = ctx.cfg.tracking  # one MLflow store and experiment for the whole stage
        slug = "".join(ch if ch.isalnum() or ch in "-_.=" else "_" for ch in config.label)[:80]
        return SearchJob(
            config=config, cfg=cfg, params=params, stage_dir=(ctx.stage_dir / slug).resolve(),
            run_dir=Path(ctx.run_dir).resolve(), results=dict(ctx.results),
            tracking=ctx.cfg.tracking if ctx.tracker.run_id else None, parent_run_id=ctx.tracker.run_id,
            held_keys=frozenset(held_keys()), lock_scope=ctx.tracker.run_id or uuid.uuid4().hex[:12],
        )


@dataclass
class LocalSearchRunner(RaySearchRunner):
    """The same searches one after another in this process (no Ray to start): one server at a time
    by construction. For a single search (the calibrated twin) or a host where Ray is unwanted."""

    def run_searches(
        self, ctx: StageContext, configs: list[SearchConfig], params: dict[str, Any]
    ) -> list[SearchOutcome]:
        jobs = [self._job(ctx, c, params) for c in configs]  # compose and validate all before any search
        place_servers(jobs, 0.0, uuid.uuid4().hex[:12])
        outcomes = []
        for job in jobs:
            job.serial_key = None  # sequential already; no Ray lock to take
            try:
                outcomes.append(search_task(job))
            except Exception as exc:  # noqa: BLE001 - one failed config is a row, as on Ray
                outcomes.append(dataclasses.replace(SearchOutcome(job.config.label, job.config.overrides),
                                                    error=f"{type(exc).__name__}: {exc}"))
        return outcomes


def place_servers(jobs: list[SearchJob], cluster_gpus: float, scope: str) -> None:
    """Ask Ray for tp x pp GPUs per launched engine (so no two servers share a GPU); where Ray sees
    no GPU, servers take turns on the host. A server larger than the cluster fails here."""
    import socket

    for job in jobs:
        server = job.cfg.server if job.cfg.launches_server else None
        if server is None:
            continue
        need = 0 if server.engine == "sim" else server.gpus
        if cluster_gpus >= 1 and need > cluster_gpus:
            raise StageError(f"capacity_search[{job.config.label}]: server.args.tensor_parallel_size x "
                             f"pipeline_parallel_size = {need} GPUs per server, but Ray sees {cluster_gpus:g}")
        if cluster_gpus < 1 and need > 1:
            raise StageError(f"capacity_search[{job.config.label}]: server.args.tensor_parallel_size x "
                             f"pipeline_parallel_size = {need} GPUs per server, but Ray sees no GPU")
        if cluster_gpus >= 1 and need >= 1:
            job.gpus = need
        else:
            job.serial_key = f"launch@{socket.gethostname()}#{scope}"


def search_task(job: SearchJob) -> SearchOutcome:
    """The body of one Ray task: own endpoint, own nested MLflow run, the single-search code path."""
    from etalon.runner.experiment import check_components
    from etalon.runner.locks import endpoint_lock
    from etalon.stages.capacity_search import SearchSettings

    # Ray forwards a task's stderr to the driver's terminal: etalon's lines, not libraries' INFO.
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(message)s")
    logging.getLogger("etalon").setLevel(logging.INFO)
    check_components(job.cfg)
    settings = SearchSettings(**job.params)
    if settings.out_of_time():
        raise StageError("time limit reached before this search started (capacity_search.time_limit_s)")
    job.stage_dir.mkdir(parents=True, exist_ok=True)
    with (endpoint_lock(job.serial_key) if job.serial_key else nullcontext()):
        window = [time.time_ns(), 0]
        try:
            return _search(job, settings)
        finally:
            window[1] = time.time_ns()
            _log_window(job, window)


def _log_window(job: SearchJob, window: list[int]) -> None:
    """When this task's server ran (wall ns), for the comparison (and the one-at-a-time check)."""
    (job.stage_dir / "server_window_ns.json").write_text(f"[{window[0]}, {window[1]}]\n")


def _search(job: SearchJob, settings: Any) -> SearchOutcome:
    with search_tracker(job) as tracker:
        result, key = _search_on_server(job, settings, tracker)
        if (job.stage_dir / "server.log").exists():  # complete now: the server has stopped
            tracker.log_artifacts([job.stage_dir / "server.log"])
    return SearchOutcome(job.config.label, job.config.overrides, key, result.data, result.scalars,
                         result.stage_dir)


def _search_on_server(job: SearchJob, settings: Any, tracker: Any) -> tuple[StageResult, str]:
    from etalon.core.seeds import run_prompt_base
    from etalon.runner.endpoint import live_endpoint
    from etalon.runner.locks import endpoint_lock
    from etalon.stages.base import EndpointGoneError
    from etalon.stages.capacity_search import capacity

    with live_endpoint(job.cfg, job.stage_dir) as (spec, key):
        lock_key = f"{key}#{job.lock_scope}" if key in job.held_keys else key
        tracker.set_tags({"endpoint.base_url": spec.base_url, "etalon.endpoint_key": key})
        tracker.log_params({"config": job.config.label, "overrides": " ".join(job.config.overrides)})
        ctx = StageContext(
            cfg=job.cfg, run_dir=job.run_dir, stage_name=f"capacity_search[{job.config.label}]",
            stage_dir=job.stage_dir, endpoint=spec, endpoint_key=key, results=job.results,
            tracker=tracker, cache_dir=Path(job.cfg.cache_dir), endpoint_lock=lambda: endpoint_lock(lock_key),
            prompt_base=run_prompt_base(job.cfg.workload.prompt_seed),
        )
        result = capacity(ctx, settings)
        tracker.log_metrics(result.scalars)
        tracker.log_artifacts(result.artifacts)
        if result.data.get("endpoint_gone"):
            raise EndpointGoneError(f"capacity_search[{job.config.label}]: {result.data['endpoint_gone']}")
    return result, key


@contextmanager
def search_tracker(job: SearchJob) -> Iterator[Any]:
    """A nested MLflow run under the stage's run, built in the task from the store's URI."""
    from etalon.runner.tracking import PARENT_TAG, TrackingState, mlflow_client, open_run

    connected = mlflow_client(job.tracking) if job.tracking is not None and job.parent_run_id else None
    if connected is None:
        yield NullTracker()
        return
    client, experiment_id = connected
    tags = {PARENT_TAG: job.parent_run_id or "", "etalon.stage": "capacity_search",
            "etalon.config": job.config.label}
    with open_run(client, experiment_id, f"search:{job.config.label}", tags, TrackingState()) as tracker:
        yield tracker


def compose_config(overrides: list[str]) -> EtalonConfig:
    """The typed config for ``overrides``, composed from conf/ as the CLI would (validated)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from etalon.config import register_configs
    from etalon.runner.experiment import _validated

    register_configs()
    if GlobalHydra.instance().is_initialized():  # inside the etalon app: same search path
        return _validated(compose("config", overrides=overrides))
    from etalon.runner.cli import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return _validated(compose("config", overrides=overrides))


def job_overrides() -> list[str]:
    """The running Hydra job's task overrides (``+experiment=...`` etc.), or none outside a job."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def _ray(address: str | None) -> Any:
    from etalon.loadgen.ray_init import ensure_ray

    return ensure_ray(address)


def _outcome(ray: Any, ref: Any, job: SearchJob) -> SearchOutcome:
    try:
        return ray.get(ref)  # type: ignore[no-any-return]
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause if getattr(exc, "cause", None) is not None else exc
        message = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
        return dataclasses.replace(SearchOutcome(job.config.label, job.config.overrides),
                                   error=f"{type(cause).__name__}: {message}")


__all__ = ["LocalSearchRunner", "RaySearchRunner", "SearchJob", "compose_config", "place_servers", "search_task"]
