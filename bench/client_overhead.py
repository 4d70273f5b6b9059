"""Client overhead: timing error against the simulator's own emission log, dispatch lag, CPU, ceiling.

Run: python bench/client_overhead.py [--streams 16 64 256] [--rounds 3] [--warm on off] [--repeat 2]
``--warm`` sets client.warm_connections (on: the pool is warmed before the start; off: cold start).
CPU is the whole run_load in this process, warm-up included. "round 0" is each user's first request
(all planned at t=0): its TTFT (sent -> first token; the simulator's is 100 ms) includes a TCP connect
when the pool is cold, and its dispatch lag is the burst of sends at the start.
Client time and emission time are both CLOCK_MONOTONIC on this machine (sim is a child process), so
token error = (client token_ns + actor epoch_mono_ns) - sim emission ns.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from etalon.clients.base import EndpointSpec
from etalon.core.workload import Schedule
from etalon.loadgen import LoadSettings, run_load
from etalon.runner.server import EmbeddedSimServer

MS = 1e6


def closed_loop(users: int, rounds: int, output_tokens: int) -> Schedule:
    n = users * rounds
    return Schedule(
        offsets_ns=None, prompt_tokens=np.full(n, 4, dtype=np.int64),
        output_tokens=np.full(n, output_tokens, dtype=np.int64), warmup_requests=0,
        concurrency=users, think_time_s=0.0, duration_s=None,
    )


def sim_config(tmp: Path, ttft_s: float, tbt_s: float) -> dict:
    return {
        "scheduler": "independent", "max_num_seqs": 1024, "max_num_batched_tokens": 1_000_000,
        "latency": {"ttft_base_s": ttft_s, "ttft_per_prompt_token_s": 0.0, "tbt_s": tbt_s},
        "emission_log_path": str(tmp / "emission.jsonl"),
    }


def drive(base_url: str, schedule: Schedule, tmp: Path, warm: bool) -> tuple[object, float]:
    spec = EndpointSpec(base_url=base_url, model="etalon-sim", ignore_eos=True)
    settings = LoadSettings(backend="local", num_actors=1, max_inflight_per_actor=1024, start_delay_s=0.3,
                            warm_connections=warm)
    before = resource.getrusage(resource.RUSAGE_SELF)
    result = run_load(schedule, ["hello world"] * len(schedule.prompt_tokens), spec, settings,
                      tmp / "records.jsonl", progress=False)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result, cpu_s


def accuracy(streams: int, rounds: int, warm: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with EmbeddedSimServer(sim_config(tmp, 0.1, 0.02)) as sim:
            result, cpu_s = drive(sim.start(), closed_loop(streams, rounds, 64), tmp, warm)
        emitted = {int(d["request_id"].rsplit("-", 1)[-1], 16): d["token_ns"] for d in map(orjson.loads, (tmp / "emission.jsonl").read_bytes().splitlines())}
    actor = result.actors[0]  # type: ignore[attr-defined]
    epoch = actor["epoch_mono_ns"]
    ttft_err, tbt_err, lag, tokens, first_ttft = [], [], [], 0, []
    for rec in result.records:  # type: ignore[attr-defined]
        sim_ns = np.asarray(emitted[rec.request_id], dtype=np.int64)
        cli_ns = np.asarray(rec.token_ns, dtype=np.int64) + epoch
        assert rec.status == "ok" and len(cli_ns) == len(sim_ns) == 64, rec
        ttft_err.append(cli_ns[0] - sim_ns[0])
        tbt_err.extend(np.diff(cli_ns) - np.diff(sim_ns))
        lag.append(rec.sent_ns - rec.scheduled_ns)
        tokens += rec.output_tokens
        if rec.request_id < streams:  # user u's requests are u, u + streams, ...: round 0
            first_ttft.append(rec.first_token_ns - rec.sent_ns)
    ttft, tbt, lag_a, ttft0 = (np.asarray(x, dtype=np.float64) / MS for x in (ttft_err, tbt_err, lag, first_ttft))
    print(
        f"warm {'on ' if warm else 'off'} {streams:>4} streams | TTFT err mean {ttft.mean():6.3f} p99 {np.percentile(ttft, 99):6.3f} ms"
        f" | TBT err mean {tbt.mean():+6.3f} p99|.| {np.percentile(np.abs(tbt), 99):6.3f} ms"
        f" | lag p50 {np.percentile(lag_a, 50):6.3f} p99 {np.percentile(lag_a, 99):6.3f} ms"
        f" | CPU {cpu_s / tokens * 1000 * 1e3:6.2f} ms/1k tok ({tokens} tok)"
        f" | round 0 TTFT mean {ttft0.mean():6.1f} max {ttft0.max():6.1f} ms"
        f" | warmed {actor['warmed_connections']} conn in {actor['warm_up_s'] * 1e3:.1f} ms"
    )


def tokens_per_s(result: object) -> float:
    recs = result.records  # type: ignore[attr-defined]
    span_ns = max(r.end_ns for r in recs) - min(r.sent_ns for r in recs)
    return sum(r.output_tokens for r in recs) / (span_ns / 1e9)


def ceiling_with_sim(streams: int, output_tokens: int, warm: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        config = {**sim_config(tmp, 0.0, 0.0), "emission_log_path": None}
        with EmbeddedSimServer(config) as sim:
            result, _ = drive(sim.start(), closed_loop(streams, 2, output_tokens), tmp, warm)
    return tokens_per_s(result)


def _blaster(port_queue: multiprocessing.Queue, output_tokens: int) -> None:
    """A server that is never the bottleneck: the whole pre-rendered stream in one write."""
    from aiohttp import web

    chunk = b'data: {"choices":[{"index":0,"delta":{"content":" tok"},"finish_reason":null}]}\n\n'
    usage = orjson.dumps({"choices": [], "usage": {"completion_tokens": output_tokens}})
    body = chunk * output_tokens + b"data: " + usage + b"\n\ndata: [DONE]\n\n"

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(0, len(body), 64 * 1024):
            await resp.write(body[i:i + 64 * 1024])
        await resp.write_eof()
        return resp

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "etalon-sim"}]})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handle)
        app.router.add_get("/v1/models", models)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_queue.put(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()

    import asyncio

    asyncio.run(main())


def ceiling_with_blaster(streams: int, output_tokens: int, warm: bool) -> float:
    queue: multiprocessing.Queue = multiprocessing.Queue()
    proc = multiprocessing.Process(target=_blaster, args=(queue, output_tokens), daemon=True)
    proc.start()
    try:
        port = queue.get(timeout=30)
        with tempfile.TemporaryDirectory() as tmp_name:
            result, _ = drive(f"http://127.0.0.1:{port}/v1", closed_loop(streams, 8, output_tokens), Path(tmp_name),
                              warm)
        return tokens_per_s(result)
    finally:
        proc.terminate()
        proc.join(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warm", choices=["on", "off"], nargs="+", default=["on"])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    print("simulator: independent scheduler, TTFT 100 ms, TBT 20 ms, 64 output tokens, closed loop, 1 local actor")
    for _ in range(args.repeat):
        for warm in (w == "on" for w in args.warm):
            for streams in args.streams:
                accuracy(streams, args.rounds, warm)
            t0 = time.monotonic()
            tag = f"warm {'on ' if warm else 'off'}"
            print(f"{tag} ceiling vs simulator (TTFT 0, TBT 0, 64 streams x 2000 tok): "
                  f"{ceiling_with_sim(64, 2000, warm):,.0f} tokens/s")
            print(f"{tag} ceiling vs pre-rendered server (64 streams x 4000 tok):      "
                  f"{ceiling_with_blaster(64, 4000, warm):,.0f} tokens/s")
            print(f"(ceilings measured in {time.monotonic() - t0:.1f} s)")


if __name__ == "__main__":
    main()
