"""How precisely the simulator paces its tokens, what that costs it in CPU, and how late a client
on the same cores sees them: closed-loop streams against the ``simple`` latency model
(TTFT 50 ms + 20 us per prompt token, then one token every 20 ms), the emission log on.

Usage: python bench/sim_pacing.py [--streams 32] [--duration-s 6] [--hogs 0] [--repeat 1]
                                  [--wait sleep,spin] [--project DIR]

- server CPU: the simulator's CPU seconds per wall second of the load;
- emission lateness: when the simulator wrote token k minus when its model planned it
  (arrival + TTFT + k x TBT), from its emission log;
- client lag: when this process's reader saw the chunk minus when the simulator wrote it (one
  monotonic clock), the part of a measured TTFT/TBT that is the client's;
- ``--hogs K`` runs K busy processes beside it, as a loaded CI host would.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sim_bench import _cpu_s  # noqa: E402 - the sibling bench's reader of a child's CPU time

PROJECT = Path(__file__).resolve().parents[1]


def _hog() -> None:
    while True:
        pass


async def _drive(url: str, streams: int, duration_s: float, max_tokens: int) -> dict[str, list[int]]:
    import aiohttp

    seen: dict[str, list[int]] = {}
    deadline = time.monotonic() + duration_s
    prompt = "hello " * 240
    counter = iter(range(1 << 30))

    async def one(session: aiohttp.ClientSession) -> None:
        request_id = f"pacing-{next(counter):x}"
        body = {"model": "bench", "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True,
                "stream": True}
        times = seen[request_id] = []
        async with session.post(url, json=body, headers={"X-Request-Id": request_id}) as response:
            async for data in response.content.iter_any():
                now_ns = time.monotonic_ns()
                times.extend([now_ns] * data.count(b'"text":"') )

    async def worker(session: aiohttp.ClientSession, phase_s: float) -> None:
        await asyncio.sleep(phase_s)  # streams on spread phases, as arrivals of a real load are
        while time.monotonic() < deadline:
            await one(session)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=streams)) as session:
        await asyncio.gather(*(worker(session, 0.02 * i / streams) for i in range(streams)))
    return seen


def run(streams: int, duration_s: float, wait: str, hogs: int, max_tokens: int) -> dict[str, float]:
    from etalon.runner.server import EmbeddedSimServer

    tmp = Path(tempfile.mkdtemp(prefix="etalon-pacing-"))
    log_path = tmp / "emissions.jsonl"
    latency = {"ttft_base_s": 0.05, "ttft_per_prompt_token_s": 2e-5, "tbt_s": 0.02}
    config = {"served_model_name": "bench", "tokenizer": None, "scheduler": "independent",
              "latency": latency, "emission_log_path": str(log_path), "context_tokens": 8192}
    if wait != "default":
        config["precise_wait"] = wait
    procs = [multiprocessing.Process(target=_hog, daemon=True) for _ in range(hogs)]
    for p in procs:
        p.start()
    try:
        with EmbeddedSimServer(config) as server:
            pid = server._child.process.pid  # noqa: SLF001 - bench reads the child's CPU time
            cpu_before, wall_before = _cpu_s(pid), time.monotonic()
            seen = asyncio.run(_drive(f"{server.base_url}/completions", streams, duration_s, max_tokens))
            cpu_s, wall_s = _cpu_s(pid) - cpu_before, time.monotonic() - wall_before
    finally:
        for p in procs:
            p.terminate()
    late_us, lag_us, first_lag_us = [], [], []
    for line in log_path.read_bytes().splitlines():
        entry = json.loads(line)
        emitted = entry["token_ns"]
        ttft_ns = int((latency["ttft_base_s"] + latency["ttft_per_prompt_token_s"] * entry["prompt_tokens"]) * 1e9)
        planned0 = entry["arrival_ns"] + ttft_ns
        late_us += [(t - planned0 - k * int(latency["tbt_s"] * 1e9)) / 1e3 for k, t in enumerate(emitted)]
        client = seen.get(entry["request_id"], [])
        if len(client) >= len(emitted):  # the closing chunk rides with the last token
            lag_us += [(c - e) / 1e3 for c, e in zip(client, emitted)]
            first_lag_us.append((client[0] - emitted[0]) / 1e3)
    q = lambda xs, p: float(np.percentile(xs, p)) if xs else float("nan")  # noqa: E731
    return {"cpu_per_s": cpu_s / wall_s, "late_p50": q(late_us, 50), "late_p99": q(late_us, 99),
            "late_max": max(late_us, default=float("nan")), "lag_p50": q(lag_us, 50),
            "lag_p99": q(lag_us, 99), "first_lag_p50": q(first_lag_us, 50), "tokens": len(late_us)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--duration-s", type=float, default=6.0)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--hogs", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--wait", default="default",
                        help="comma list of sim.precise_wait values (default: the shipped one)")
    parser.add_argument("--project", type=Path, default=PROJECT,
                        help="the checkout whose simulator runs (another one, to compare)")
    args = parser.parse_args()
    sys.path.insert(0, str(args.project))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(args.project), os.environ.get("PYTHONPATH", "")])
    for _ in range(args.repeat):
        for wait in args.wait.split(","):
            r = run(args.streams, args.duration_s, wait, args.hogs, args.max_tokens)
            print(f"{wait:>8} hogs={args.hogs} streams={args.streams}: server CPU {r['cpu_per_s']:5.1%} | "
                  f"emission late p50 {r['late_p50']:7.1f} us p99 {r['late_p99']:8.1f} us max "
                  f"{r['late_max']:8.1f} us | client lag p50 {r['lag_p50']:7.1f} us p99 {r['lag_p99']:8.1f} us, "
                  f"first token p50 {r['first_lag_p50']:7.1f} us ({r['tokens']} tokens)", flush=True)


if __name__ == "__main__":
    main()
