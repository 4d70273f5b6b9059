"""Can a capacity probe be trusted? Enough measured requests, achieved vs offered load, a queue
that does not grow through the probe (pure; used by the capacity search to veto a pass)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from etalon.core.records import RecordTable

MIN_REQUESTS_FLOOR = 20
# The wait for the first token may grow by QUEUE_GROWTH_FACTOR x plus this much between the middle
# and the last third of a probe before the queue counts as growing: short waits are noisy.
QUEUE_WAIT_SLACK_S = 0.05
QUEUE_GROWTH_FACTOR = 1.5
# Fewer measured requests than this (10 per third) and the thirds' medians are noise, not a queue:
# a 15-request probe on CPU vLLM beside other work was vetoed at 1 rps (58 -> 296 ms).
QUEUE_MIN_REQUESTS = 30


def default_min_requests(quantile: float) -> int:
    """Fewest measured requests for the SLO's ``quantile`` to mean something: at least one request
    beyond it (ceil(1 / (1 - q)): 100 for p99, 1000 for p99.9), and never under 20."""
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be within (0, 1], got {quantile}")
    if quantile >= 1:
        return MIN_REQUESTS_FLOOR
    return max(MIN_REQUESTS_FLOOR, math.ceil(1.0 / (1.0 - quantile) - 1e-9))


RATE_FIT_TRIM = 0.1  # the first and last 10% of events are left out of the rate fit (ramp, drain)


def fitted_rate_rps(times_ns: np.ndarray) -> float:
    """Events per second: the least-squares slope of the event count against time over the middle
    80% of the events (NaN if fewer than 5 or no spread). Fitted the same way for planned sends and
    completions, so arrival noise largely cancels in their ratio."""
    t = np.sort(np.asarray(times_ns, dtype=np.float64)) / 1e9
    lo = int(t.size * RATE_FIT_TRIM)
    hi = t.size - lo
    if hi - lo < 5 or t[hi - 1] <= t[lo]:
        return math.nan
    return float(np.polyfit(t[lo:hi], np.arange(lo, hi, dtype=np.float64), 1)[0])


def latency_spread_fraction(table: RecordTable) -> float:
    """p90 - p10 of the generation time (first token to end: output lengths, not queueing) of the
    first third of measured requests, as a fraction of the planned sending span: how much latency
    jitter alone can stretch the completions of a short probe (0 when unknown)."""
    measured = ~table.warmup & table.ok & (table.end_ns > 0) & (table.first_token_ns >= 0)
    sched, e2e = table.scheduled_ns[measured], table.end_ns[measured] - table.first_token_ns[measured]
    if sched.size < 9:
        return 0.0
    order = np.argsort(sched)
    early = e2e[order][: sched.size // 3]
    span = float(sched.max() - sched.min())
    return float(np.percentile(early, 90) - np.percentile(early, 10)) / span if span > 0 else 0.0


def growing_queue(table: RecordTable) -> str | None:
    """A reason when the wait for the first token, counted from each measured request's planned
    send, is clearly longer in the last third of the probe than in the middle third (the first
    third is the ramp from idle): the endpoint falls further behind for as long as the load lasts.

    The wait, not the in-flight count: by Little's law in-flight requests also follow the arrival
    rate, and a seeded Poisson sample (scaled to every rate of a search) may send its last third
    much faster than its middle third by chance; on real vLLM that vetoed probes far below
    saturation, at a steady latency."""
    measured = ~table.warmup & (table.first_token_ns >= 0)
    sched = table.scheduled_ns[measured]
    if sched.size < QUEUE_MIN_REQUESTS:
        return None
    order = np.argsort(sched, kind="stable")
    wait_s = (table.first_token_ns[measured] - sched)[order] / 1e9
    third = wait_s.size // 3
    middle, last = float(np.median(wait_s[third:2 * third])), float(np.median(wait_s[2 * third:]))
    if last > QUEUE_GROWTH_FACTOR * middle + QUEUE_WAIT_SLACK_S:
        return (f"queue grows: median wait for the first token {middle * 1e3:.0f} -> {last * 1e3:.0f} ms from the "
                "middle to the last third")
    return None


@dataclass(frozen=True)
class ProbeChecks:
    """What a probe measured, against what it must have measured to count as a pass."""

    measured_requests: int
    min_requests: int
    offered_rps: float
    achieved_rps: float
    queue: str | None
    latency_spread: float = 0.0  # latency_spread_fraction: widens the rate tolerance of short probes

    def vetoes(self, *, short: bool, rate_tolerance: float) -> list[str]:
        """Why a probe whose SLO verdict passed still cannot pass (empty: it can). A short probe
        (expansion phase) may be thin, since a short bracket end is re-measured at full length."""
        out = []
        if not short and self.measured_requests < self.min_requests:
            out.append(f"thin: {self.measured_requests} measured requests < {self.min_requests} needed")
        floor = max(1.0 - rate_tolerance - self.latency_spread, 0.0)
        if math.isfinite(self.offered_rps) and math.isfinite(self.achieved_rps) \
                and self.achieved_rps < floor * self.offered_rps:
            out.append(f"achieved {self.achieved_rps:.3g} rps < {floor:.2g} x offered {self.offered_rps:.3g} rps")
        if self.queue is not None:
            out.append(self.queue)
        return out


def check_probe(table: RecordTable, *, min_requests: int, open_loop: bool) -> ProbeChecks:
    """Measure the checks on a probe's served rows (warm-up excluded from the counts and rates).

    Rates are open-loop only: a closed loop's offered load is whatever the endpoint serves."""
    measured = ~table.warmup
    done = measured & (table.end_ns > 0)
    offered = fitted_rate_rps(table.scheduled_ns[measured]) if open_loop else math.nan
    achieved = fitted_rate_rps(table.end_ns[done]) if open_loop else math.nan
    return ProbeChecks(
        measured_requests=int(np.count_nonzero(measured)),
        min_requests=int(min_requests),
        offered_rps=offered,
        achieved_rps=achieved,
        queue=growing_queue(table) if open_loop else None,
        latency_spread=latency_spread_fraction(table) if open_loop else 0.0,
    )


__all__ = ["ProbeChecks", "check_probe", "default_min_requests", "fitted_rate_rps", "growing_queue",
           "latency_spread_fraction"]
