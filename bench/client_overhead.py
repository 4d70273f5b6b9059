"""Client overhead: timing error against the server's own emission log, dispatch lag, CPU, ceiling.

Run: python bench/client_overhead.py [--streams 16 64 256] [--rounds 3] [--warm on off] [--repeat 2]
     [--clients local ray] [--sim-set modes.speculative_tokens=3 ...] [--continuous-usage on|off]
     [--server URL --model NAME --emission-log PATH]   # any server that logs its emission times
Headroom: python bench/client_overhead.py --scaling [--actors 1 2 4] [--knee-rates 100 200 400 ...]
prints the per-actor ceiling, the 1/2/4-actor scaling (Ray actors) and the open-loop rate where
dispatch lag p99 passes 10 ms; set client.actor_capacity_tokens_per_s from the per-actor figure.
``--warm`` sets client.warm_connections (on: the pool is warmed before the start; off: cold start).
``--clients`` compares client=local (one in-process actor) with Ray actors (``--ray-actors``, each a
process) side by side on the same server. ``--server`` measures against a server you run yourself
that appends one JSON line per finished request to ``--emission-log``: {"request_id": <the
X-Request-Id etalon sent>, "token_ns": [CLOCK_MONOTONIC ns at which each output token was written]}
(a chunk of k tokens: its time k times), e.g. ``python -m etalon.sim serve --preset simple --set
emission_log_path=/tmp/emission.jsonl``; it must run on this machine (one monotonic clock). Without
``--server`` the embedded simulator is started per measurement (``--sim-set`` changes its config).
CPU (local client only) is the whole run_load in this process, warm-up included. "round 0" is each
user's first request (all planned at t=0): its TTFT (sent -> first token; the simulator's is 100 ms)
includes a TCP connect when the pool is cold, and its dispatch lag is the burst of sends at the start.
Token error = (client token_ns + its actor's epoch_mono_ns) - server emission ns.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

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


def with_sets(config: dict, sets: list[str]) -> dict:
    """Apply ``key.sub=value`` overrides (values parsed as YAML scalars) to a sim config dict."""
    import yaml

    for item in sets:
        key, _, value = item.partition("=")
        node = config
        *parents, leaf = key.split(".")
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = yaml.safe_load(value)
    return config


@dataclass
class Target:
    """Where the load goes and where the server logs what it emitted."""

    base_url: str
    model: str
    emission_log: Path


def drive(target: Target, schedule: Schedule, tmp: Path, warm: bool, client: str = "local",
          ray_actors: int = 2, continuous_usage: bool = True) -> tuple[Any, float]:
    spec = EndpointSpec(base_url=target.base_url, model=target.model, ignore_eos=True,
                        continuous_usage_stats=continuous_usage)
    settings = LoadSettings(backend=client, num_actors=1 if client == "local" else ray_actors,
                            max_inflight_per_actor=1024, start_delay_s=0.3 if client == "local" else 1.0,
                            warm_connections=warm)
    before = resource.getrusage(resource.RUSAGE_SELF)
    result = run_load(schedule, ["hello world"] * len(schedule.prompt_tokens), spec, settings,
                      tmp / "records.jsonl", progress=False)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result, cpu_s


@contextlib.contextmanager
def target_for(args: argparse.Namespace, tmp: Path) -> Iterator[Target]:
    if args.server:
        yield Target(args.server, args.model, Path(args.emission_log))
        return
    config = with_sets(sim_config(tmp, 0.1, 0.02), args.sim_set)
    with EmbeddedSimServer(config) as sim:
        yield Target(sim.start(), "etalon-sim", tmp / "emission.jsonl")


def read_emissions(path: Path, start: int) -> dict[int, list[int]]:
    """Lines appended after byte ``start``: request id -> token emission times (ns)."""
    with open(path, "rb") as f:
        f.seek(start)
        lines = f.read().splitlines()
    return {request_number(d["request_id"]): d["token_ns"] for d in map(orjson.loads, lines)}


def request_number(header: str) -> int:
    """etalon's request id from the X-Request-Id it sent: a UUID whose last 12 hex digits are the
    id (etalon.clients.openai.request_uuid), or the plain number older versions sent."""
    text = str(header)
    return int(text) if text.isdigit() else int(text.rsplit("-", 1)[-1], 16)


def accuracy(streams: int, rounds: int, warm: bool, args: argparse.Namespace, client: str = "local") -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with target_for(args, tmp) as target:
            start = target.emission_log.stat().st_size if target.emission_log.exists() else 0
            result, cpu_s = drive(target, closed_loop(streams, rounds, 64), tmp, warm, client, args.ray_actors,
                                  args.continuous_usage == "on")
            time.sleep(0.2)  # the server logs a request after its last write
            emitted = read_emissions(target.emission_log, start)
    epochs = {a["actor"] if "actor" in a else i: a["epoch_mono_ns"] for i, a in enumerate(result.actors)}
    ttft_err, tbt_err, lag, tokens, first_ttft = [], [], [], 0, []
    for rec in result.records:  # type: ignore[attr-defined]
        sim_ns = np.asarray(emitted[rec.request_id], dtype=np.int64)
        cli_ns = np.asarray(rec.token_ns, dtype=np.int64) + epochs[rec.actor]
        assert rec.status == "ok" and len(cli_ns) == len(sim_ns) == 64, rec
        ttft_err.append(cli_ns[0] - sim_ns[0])
        tbt_err.extend(np.diff(cli_ns) - np.diff(sim_ns))
        lag.append(rec.sent_ns - rec.scheduled_ns)
        tokens += rec.output_tokens
        if rec.request_id < streams:  # user u's requests are u, u + streams, ...: round 0
            first_ttft.append(rec.first_token_ns - rec.sent_ns)
    ttft, tbt, lag_a, ttft0 = (np.asarray(x, dtype=np.float64) / MS for x in (ttft_err, tbt_err, lag, first_ttft))
    actor = result.actors[0]  # type: ignore[attr-defined]
    cpu = f"CPU {cpu_s / tokens * 1000 * 1e3:6.2f} ms/1k tok" if client == "local" else "CPU in actors"
    print(
        f"{client:<5} warm {'on ' if warm else 'off'} {streams:>4} streams | TTFT err mean {ttft.mean():6.3f}"
        f" p99 {np.percentile(ttft, 99):6.3f} ms"
        f" | TBT err mean {tbt.mean():+6.3f} p99|.| {np.percentile(np.abs(tbt), 99):6.3f} ms"
        f" | lag p50 {np.percentile(lag_a, 50):6.3f} p99 {np.percentile(lag_a, 99):6.3f} ms"
        f" | {cpu} ({tokens} tok)"
        f" | round 0 TTFT mean {ttft0.mean():6.1f} max {ttft0.max():6.1f} ms"
        f" | warmed {actor['warmed_connections']} conn in {actor['warm_up_s'] * 1e3:.1f} ms",
        flush=True,
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
            result, _ = drive(Target(sim.start(), "etalon-sim", tmp), closed_loop(streams, 2, output_tokens), tmp, warm)
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
            target = Target(f"http://127.0.0.1:{port}/v1", "etalon-sim", Path(tmp_name))
            result, _ = drive(target, closed_loop(streams, 8, output_tokens), Path(tmp_name), warm)
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
    parser.add_argument("--clients", choices=["local", "ray"], nargs="+", default=["local"])
    parser.add_argument("--ray-actors", type=int, default=2)
    parser.add_argument("--sim-set", action="append", default=[], metavar="KEY=VALUE",
                        help="embedded simulator override, e.g. modes.speculative_tokens=3")
    parser.add_argument("--server", help="base URL of a server that logs its emissions (see above)")
    parser.add_argument("--model", default="etalon-sim")
    parser.add_argument("--emission-log", help="the emission log that --server appends to")
    parser.add_argument("--no-ceilings", action="store_true")
    parser.add_argument("--continuous-usage", choices=["on", "off"], default="on",
                        help="ask for usage in every chunk (exact tokens per chunk; the sim then writes usage per chunk)")
    parser.add_argument("--scaling", action="store_true",
                        help="headroom only: per-actor ceiling, 1/2/4-actor scaling, dispatch-lag knee")
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--knee-rates", type=float, nargs="+", default=[100, 200, 400, 800, 1600])
    args = parser.parse_args()
    if args.scaling:
        scaling(args.actors, 64, 1000)
        knee(args.knee_rates, 200, 3.0)
        return
    if args.server and not args.emission_log:
        parser.error("--server needs --emission-log")
    if "ray" in args.clients:
        import ray

        ray.init(num_cpus=max(2, args.ray_actors), include_dashboard=False, log_to_driver=False)
    where = args.server or f"simulator (independent, TTFT 100 ms, TBT 20 ms{', ' + ' '.join(args.sim_set) if args.sim_set else ''})"
    print(f"{where}: 64 output tokens, closed loop; local = 1 in-process actor, ray = {args.ray_actors} actors")
    for _ in range(args.repeat):
        for warm in (w == "on" for w in args.warm):
            for streams in args.streams:
                for client in args.clients:
                    accuracy(streams, args.rounds, warm, args, client)
            if args.no_ceilings or args.server:
                continue
            t0 = time.monotonic()
            tag = f"warm {'on ' if warm else 'off'}"
            print(f"{tag} ceiling vs simulator (TTFT 0, TBT 0, 64 streams x 2000 tok): "
                  f"{ceiling_with_sim(64, 2000, warm):,.0f} tokens/s")
            print(f"{tag} ceiling vs pre-rendered server (64 streams x 4000 tok):      "
                  f"{ceiling_with_blaster(64, 4000, warm):,.0f} tokens/s")
            print(f"(ceilings measured in {time.monotonic() - t0:.1f} s)")


if __name__ == "__main__":
    main()
