"""Request length samplers: prompt and output token counts per request, and clipping to a context limit."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class LengthSampler(Protocol):
    """Draws ``n`` (prompt_tokens, output_tokens) pairs, both int64 arrays of length ``n``."""

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]: ...


def _check_tokens(name: str, value: int, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_range(low_name: str, low: int, high_name: str, high: int) -> None:
    _check_tokens(low_name, low)
    _check_tokens(high_name, high)
    if low > high:
        raise ValueError(f"{low_name} must be <= {high_name}, got {low} > {high}")


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")


@dataclass(frozen=True)
class FixedLengths:
    """Every request has the same prompt and output length."""

    prompt_tokens: int
    output_tokens: int

    def __post_init__(self) -> None:
        _check_tokens("prompt_tokens", self.prompt_tokens)
        _check_tokens("output_tokens", self.output_tokens)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        _check_n(n)
        return np.full(n, self.prompt_tokens, dtype=np.int64), np.full(n, self.output_tokens, dtype=np.int64)


@dataclass(frozen=True)
class UniformLengths:
    """Prompt and output lengths drawn independently and uniformly from inclusive integer ranges."""

    prompt_tokens_min: int
    prompt_tokens_max: int
    output_tokens_min: int
    output_tokens_max: int

    def __post_init__(self) -> None:
        _check_range("prompt_tokens_min", self.prompt_tokens_min, "prompt_tokens_max", self.prompt_tokens_max)
        _check_range("output_tokens_min", self.output_tokens_min, "output_tokens_max", self.output_tokens_max)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        _check_n(n)
        prompt = rng.integers(self.prompt_tokens_min, self.prompt_tokens_max, size=n, endpoint=True)
        output = rng.integers(self.output_tokens_min, self.output_tokens_max, size=n, endpoint=True)
        return prompt.astype(np.int64), output.astype(np.int64)


@dataclass(frozen=True)
class ZipfLengths:
    """Total length Zipf-distributed over [min_tokens, max_tokens], split by a prefill:decode ratio.

    The total follows the bounded Zipf law of Gray et al. ("Quickly generating billion-record
    synthetic databases", the YCSB generator) with skew ``theta`` in (0, 1): rank k has weight
    1/k^theta, so short totals are the most frequent. ``scramble`` maps ranks to totals by a seeded
    permutation, spreading the popular values over the range. Then
    ``output = round(total / (1 + ratio))`` and ``prompt = total - output`` (each at least 1).
    """

    theta: float
    min_tokens: int
    max_tokens: int
    prefill_to_decode_ratio: float
    scramble: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.theta, numbers.Real) or not 0 < self.theta < 1:
            raise ValueError(f"theta must be in (0, 1), got {self.theta!r}")
        _check_range("min_tokens", self.min_tokens, "max_tokens", self.max_tokens)
        if self.max_tokens < 2:
            raise ValueError(f"max_tokens must be >= 2 (a prompt and an output token), got {self.max_tokens}")
        ratio = self.prefill_to_decode_ratio
        if not isinstance(ratio, numbers.Real) or not math.isfinite(ratio) or ratio <= 0:
            raise ValueError(f"prefill_to_decode_ratio must be a finite number > 0, got {ratio!r}")

    def sample_totals(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Zipf-distributed total lengths (int64) in [min_tokens, max_tokens]."""
        _check_n(n)
        items = self.max_tokens - self.min_tokens + 1
        if items == 1:
            return np.full(n, self.min_tokens, dtype=np.int64)
        weights = 1.0 / np.power(np.arange(1, items + 1, dtype=np.float64), self.theta)
        zeta_n, zeta_2 = float(weights.sum()), float(weights[:2].sum())
        alpha = 1.0 / (1.0 - self.theta)
        eta = (1.0 - (2.0 / items) ** (1.0 - self.theta)) / (1.0 - zeta_2 / zeta_n)
        u = rng.random(n)
        ranks = (items * np.power(eta * u - eta + 1.0, alpha)).astype(np.int64)
        uz = u * zeta_n
        ranks = np.where(uz < 1.0, 0, np.where(uz < 1.0 + 0.5**self.theta, 1, ranks))
        ranks = np.clip(ranks, 0, items - 1)
        if self.scramble:
            ranks = rng.permutation(items)[ranks]
        return (self.min_tokens + ranks).astype(np.int64)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        totals = self.sample_totals(n, rng)
        output = np.maximum(np.rint(totals / (1.0 + self.prefill_to_decode_ratio)).astype(np.int64), 1)
        output = np.minimum(output, np.maximum(totals - 1, 1))
        prompt = np.maximum(totals - output, 1)
        return prompt.astype(np.int64), output.astype(np.int64)


def _check_positive(name: str, value: float, minimum: float = 0.0, strict: bool = True) -> None:
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
            or (value <= minimum if strict else value < minimum)):
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {minimum:g}, got {value!r}")


# Upper clip when no max is set: large enough never to bind, small enough to convert to int64 exactly.
_UNBOUNDED_TOKENS = float(2**62)


@dataclass(frozen=True)
class LogNormalLengths:
    """Prompt and output lengths from a bivariate log-normal, rounded to integers and clipped.

    ``log(prompt) ~ N(log(prompt_median_tokens), prompt_sigma^2)``, likewise for the output, and the
    two normals have Pearson correlation ``correlation`` (in log space, not of the raw lengths).
    Each draw is rounded to the nearest integer and clipped to ``[min_tokens, max_*_tokens]``
    (no upper clip when a max is None); clipping piles the tail's mass on the bound rather than
    redrawing, so medians below the bound are unchanged. ``fitted_lengths`` fits one to a trace.
    """

    prompt_median_tokens: float
    prompt_sigma: float
    output_median_tokens: float
    output_sigma: float
    correlation: float = 0.0
    min_tokens: int = 1
    max_prompt_tokens: int | None = None
    max_output_tokens: int | None = None

    def __post_init__(self) -> None:
        _check_positive("prompt_median_tokens", self.prompt_median_tokens)
        _check_positive("output_median_tokens", self.output_median_tokens)
        _check_positive("prompt_sigma", self.prompt_sigma, strict=False)
        _check_positive("output_sigma", self.output_sigma, strict=False)
        rho = self.correlation
        if isinstance(rho, bool) or not isinstance(rho, numbers.Real) or not -1.0 <= rho <= 1.0:
            raise ValueError(f"correlation must be in [-1, 1], got {rho!r}")
        _check_tokens("min_tokens", self.min_tokens)
        for name in ("max_prompt_tokens", "max_output_tokens"):
            if getattr(self, name) is not None:
                _check_tokens(name, getattr(self, name), minimum=self.min_tokens)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        _check_n(n)
        z_prompt, z_independent = rng.standard_normal((2, n))
        rho = float(self.correlation)
        z_output = rho * z_prompt + math.sqrt(max(1.0 - rho * rho, 0.0)) * z_independent
        return (self._tokens(self.prompt_median_tokens, self.prompt_sigma, self.max_prompt_tokens, z_prompt),
                self._tokens(self.output_median_tokens, self.output_sigma, self.max_output_tokens, z_output))

    def _tokens(self, median: float, sigma: float, maximum: int | None, z: np.ndarray) -> np.ndarray:
        # Clip in log space first so that exp() cannot overflow for extreme sigmas.
        upper = _UNBOUNDED_TOKENS if maximum is None else float(maximum)
        log_tokens = np.minimum(math.log(median) + float(sigma) * z, math.log(upper))
        return np.clip(np.rint(np.exp(log_tokens)), self.min_tokens, upper).astype(np.int64)


class EmpiricalLengths:
    """Lengths taken from recorded rows (e.g. a trace): drawn with replacement, or in order.

    ``ordered=True`` takes rows 0, 1, 2, ... and wraps around after the last one.
    """

    __slots__ = ("prompt_tokens", "output_tokens", "ordered")

    def __init__(self, prompt_tokens: Sequence[int] | np.ndarray, output_tokens: Sequence[int] | np.ndarray,
                 ordered: bool = False) -> None:
        prompt = np.array(list(prompt_tokens) if not isinstance(prompt_tokens, np.ndarray) else prompt_tokens)
        output = np.array(list(output_tokens) if not isinstance(output_tokens, np.ndarray) else output_tokens)
        if prompt.ndim != 1 or prompt.shape != output.shape or prompt.size == 0:
            raise ValueError(f"prompt_tokens and output_tokens must be non-empty and of equal length, "
                             f"got {prompt.shape} and {output.shape}")
        for name, values in (("prompt_tokens", prompt), ("output_tokens", output)):
            if not np.issubdtype(values.dtype, np.integer) or int(values.min()) < 1:
                raise ValueError(f"{name} must be integers >= 1 (min {values.min()!r})")
        self.prompt_tokens = prompt.astype(np.int64)
        self.output_tokens = output.astype(np.int64)
        self.prompt_tokens.flags.writeable = False
        self.output_tokens.flags.writeable = False
        self.ordered = bool(ordered)

    def __len__(self) -> int:
        return int(self.prompt_tokens.size)

    def __repr__(self) -> str:
        return f"EmpiricalLengths(rows={len(self)}, ordered={self.ordered})"

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        _check_n(n)
        rows = np.arange(n) % len(self) if self.ordered else rng.integers(len(self), size=n)
        return self.prompt_tokens[rows].copy(), self.output_tokens[rows].copy()


def clip_lengths(prompt_tokens: np.ndarray, output_tokens: np.ndarray,
                 max_total_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Shrink requests longer than ``max_total_tokens`` so that prompt + output fits, each >= 1.

    As in the etalon tool's trace length generator, the excess ``total - max`` is taken from the
    prompt and the output in proportion to their shares (rounded up), which keeps the
    prompt:output ratio; any token still over the limit after the >= 1 floor comes off the longer part.
    """
    _check_tokens("max_total_tokens", max_total_tokens, minimum=2)
    prompt = np.maximum(np.asarray(prompt_tokens, dtype=np.int64), 1)
    output = np.maximum(np.asarray(output_tokens, dtype=np.int64), 1)
    total = prompt + output
    excess = np.maximum(total - max_total_tokens, 0)
    prompt = np.maximum(prompt - np.ceil(excess * (prompt / total)).astype(np.int64), 1)
    output = np.maximum(output - np.ceil(excess * (output / total)).astype(np.int64), 1)
    over = np.maximum(prompt + output - max_total_tokens, 0)
    from_prompt = np.where(prompt >= output, over, 0)
    prompt, output = prompt - from_prompt, output - (over - from_prompt)
    return prompt, output
