"""Arrival processes: when each request should be sent (open loop) or how many users send (closed loop)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

# A duration-only open-loop schedule is drawn in chunks; this bounds memory for absurd inputs.
MAX_OPEN_LOOP_REQUESTS = 10_000_000


@runtime_checkable
class OpenLoopArrivals(Protocol):
    """Send times fixed in advance, independent of how fast the server answers."""

    closed_loop: ClassVar[bool]
    rate_rps: float

    def offsets_s(self, num_requests: int | None, duration_s: float | None,
                  rng: np.random.Generator) -> np.ndarray: ...

    def with_rate(self, rate_rps: float) -> OpenLoopArrivals: ...


def _check_positive(name: str, value: float) -> None:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_limits(num_requests: int | None, duration_s: float | None) -> None:
    if num_requests is None and duration_s is None:
        raise ValueError("set num_requests or duration_s (or both): an open-loop schedule needs an end")
    if num_requests is not None and (isinstance(num_requests, bool) or int(num_requests) != num_requests
                                     or num_requests < 0):
        raise ValueError(f"num_requests must be an integer >= 0, got {num_requests!r}")
    if duration_s is not None:
        _check_positive("duration_s", duration_s)


def _offsets_from_gaps(draw_gaps_s: Callable[[int], np.ndarray], rate_rps: float,
                       num_requests: int | None, duration_s: float | None) -> np.ndarray:
    """Cumulate inter-arrival gaps into offsets; the first request goes at t=0.

    With only a duration, gaps are drawn in chunks until the offsets pass it.
    """
    _check_limits(num_requests, duration_s)
    if num_requests is not None:
        offsets = np.concatenate(([0.0], np.cumsum(draw_gaps_s(max(int(num_requests) - 1, 0)))))
        offsets = offsets[: int(num_requests)]
    else:
        assert duration_s is not None  # _check_limits: one of the two bounds is set
        chunk = int(min(rate_rps * duration_s * 1.1 + 16, MAX_OPEN_LOOP_REQUESTS))
        offsets = np.concatenate(([0.0], np.cumsum(draw_gaps_s(chunk))))
        while offsets[-1] < duration_s:
            if offsets.size >= MAX_OPEN_LOOP_REQUESTS:
                raise ValueError(f"rate_rps * duration_s asks for more than {MAX_OPEN_LOOP_REQUESTS} requests")
            offsets = np.concatenate((offsets, offsets[-1] + np.cumsum(draw_gaps_s(chunk))))
    if duration_s is not None:
        offsets = offsets[offsets < duration_s]
    return offsets.astype(np.float64)


@dataclass(frozen=True)
class PoissonArrivals:
    """Poisson process: exponential gaps with mean ``1 / rate_rps`` (CV = 1)."""

    rate_rps: float
    closed_loop: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_positive("rate_rps", self.rate_rps)

    def offsets_s(self, num_requests: int | None, duration_s: float | None,
                  rng: np.random.Generator) -> np.ndarray:
        return _offsets_from_gaps(lambda n: rng.exponential(1.0 / self.rate_rps, size=n),
                                  self.rate_rps, num_requests, duration_s)

    def with_rate(self, rate_rps: float) -> PoissonArrivals:
        return replace(self, rate_rps=rate_rps)


@dataclass(frozen=True)
class GammaArrivals:
    """Gamma-distributed gaps with mean ``1 / rate_rps`` and coefficient of variation ``cv``.

    cv > 1 is burstier than Poisson, cv < 1 smoother; cv = 1 is Poisson. Shape = 1/cv^2.
    """

    rate_rps: float
    cv: float
    closed_loop: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_positive("rate_rps", self.rate_rps)
        _check_positive("cv", self.cv)

    def offsets_s(self, num_requests: int | None, duration_s: float | None,
                  rng: np.random.Generator) -> np.ndarray:
        shape = 1.0 / self.cv**2
        scale_s = 1.0 / (self.rate_rps * shape)
        return _offsets_from_gaps(lambda n: rng.gamma(shape, scale_s, size=n),
                                  self.rate_rps, num_requests, duration_s)

    def with_rate(self, rate_rps: float) -> GammaArrivals:
        return replace(self, rate_rps=rate_rps)


@dataclass(frozen=True)
class ConstantArrivals:
    """Evenly spaced sends: request i at ``i / rate_rps`` exactly (no accumulated rounding)."""

    rate_rps: float
    closed_loop: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_positive("rate_rps", self.rate_rps)

    def offsets_s(self, num_requests: int | None, duration_s: float | None,
                  rng: np.random.Generator) -> np.ndarray:
        _check_limits(num_requests, duration_s)
        if num_requests is not None:
            count = int(num_requests)
        else:
            assert duration_s is not None  # _check_limits: one of the two bounds is set
            count = math.ceil(duration_s * self.rate_rps) + 1
        if count > MAX_OPEN_LOOP_REQUESTS:
            raise ValueError(f"rate_rps * duration_s asks for more than {MAX_OPEN_LOOP_REQUESTS} requests")
        offsets = np.arange(count, dtype=np.float64) / self.rate_rps
        return offsets[offsets < duration_s] if duration_s is not None else offsets

    def with_rate(self, rate_rps: float) -> ConstantArrivals:
        return replace(self, rate_rps=rate_rps)


class ReplayArrivals:
    """Replays recorded arrival times (seconds, any origin), multiplied by ``time_scale``.

    ``time_scale`` < 1 compresses time (a higher rate), > 1 stretches it. Offsets are shifted so
    that the first request goes at t=0. ``rate_rps`` is the replayed mean rate after scaling.
    """

    closed_loop: ClassVar[bool] = False
    __slots__ = ("_trace_offsets_s", "time_scale")

    def __init__(self, offsets_s: Sequence[float] | np.ndarray, time_scale: float = 1.0) -> None:
        _check_positive("time_scale", time_scale)
        raw = np.array(offsets_s if isinstance(offsets_s, np.ndarray) else list(offsets_s),
                       dtype=np.float64).reshape(-1)
        if raw.size < 2:
            raise ValueError(f"offsets_s needs at least 2 arrival times, got {raw.size}")
        if not np.all(np.isfinite(raw)):
            raise ValueError("offsets_s must all be finite numbers")
        if np.any(np.diff(raw) < 0):
            raise ValueError("offsets_s must be non-decreasing (sort the trace by arrival time)")
        if raw[-1] == raw[0]:
            raise ValueError("offsets_s must span a positive time (all arrivals are at the same instant)")
        shifted = raw - raw[0]
        shifted.flags.writeable = False
        self._trace_offsets_s = shifted
        self.time_scale = float(time_scale)

    def __repr__(self) -> str:
        return (f"ReplayArrivals(num_arrivals={self.num_arrivals}, time_scale={self.time_scale}, "
                f"rate_rps={self.rate_rps:.4g})")

    @property
    def num_arrivals(self) -> int:
        return int(self._trace_offsets_s.size)

    @property
    def rate_rps(self) -> float:
        """Mean replayed rate: (arrivals - 1) / scaled span."""
        return (self._trace_offsets_s.size - 1) / (float(self._trace_offsets_s[-1]) * self.time_scale)

    def offsets_s(self, num_requests: int | None, duration_s: float | None,
                  rng: np.random.Generator) -> np.ndarray:
        """The first ``num_requests`` scaled offsets (and/or those before ``duration_s``); rng unused."""
        _check_limits(num_requests, duration_s)
        if num_requests is not None and num_requests > self._trace_offsets_s.size:
            raise ValueError(f"num_requests={num_requests} is more than the trace's {self._trace_offsets_s.size} arrivals")
        offsets = self._trace_offsets_s * self.time_scale
        if num_requests is not None:
            offsets = offsets[: int(num_requests)]
        return offsets[offsets < duration_s] if duration_s is not None else offsets

    def with_rate(self, rate_rps: float) -> ReplayArrivals:
        """The same trace with time scaled so that its mean rate is ``rate_rps``."""
        _check_positive("rate_rps", rate_rps)
        return ReplayArrivals(self._trace_offsets_s, self.time_scale * self.rate_rps / rate_rps)


@dataclass(frozen=True)
class ClosedLoop:
    """``concurrency`` users; each sends its next request ``think_time_s`` after the previous ends."""

    concurrency: int
    think_time_s: float = 0.0
    closed_loop: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if isinstance(self.concurrency, bool) or not isinstance(self.concurrency, numbers.Integral) or self.concurrency < 1:
            raise ValueError(f"concurrency must be an integer >= 1, got {self.concurrency!r}")
        if (not isinstance(self.think_time_s, numbers.Real) or not math.isfinite(self.think_time_s)
                or self.think_time_s < 0):
            raise ValueError(f"think_time_s must be a finite number >= 0, got {self.think_time_s!r}")


Arrivals = PoissonArrivals | GammaArrivals | ConstantArrivals | ReplayArrivals | ClosedLoop
