"""CI gates on a comparison: per-metric thresholds (``ttft_p99_s: +5%``) parsed before anything runs."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from etalon.core.bootstrap import HEADLINES
from etalon.core.comparison import WORSE, MetricDelta

_THRESHOLD = re.compile(r"^\s*([+-]?)\s*(\d+(?:\.\d*)?|\.\d+)\s*(%?)\s*$")


class GateError(ValueError):
    """A gate file entry is invalid; the message names the entry."""


@dataclass(frozen=True)
class Gate:
    """How much worse run B may be than baseline A on one metric before the gate fails.

    ``limit`` is relative (0.05 for ``+5%``) when ``relative``, else in the metric's own unit. The
    sign only documents the bad direction and must match it (``+`` for latencies, ``-`` for
    throughput, goodput and fluidity-index).
    """

    metric: str
    limit: float
    relative: bool
    text: str

    def violated(self, d: MetricDelta) -> bool:
        """The change is a detectable regression (verdict "worse") larger than the limit."""
        if d.verdict != WORSE:
            return False
        change = d.relative if self.relative else d.delta
        worse_by = change if d.lower_is_better else -change
        return math.isfinite(worse_by) and worse_by > self.limit


def parse_gates(entries: Any, source: str = "gate file") -> list[Gate]:
    """``{metric: "+5%" | "+0.01" | 0.01}`` -> gates; any bad entry is one error naming it."""
    if not isinstance(entries, dict) or not entries:
        raise GateError(f"{source}: must be a mapping of metric: threshold, e.g. 'ttft_p99_s: +5%'")
    directions = {h.key: h.lower_is_better for h in HEADLINES}
    gates = []
    for metric, raw in entries.items():
        if metric not in directions:
            raise GateError(f"{source}: unknown metric {metric!r}; known: {', '.join(directions)}")
        match = _THRESHOLD.match(str(raw))
        if match is None:
            raise GateError(f"{source}: {metric}: bad threshold {raw!r}; write e.g. '+5%', '-3%' or '+0.01'")
        sign, number, percent = match.groups()
        bad = "+" if directions[metric] else "-"
        if sign and sign != bad:
            raise GateError(f"{source}: {metric}: {raw!r} points the wrong way; {metric} gets worse when it "
                            f"{'rises' if bad == '+' else 'falls'}, so write '{bad}{number}{percent}'")
        value = float(number) / (100.0 if percent else 1.0)
        gates.append(Gate(str(metric), value, bool(percent), str(raw)))
    return gates


__all__ = ["Gate", "GateError", "parse_gates"]
