"""Load ramps: an open-loop arrival process made of stages, each a constant rate or a linear ramp.

Within a stage the rate goes linearly from ``rate_rps`` to ``end_rate_rps`` (equal by default: a
step). Arrivals are the events of the process whose cumulative intensity is Lambda(t) (the
integral of the rate): ``poisson`` draws unit-rate Poisson events in Lambda and maps them back
through Lambda's inverse (a non-homogeneous Poisson process); ``constant`` puts event k exactly
where Lambda(t) = k. Each request keeps the name of the stage it was planned in.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from etalon.core.arrivals import MAX_OPEN_LOOP_REQUESTS

PROCESSES = ("poisson", "constant")


@dataclass(frozen=True)
class RampStage:
    """``duration_s`` at a rate going linearly from ``rate_rps`` to ``end_rate_rps``."""

    duration_s: float
    rate_rps: float
    end_rate_rps: float | None = None
    name: str | None = None

    @property
    def final_rate_rps(self) -> float:
        return self.rate_rps if self.end_rate_rps is None else self.end_rate_rps

    @property
    def expected_requests(self) -> float:
        return 0.5 * (self.rate_rps + self.final_rate_rps) * self.duration_s


def _finite(value: Any, minimum_exclusive: float | None, minimum: float | None = None) -> bool:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return False
    if minimum_exclusive is not None and value <= minimum_exclusive:
        return False
    return minimum is None or value >= minimum


def _stage(index: int, raw: Any) -> RampStage:
    stage = raw if isinstance(raw, RampStage) else RampStage(**dict(raw))
    key = f"arrival.stages[{index}]"
    if not _finite(stage.duration_s, 0.0):
        raise ValueError(f"{key}.duration_s must be a finite number > 0, got {stage.duration_s!r}")
    for name in ("rate_rps", "end_rate_rps"):
        value = getattr(stage, name)
        if value is not None and not _finite(value, None, 0.0):
            raise ValueError(f"{key}.{name} must be a finite number >= 0, got {value!r}")
    if stage.rate_rps == 0 and stage.final_rate_rps == 0:
        pass  # an idle stage is allowed (a pause)
    return stage


@dataclass(frozen=True)
class RampArrivals:
    """Open-loop arrivals over ``stages`` (list of {duration_s, rate_rps, end_rate_rps?, name?})."""

    stages: tuple[RampStage, ...] | list[Any]
    process: str = "poisson"
    closed_loop: ClassVar[bool] = False
    _bounds_s: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("arrival.stages must list at least one stage")
        stages = tuple(_stage(i, s) for i, s in enumerate(self.stages))
        object.__setattr__(self, "stages", stages)
        if self.process not in PROCESSES:
            raise ValueError(f"arrival.process must be one of {', '.join(PROCESSES)}, got {self.process!r}")
        if sum(s.expected_requests for s in stages) <= 0:
            raise ValueError("arrival.stages plan no requests (every rate is 0)")
        bounds = np.concatenate(([0.0], np.cumsum([s.duration_s for s in stages])))
        object.__setattr__(self, "_bounds_s", bounds)

    @property
    def rate_rps(self) -> float:
        """Mean planned rate over the whole ramp."""
        return sum(s.expected_requests for s in self.stages) / float(self._bounds_s[-1])

    @property
    def duration_s(self) -> float:
        return float(self._bounds_s[-1])

    def stage_names(self) -> list[str]:
        return [s.name or f"stage{i}" for i, s in enumerate(self.stages)]

    def stage_of(self, offsets_s: np.ndarray) -> np.ndarray:
        """Index of the stage each offset falls in (int64)."""
        idx = np.searchsorted(self._bounds_s, np.asarray(offsets_s, dtype=np.float64), side="right") - 1
        return np.clip(idx, 0, len(self.stages) - 1).astype(np.int64)

    def offsets_s(self, num_requests: int | None, duration_s: float | None,
                  rng: np.random.Generator) -> np.ndarray:
        """Planned send times over the ramp, cut at ``num_requests`` and ``duration_s`` if set."""
        total = sum(s.expected_requests for s in self.stages)
        if total > MAX_OPEN_LOOP_REQUESTS:
            raise ValueError(f"arrival.stages plan more than {MAX_OPEN_LOOP_REQUESTS} requests")
        if self.process == "constant":
            levels = np.arange(int(math.floor(total)) + 1, dtype=np.float64)
        else:
            gaps = rng.exponential(1.0, size=int(total + 10 * math.sqrt(total) + 16))
            levels = np.concatenate(([0.0], np.cumsum(gaps)))
        offsets = self._invert(levels[levels < total])
        if duration_s is not None:
            offsets = offsets[offsets < duration_s]
        if num_requests is not None:
            offsets = offsets[: int(num_requests)]
        return offsets

    def _invert(self, levels: np.ndarray) -> np.ndarray:
        """t with Lambda(t) = level, stage by stage (Lambda is quadratic within a linear stage)."""
        out = np.empty_like(levels)
        done = 0.0
        for i, stage in enumerate(self.stages):
            mass = stage.expected_requests
            mask = (levels >= done) & (levels < done + mass)
            u = levels[mask] - done  # requests into this stage
            r0, r1, d = stage.rate_rps, stage.final_rate_rps, stage.duration_s
            slope = (r1 - r0) / d
            if abs(slope) < 1e-12:
                t = u / r0
            else:  # r0 t + slope t^2 / 2 = u
                t = (-r0 + np.sqrt(np.maximum(r0 * r0 + 2 * slope * u, 0.0))) / slope
            out[mask] = self._bounds_s[i] + np.clip(t, 0.0, d)
            done += mass
        return out

    def with_rate(self, rate_rps: float) -> RampArrivals:
        """The same ramp shape scaled so its mean rate is ``rate_rps``."""
        if not _finite(rate_rps, 0.0):
            raise ValueError(f"rate_rps must be a finite number > 0, got {rate_rps!r}")
        factor = rate_rps / self.rate_rps
        stages = [RampStage(s.duration_s, s.rate_rps * factor,
                            None if s.end_rate_rps is None else s.end_rate_rps * factor, s.name)
                  for s in self.stages]
        return RampArrivals(stages, self.process)
