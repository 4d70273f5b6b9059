"""Capacity answers that rest on trustworthy probes: how long a full probe must be, when a short
answer is re-measured, and whether the search converged."""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import TYPE_CHECKING, Any

from etalon.core.probe_checks import default_min_requests
from etalon.core.search import ExpandBisectSearch, bracket

if TYPE_CHECKING:
    from etalon.stages.capacity_search import ProbeRun, SearchSettings

log = logging.getLogger("etalon")


def min_requests(slo: Any, settings: SearchSettings) -> int:
    """The fewest measured requests a full probe needs to pass."""
    if settings.min_probe_requests is not None:
        return settings.min_probe_requests
    return default_min_requests(float(getattr(slo, "quantile", 0.99)))


def full_settings(settings: SearchSettings, load: float, needed: int, warmup: int) -> SearchSettings:
    """A full-length probe long enough to measure ``needed`` requests: the request bound is raised
    to it; a rate probe's duration covers it with a 3-sigma Poisson margin; a concurrency probe
    with a request bound drops its duration (how many requests fit in it is the server's doing)."""
    n, d = settings.probe_requests, settings.probe_duration_s
    if n is not None:
        n = max(n, needed)
    if d is not None and settings.search == "rate":
        d = max(d, (needed + warmup + 3 * math.sqrt(needed)) / load)
    elif d is not None and n is not None:
        d = None
    return dataclasses.replace(settings, probe_requests=n, probe_duration_s=d)


def next_load(policy: ExpandBisectSearch, runs: list[ProbeRun]) -> float | None:
    """The policy's next load; once it stops (converged or out of probes), the capacity must rest
    on a full-length probe: a short passing bracket end is re-measured at full length, beyond
    ``max_probes`` if need be (each re-measure turns a short end into a full one, so this ends)."""
    load = policy.next_load([r.probe for r in runs])
    if load is not None:
        return load
    lo, _ = bracket([r.probe for r in runs])
    if lo is not None and lo.short:
        log.info("capacity_search: the result rests on a short probe at %.4g: re-measuring it at full length", lo.load)
        return lo.load
    return None


def convergence(policy: ExpandBisectSearch, runs: list[ProbeRun]) -> str | None:
    """None when the bracket met the precision on full-length probes; else why the answer is not converged."""
    judged = [r.probe for r in runs if not r.interrupted]
    lo, hi = bracket(judged)
    if lo is None:
        return "no probed load met the SLO"
    if hi is None:
        return f"no probed load failed the SLO (highest passing {lo.load:.4g}): the capacity is at least that"
    if lo.short or hi.short or not policy.converged(lo.load, hi.load):
        return (f"probes ran out (max_probes={policy.max_probes}) with the bracket [{lo.load:.4g}, {hi.load:.4g}] "
                f"({(hi.load - lo.load) / hi.load:.1%} wide{', a short upper end' if hi.short else ''}) above "
                f"precision {policy.precision:g}")
    return None


__all__ = ["convergence", "full_settings", "min_requests", "next_load"]
