"""Prompt-content seeds: one base per run, a derived seed per stage and per probe (pure).

The schedule (arrivals, lengths) comes from ``workload.seed`` and is reproducible; prompt text comes
from a seed derived from the run's prompt base, so no two probes, repeats or sweep jobs send the same
prompts and no server prefix cache is warmed by accident. A fixed ``workload.prompt_seed`` makes the
text reproducible too (each stage and probe still gets its own).
"""

from __future__ import annotations

import secrets
import zlib

import numpy as np


def run_prompt_base(prompt_seed: int | None) -> int:
    """The run's prompt base: the configured ``workload.prompt_seed``, else a fresh random one."""
    if prompt_seed is not None:
        if isinstance(prompt_seed, bool) or not isinstance(prompt_seed, int) or prompt_seed < 0:
            raise ValueError(f"workload.prompt_seed must be an integer >= 0 or null, got {prompt_seed!r}")
        return int(prompt_seed)
    return secrets.randbits(62)


def derive_prompt_seed(base: int, *parts: str | int) -> int:
    """A seed for one stage (``parts`` = stage name) or one probe (stage name, probe index).

    Different parts give independent seeds (``SeedSequence`` over the base and a CRC of each part).
    """
    words = [int(base) & 0xFFFFFFFF, int(base) >> 32]
    words += [zlib.crc32(str(p).encode()) for p in parts]
    lo, hi = (int(w) for w in np.random.SeedSequence(words).generate_state(2, dtype=np.uint32))
    return lo | (hi >> 2) << 32  # 62 bits: a non-negative int64


__all__ = ["derive_prompt_seed", "run_prompt_base"]
