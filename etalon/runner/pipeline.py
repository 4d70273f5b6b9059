"""Execute a declarative pipeline: its stages in order, each in a nested tracked run."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import Any

import orjson
from hydra.utils import instantiate

from etalon.clients.base import EndpointSpec
from etalon.config import EtalonConfig, StageConfig
from etalon.stages.base import StageContext, StageResult

log = logging.getLogger("etalon")

RESULT_FILE = "stage_result.json"


def run_pipeline(
    cfg: EtalonConfig, run_dir: Path, endpoint: EndpointSpec, key: str, tracker: Any
) -> dict[str, StageResult]:
    """Run every stage; the last stage's scalars are also logged on the pipeline's own run."""
    from etalon.core.seeds import run_prompt_base

    results: dict[str, StageResult] = {}
    cache_dir = Path(cfg.cache_dir)
    prompt_base = run_prompt_base(cfg.workload.prompt_seed)
    tracker.log_params({"run.prompt_seed_base": prompt_base})
    log.info("prompt text seed base %d (set workload.prompt_seed=%d to send the same prompts again)",
             prompt_base, prompt_base)
    steps = cfg.pipeline.steps()
    for stage in steps:
        results[stage.name] = _run_stage(cfg, stage, run_dir, endpoint, key, tracker, results, cache_dir,
                                         prompt_base)
    last = results[steps[-1].name]
    tracker.log_metrics(last.scalars)
    tracker.set_tags({"etalon.partial": str(any(r.partial for r in results.values())).lower()})
    return results


def _run_stage(
    cfg: EtalonConfig,
    stage: StageConfig,
    run_dir: Path,
    endpoint: EndpointSpec,
    key: str,
    tracker: Any,
    results: dict[str, StageResult],
    cache_dir: Path,
    prompt_base: int,
) -> StageResult:
    stage_fn = instantiate(stage.run)
    stage_dir = run_dir / stage.name
    stage_dir.mkdir(parents=True, exist_ok=True)
    resume_file = _resume_file(cfg, stage, key, results, cache_dir) if cfg.pipeline.resume else None
    with tracker.child(stage.name, tags={"etalon.stage": stage.name}) as stage_tracker:
        if resume_file is not None and resume_file.exists():
            result = load_result(resume_file)
            result.cached = True
            log.info("stage %s: finished in an earlier run, reusing %s", stage.name, result.stage_dir)
        else:
            ctx = StageContext(
                cfg=cfg,
                run_dir=run_dir,
                stage_name=stage.name,
                stage_dir=stage_dir,
                endpoint=endpoint,
                endpoint_key=key,
                results=results,
                tracker=stage_tracker,
                cache_dir=cache_dir,
                prompt_base=prompt_base,
            )
            result = stage_fn(ctx)
            save_result(result, stage_dir / RESULT_FILE)
            if resume_file is not None and not result.partial:
                save_result(result, resume_file)
        stage_tracker.set_tags({"etalon.cached": str(result.cached).lower()})
        stage_tracker.log_metrics(result.scalars)
        stage_tracker.log_artifacts(result.artifacts)
        if result.data.get("interrupted"):
            # Ctrl-C: what was measured is written and logged; now stop the pipeline.
            raise KeyboardInterrupt
        if result.data.get("endpoint_gone"):
            from etalon.stages.base import EndpointGoneError

            raise EndpointGoneError(f"stage {stage.name}: {result.data['endpoint_gone']}; stopped the run "
                                    f"(partial results in {stage_dir})")
    return result


def _resume_file(
    cfg: EtalonConfig, stage: StageConfig, key: str, results: dict[str, StageResult], cache_dir: Path
) -> Path:
    """Where a finished stage leaves its result, keyed by everything that determines it."""
    config = _identity_config(cfg)
    identity = {
        "config": config,
        "stage": stage.name,
        "endpoint_key": key,
        "earlier": {name: r.data for name, r in results.items()},
    }
    digest = hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()[:16]
    return cache_dir / "stages" / f"{stage.name}-{digest}.json"


def _identity_config(cfg: EtalonConfig) -> dict[str, Any]:
    """The config as it determines results: without tracking and, for a server etalon launches
    itself, without the port it listens on (a free one is picked each run; the engine is the same)."""
    config = dataclasses.asdict(cfg)
    config.pop("tracking", None)
    server = config.get("server")
    if cfg.launches_server and isinstance(server, dict) and server.get("port") is not None:
        port = str(server.pop("port"))
        server["command"] = ["<port>" if str(arg) == port else arg for arg in server.get("command") or []]
    return config


def save_result(result: StageResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "name": result.name,
        "stage_dir": str(result.stage_dir),
        "scalars": result.scalars,
        "data": result.data,
        "artifacts": [str(p) for p in result.artifacts],
        "partial": result.partial,
    }
    path.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY, default=str))


def load_result(path: Path) -> StageResult:
    payload = orjson.loads(path.read_bytes())
    return StageResult(
        name=payload["name"],
        stage_dir=Path(payload["stage_dir"]),
        scalars=payload["scalars"],
        data=payload["data"],
        artifacts=[Path(p) for p in payload["artifacts"]],
        partial=payload["partial"],
    )
