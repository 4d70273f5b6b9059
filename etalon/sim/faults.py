"""Seeded fault injection: 500s, 429 rate limiting, stalls, disconnects, malformed chunks, slow start."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from etalon.sim.config import FaultsConfig
from etalon.sim.streams import StreamFaults

FAULT_TYPES = ("error_500", "rate_limited_429", "stall", "disconnect", "malformed", "slow_start")


@dataclass(slots=True, frozen=True)
class Rejection:
    """An HTTP error answer decided at admission."""

    status: int
    fault_type: str
    message: str
    retry_after_s: int | None = None


class FaultInjector:
    """Draws faults per request from one seeded RNG; counts every fault it injects."""

    def __init__(self, config: FaultsConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.counts = {name: 0 for name in FAULT_TYPES}
        rate = config.rate_limit_rps
        self._bucket_capacity = max(1.0, rate) if rate is not None else 0.0
        self._bucket_tokens = self._bucket_capacity
        self._bucket_ns = 0

    def count(self, fault_type: str) -> None:
        self.counts[fault_type] += 1

    def admit(self, now_ns: int) -> Rejection | None:
        """Rate limit (token bucket of ``rate_limit_rps``), then the 500 error share."""
        rate = self.config.rate_limit_rps
        if rate is not None:
            elapsed_s = (now_ns - self._bucket_ns) / 1e9 if self._bucket_ns else 0.0
            self._bucket_ns = now_ns
            self._bucket_tokens = min(self._bucket_capacity, self._bucket_tokens + elapsed_s * rate)
            if self._bucket_tokens < 1.0:
                self.count("rate_limited_429")
                return Rejection(429, "rate_limited_429",
                                 f"rate limit of {rate:g} requests/s exceeded",
                                 max(1, math.ceil(self.config.retry_after_s)))
            self._bucket_tokens -= 1.0
        if self.config.error_rate and self.rng.random() < self.config.error_rate:
            self.count("error_500")
            return Rejection(500, "error_500", "simulated internal server error")
        return None

    def slow_start_s(self) -> float:
        if self.config.slow_start_prob and self.rng.random() < self.config.slow_start_prob:
            self.count("slow_start")
            return self.config.slow_start_s
        return 0.0

    def for_stream(self, output_tokens: int) -> StreamFaults:
        """Token positions (1-based) where this stream stalls, breaks a chunk or disconnects."""
        cfg, rng = self.config, self.rng
        faults = StreamFaults(stall_s=cfg.stall_s)
        if cfg.stall_prob and rng.random() < cfg.stall_prob:
            faults.stall_at = rng.randint(1, output_tokens)
        if cfg.malformed_prob and rng.random() < cfg.malformed_prob:
            faults.malformed_at = rng.randint(1, output_tokens)
        # A disconnect before the last token, so the client sees an incomplete stream.
        if cfg.disconnect_prob and output_tokens > 1 and rng.random() < cfg.disconnect_prob:
            faults.disconnect_at = rng.randint(1, output_tokens - 1)
        return faults
