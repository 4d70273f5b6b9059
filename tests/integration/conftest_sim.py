"""Shared pieces of the simulator integration tests: a minimal streaming client and fixtures."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

ZERO_LATENCY = {"step_overhead_s": 0.0, "per_prefill_token_s": 0.0, "per_decode_seq_s": 0.0,
                "per_context_token_s": 0.0, "ttft_base_s": 0.0, "ttft_per_prompt_token_s": 0.0,
                "tbt_s": 0.0}


def sim_config(**values: Any) -> dict[str, Any]:
    """A plain sim config dict (what Hydra would hand to EmbeddedSimServer)."""
    config: dict[str, Any] = {"served_model_name": "sim-test", "tokenizer": None,
                              "context_tokens": 8192, "spin_wait_s": 0.001}
    config.update(values)
    return config


@dataclass
class StreamResult:
    """What the test client saw of one streamed request."""

    status: int
    sent_ns: int
    chunk_ns: list[int] = field(default_factory=list)  # one per content chunk
    texts: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    malformed_lines: int = 0
    error: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None

    @property
    def ttft_s(self) -> float:
        return (self.chunk_ns[0] - self.sent_ns) / 1e9

    @property
    def tbt_s(self) -> list[float]:
        return [(b - a) / 1e9 for a, b in zip(self.chunk_ns, self.chunk_ns[1:])]


async def stream_request(session: aiohttp.ClientSession, base_url: str, body: dict[str, Any],
                         path: str = "/completions", headers: dict[str, str] | None = None
                         ) -> StreamResult:
    """POST a streaming request and time every content chunk; errors are data, not raised."""
    body = {"model": "sim-test", "stream": True, **body}
    result = StreamResult(status=0, sent_ns=time.monotonic_ns())
    try:
        async with session.post(base_url + path, json=body, headers=headers) as response:
            result.status = response.status
            result.headers = dict(response.headers)
            if response.status != 200:
                result.body = await response.json()
                return result
            async for line in response.content:
                _consume(result, line, time.monotonic_ns())
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        result.error = type(exc).__name__
    return result


def _consume(result: StreamResult, line: bytes, now_ns: int) -> None:
    if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
        return
    try:
        chunk = orjson.loads(line[6:])
    except orjson.JSONDecodeError:
        result.malformed_lines += 1
        return
    if chunk.get("usage"):
        result.usage = chunk["usage"]
    for choice in chunk.get("choices", []):
        text = choice.get("text")
        if text is None:
            text = (choice.get("delta") or {}).get("content")
        if text:
            result.chunk_ns.append(now_ns)
            result.texts.append(text)
        if choice.get("finish_reason"):
            result.finish_reason = choice["finish_reason"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def metrics(session: aiohttp.ClientSession, base_url: str) -> dict[str, float]:
    from etalon.sim.prom import parse_metrics

    async with session.get(base_url.removesuffix("/v1") + "/metrics") as response:
        return parse_metrics(await response.text())
