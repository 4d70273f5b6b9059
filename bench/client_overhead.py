"""Client overhead: timing error against the simulator's own emission log, dispatch lag, CPU, ceiling.

Run: python bench/client_overhead.py [--streams 16 64 256] [--rounds 3] [--warm on off] [--repeat 2]
Headroom: python bench/client_overhead.py --scaling [--actors 1 2 4] [--knee-rates 100 200 400 ...]
prints the per-actor ceiling, the 1/2/4-actor scaling (Ray actors) and the open-loop rate where
dispatch lag p99 passes 10 ms; set client.actor_capacity_tokens_per_s from the per-actor figure.
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


# ---------------------------------------------------------------- headroom: ceiling, scaling, knee


def _start_blaster(output_tokens: int) -> tuple[multiprocessing.Process, str]:
    queue: multiprocessing.Queue = multiprocessing.Queue()
    proc = multiprocessing.Process(target=_blaster, args=(queue, output_tokens), daemon=True)
    proc.start()
    return proc, f"http://127.0.0.1:{queue.get(timeout=30)}/v1"


def drive_actors(base_url: str, schedule: Schedule, actors: int) -> object:
    """The schedule with ``actors`` Ray load actors (processes), as a multi-actor run uses them."""
    spec = EndpointSpec(base_url=base_url, model="etalon-sim", ignore_eos=True)
    settings = LoadSettings(backend="ray", num_actors=actors, actor_num_cpus=0.25, start_delay_s=0.5,
                            actor_capacity_tokens_per_s=0)
    with tempfile.TemporaryDirectory() as tmp:
        return run_load(schedule, ["hello world"] * len(schedule.prompt_tokens), spec, settings,
                        Path(tmp) / "records.jsonl", progress=False)


def scaling(actor_counts: list[int], streams: int, output_tokens: int) -> None:
    """Streamed tokens/s with 1, 2, 4 actors against the simulator (zero modelled latency) and a
    pre-rendered stream; per-actor ceiling = the 1-actor figure."""
    import ray

    ray.init(num_cpus=max(actor_counts), include_dashboard=False, log_to_driver=False)
    try:
        proc, blaster_url = _start_blaster(output_tokens)
        config = {**sim_config(Path(tempfile.gettempdir()), 0.0, 0.0), "emission_log_path": None}
        with EmbeddedSimServer(config) as sim:
            sim_url = sim.start()
            for actors in actor_counts:
                sched = closed_loop(streams, 2, output_tokens)
                vs_sim = tokens_per_s(drive_actors(sim_url, sched, actors))
                vs_blaster = tokens_per_s(drive_actors(blaster_url, closed_loop(streams, 4, output_tokens), actors))
                print(f"{actors} actor(s), {streams} streams x {output_tokens} tok: "
                      f"{vs_sim:>10,.0f} tokens/s vs simulator | {vs_blaster:>10,.0f} tokens/s vs pre-rendered"
                      f" | per actor {vs_sim / actors:,.0f} / {vs_blaster / actors:,.0f}", flush=True)
        proc.terminate()
        proc.join(5)
    finally:
        ray.shutdown()


def open_loop(rate_rps: float, duration_s: float, output_tokens: int) -> Schedule:
    n = max(int(rate_rps * duration_s), 2)
    return Schedule(
        offsets_ns=(np.arange(n) / rate_rps * 1e9).astype(np.int64), prompt_tokens=np.full(n, 4, dtype=np.int64),
        output_tokens=np.full(n, output_tokens, dtype=np.int64), warmup_requests=0,
        concurrency=None, think_time_s=0.0, duration_s=None,
    )


def knee(rates_rps: list[float], output_tokens: int, duration_s: float, limit_ms: float = 10.0) -> None:
    """Open loop against the pre-rendered stream, one local actor: dispatch lag p99 per offered
    token rate, and the first rate where it passes ``limit_ms`` (the client's knee)."""
    proc, url = _start_blaster(output_tokens)
    try:
        found = None
        for rate in rates_rps:
            with tempfile.TemporaryDirectory() as tmp:
                result, _ = drive(url, open_loop(rate, duration_s, output_tokens), Path(tmp), True)
            lag_ms = np.array([r.sent_ns - r.scheduled_ns for r in result.records]) / MS  # type: ignore[attr-defined]
            p99 = float(np.percentile(lag_ms, 99))
            print(f"open loop {rate:>7,.0f} rps x {output_tokens} tok = {rate * output_tokens:>10,.0f} tokens/s offered:"
                  f" dispatch lag p50 {np.percentile(lag_ms, 50):7.3f} p99 {p99:8.3f} ms", flush=True)
            if p99 > limit_ms and found is None:
                found = rate * output_tokens
        print(f"knee (dispatch lag p99 > {limit_ms:g} ms): "
              + (f"{found:,.0f} tokens/s offered to one actor" if found else "not reached in this sweep"))
    finally:
        proc.terminate()
        proc.join(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warm", choices=["on", "off"], nargs="+", default=["on"])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--scaling", action="store_true",
                        help="headroom only: per-actor ceiling, 1/2/4-actor scaling, dispatch-lag knee")
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--knee-rates", type=float, nargs="+", default=[100, 200, 400, 800, 1600])
    args = parser.parse_args()
    if args.scaling:
        scaling(args.actors, 64, 1000)
        knee(args.knee_rates, 200, 3.0)
        return
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
