"""``repeats: N`` on a benchmark stage: the same load again with other seeds, and the spread between runs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from etalon.core.bootstrap import HEADLINE_KEYS
from etalon.stages.base import StageContext, StageError

REPEAT_DIR = "repeat_{}"


def check_repeats(repeats: int) -> None:
    if not isinstance(repeats, int) or repeats < 1:
        raise StageError(f"benchmark.repeats={repeats!r} must be an integer >= 1")


def run_repeats(ctx: StageContext, first: Any, repeats: int, measure_again: Any) -> dict[str, Any]:
    """Measure repeats 2..N (seeds workload.seed + 1, + 2, ...) under ``<stage>/repeat_<i>/``;
    return the between-repeat spread of every headline metric and each repeat's SLO verdict.

    ``measure_again(seed, out_dir)`` returns a Measurement; ``first`` is repeat 1's."""
    runs = [first]
    for i in range(1, repeats):
        m = measure_again(ctx.cfg.workload.seed + i, ctx.stage_dir / REPEAT_DIR.format(i + 1))
        runs.append(m)
        if m.interrupted:
            break
    scalars = [m.summary.scalars() for m in runs]
    spread = {}
    for key in HEADLINE_KEYS:
        values = np.array([s.get(key, math.nan) for s in scalars], dtype=float)
        values = values[np.isfinite(values)]
        if values.size:
            spread[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
                           "min": float(values.min()), "max": float(values.max()), "n": int(values.size)}
    passed = [None if m.verdict is None else bool(m.verdict.passed) for m in runs]
    return {"repeats": len(runs), "seeds": [ctx.cfg.workload.seed + i for i in range(len(runs))],
            "slo_passed": passed, "spread": spread, "interrupted": runs[-1].interrupted}


def spread_scalars(block: dict[str, Any]) -> dict[str, float]:
    """``<metric>_repeat_std`` and ``<metric>_repeat_mean`` for MLflow."""
    out = {"repeats": float(block["repeats"])}
    for key, stats in block["spread"].items():
        out[f"{key}_repeat_mean"] = stats["mean"]
        out[f"{key}_repeat_std"] = stats["std"]
    return out


__all__ = ["check_repeats", "run_repeats", "spread_scalars"]
