"""Client headroom: does the configured load need more load actors than it was given?

Estimate: the schedule's peak output token rate (the most output tokens planned to start within any
``window_s``, per second) against ``num_actors`` x the streamed tokens/s one actor handles
(``client.actor_capacity_tokens_per_s``; measure it on your machine with
``python bench/client_overhead.py --scaling``). A request's tokens arrive over its whole duration,
not in the window it starts in, so the estimate is high for long outputs at low rate: it warns early
rather than late. Closed loops have no planned rate and are not estimated.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from etalon.core.workload import Schedule

WINDOW_S = 1.0


def peak_token_rate(schedule: Schedule, window_s: float = WINDOW_S) -> float | None:
    """Most output tokens planned to start within any ``window_s`` (tokens/s); None for a closed loop."""
    if schedule.offsets_ns is None or len(schedule.offsets_ns) == 0:
        return None
    offsets = np.asarray(schedule.offsets_ns, dtype=np.int64)
    tokens = np.asarray(schedule.output_tokens, dtype=np.int64)
    order = np.argsort(offsets, kind="stable")
    offsets, tokens = offsets[order], tokens[order]
    cum = np.concatenate([[0], np.cumsum(tokens)])
    ends = np.searchsorted(offsets, offsets + int(window_s * 1e9), side="left")  # [t, t + window)
    return float((cum[ends] - cum[np.arange(offsets.shape[0])]).max()) / window_s


def actors_needed(peak_tokens_per_s: float, capacity_tokens_per_s: float) -> int:
    """Load actors whose combined capacity covers the peak (at least 1)."""
    return max(1, math.ceil(peak_tokens_per_s / capacity_tokens_per_s))


def headroom_warning(schedule: Schedule, num_actors: int, capacity_tokens_per_s: float) -> str | None:
    """One line when the schedule's peak needs more actors than ``num_actors``, else None."""
    if capacity_tokens_per_s <= 0:
        return None
    peak = peak_token_rate(schedule)
    if peak is None:
        return None
    needed = actors_needed(peak, capacity_tokens_per_s)
    if needed <= num_actors:
        return None
    return (
        f"the workload peaks at ~{peak:,.0f} output tokens/s but {num_actors} load actor(s) stream about "
        f"{num_actors * capacity_tokens_per_s:,.0f} (client.actor_capacity_tokens_per_s="
        f"{capacity_tokens_per_s:,.0f} each): set client.num_actors={needed} or more, or expect the "
        f"client to fall behind (dispatch lag)"
    )
