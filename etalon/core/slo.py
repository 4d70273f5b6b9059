"""Service-level objectives: judge a run, tell goodput rows, and say early when a run cannot pass."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import ClassVar, Protocol

import numpy as np

from etalon.core.metrics import deadline_miss_counts, miss_rates
from etalon.core.prefill import PrefillPredictor
from etalon.core.records import RecordTable

NO_PROFILE_MESSAGE = (
    "slo=deadline needs a prefill profile: run pipeline=characterize, or a prefill_profile stage "
    "before it, or set slo.prefill_profile=<path to a saved profile>"
)
# The q-quantile over n values is the order statistic at floor(q * (n - 1)) ("lower"): no
# interpolation, so failed requests (+inf) never turn it into NaN, and the count of violations
# that decides it is exact (see violations_to_lose).
QUANTILE_METHOD = "lower"


class SloConfigError(ValueError):
    """An SLO parameter is invalid or an input it needs is missing; the message names the key."""


@dataclass(frozen=True)
class SloVerdict:
    """Outcome of judging a run: ``passed`` when ``value <= threshold`` for every part.

    ``metric``/``value``/``threshold`` name the binding part; ``values`` holds every judged
    quantity. ``scale`` is the factor by which every limit would have to be multiplied for the
    run to just pass (<= 1 passes): a continuous signal the capacity search interpolates.
    """

    passed: bool
    metric: str
    value: float
    threshold: float
    values: dict[str, float] = field(default_factory=dict)
    scale: float = math.nan
    limits: dict[str, float] = field(default_factory=dict)


class Slo(Protocol):
    """What every SLO offers to stages (benchmark goodput, capacity search)."""

    name: str
    needs_prefill_profile: bool
    tbt_deadline_s: float
    target_miss_rate: float

    def with_predictor(self, predictor: PrefillPredictor | None) -> Slo: ...

    def ttft_deadlines_s(self, prompt_tokens: np.ndarray) -> np.ndarray: ...

    def request_ok(self, table: RecordTable) -> np.ndarray: ...

    def judge(self, table: RecordTable) -> SloVerdict: ...

    def certainly_lost(
        self, table: RecordTable, expected_requests: int, max_output_tokens: int | None = None
    ) -> str | None: ...


def stat_name(quantile: float) -> str:
    """0.99 -> 'p99', 0.999 -> 'p999', 0.5 -> 'p50' (the metric-key convention)."""
    return "p" + f"{quantile * 100:g}".replace(".", "")


def violations_to_lose(n: int, quantile: float) -> int:
    """Fewest values above a limit that put the ``lower`` q-quantile of ``n`` values above it."""
    return n - math.floor(quantile * (n - 1)) if n > 0 else 1


def quantile_of(values: np.ndarray, quantile: float) -> float:
    return float(np.quantile(values, quantile, method=QUANTILE_METHOD)) if values.size else math.nan  # type: ignore[call-overload]


def ttft_s(table: RecordTable) -> np.ndarray:
    """Per row: first token - sent (s); +inf for failed requests and requests with no token."""
    ttft = (table.first_token_ns - table.sent_ns) / 1e9
    return np.where(table.ok & (table.first_token_ns >= 0), ttft, np.inf)


def tbt_gaps_s(table: RecordTable) -> tuple[np.ndarray, np.ndarray]:
    """(pooled gaps between consecutive tokens in s, owning row of each gap)."""
    counts = np.diff(table.token_offsets)
    rows = np.repeat(np.arange(len(table)), counts)
    gaps = np.diff(table.token_ns) / 1e9
    same = rows[1:] == rows[:-1]
    return gaps[same], rows[1:][same]


def tpot_s(table: RecordTable) -> np.ndarray:
    """Per row: mean gap between tokens (s), 0 with < 2 tokens, +inf for failed requests."""
    gaps, rows = tbt_gaps_s(table)
    sums = np.bincount(rows, weights=gaps, minlength=len(table))
    n = np.bincount(rows, minlength=len(table))
    tpot = np.divide(sums, n, out=np.zeros(len(table)), where=n > 0)
    return np.where(table.ok, tpot, np.inf)


def judged_rows(table: RecordTable) -> RecordTable:
    """Warm-up rows are not judged; failed rows are (as violations)."""
    return table.select(~table.warmup) if table.warmup.any() else table


def _verdict(parts: dict[str, tuple[float, float]], scale: float | None = None) -> SloVerdict:
    """Combine (value, threshold) parts; the binding part is the one with the largest ratio."""
    ratios = {k: (v / t if t > 0 else (math.inf if v > 0 else 0.0)) for k, (v, t) in parts.items()}
    metric = max(ratios, key=lambda k: (math.isnan(ratios[k]), ratios[k]))
    value, threshold = parts[metric]
    passed = all(v <= t for v, t in parts.values())  # NaN (no rows) never passes
    return SloVerdict(
        passed=passed,
        metric=metric,
        value=value,
        threshold=threshold,
        values={k: v for k, (v, _) in parts.items()},
        scale=ratios[metric] if scale is None else scale,
        limits={k: t for k, (_, t) in parts.items()},
    )


def _lost(name: str, violations: int, needed: int, quantile: float, limit: str) -> str | None:
    if violations < needed:
        return None
    return (
        f"{violations} requests already violate {name} {limit}; {needed} are enough to fail the "
        f"{stat_name(quantile)} whatever the remaining requests do"
    )


def _check_quantile(quantile: float) -> None:
    if not 0.0 < quantile <= 1.0:
        raise SloConfigError(f"slo.quantile={quantile} must be within (0, 1]")


def _check_positive(**values: float) -> None:
    for key, value in values.items():
        if not (math.isfinite(value) and value > 0):
            raise SloConfigError(f"slo.{key}={value} must be a finite number > 0")


@dataclass(frozen=True)
class TbtTtftSlo:
    """TTFT ``quantile`` over requests <= ``ttft_s`` and pooled TBT ``quantile`` <= ``tbt_s``."""

    ttft_s: float = 2.0
    tbt_s: float = 0.2
    quantile: float = 0.99
    name: ClassVar[str] = "tbt_ttft"
    needs_prefill_profile: ClassVar[bool] = False
    target_miss_rate: float = 0.1

    def __post_init__(self) -> None:
        _check_positive(ttft_s=self.ttft_s, tbt_s=self.tbt_s)
        _check_quantile(self.quantile)

    @property
    def tbt_deadline_s(self) -> float:
        return self.tbt_s

    def with_predictor(self, predictor: PrefillPredictor | None) -> TbtTtftSlo:
        return self

    def ttft_deadlines_s(self, prompt_tokens: np.ndarray) -> np.ndarray:
        return np.full(np.shape(prompt_tokens), self.ttft_s, dtype=np.float64)

    def request_ok(self, table: RecordTable) -> np.ndarray:
        """TTFT within limit and this request's own TBT ``quantile`` within limit."""
        gaps, rows = tbt_gaps_s(table)
        late = np.bincount(rows[gaps > self.tbt_s], minlength=len(table))
        n = np.bincount(rows, minlength=len(table))
        tbt_ok = (n == 0) | (late <= n - np.floor(self.quantile * np.maximum(n - 1, 0)) - 1)
        return (ttft_s(table) <= self.ttft_s) & tbt_ok & ~table.warmup

    def judge(self, table: RecordTable) -> SloVerdict:
        rows = judged_rows(table)
        gaps, _ = tbt_gaps_s(rows)
        stat = stat_name(self.quantile)
        tbt = quantile_of(gaps, self.quantile) if gaps.size else 0.0
        return _verdict({
            f"ttft_{stat}_s": (quantile_of(ttft_s(rows), self.quantile), self.ttft_s),
            f"tbt_{stat}_s": (tbt if len(rows) else math.nan, self.tbt_s),
        })

    def certainly_lost(
        self, table: RecordTable, expected_requests: int, max_output_tokens: int | None = None
    ) -> str | None:
        """``max_output_tokens``: the most tokens any request of the schedule asks for. The requests
        still to come may be longer than those finished so far (short ones finish first), so only
        the schedule bounds their gaps; without it the pooled TBT is judged once all are in."""
        rows = judged_rows(table)
        late_ttft = int(np.count_nonzero(ttft_s(rows) > self.ttft_s))
        needed = violations_to_lose(max(expected_requests, len(rows)), self.quantile)
        lost = _lost("TTFT", late_ttft, needed, self.quantile, f"<= {self.ttft_s} s")
        if lost is not None:
            return lost
        # Pooled TBT: bound the final gap count from above, so the verdict is certain.
        gaps, _ = tbt_gaps_s(rows)
        remaining = max(expected_requests - len(rows), 0)
        if remaining and max_output_tokens is None:
            return None
        seen = int(np.diff(rows.token_offsets).max(initial=0))
        per_request = max(max_output_tokens or 0, seen) - 1
        bound = gaps.size + remaining * max(per_request, 0)
        late_tbt = int(np.count_nonzero(gaps > self.tbt_s))
        return _lost("TBT", late_tbt, violations_to_lose(bound, self.quantile), self.quantile,
                     f"<= {self.tbt_s} s (gaps)")


@dataclass(frozen=True)
class TtftTpotSlo:
    """TTFT ``quantile`` <= ``ttft_s`` and TPOT ``quantile`` <= ``tpot_s``, over requests."""

    ttft_s: float = 2.0
    tpot_s: float = 0.1
    quantile: float = 0.99
    name: ClassVar[str] = "ttft_tpot"
    needs_prefill_profile: ClassVar[bool] = False
    target_miss_rate: float = 0.1

    def __post_init__(self) -> None:
        _check_positive(ttft_s=self.ttft_s, tpot_s=self.tpot_s)
        _check_quantile(self.quantile)

    @property
    def tbt_deadline_s(self) -> float:
        return self.tpot_s

    def with_predictor(self, predictor: PrefillPredictor | None) -> TtftTpotSlo:
        return self

    def ttft_deadlines_s(self, prompt_tokens: np.ndarray) -> np.ndarray:
        return np.full(np.shape(prompt_tokens), self.ttft_s, dtype=np.float64)

    def request_ok(self, table: RecordTable) -> np.ndarray:
        return (ttft_s(table) <= self.ttft_s) & (tpot_s(table) <= self.tpot_s) & ~table.warmup

    def judge(self, table: RecordTable) -> SloVerdict:
        rows = judged_rows(table)
        stat = stat_name(self.quantile)
        return _verdict({
            f"ttft_{stat}_s": (quantile_of(ttft_s(rows), self.quantile), self.ttft_s),
            f"tpot_{stat}_s": (quantile_of(tpot_s(rows), self.quantile), self.tpot_s),
        })

    def certainly_lost(
        self, table: RecordTable, expected_requests: int, max_output_tokens: int | None = None
    ) -> str | None:
        rows = judged_rows(table)
        needed = violations_to_lose(max(expected_requests, len(rows)), self.quantile)
        late_ttft = int(np.count_nonzero(ttft_s(rows) > self.ttft_s))
        late_tpot = int(np.count_nonzero(tpot_s(rows) > self.tpot_s))
        return (_lost("TTFT", late_ttft, needed, self.quantile, f"<= {self.ttft_s} s")
                or _lost("TPOT", late_tpot, needed, self.quantile, f"<= {self.tpot_s} s"))


@dataclass(frozen=True)
class DeadlineSlo:
    """Deadline SLO: the ``quantile`` over requests of the deadline miss rate <= ``target_miss_rate``.

    Per request ``Dp = predicted_prefill_s(prompt_tokens) + ttft_slack_s`` and ``Dd =
    tbt_deadline_s`` (DESIGN section 3); equivalently the ``quantile`` of the fluidity-index is
    >= 1 - target. Failed requests count as a miss rate of 1. Needs a prefill predictor.
    """

    tbt_deadline_s: float = 0.05
    ttft_slack_s: float = 0.5
    target_miss_rate: float = 0.1
    quantile: float = 0.99
    prefill_profile: str | None = None
    predictor: PrefillPredictor | None = None
    name: ClassVar[str] = "deadline"
    needs_prefill_profile: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_positive(tbt_deadline_s=self.tbt_deadline_s)
        if not (math.isfinite(self.ttft_slack_s) and self.ttft_slack_s >= 0):
            raise SloConfigError(f"slo.ttft_slack_s={self.ttft_slack_s} must be a finite number >= 0")
        if not 0.0 <= self.target_miss_rate < 1.0:
            raise SloConfigError(f"slo.target_miss_rate={self.target_miss_rate} must be within [0, 1)")
        _check_quantile(self.quantile)

    def with_predictor(self, predictor: PrefillPredictor | None) -> DeadlineSlo:
        return replace(self, predictor=predictor)

    def ttft_deadlines_s(self, prompt_tokens: np.ndarray) -> np.ndarray:
        if self.predictor is None:
            raise SloConfigError(NO_PROFILE_MESSAGE)
        return self.predictor.predict_s(prompt_tokens) + self.ttft_slack_s

    def miss_rates(self, table: RecordTable, scale: np.ndarray | float = 1.0) -> np.ndarray:
        """Per row deadline miss rate with both deadlines multiplied by ``scale``; 1 for failures."""
        dp = self.ttft_deadlines_s(table.prompt_tokens) * scale
        dd = np.maximum(self.tbt_deadline_s * np.asarray(scale, dtype=np.float64), 1e-9)
        missed, total = deadline_miss_counts(table.token_ns, table.token_offsets, table.sent_ns, dp, dd)
        usable = table.ok & (np.diff(table.token_offsets) > 0)
        return np.where(usable, miss_rates(missed, total), 1.0)

    def request_ok(self, table: RecordTable) -> np.ndarray:
        return (self.miss_rates(table) <= self.target_miss_rate) & ~table.warmup

    def judge(self, table: RecordTable) -> SloVerdict:
        rows = judged_rows(table)
        stat = stat_name(self.quantile)
        rates = self.miss_rates(rows)
        part = {f"miss_rate_{stat}": (quantile_of(rates, self.quantile), self.target_miss_rate)}
        verdict = _verdict(part, scale=quantile_of(self.deadline_scales(rows), self.quantile))
        values = {**verdict.values, f"fluidity_index_{stat_name(1 - self.quantile)}": 1 - verdict.value}
        return replace(verdict, values=values)

    def deadline_scales(self, table: RecordTable, iterations: int = 24) -> np.ndarray:
        """Per row: the smallest factor on (Dp, Dd) that meets the target (geometric bisection).

        Larger deadlines only bank more slack and charge fewer periods, so the miss rate falls
        with the factor; +inf for failed requests. Gives the search a continuous signal.
        """
        n = len(table)
        ttft = ttft_s(table)
        gaps, rows = tbt_gaps_s(table)
        max_gap = np.zeros(n)
        np.maximum.at(max_gap, rows, gaps)
        dp = self.ttft_deadlines_s(table.prompt_tokens)
        finite = np.isfinite(ttft)
        hi = np.where(finite, np.maximum(np.maximum(ttft / dp, max_gap / self.tbt_deadline_s), 1e-3) * 1.01, 1.0)
        lo = np.full(n, 1e-4)
        for _ in range(iterations):
            mid = np.sqrt(lo * hi)
            ok = self.miss_rates(table, mid) <= self.target_miss_rate
            hi, lo = np.where(ok, mid, hi), np.where(ok, lo, mid)
        return np.where(finite, hi, np.inf)

    def certainly_lost(
        self, table: RecordTable, expected_requests: int, max_output_tokens: int | None = None
    ) -> str | None:
        rows = judged_rows(table)
        late = int(np.count_nonzero(self.miss_rates(rows) > self.target_miss_rate))
        needed = violations_to_lose(max(expected_requests, len(rows)), self.quantile)
        return _lost("the deadline miss rate", late, needed, self.quantile, f"<= {self.target_miss_rate}")


__all__ = [
    "NO_PROFILE_MESSAGE",
    "DeadlineSlo",
    "Slo",
    "SloConfigError",
    "SloVerdict",
    "TbtTtftSlo",
    "TtftTpotSlo",
    "judged_rows",
    "stat_name",
    "tbt_gaps_s",
    "tpot_s",
    "ttft_s",
    "violations_to_lose",
]
