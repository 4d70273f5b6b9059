"""Can a capacity probe be trusted? Enough measured requests, achieved vs offered load, a queue
that does not grow through the probe (pure; used by the capacity search to veto a pass)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from etalon.core.records import RecordTable

MIN_REQUESTS_FLOOR = 20
# A growing queue is a wait for the first token that trends upwards through the probe after its
# ramp, clearly (a one-sided 99% t-test of the slope of batch medians against their own scatter)
# and materially (a rise of more than QUEUE_GROWTH_FRACTION of the starting wait plus
# QUEUE_WAIT_SLACK_S over the window). A fixed ratio between thirds (the rule before) fired on
# noise: a burst of slow steps on a shared host lifts one third's median as much as a queue does.
QUEUE_WAIT_SLACK_S = 0.05
QUEUE_GROWTH_FRACTION = 0.5
# Fewer measured requests than this and the batches' medians are noise, not a queue: a 15-request
# probe on CPU vLLM beside other work was vetoed at 1 rps (58 -> 296 ms).
QUEUE_MIN_REQUESTS = 30
QUEUE_BATCH_MIN, QUEUE_BATCHES_MAX = 3, 10
# One-sided 99% critical values of Student's t by degrees of freedom (batches - 2).
_T99 = {2: 6.965, 3: 4.541, 4: 3.747, 5: 3.365, 6: 3.143, 7: 2.998, 8: 2.896}


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


@dataclass(frozen=True)
class Trend:
    """A line through batch medians: ``slope`` per second, its t statistic against the medians'
    scatter about the line, the fitted values at the first and last batch."""

    slope: float
    t: float
    first: float
    last: float
    batches: int

    @property
    def significant(self) -> bool:
        """One-sided, at 99%: the values rise, beyond what their scatter explains."""
        return self.t > _T99[min(self.batches - 2, max(_T99))]


def batch_trend(at_s: np.ndarray, values: np.ndarray) -> Trend | None:
    """The trend of ``values`` (in ``at_s`` order) cut into up to 10 batches of at least 3: the
    slope of the batch medians against the batches' mean times, tested against the scatter of the
    medians about that line, so a level that jumps about (host noise, a burst of long prompts) is
    not a trend while a queue growing at any rate is. None with fewer than 4 batches or no spread."""
    batches = int(min(QUEUE_BATCHES_MAX, values.size // QUEUE_BATCH_MIN))
    if batches < 4:
        return None
    bounds = np.linspace(0, values.size, batches + 1).astype(np.int64)
    level = np.array([np.median(values[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])])
    at = np.array([at_s[lo:hi].mean() for lo, hi in zip(bounds[:-1], bounds[1:])])
    at_dev = at - at.mean()
    sxx = float(at_dev @ at_dev)
    if sxx <= 0:
        return None
    slope = float(at_dev @ (level - level.mean())) / sxx
    residual = level - level.mean() - slope * at_dev
    scatter = math.sqrt(float(residual @ residual) / (batches - 2))
    t = math.copysign(math.inf, slope) if scatter == 0 else slope / (scatter / math.sqrt(sxx))
    return Trend(slope=slope, t=t, first=float(level.mean() + slope * at_dev[0]),
                 last=float(level.mean() + slope * at_dev[-1]), batches=batches)


def growing_queue(table: RecordTable) -> str | None:
    """A reason when the wait for the first token, counted from each measured request's planned
    send, trends clearly and materially upwards through the probe after its ramp (the first third,
    from idle, is left out): the endpoint falls further behind for as long as the load lasts.
    Clearly: ``batch_trend`` is significant; materially: the fitted rise over the window is more
    than QUEUE_GROWTH_FRACTION of the starting wait plus QUEUE_WAIT_SLACK_S.

    The wait, not the in-flight count: by Little's law in-flight requests also follow the arrival
    rate, and a seeded Poisson sample (scaled to every rate of a search) may send its last third
    much faster than its middle third by chance; on real vLLM that vetoed probes far below
    saturation, at a steady latency."""
    measured = ~table.warmup & (table.first_token_ns >= 0)
    sched = table.scheduled_ns[measured]
    if sched.size < QUEUE_MIN_REQUESTS:
        return None
    order = np.argsort(sched, kind="stable")
    start = sched.size // 3
    wait_s = ((table.first_token_ns[measured] - sched)[order] / 1e9)[start:]
    trend = batch_trend((sched[order] / 1e9)[start:], wait_s)
    if trend is None or not trend.significant:
        return None
    first = max(trend.first, 0.0)
    if trend.last - first > QUEUE_GROWTH_FRACTION * first + QUEUE_WAIT_SLACK_S:
        return (f"queue grows: the wait for the first token rises {first * 1e3:.0f} -> {trend.last * 1e3:.0f} ms "
                f"through the probe (trend t = {min(trend.t, 999):.1f} over {trend.batches} batches)")
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


__all__ = ["ProbeChecks", "Trend", "batch_trend", "check_probe", "default_min_requests", "fitted_rate_rps",
           "growing_queue", "latency_spread_fraction"]
