"""``python -m etalon.compare A B [C ...]``: every headline metric of each run against baseline A."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from etalon.core.comparison import DEFAULT_LEVEL, MetricDelta, compare_samples
from etalon.core.gate import Gate, GateError, parse_gates
from etalon.runner.errors import SLO_FAILED_EXIT
from etalon.runner.run_inputs import CompareInputError, LoadedRun, load_run

USAGE_EXIT = 2


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m etalon.compare", description=__doc__)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directory, stage directory or MLflow run id; the first is the baseline")
    p.add_argument("--gate", type=Path, help="YAML of metric: threshold (e.g. 'ttft_p99_s: +5%%'); a violation exits 3")
    p.add_argument("--level", type=float, default=DEFAULT_LEVEL, help="simultaneous confidence level (default 0.99)")
    p.add_argument("--replicates", type=int, default=1000, help="bootstrap replicates per run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="where the table, figure and report go (default outputs/compare/<time>)")
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///outputs/mlflow.db"))
    args = p.parse_args(argv)
    if len(args.runs) < 2:
        p.error("give at least two runs: a baseline A and one run B to compare with it")
    return args


def load_gates(path: Path | None) -> list[Gate]:
    if path is None:
        return []
    if not path.exists():
        raise GateError(f"--gate {path}: no such file")
    from omegaconf import OmegaConf

    try:
        entries = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as exc:  # yaml's parser errors
        raise GateError(f"--gate {path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    return parse_gates(entries, f"--gate {path}")


def check_comparable(runs: list[LoadedRun]) -> None:
    """Goodput and fluidity-index depend on the SLO: runs judged differently are not comparable."""
    base = runs[0]
    for other in runs[1:]:
        if other.slo != base.slo:
            raise CompareInputError(f"runs differ in their SLO ({base.label}: {base.slo}; {other.label}: "
                                    f"{other.slo}): goodput and fluidity-index would not compare")


def compare_runs(runs: list[LoadedRun], level: float, replicates: int, seed: int) -> dict[str, list[MetricDelta]]:
    out = {}
    for i, other in enumerate(runs[1:], start=1):
        deltas = compare_samples(runs[0].sample, other.sample, level=level, replicates=replicates, seed=seed + 2 * i)
        missing = [k for k in ("ttft_p50_s", "e2e_p50_s") if k not in {d.key for d in deltas}]
        if missing:
            raise CompareInputError(f"{other.label} vs {runs[0].label}: {', '.join(missing)} undefined in one of "
                                    "them (no successful request?)")
        out[f"B={other.label} vs A={runs[0].label}"] = deltas
    return out


def gate_lines(gates: list[Gate], comparisons: dict[str, list[MetricDelta]]) -> tuple[list[str], bool]:
    lines, failed = [], False
    for title, deltas in comparisons.items():
        by_key = {d.key: d for d in deltas}
        for g in gates:
            d = by_key.get(g.metric)
            if d is None:
                lines.append(f"gate {g.metric} {g.text}: not measured in {title}")
                continue
            bad = g.violated(d)
            failed = failed or bad
            lines.append(f"gate {g.metric} {g.text}: {'VIOLATED' if bad else 'ok'} ({d.relative * 100:+.2f}%, {d.verdict}) [{title}]")
    return lines, failed


def write_outputs(out: Path, comparisons: dict[str, list[MetricDelta]], text: str) -> list[Path]:
    from etalon.report.comparison_page import write_comparison_page, write_deltas

    table, txt, figure = write_deltas(out, "comparison", comparisons, text)
    page = write_comparison_page(out / "report.html", "etalon comparison", text, comparisons, figure)
    return [table, txt, figure, page]


def main(argv: Sequence[str] | None = None) -> int:
    from etalon.report.comparison_page import format_table

    args = parse_args(argv)
    try:
        gates = load_gates(args.gate)  # before anything is computed
        runs = [load_run(r, args.tracking_uri) for r in args.runs]
        check_comparable(runs)
        comparisons = compare_runs(runs, args.level, args.replicates, args.seed)
    except (GateError, CompareInputError, ValueError, OSError) as exc:
        print(f"etalon.compare: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return USAGE_EXIT
    text = "\n\n".join(format_table(t, d) for t, d in comparisons.items())
    text += f"\n\nintervals: {args.level:.0%} simultaneous over the metrics of each comparison (bootstrap over requests)"
    lines, failed = gate_lines(gates, comparisons)
    if lines:
        text += "\n" + "\n".join(lines)
    out = args.out or Path("outputs/compare") / time.strftime("%Y-%m-%d_%H-%M-%S")
    write_outputs(out, comparisons, text)
    print(text + f"\nreport: {out / 'report.html'}", flush=True)
    if failed:
        print(f"etalon.compare: gate violated: exit status {SLO_FAILED_EXIT}", file=sys.stderr)
        return SLO_FAILED_EXIT
    return 0


__all__ = ["main"]
