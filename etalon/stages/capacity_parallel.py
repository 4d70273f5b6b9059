"""Capacity searches over several configs, run in parallel by a runner, ending in one comparison."""

from __future__ import annotations

import csv
import itertools
import logging
import time
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
COLUMNS = ("config", "max_rate_rps", "output_tokens_per_s", FLUID_KEY, "best", "probes", "new_probes",
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


def override_value(value: Any) -> str:
    """A value as Hydra override text (``true``, ``null``, ``[1,2]``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    return str(value)


def expand_grid(configs: Any, grid: Any) -> list[list[str]]:
    """Every config (default: the experiment itself) crossed with every combination of ``grid``
    (key -> list of values, in the grid's order), as override lists."""
    bases = [list(c) for c in configs] if configs else [[]]
    if not grid:
        return bases
    keys = [str(k) for k in grid]
    for key in keys:
        values = grid[key]
        if isinstance(values, str) or not hasattr(values, "__iter__") or len(list(values)) == 0:
            raise StageError(f"capacity_search.grid.{key}: must be a non-empty list of values, got {values!r}")
    combos = itertools.product(*[list(grid[k]) for k in keys])
    return [[*base, *(f"{k}={override_value(v)}" for k, v in zip(keys, combo))]
            for base, combo in itertools.product(bases, list(combos))]


def run_parallel(
    ctx: StageContext, *, configs: Any, runner: Any = None, labels: Any = None, grid: Any = None, **params: Any
) -> StageResult:
    """One capacity search per config on the runner, then capacity_comparison.{csv,json,png}."""
    if params.get("time_limit_s") is not None:  # one deadline for the whole grid
        params["deadline_unix_s"] = time.time() + float(params["time_limit_s"])
    SearchSettings(**params)  # fails here, before any task starts
    entries = parse_configs(expand_grid(configs, grid), labels)
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
                     "new_probes": d.get("new_probes"), "endpoint_key": o.endpoint_key,
                     "error": o.error or (d.get("endpoint_gone") and f"endpoint gone: {d['endpoint_gone']}")
                     or ("time limit reached" if d.get("time_limit_reached") and d.get("max_rate_rps") is None
                         and d.get("max_concurrency") is None else None),
                     "overrides": " ".join(o.overrides)})
    return rows


def best_row(rows: list[dict[str, Any]], load_col: str) -> dict[str, Any] | None:
    """The winning configuration: highest capacity, then highest output token rate at it."""
    found = [r for r in rows if r.get(load_col) is not None]
    if not found:
        return None
    return max(found, key=lambda r: (r[load_col], r.get("output_tokens_per_s") or 0.0))


def compare(ctx: StageContext, outcomes: list[SearchOutcome], search_kind: str) -> StageResult:
    rows = comparison_rows(outcomes)
    ctx.stage_dir.mkdir(parents=True, exist_ok=True)
    load_col = "max_rate_rps" if search_kind == "rate" else "max_concurrency"
    best = best_row(rows, load_col)
    for r in rows:
        r["best"] = best is not None and r["config"] == best["config"]
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
    ab_files, ab_lines, ab_scalars = _write_ab(ctx.stage_dir, outcomes, load_col)
    if best is not None:
        ctx.tracker.set_tags({"etalon.best_config": best["config"], "etalon.best_overrides": best["overrides"]})
        print(f"etalon: best configuration: {best['config']} ({load_col} = {best[load_col]:.4g})", flush=True)
    scalars: dict[str, float] = {"num_configs": float(len(rows)),
                                 "failed_configs": float(sum(bool(r["error"]) for r in rows)),
                                 "num_probes": float(sum(r["probes"] for r in rows)),
                                 "new_probes": float(sum(r["new_probes"] or 0 for r in rows))}
    for i, r in enumerate(rows):
        if r[load_col] is not None:
            scalars[f"config{i}_{load_col}"] = float(r[load_col])
    if best is not None:
        scalars[f"best_{load_col}"] = float(best[load_col])
    scalars.update(ab_scalars)
    return StageResult(name=ctx.stage_name, stage_dir=ctx.stage_dir, scalars=scalars,
                       data={"comparison": rows, "search": search_kind, "best": best["config"] if best else None,
                             "ab": ab_lines},
                       artifacts=[csv_path, json_path, png, *ab_files],
                       partial=any(o.error for o in outcomes))


def _write_ab(stage_dir: Path, outcomes: list[SearchOutcome], load_col: str
              ) -> tuple[list[Path], list[str], dict[str, float]]:
    """Every config against the first (capacity and metrics at capacity): capacity_ab.{txt,json,png},
    the tables printed, one verdict line per config, relative deltas as scalars."""
    from etalon.report.comparison_page import format_table, write_deltas
    from etalon.stages.capacity_ab import capacity_ab, verdict_line

    ab = capacity_ab([o.label for o in outcomes], [o.data for o in outcomes], load_col)
    if not ab:
        return [], [], {}
    text = "\n\n".join(format_table(t, d) for t, d in ab.items())
    text += (f"\n\n{load_col}: the interval spans both brackets (highest pass .. lowest fail, or the re-probed "
             "interval); the other rows: each config's probe at its own capacity, 99% simultaneous bootstrap intervals")
    files = write_deltas(stage_dir, "capacity_ab", ab, text)
    print("etalon: A/B against the first config\n" + text, flush=True)
    scalars = {f"ab_config{i}_{d.key}_rel": d.relative for i, ds in enumerate(ab.values(), start=1) for d in ds
               if d.relative == d.relative}
    return files, [verdict_line(t, d) for t, d in ab.items()], scalars


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
    best = next((r["config"] for r in rows if r.get("best")), None)
    for ax, values, ylabel, color in panels:
        bars = ax.bar(range(len(rows)), values, color=[color if r["config"] != best else "tab:green" for r in rows])
        ax.bar_label(bars, labels=[f"{v:.3g}" if v else "none" for v in values], fontsize=8)
        ax.set_xticks(range(len(rows)), labels, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.set_xlabel("config")
        ax.grid(axis="y", alpha=0.3)
    title = "capacity per config (highest load meeting the SLO)"
    fig.suptitle(title + (f"; best: {best} (green)" if best else ""), fontsize=10)
    return save_figure(fig, path)


__all__ = ["SearchConfig", "SearchOutcome", "SearchRunner", "best_row", "compare", "expand_grid", "parse_configs",
           "run_parallel"]
