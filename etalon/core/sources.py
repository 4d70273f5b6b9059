"""Prompt sources: what each scheduled request says (synthetic text, shared prefixes, ...).

A source turns a Schedule (counts drawn by the length sampler) into a PromptPlan: one prompt per
request and the final prompt/output token counts (a dataset source replaces the sampled counts
with its rows'). Sources are pure: the prompts are a function of the workload's seed and config.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from etalon.core.prompts import Tokenizer, build_prompts

if TYPE_CHECKING:
    from etalon.core.workload import Schedule

Prompt = str | list[dict[str, str]]
GROUP_DISTRIBUTIONS = ("uniform", "zipf")


@dataclass(frozen=True, eq=False)
class PromptPlan:
    """One prompt per request and the counts that go with them (``prompt_tokens`` = whole prompt)."""

    prompts: list[Prompt]
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.prompts)
        if self.prompt_tokens.shape != (n,) or self.output_tokens.shape != (n,):
            raise ValueError("a prompt plan needs one prompt_tokens and output_tokens entry per prompt")


class PromptSource(Protocol):
    """Builds the prompts of a schedule; ``max_total_tokens`` bounds prompt + output."""

    def build(self, schedule: Schedule, tokenizer: Tokenizer, seed: int,
              max_total_tokens: int | None) -> PromptPlan: ...


def child_seed(seed: int, stream: int) -> int:
    """An independent seed for one use of the workload seed (prefixes, suffixes, row order)."""
    return int(np.random.SeedSequence([int(seed), int(stream)]).generate_state(1)[0])


@dataclass(frozen=True)
class SyntheticPrompts:
    """Today's default: unique synthetic text of exactly the scheduled token counts."""

    def build(self, schedule: Schedule, tokenizer: Tokenizer, seed: int,
              max_total_tokens: int | None) -> PromptPlan:
        prompts: list[Prompt] = list(build_prompts(tokenizer, schedule.prompt_tokens, seed))
        return PromptPlan(prompts, schedule.prompt_tokens, schedule.output_tokens)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class SharedPrefixPrompts:
    """``num_groups`` system prompts of ``prefix_tokens`` each; request i draws a group (uniform,
    or Zipf with exponent ``zipf_s``: group k has weight 1/(k+1)^s) and adds its own user message
    of the scheduled prompt length, so its prompt is ``prefix_tokens + scheduled`` tokens.

    Chat requests carry ``[system: prefix, user: suffix]``; a completions client concatenates
    them (the suffix starts with a space, so the prefix's tokens stay the same).
    """

    num_groups: int
    prefix_tokens: int
    distribution: str = "uniform"
    zipf_s: float = 1.0

    def __post_init__(self) -> None:
        _check_int("prompts.num_groups", self.num_groups, 1)
        _check_int("prompts.prefix_tokens", self.prefix_tokens, 1)
        if self.distribution not in GROUP_DISTRIBUTIONS:
            raise ValueError(f"prompts.distribution must be one of {', '.join(GROUP_DISTRIBUTIONS)}, "
                             f"got {self.distribution!r}")
        if not isinstance(self.zipf_s, numbers.Real) or not math.isfinite(self.zipf_s) or self.zipf_s <= 0:
            raise ValueError(f"prompts.zipf_s must be a finite number > 0, got {self.zipf_s!r}")

    def groups(self, count: int, seed: int) -> np.ndarray:
        """The group of each of ``count`` requests (int64), a pure function of the seed."""
        rng = np.random.default_rng(child_seed(seed, 1))
        if self.distribution == "uniform":
            return rng.integers(self.num_groups, size=count).astype(np.int64)
        weights = 1.0 / np.arange(1, self.num_groups + 1, dtype=np.float64) ** self.zipf_s
        return rng.choice(self.num_groups, size=count, p=weights / weights.sum()).astype(np.int64)

    def build(self, schedule: Schedule, tokenizer: Tokenizer, seed: int,
              max_total_tokens: int | None) -> PromptPlan:
        suffix_tokens = schedule.prompt_tokens
        output = schedule.output_tokens
        total = self.prefix_tokens + suffix_tokens
        if max_total_tokens is not None:
            if self.prefix_tokens + 2 > max_total_tokens:
                raise ValueError(f"prompts.prefix_tokens={self.prefix_tokens} leaves no room for a "
                                 f"user message and an answer within {max_total_tokens} tokens "
                                 "(the model's context)")
            # Keep the prefix whole: shorten the user message, then the answer, to fit.
            room = max_total_tokens - self.prefix_tokens
            suffix_tokens = np.minimum(suffix_tokens, room - 1)
            output = np.minimum(output, max_total_tokens - self.prefix_tokens - suffix_tokens)
            total = self.prefix_tokens + suffix_tokens
        prefixes = build_prompts(tokenizer, np.full(self.num_groups, self.prefix_tokens), child_seed(seed, 2))
        suffixes = build_prompts(tokenizer, suffix_tokens, child_seed(seed, 3), continuation=True)
        groups = self.groups(len(suffixes), seed)
        prompts: list[Prompt] = [  # message dicts are GC-tracked: see etalon.loadgen.plan.gc_paused
            [{"role": "system", "content": prefixes[g]}, {"role": "user", "content": text}]
            for g, text in zip(groups.tolist(), suffixes)
        ]
        return PromptPlan(prompts, total.astype(np.int64), output.astype(np.int64))

    def expected_hit_fraction(self, prompt_tokens: np.ndarray, seed: int, block_size_tokens: int = 1) -> float:
        """Cached share of all prompt tokens with an unbounded cache: every request after the
        first of its group reuses the prefix's whole blocks (``prompt_tokens`` = whole prompts)."""
        groups = self.groups(len(prompt_tokens), seed)
        if not len(groups):
            return 0.0
        _, first = np.unique(groups, return_index=True)
        repeats = len(groups) - len(first)
        cached = (self.prefix_tokens // block_size_tokens) * block_size_tokens
        return float(repeats * cached / np.asarray(prompt_tokens).sum())
