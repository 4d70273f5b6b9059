"""Per-request output modes of the simulator: multi-token (speculative) chunks, reasoning output,
per-chunk usage, short outputs and wrong usage. Seeded per request; every use is counted."""

from __future__ import annotations

import random
import time
from typing import Any

import orjson

from etalon.sim.config import ModesConfig

# Counter names in /metrics (etalon_sim_modes_total{type=...}).
MODE_COUNTERS = ("speculative_chunks", "draft_tokens_accepted", "reasoning_tokens", "short_outputs",
                 "wrong_usage", "continuous_usage_requests")


class ModeDraws:
    """Request-level draws (short output, wrong usage) from the request's own seeded RNG."""

    def __init__(self, config: ModesConfig, counts: dict[str, int]) -> None:
        self.config = config
        self.counts = counts

    def rng(self, number: int) -> random.Random:
        """The RNG of request ``number``: the same draws whatever the other requests do."""
        return random.Random(self.config.seed * 1_000_003 + number)

    def short_output(self, output_tokens: int, finish_reason: str, ignore_eos: bool,
                     rng: random.Random) -> tuple[int, str]:
        """With ``short_output_prob``, a request that asked for ``ignore_eos`` stops early anyway."""
        p = self.config.short_output_prob
        if p and ignore_eos and output_tokens > 1 and rng.random() < p:
            self.counts["short_outputs"] += 1
            return rng.randint(1, output_tokens - 1), "stop"
        return output_tokens, finish_reason

    def reported_tokens(self, output_tokens: int, rng: random.Random) -> int | None:
        """A wrong final ``usage.completion_tokens`` (None: report the truth)."""
        p = self.config.wrong_usage_prob
        if p and rng.random() < p:
            self.counts["wrong_usage"] += 1
            return output_tokens * self.config.wrong_usage_factor
        return None


class StreamMode:
    """How one stream chunks and labels its tokens; built only when some mode applies to it."""

    __slots__ = ("k", "acceptance", "reasoning", "continuous", "reported", "rng", "counts", "chunk_tokens")

    def __init__(self, config: ModesConfig, reasoning: int, continuous: bool, reported: int | None,
                 rng: random.Random, counts: dict[str, int]) -> None:
        self.k = config.speculative_tokens
        self.acceptance = config.acceptance_rate
        self.reasoning = reasoning
        self.continuous = continuous
        self.reported = reported
        self.rng = rng
        self.counts = counts
        self.chunk_tokens: list[int] = []

    def chunk_size(self, remaining: int) -> int:
        """Tokens of the next chunk: 1 plus the accepted draft tokens, at most ``remaining``."""
        accepted = 0
        while accepted < self.k and self.rng.random() < self.acceptance:
            accepted += 1
        size = min(1 + accepted, remaining)
        if self.k:
            self.counts["speculative_chunks"] += 1
            self.counts["draft_tokens_accepted"] += size - 1
        self.chunk_tokens.append(size)
        return size

    def chunk_bytes(self, stream: Any, k: int, n: int) -> bytes:
        """SSE events for tokens ``k..k+n-1``: split at the reasoning boundary, usage if asked."""
        spec = stream.spec
        r = self.reasoning
        parts = [(a, b, a < r) for a, b in ((k, min(k + n, r)), (max(k, r), k + n)) if a < b]
        out = b""
        for start, end, reasoning in parts:
            text = stream.table.text(stream._offset + start, end - start)
            if spec.api == "chat":
                field = "reasoning_content" if reasoning else "content"
                choice: dict[str, Any] = {"index": 0, "delta": {field: text}, "logprobs": None, "finish_reason": None}
            else:
                choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": None}
            event: dict[str, Any] = {
                "id": spec.response_id, "created": int(time.time()), "model": spec.model, "choices": [choice],
                "object": "chat.completion.chunk" if spec.api == "chat" else "text_completion",
            }
            if self.continuous:
                event["usage"] = usage_of(spec.prompt_tokens, end)
            out += b"data: " + orjson.dumps(event) + b"\n\n"
        return out

    def final_usage(self, out: dict[str, Any], output_tokens: int) -> dict[str, Any]:
        """The stream's final ``usage`` (already holding the claimed count), with reasoning details."""
        if self.reasoning:
            out["completion_tokens_details"] = {"reasoning_tokens": min(self.reasoning, output_tokens)}
        return out


def usage_of(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def make_mode(config: ModesConfig, api: str, output_tokens: int, continuous: bool, reported: int | None,
              rng: random.Random, counts: dict[str, int]) -> StreamMode | None:
    """The stream's mode, or None for the plain one-token-per-chunk fast path."""
    reasoning = min(config.reasoning_tokens, output_tokens) if api == "chat" else 0
    if not (config.speculative_tokens or reasoning or continuous or reported is not None):
        return None
    if continuous:
        counts["continuous_usage_requests"] += 1
    counts["reasoning_tokens"] += reasoning
    return StreamMode(config, reasoning, continuous, reported, rng, counts)
