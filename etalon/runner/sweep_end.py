"""How a sweep ends: its table on the terminal, latency-vs-throughput figures, an A/B comparison of
every job against the first, and one HTML report; built from the job directories (MLflow optional)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
from omegaconf import OmegaConf

from etalon.runner.closing import SWEEP_KEYS_FILE

log = logging.getLogger("etalon")
SWEEP_REPORT = "sweep_report.html"


def job_dirs(sweep_dir: Path) -> list[Path]:
    dirs = [p for p in Path(sweep_dir).iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(dirs, key=lambda p: int(p.name))


def sweep_frame(sweep_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """One row per job: its number, status, swept values and the last stage's scalars."""
    marker = Path(sweep_dir) / SWEEP_KEYS_FILE
    swept = marker.read_text().split() if marker.exists() else []
    rows = []
    for job in job_dirs(sweep_dir):
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides = OmegaConf.to_container(OmegaConf.load(overrides_file)) if overrides_file.exists() else []
        values = dict(str(o).split("=", 1) for o in overrides or [] if "=" in str(o))  # type: ignore[union-attr]
        row: dict[str, Any] = {"job": int(job.name), "status": "FAILED" if (job / "error.txt").exists() else "FINISHED"}
        row.update({k: values.get(k) for k in swept})
        results = sorted(job.glob("*/stage_result.json"), key=lambda p: p.stat().st_mtime)
        if results:
            row.update(orjson.loads(results[-1].read_bytes()).get("scalars", {}))
        rows.append(row)
    frame = pd.DataFrame(rows)
    for k in swept:
        if k in frame.columns:
            numeric = pd.to_numeric(frame[k], errors="coerce")
            if numeric.notna().all():
                frame[k] = numeric
    return frame, [k for k in swept if k in frame.columns]


def ab_against_first(sweep_dir: Path) -> dict[str, list[Any]]:
    """Every finished benchmark job against job 0 (the same comparison as ``etalon.compare``)."""
    from etalon.core.comparison import compare_samples
    from etalon.runner.run_inputs import CompareInputError, load_run

    jobs = [j for j in job_dirs(sweep_dir) if not (j / "error.txt").exists()]
    try:
        runs = [load_run(str(j)) for j in jobs]
    except (CompareInputError, ValueError, OSError) as exc:
        log.info("sweep: no A/B comparison (%s)", exc)
        return {}
    if len(runs) < 2 or any(r.slo != runs[0].slo for r in runs):
        return {}
    return {f"job {jobs[i].name} vs job {jobs[0].name}": compare_samples(runs[0].sample, r.sample, seed=i)
            for i, r in enumerate(runs[1:], start=1)}


def finish_sweep(sweep_dir: Path, plots: bool = True) -> tuple[list[Path], dict[str, float], dict[str, str]]:
    """Write the sweep's files (its figures unless ``plots`` is false, like every run's); print its
    table last. Returns (files, parent metrics, parent params)."""
    from etalon.report.comparison_page import format_table, plot_deltas
    from etalon.report.html import Section, Table, write_page
    from etalon.report.sweep import format_sweep_table, plot_latency_throughput, plot_metrics_vs_param

    sweep_dir = Path(sweep_dir)
    frame, swept = sweep_frame(sweep_dir)
    if frame.empty:
        return [], {}, {}
    out = sweep_dir / "comparison"
    out.mkdir(exist_ok=True)
    figures = [] if not plots else [
        f for f in (plot_latency_throughput(out / "sweep_latency_throughput.png", frame, swept),
                    plot_metrics_vs_param(out / "sweep_metrics.png", frame, swept)) if f is not None]
    ab = ab_against_first(sweep_dir)
    if ab and plots:
        figures.append(plot_deltas(out / "sweep_ab.png", ab))
    table_text = format_sweep_table(frame, swept)
    ab_text = "\n\n".join(format_table(t, d) for t, d in ab.items())
    sections = [Section("sweep", text=table_text + "\n(* = steady window: the drain after the last send excluded)"),
                Section("figures", figures=figures)]
    if ab:
        sections.append(Section("A/B against the first job (99% simultaneous intervals)", text=ab_text))
    sections.append(Section("all columns", tables=[Table("jobs", [str(c) for c in frame.columns],
                                                         frame.astype(str).values.tolist())]))
    report = write_page(sweep_dir / SWEEP_REPORT, f"etalon sweep: {sweep_dir.name}", sections)
    metrics = {f"ab_job{t.split()[1]}_{d.key}_rel": d.relative for t, ds in ab.items() for d in ds}
    params = {f"ab_job{t.split()[1]}_{d.key}": d.verdict for t, ds in ab.items() for d in ds}
    print("=" * 100 + "\netalon sweep\n" + table_text + f"\nreport: {report}\n" + "=" * 100, flush=True)
    return [*figures, report], metrics, params


__all__ = ["ab_against_first", "finish_sweep", "sweep_frame"]
