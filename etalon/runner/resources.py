"""Checks a run must pass before a server starts: it fits in memory, and its cache_dir is writable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from etalon.config import ConfigError, EtalonConfig

# What one request costs in memory, besides its prompt text and token times: the planned request,
# its record, its row in the record table and the JSON line (measured: ~1 KB).
BYTES_PER_REQUEST = 1024
BYTES_PER_PROMPT_TOKEN = 5  # prompt text, ~4-5 characters per token
BYTES_PER_OUTPUT_TOKEN = 48  # one int in the record's token_ns list, its table entry and JSON text
MEMORY_SHARE = 0.5  # the run may use at most this share of the machine's memory
LENGTH_SAMPLE = 1000


def planned_requests(cfg: EtalonConfig, arrival: Any) -> int:
    """How many requests the workload plans (an upper estimate for duration-bounded runs)."""
    from etalon.core.workload import closed_loop_request_count

    w = cfg.workload
    if getattr(arrival, "closed_loop", False):
        return closed_loop_request_count(arrival, w.num_requests, w.duration_s, w.warmup_requests)
    if w.num_requests is not None:
        return int(w.num_requests) + int(w.warmup_requests)
    rate_rps = float(getattr(arrival, "rate_rps", 0.0) or 0.0)
    return int(rate_rps * float(w.duration_s or 0.0)) + int(w.warmup_requests)


def estimated_bytes(count: int, lengths: Any, seed: int) -> float:
    """Memory a run of ``count`` requests needs, from the mean lengths of a small sample."""
    prompt, output = lengths.sample(LENGTH_SAMPLE, np.random.default_rng(seed))
    per_request = (BYTES_PER_REQUEST + BYTES_PER_PROMPT_TOKEN * float(np.mean(prompt))
                   + BYTES_PER_OUTPUT_TOKEN * float(np.mean(output)))
    return count * per_request


def machine_memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_run_fits_in_memory(cfg: EtalonConfig, arrival: Any, lengths: Any) -> None:
    """A run whose schedule, prompts and records cannot fit in memory fails now, not after the
    server started (a MemoryError half-way through building its schedule)."""
    memory = machine_memory_bytes()
    if memory is None:
        return
    count = planned_requests(cfg, arrival)
    need = estimated_bytes(count, lengths, cfg.workload.seed)
    if need > MEMORY_SHARE * memory:
        raise ConfigError(
            f"workload.num_requests: the run plans {count:,} requests, about {need / 2**30:.1f} GiB "
            f"for their prompts and records, more than {MEMORY_SHARE:.0%} of this machine's "
            f"{memory / 2**30:.1f} GiB; use fewer requests or a duration_s"
        )
