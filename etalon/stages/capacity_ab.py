"""How ``capacity_compare`` ends: every config against the first, as ``etalon.compare`` compares runs.

Two tables per config: the capacity itself (a delta whose interval comes from the two brackets: B
is detectably better only when its lowest possible capacity is above A's highest), and the headline
metrics of the probe each capacity rests on (each config at its own capacity, bootstrap intervals).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from etalon.core.comparison import BETTER, SAME, WORSE, MetricDelta

log = logging.getLogger("etalon")


def capacity_range(data: dict[str, Any], load_col: str) -> tuple[float, float] | None:
    """Where the capacity lies: the re-probed interval where there is one, else the bracket from
    the highest passing load to the lowest failing one (no failure: unbounded above)."""
    cap = data.get(load_col)
    if cap is None:
        return None
    interval = data.get("capacity_interval")
    if interval and interval[1] is not None:
        return (float(interval[0]) if interval[0] is not None else 0.0), float(interval[1])
    failing = data.get("lowest_failing")
    return float(cap), (float(failing) if failing is not None else math.inf)


def capacity_delta(a: dict[str, Any], b: dict[str, Any], load_col: str) -> MetricDelta | None:
    """B's capacity against A's; the interval of the delta spans every pair of values the two
    ranges allow, so its verdict is a difference no probe's placement can explain."""
    ra, rb = capacity_range(a, load_col), capacity_range(b, load_col)
    if ra is None or rb is None:
        return None
    cap_a, cap_b = float(a[load_col]), float(b[load_col])
    low, high = rb[0] - ra[1], rb[1] - ra[0]
    verdict = BETTER if low > 0 else WORSE if high < 0 else SAME
    return MetricDelta(load_col, cap_a, cap_b, cap_b - cap_a, (cap_b - cap_a) / cap_a if cap_a else math.nan,
                       low, high, verdict, lower_is_better=False)


def headline_deltas(a: dict[str, Any], b: dict[str, Any], seed: int) -> list[MetricDelta]:
    """Headline metrics of B's probe at its capacity against A's at its own (empty where a config
    has no passing probe, or the two were judged by different SLOs)."""
    from etalon.stages.analysis import load_sample
    from etalon.core.comparison import compare_samples

    paths = [d.get("at_capacity_sample") for d in (a, b)]
    if not all(p and Path(p).exists() for p in paths) or a.get("slo") != b.get("slo"):
        return []
    return compare_samples(load_sample(Path(paths[0])), load_sample(Path(paths[1])), seed=seed)


def capacity_ab(labels: list[str], datas: list[dict[str, Any]], load_col: str) -> dict[str, list[MetricDelta]]:
    """``{"B=<config> vs A=<first config>": [capacity delta, headline deltas...]}`` for every
    config after the first whose search found a capacity (the first must have found one)."""
    out: dict[str, list[MetricDelta]] = {}
    if not datas or datas[0].get(load_col) is None:
        return out
    for i in range(1, len(datas)):
        delta = capacity_delta(datas[0], datas[i], load_col)
        if delta is None:
            continue
        try:
            rest = headline_deltas(datas[0], datas[i], seed=2 * i)
        except (OSError, ValueError) as exc:  # an unreadable sample: the capacity row still stands
            log.warning("capacity_compare: no metrics at capacity for %s (%s)", labels[i], exc)
            rest = []
        out[f"B={labels[i]} vs A={labels[0]}"] = [delta, *rest]
    return out


def verdict_line(title: str, deltas: list[MetricDelta]) -> str:
    """``capacity B=... vs A=...: +12.5% (better); at capacity: ttft_p99_s worse, ...``"""
    cap, rest = deltas[0], deltas[1:]
    changed = [f"{d.key} {d.verdict}" for d in rest if d.verdict != SAME]
    tail = f"; at capacity: {', '.join(changed)}" if changed else ("; at capacity: no detectable difference"
                                                                   if rest else "")
    return f"capacity {title}: {cap.relative * 100:+.1f}% ({cap.verdict}){tail}"


__all__ = ["capacity_ab", "capacity_delta", "capacity_range", "headline_deltas", "verdict_line"]
