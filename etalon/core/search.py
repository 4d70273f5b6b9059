"""Capacity search policies: given the probes so far, say which load to probe next (or stop)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from etalon.core.probe_checks import batch_trend


@dataclass(frozen=True)
class Probe:
    """One measured load level and its SLO verdict.

    ``load`` is the offered request rate in requests/s (rate search) or the number of
    concurrent requests (closed-loop concurrency search). ``value``/``threshold`` are the judged
    SLO metric and its limit (passes when ``value <= threshold``); ``scale`` is the SLO's
    continuous "limits would need this factor" signal (<= 1 passes) and, when finite, is what the
    search interpolates (else threshold/value). ``short`` marks a shortened probe (expansion
    phase): it may bound the search only until a full-length probe at its load replaces it.
    """

    load: float
    passed: bool
    value: float = math.nan
    threshold: float = math.nan
    scale: float = math.nan
    cached: bool = False
    early_stopped: bool = False
    duration_s: float = 0.0
    short: bool = False

    @property
    def rate_rps(self) -> float:
        return self.load


class SearchPolicy(Protocol):
    """Takes the history of probes and returns the next load to probe, or None when done."""

    def next_load(self, history: Sequence[Probe]) -> float | None: ...

    def best(self, history: Sequence[Probe]) -> float | None: ...


def bracket(history: Sequence[Probe]) -> tuple[Probe | None, Probe | None]:
    """(highest passing probe below the lowest failing one, lowest failing probe); a short probe
    is ignored once a full-length probe at the same load exists."""
    full_loads = {p.load for p in history if not p.short}
    history = [p for p in history if not (p.short and p.load in full_loads)]
    failed = [p for p in history if not p.passed]
    hi = min(failed, key=lambda p: p.load) if failed else None
    passed = [p for p in history if p.passed and (hi is None or p.load < hi.load)]
    lo = max(passed, key=lambda p: p.load) if passed else None
    return lo, hi


@dataclass(frozen=True)
class ExpandBisectSearch:
    """Grow the load geometrically until a probe fails, then narrow the bracket [lo, hi].

    Narrowing uses the judged values: the crossing of threshold/value = 1 is interpolated
    linearly between lo and hi (regula falsi), and the probe is placed just past that estimate
    on the side that the last probe did not cover, so a good estimate closes the bracket in two
    probes. When two narrowing probes in a row land on the same side (the estimate is biased) or
    values are unusable, it bisects instead, which keeps bisection's worst case. Stops when
    (hi - lo) / hi <= precision (for integer loads also when hi - lo <= 1) or after
    ``max_probes``. ``interpolate=False`` gives plain expand-then-bisect (for comparison).
    """

    start_rate_rps: float = 1.0
    growth: float = 2.0
    precision: float = 0.05
    max_probes: int = 16
    interpolate: bool = True
    integer: bool = False

    def __post_init__(self) -> None:
        if not self.start_rate_rps > 0:
            raise ValueError(f"search.start_rate_rps={self.start_rate_rps} must be > 0")
        if not self.growth > 1:
            raise ValueError(f"search.growth={self.growth} must be > 1")
        if not 0 < self.precision < 1:
            raise ValueError(f"search.precision={self.precision} must be within (0, 1)")
        if self.max_probes < 1:
            raise ValueError(f"search.max_probes={self.max_probes} must be >= 1")

    def next_rate(self, history: Sequence[Probe]) -> float | None:
        return self.next_load(history)

    def next_load(self, history: Sequence[Probe]) -> float | None:
        if len(history) >= self.max_probes:
            return None
        if not history:
            return self._round(self.start_rate_rps)
        lo, hi = bracket(history)
        if hi is None:
            assert lo is not None
            grown = self._round(lo.load * self.growth)
            return max(grown, lo.load + 1) if self.integer else grown
        if lo is None:
            shrunk = self._round(hi.load / self.growth)
            return None if self.integer and shrunk >= hi.load else shrunk
        if self.converged(lo.load, hi.load):
            # The result must rest on full-length probes: re-measure a short bracket end once.
            return next((p.load for p in (lo, hi) if p.short), None)
        if lo.short and _failing_streak(history) >= 2:
            # Full probes keep failing just above a short pass: that pass is suspect (a queue a
            # short probe did not see grow); re-measure it at full length before narrowing on.
            return lo.load
        return self._inside(self._narrow(history, lo, hi), lo.load, hi.load)

    def best(self, history: Sequence[Probe]) -> float | None:
        """The highest load known to pass below the lowest failing one (None if none passed)."""
        lo, _ = bracket(history)
        return None if lo is None else lo.load

    def converged(self, lo: float, hi: float) -> bool:
        if self.integer and hi - lo <= 1:
            return True
        return (hi - lo) / hi <= self.precision

    def _narrow(self, history: Sequence[Probe], lo: Probe, hi: Probe) -> float:
        mid = 0.5 * (lo.load + hi.load)
        crossing = _crossing(lo, hi) if self.interpolate else None
        if crossing is None or _stalled(history):
            return mid
        # Land just past the estimate, on the side the last probe did not settle.
        step = 0.45 * self.precision * hi.load
        return crossing + step if history[-1].passed else crossing - step

    def _inside(self, load: float, lo: float, hi: float) -> float | None:
        margin = 0.05 * (hi - lo)
        load = min(max(load, lo + margin), hi - margin)
        if not self.integer:
            return load
        rounded = min(max(round(load), int(lo) + 1), int(hi) - 1)
        return float(rounded) if lo < rounded < hi else None

    def _round(self, load: float) -> float:
        return float(max(1, round(load))) if self.integer else float(load)


def _headroom(probe: Probe) -> float | None:
    """1 / scale, or threshold / value: >= 1 passes, 0 for an unbounded value (a runaway queue).

    For queueing latency (value ~ s / (1 - rate/capacity)) this is linear in the load, so
    linear interpolation of it lands close to the crossing; a zero value carries no slope.
    """
    if not math.isnan(probe.scale):
        return 1.0 / probe.scale if probe.scale > 0 else None
    if not math.isfinite(probe.threshold) or probe.threshold <= 0:
        return None
    if math.isnan(probe.value) or probe.value <= 0:
        return None
    return probe.threshold / probe.value


def _crossing(lo: Probe, hi: Probe) -> float | None:
    if lo.short or hi.short:
        return None  # a short probe's value understates its queue: no slope to trust, bisect
    h_lo, h_hi = _headroom(lo), _headroom(hi)
    if h_lo is None or h_hi is None or not h_lo >= 1.0 > h_hi:
        return None
    return lo.load + (hi.load - lo.load) * (h_lo - 1.0) / (h_lo - h_hi)


def _failing_streak(history: Sequence[Probe]) -> int:
    """How many narrowing probes in a row (after the first failure) failed, counting back from the
    last one to a pass or to the last re-measure of a short probe (which starts a new streak)."""
    first_fail = next((i for i, p in enumerate(history) if not p.passed), None)
    if first_fail is None:
        return 0
    short_loads = {p.load for p in history if p.short}
    streak = 0
    for p in reversed(history[first_fail + 1 :]):
        if p.passed or (not p.short and p.load in short_loads):
            break
        streak += 1
    return streak


def _stalled(history: Sequence[Probe]) -> bool:
    """True when the last two narrowing probes had the same outcome (a one-sided estimate)."""
    first_fail = next((i for i, p in enumerate(history) if not p.passed), None)
    if first_fail is None:
        return False
    narrowing = history[first_fail + 1 :]
    return len(narrowing) >= 2 and narrowing[-1].passed == narrowing[-2].passed


def run_search(
    policy: SearchPolicy, judge: Callable[[float], Probe], max_steps: int = 1000
) -> list[Probe]:
    """Drive ``policy`` against ``judge(load) -> Probe`` (a pure function: tests, simulations)."""
    history: list[Probe] = []
    for _ in range(max_steps):
        load = policy.next_load(history)
        if load is None:
            break
        history.append(judge(load))
    return history


def runaway_queue(
    scheduled_ns: np.ndarray,
    first_token_ns: np.ndarray,
    *,
    min_requests: int = 32,
    slope_limit: float = 0.25,
    growth_factor: float = 4.0,
) -> str | None:
    """A reason string when the user-view TTFT (first token - planned send) grows steadily with
    the planned send time: the offered load is above what the endpoint serves, so its queue
    grows for as long as the run lasts.

    The first third of the requests with a first token is the ramp from idle (the batch fills,
    TTFT rises at any load: on vLLM this stopped a probe at 24 rps that carried 26 by hand, after
    16 requests; the ramp can outlast a third of so few, hence 32 after it by default) and is
    left out of the slope and trend (not of the early median or the window whose growth the slope
    predicts); the rest must hold ``min_requests``.

    In an overloaded FCFS server, a request planned at t waits about t * (rate / capacity - 1),
    so the least-squares slope of TTFT on send time estimates rate / capacity - 1. The run is
    declared runaway when the slope exceeds ``slope_limit`` and the fitted growth over the window
    is more than ``growth_factor`` times the median TTFT of its first quarter (so ordinary
    jitter on a fast endpoint never trips it), and the rise is a trend beyond the scatter of the
    TTFTs in each half of the window (``batch_trend``; a burst of slow steps on a noisy host, a
    jump in one half, stopped short probes on vLLM well below its capacity). Rows with no first
    token (-1) are skipped.
    """
    done = first_token_ns >= 0
    count = int(np.count_nonzero(done))
    ramp = count // 3  # the batch filling from idle: TTFT rises there at any load
    if count - ramp < min_requests:
        return None
    t_s = scheduled_ns[done] / 1e9
    ttft_s = (first_token_ns[done] - scheduled_ns[done]) / 1e9
    order = np.argsort(t_s)
    t_s, ttft_s = t_s[order], ttft_s[order]
    early_s = float(np.median(ttft_s[: max(count // 4, 1)]))
    span_s = float(t_s[-1] - t_s[0])
    t_s, ttft_s = t_s[ramp:], ttft_s[ramp:]
    if t_s[-1] <= t_s[0]:
        return None
    slope = float(np.polyfit(t_s, ttft_s, 1)[0])
    growth_s = slope * span_s
    if slope > slope_limit and growth_s > growth_factor * early_s:
        half = t_s.size // 2  # a queue rises through the window; a stall is a jump in one half
        trends = (batch_trend(t_s[:half], ttft_s[:half]), batch_trend(t_s[half:], ttft_s[half:]))
        if any(trend is not None and not trend.significant for trend in trends):
            return None
        return (
            f"queue grows without bound: TTFT rises {slope:.2f} s per s of sending "
            f"(+{growth_s:.2f} s over {span_s:.1f} s, from {early_s * 1e3:.0f} ms)"
        )
    return None
