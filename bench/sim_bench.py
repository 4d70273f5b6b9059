"""Streamed tokens/s of the simulated server at 256 concurrent streams, zero modelled latency.

Usage: python bench/sim_bench.py [--streams 256] [--duration-s 5]
The server runs in its own process (EmbeddedSimServer); the client in another (this one) with a
minimal aiohttp reader that counts SSE data lines. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402

from etalon.runner.server import EmbeddedSimServer  # noqa: E402

ZERO_LATENCY = {"ttft_base_s": 0.0, "ttft_per_prompt_token_s": 0.0, "tbt_s": 0.0,
                "step_overhead_s": 0.0, "per_prefill_token_s": 0.0, "per_decode_seq_s": 0.0,
                "per_context_token_s": 0.0}


async def _one_stream(session: aiohttp.ClientSession, url: str, max_tokens: int) -> int:
    body = {"model": "bench", "prompt": "hello world", "max_tokens": max_tokens,
            "ignore_eos": True, "stream": True}
    tokens = 0
    async with session.post(url, json=body) as response:
        async for line in response.content:
            if line.startswith(b"data: {"):
                tokens += 1
    return tokens - 1  # the finish chunk carries no token


async def _drive(base_url: str, streams: int, duration_s: float, max_tokens: int) -> tuple[int, float]:
    url = f"{base_url}/completions"
    deadline = time.monotonic() + duration_s
    connector = aiohttp.TCPConnector(limit=streams)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker() -> int:
            done = 0
            while time.monotonic() < deadline:
                done += await _one_stream(session, url, max_tokens)
            return done
        started = time.monotonic()
        counts = await asyncio.gather(*(worker() for _ in range(streams)))
        return sum(counts), time.monotonic() - started


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(scheduler: str, streams: int, duration_s: float, max_tokens: int) -> None:
    config = {"served_model_name": "bench", "tokenizer": None, "scheduler": scheduler,
              "max_num_seqs": streams, "max_num_batched_tokens": 8192, "latency": ZERO_LATENCY}
    with EmbeddedSimServer(config) as server:
        pid = server._child.process.pid  # noqa: SLF001 - bench reads the child's CPU time
        cpu_before = _cpu_s(pid)
        tokens, wall_s = asyncio.run(_drive(server.base_url, streams, duration_s, max_tokens))
        cpu_s = _cpu_s(pid) - cpu_before
    print(f"{scheduler:>14}: {streams} streams, {tokens} tokens in {wall_s:.2f} s -> "
          f"{tokens / wall_s:,.0f} tokens/s streamed; server CPU {cpu_s:.2f} s -> "
          f"{tokens / max(cpu_s, 1e-9):,.0f} tokens per server CPU-second", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=256)
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--max-tokens", type=int, default=1000)
    parser.add_argument("--schedulers", default="independent,chunked,prefill_first")
    args = parser.parse_args()
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    for scheduler in args.schedulers.split(","):
        run(scheduler, args.streams, args.duration_s, args.max_tokens)


if __name__ == "__main__":
    main()
