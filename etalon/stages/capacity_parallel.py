"""Capacity searches over several configs, run in parallel by a runner, ending in one comparison."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson
from hydra.utils import instantiate

from etalon.stages.base import StageContext, StageError, StageResult
from etalon.stages.capacity_search import SearchSettings

log = logging.getLogger("etalon")

COMPARISON_CSV = "capacity_comparison.csv"
COMPARISON_PNG = "capacity_comparison.png"
COMPARISON_JSON = "capacity_comparison.json"
# The runner lives in etalon/runner (Ray); stages only name it, so imports keep pointing one way.
DEFAULT_RUNNER = {"_target_": "etalon.runner.parallel.RaySearchRunner"}
FLUID_KEY = "fluid_token_generation_rate_tokens_per_s"
COLUMNS = ("config", "max_rate_rps", "output_tokens_per_s", FLUID_KEY, "probes", "new_probes",
           "endpoint_key", "error", "overrides")


@dataclass(frozen=True)
class SearchConfig:
    """One config to search: a label and its Hydra overrides (relative to the experiment's config)."""

    label: str
    overrides: tuple[str, ...]


@dataclass
class SearchOutcome:
    """What one parallel search returned: its capacity.json data and scalars, or the error."""

    label: str
    overrides: tuple[str, ...]
    endpoint_key: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    scalars: dict[str, float] = field(default_factory=dict)
    stage_dir: Path | None = None
    error: str | None = None


class SearchRunner(Protocol):
    """Runs one capacity search per config (each with its own endpoint) and returns the outcomes,
    in the order of ``configs``. Searches of one endpoint key must never probe at the same time."""

    def run_searches(
        self, ctx: StageContext, configs: list[SearchConfig], params: dict[str, Any]
    ) -> list[SearchOutcome]: ...


def parse_configs(configs: Any, labels: Any = None) -> list[SearchConfig]:
    """``[["sim=tiny_engine"], ["sim=llama2_7b_a100", "workload=..."]]`` -> labelled configs."""
    entries = [list(c) if not isinstance(c, str) else None for c in configs]
    if any(e is None for e in entries):
        raise StageError("capacity_search.configs: each config must be a list of overrides, "
                         "e.g. [[\"sim=tiny_engine\"], [\"sim=llama2_7b_a100\"]]")
    names = [str(x) for x in labels] if labels else [" ".join(map(str, e or [])) or "base" for e in entries]
    if len(names) != len(entries):
        raise StageError(f"capacity_search.labels: {len(names)} labels for {len(entries)} configs")
    if len(set(names)) != len(names):
        raise StageError(f"capacity_search.configs: duplicate config labels {names}; set labels")
    return [SearchConfig(n, tuple(str(o) for o in e or [])) for n, e in zip(names, entries)]


def run_parallel(
    ctx: StageContext, *, configs: Any, runner: Any = None, labels: Any = None, **params: Any
) -> StageResult:
    """One capacity search per config on the runner, then capacity_comparison.{csv,json,png}."""
    SearchSettings(**params)  # fails here, before any task starts
    entries = parse_configs(configs, labels)
    active: SearchRunner = runner if runner is not None else instantiate(DEFAULT_RUNNER)
    outcomes = active.run_searches(ctx, entries, dict(params))
    failed = [o for o in outcomes if o.error]
    for o in failed:
        log.error("capacity_search[%s] failed: %s", o.label, o.error)
    if len(failed) == len(outcomes):
        raise StageError(f"capacity_search: every config's search failed; first: {failed[0].error}")
    return compare(ctx, outcomes, params.get("search", "rate"))


def comparison_rows(outcomes: list[SearchOutcome]) -> list[dict[str, Any]]:
    rows = []
    for o in outcomes:
        d = o.data
        rows.append({"config": o.label, "max_rate_rps": d.get("max_rate_rps"),
                     "max_concurrency": d.get("max_concurrency"),
                     "output_tokens_per_s": (d.get("metrics_at_max") or {}).get("output_tokens_per_s"),
                     FLUID_KEY: d.get(FLUID_KEY), "probes": len(d.get("probes", [])),
                     "new_probes": d.get("new_probes"), "endpoint_key": o.endpoint_key, "error": o.error,
                     "overrides": " ".join(o.overrides)})
    return rows


def compare(ctx: StageContext, outcomes: list[SearchOutcome], search_kind: str) -> StageResult:
    rows = comparison_rows(outcomes)
    ctx.stage_dir.mkdir(parents=True, exist_ok=True)
    load_col = "max_rate_rps" if search_kind == "rate" else "max_concurrency"
    columns = [c if c != "max_rate_rps" else load_col for c in COLUMNS]
    csv_path, json_path = ctx.stage_dir / COMPARISON_CSV, ctx.stage_dir / COMPARISON_JSON
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    searches = {o.label: {**o.data, "stage_dir": str(o.stage_dir) if o.stage_dir else None,
                          "endpoint_key": o.endpoint_key, "error": o.error} for o in outcomes}
    json_path.write_bytes(orjson.dumps({"comparison": rows, "searches": searches},
                                       option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    png = plot_comparison(ctx.stage_dir / COMPARISON_PNG, rows, load_col)
    scalars: dict[str, float] = {"num_configs": float(len(rows)),
                                 "failed_configs": float(sum(bool(r["error"]) for r in rows)),
                                 "num_probes": float(sum(r["probes"] for r in rows)),
                                 "new_probes": float(sum(r["new_probes"] or 0 for r in rows))}
    for i, r in enumerate(rows):
        if r[load_col] is not None:
            scalars[f"config{i}_{load_col}"] = float(r[load_col])
    return StageResult(name=ctx.stage_name, stage_dir=ctx.stage_dir, scalars=scalars,
                       data={"comparison": rows, "search": search_kind},
                       artifacts=[csv_path, json_path, png],
                       partial=any(o.error for o in outcomes))


def plot_comparison(path: Path, rows: list[dict[str, Any]], load_col: str) -> Path:
    """Bars: capacity per config (left) and output tokens/s at that capacity (right)."""
    from etalon.report.figures import new_figure, save_figure

    labels = [r["config"] for r in rows]
    caps = [r[load_col] or 0.0 for r in rows]
    fluid = any(r[FLUID_KEY] is not None for r in rows)
    tokens = [(r[FLUID_KEY] if fluid else r["output_tokens_per_s"]) or 0.0 for r in rows]
    fig = new_figure((max(8.0, 2.2 * len(rows) + 3), 4.8))
    axes = fig.subplots(1, 2)
    unit = "requests/s" if load_col == "max_rate_rps" else "concurrent requests"
    panels = [(axes[0], caps, f"capacity ({unit})", "tab:blue"),
              (axes[1], tokens, ("fluid token generation rate" if fluid else "output tokens/s") + " at capacity "
               "(tokens/s)", "tab:orange")]
    for ax, values, ylabel, color in panels:
        bars = ax.bar(range(len(rows)), values, color=color)
        ax.bar_label(bars, labels=[f"{v:.3g}" if v else "none" for v in values], fontsize=8)
        ax.set_xticks(range(len(rows)), labels, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.set_xlabel("config")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("capacity per config (highest load meeting the SLO)", fontsize=10)
    return save_figure(fig, path)


__all__ = ["SearchConfig", "SearchOutcome", "SearchRunner", "compare", "parse_configs", "run_parallel"]
