"""Load a measured run for comparison: a run directory, a stage directory or an MLflow run id."""

from __future__ import annotations

import functools
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from omegaconf import OmegaConf

from etalon.core.bootstrap import RunSample

RECORDS = "records.jsonl"
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class CompareInputError(ValueError):
    """A run given to compare cannot be used; the message names the run and what is wrong."""


@dataclass
class LoadedRun:
    """One run's label, stage directory, SLO description and per-request sample."""

    label: str
    stage_dir: Path
    slo: str
    sample: RunSample
    summary: dict[str, Any]


def locate(arg: str, tracking_uri: str | None) -> tuple[Path, Path | None]:
    """(stage directory holding records.jsonl, run directory holding resolved_config.yaml)."""
    path = Path(arg)
    if path.is_dir():
        if (path / RECORDS).exists():
            run_dir = path.parent if (path.parent / "resolved_config.yaml").exists() else None
            return path, run_dir
        stages = sorted(p.parent for p in path.glob(f"*/{RECORDS}"))
        if not stages:
            raise CompareInputError(f"{arg}: no {RECORDS} in it or in a stage directory below it (not a benchmark run?)")
        return _last_stage(path, stages), path
    if RUN_ID.match(arg):
        return _from_mlflow(arg, tracking_uri)
    raise CompareInputError(f"{arg}: not a directory and not an MLflow run id")


def _resolved_config(run_dir: Path) -> Any:
    """The run's resolved_config.yaml, read once however often it is asked for (a sweep's end asks
    twice per job; ~40 ms a read): keyed by its path, size and modification time."""
    path = run_dir / "resolved_config.yaml"
    stat = path.stat()
    return _load_config(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _load_config(path: str, size: int, mtime_ns: int) -> Any:
    config = OmegaConf.load(path)
    OmegaConf.set_readonly(config, True)  # shared by every caller
    return config


def _last_stage(run_dir: Path, stages: list[Path]) -> Path:
    """The pipeline's last stage with records (the benchmark of characterize, not its probes)."""
    config = run_dir / "resolved_config.yaml"
    if config.exists():
        pipeline = _resolved_config(run_dir).get("pipeline", {})
        stage_cfg = pipeline.get("stages", [])
        names = (list(pipeline.get("order") or stage_cfg) if not isinstance(stage_cfg, list)
                 and hasattr(stage_cfg, "keys") else [s.get("name") for s in stage_cfg])
        ordered = [run_dir / n for n in names if (run_dir / n / RECORDS).exists()]
        if ordered:
            return ordered[-1]
    return stages[-1]


def _from_mlflow(run_id: str, tracking_uri: str | None) -> tuple[Path, Path | None]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        run = client.get_run(run_id)
    except Exception as exc:
        raise CompareInputError(f"{run_id}: no such MLflow run in {tracking_uri or 'the default store'} ({exc})") from exc
    root = Path(tempfile.mkdtemp(prefix=f"etalon-compare-{run_id[:8]}-"))
    candidates = [run] + client.search_runs([run.info.experiment_id],
                                            filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'")
    for r in candidates:
        names = {a.path for a in client.list_artifacts(r.info.run_id)}
        if RECORDS in names:
            stage = root / r.data.tags.get("etalon.stage", "stage")
            stage.mkdir(parents=True, exist_ok=True)
            for name in (RECORDS, "summary.json"):
                if name in names:
                    client.download_artifacts(r.info.run_id, name, str(stage))
            if "resolved_config.yaml" in {a.path for a in client.list_artifacts(run_id)}:
                client.download_artifacts(run_id, "resolved_config.yaml", str(root))
            return stage, root if (root / "resolved_config.yaml").exists() else None
    raise CompareInputError(f"{run_id}: neither the MLflow run nor its stage runs hold {RECORDS}")


def _slo(run_dir: Path | None, label: str) -> tuple[Any, str]:
    from hydra.utils import instantiate

    from etalon.core.slo import TbtTtftSlo

    if run_dir is None:
        return TbtTtftSlo(), "tbt_ttft (default; no resolved_config.yaml)"
    node = _resolved_config(run_dir).get("slo")
    slo = instantiate(node)
    text = ", ".join(f"{k}={v}" for k, v in OmegaConf.to_container(node).items() if k != "_target_")  # type: ignore[union-attr]
    if getattr(slo, "needs_prefill_profile", False):
        from etalon.stages.prefill_profile import load_profile

        profiles = sorted(run_dir.glob("*/prefill_profile.json"))
        path = slo.prefill_profile or (profiles[0] if profiles else None)
        if path is None:
            raise CompareInputError(f"{label}: slo=deadline but no prefill_profile.json in the run directory")
        slo = slo.with_predictor(load_profile(str(path)))
    return slo, f"{slo.name}({text})"


def load_run(arg: str, tracking_uri: str | None = None) -> LoadedRun:
    from etalon.stages.analysis import run_sample
    from etalon.stages.capacity_search import load_table

    stage_dir, run_dir = locate(arg, tracking_uri)
    summary_path = stage_dir / "summary.json"
    if not summary_path.exists():
        raise CompareInputError(f"{arg}: no summary.json beside {stage_dir / RECORDS}")
    summary = orjson.loads(summary_path.read_bytes())
    table = load_table(stage_dir / RECORDS)
    if not len(table):
        raise CompareInputError(f"{arg}: {stage_dir / RECORDS} holds no request")
    slo, slo_text = _slo(run_dir, arg)
    window = float(summary.get("scalars", {}).get("measurement_window_s", 0.0))
    return LoadedRun(arg, stage_dir, slo_text, run_sample(table, slo, window), summary)


__all__ = ["CompareInputError", "LoadedRun", "load_run", "locate"]
