"""Capacity as an interval: re-measure both bracket ends with other seeds and see whether they hold."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
from hydra.utils import instantiate

from etalon.core.search import bracket
from etalon.stages.base import StageContext, StageResult


def _with_seed(ctx: StageContext, seed: int) -> StageContext:
    workload = dataclasses.replace(ctx.cfg.workload, seed=seed)
    return dataclasses.replace(ctx, cfg=dataclasses.replace(ctx.cfg, workload=workload))


def capacity_interval(loads: list[float], lo: float, hi: float, lo_passes: list[bool],
                      hi_passes: list[bool], passing: list[float], failing: list[float]) -> tuple[float | None, float]:
    """[low, high] the capacity lies in across seeds: ``lo`` if it passed every time (else the next
    lower load that passed, or None: below everything probed), ``hi`` if it failed every time
    (else the next higher load that failed, or the highest load probed)."""
    low = lo if all(lo_passes) else max((x for x in passing if x < lo), default=None)
    high = hi if not any(hi_passes) else min((x for x in failing if x > hi), default=max(loads))
    return low, high


def reprobe_bracket(ctx: StageContext, slo: Any, settings: Any, runs: list[Any], result: StageResult) -> None:
    """Adds ``capacity_interval`` and ``reprobes`` to the result (and capacity.json)."""
    from etalon.stages.capacity_search import probe

    lo, hi = bracket([r.probe for r in runs])
    if lo is None or hi is None:
        return
    base, lengths = instantiate(ctx.cfg.workload.arrival), instantiate(ctx.cfg.workload.lengths)
    lo_passes, hi_passes = [True], [False]
    for i in range(1, settings.reprobe + 1):
        seeded = _with_seed(ctx, ctx.cfg.workload.seed + i)
        lo_passes.append(probe(seeded, slo, settings, base, lengths, lo.load, len(runs) + 2 * i - 2).probe.passed)
        hi_passes.append(probe(seeded, slo, settings, base, lengths, hi.load, len(runs) + 2 * i - 1).probe.passed)
    loads = [r.probe.load for r in runs]
    low, high = capacity_interval(loads, lo.load, hi.load, lo_passes, hi_passes,
                                  [r.probe.load for r in runs if r.probe.passed],
                                  [r.probe.load for r in runs if not r.probe.passed])
    result.data["capacity_interval"] = [low, high]
    result.data["reprobes"] = {"seeds": [ctx.cfg.workload.seed + i for i in range(settings.reprobe + 1)],
                               "low_load": lo.load, "low_passed": lo_passes,
                               "high_load": hi.load, "high_passed": hi_passes}
    if low is not None:
        result.scalars["capacity_interval_low"] = float(low)
    result.scalars["capacity_interval_high"] = float(high)
    path = ctx.stage_dir / "capacity.json"
    path.write_bytes(orjson.dumps(result.data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))


__all__ = ["capacity_interval", "reprobe_bracket"]
