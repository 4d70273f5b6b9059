"""The HTML report of one pipeline run: verdict, per-stage tables and figures, the resolved config."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson

from etalon.report.html import REPORT_FILE, SKIPPED_TABLES, Section, Table, csv_table, write_page
from etalon.report.verdict import Verdict


def interval_table(summary: dict[str, Any]) -> Table | None:
    """Headline metrics with their bootstrap confidence intervals (summary.json)."""
    block = summary.get("confidence_intervals")
    if not block or "intervals" not in block:
        return None
    scalars = summary.get("scalars", {})
    rows = []
    for key, (lo, hi) in block["intervals"].items():
        value = scalars.get(key, math.nan)
        rows.append([key, value, lo, hi])
    caption = f"headline metrics, {block['level']:.0%} {block['method']} ({block['replicates']} replicates)"
    return Table(caption, ["metric", "value", "CI low", "CI high"], rows)


def repeats_table(summary: dict[str, Any]) -> Table | None:
    """The spread of every headline metric between repeats (``repeats: N``)."""
    block = summary.get("repeats")
    if not block:
        return None
    rows = [[k, v["mean"], v["std"], v["min"], v["max"], v["n"]] for k, v in block["spread"].items()]
    caption = f"between {block['repeats']} repeats (seeds {block['seeds']}; SLO passed: {block['slo_passed']})"
    return Table(caption, ["metric", "mean", "std", "min", "max", "repeats"], rows)


def stage_section(name: str, stage_dir: Path) -> Section:
    tables: list[Table] = []
    summary_path = stage_dir / "summary.json"
    if summary_path.exists():
        summary = orjson.loads(summary_path.read_bytes())
        ci = interval_table(summary)
        if ci is not None:
            tables.append(ci)
        rep = repeats_table(summary)
        if rep is not None:
            tables.append(rep)
    tables += [csv_table(p) for p in sorted(stage_dir.glob("*.csv")) if p.name not in SKIPPED_TABLES]
    figures = sorted(stage_dir.glob("*.png"))
    return Section(f"stage: {name}", tables=tables, figures=figures)


def write_run_report(run_dir: Path, verdict: Verdict, title: str) -> Path:
    """``report.html`` in ``run_dir``."""
    run_dir = Path(run_dir)
    sections = [Section("verdict", text="\n".join(verdict.lines()[1:-1]))]
    sections += [stage_section(name, run_dir / name) for name in verdict.stages]
    config = run_dir / "resolved_config.yaml"
    if config.exists():
        sections.append(Section("resolved config", details=config.read_text()))
    return write_page(run_dir / REPORT_FILE, title, sections)


__all__ = ["interval_table", "stage_section", "write_run_report"]
