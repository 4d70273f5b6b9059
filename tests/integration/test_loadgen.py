"""Load driver against a paced aiohttp SSE server on 127.0.0.1: timing, concurrency, stopping, Ray."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from aiohttp import web

from etalon.clients.base import EndpointSpec, EndpointUnreachableError
from etalon.core.records import RequestRecord
from etalon.core.workload import Schedule
from etalon.loadgen import LoadSettings, run_load
from etalon.loadgen.actors import LoadActor
from etalon.loadgen.plan import build_requests, split_plans
from tests.integration.etalon_cli import free_port
from tests.integration.threaded_server import ThreadedServer

MS = 1_000_000


class PacedServer(ThreadedServer):
    """Streams ``max_tokens`` one-token chunks, first after ``ttft_s``, then every ``tbt_s``
    (both read from the request body), and tracks how many requests are in flight.

    Connections are told apart by the client's (address, port): ``models_peers`` are those that
    served ``GET /v1/models``, ``post_peers`` the one each streaming request came on, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.inflight = 0
        self.max_inflight = 0
        self.served = 0
        self.models_peers: set[tuple[str, int]] = set()
        self.post_peers: list[tuple[str, int]] = []
        self.models_auth: set[str | None] = set()

    async def _models(self, request: web.Request) -> web.Response:
        self.models_peers.add(request.transport.get_extra_info("peername"))  # type: ignore[union-attr]
        self.models_auth.add(request.headers.get("Authorization"))
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.post_peers.append(request.transport.get_extra_info("peername"))  # type: ignore[union-attr]
        body = orjson.loads(await request.read())
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await asyncio.sleep(body.get("ttft_s", 0.0))
            for i in range(body["max_tokens"]):
                if i:
                    await asyncio.sleep(body.get("tbt_s", 0.0))
                await resp.write(b'data: {"choices":[{"delta":{"content":"t"}}]}\n\n')
            usage = {"choices": [], "usage": {"completion_tokens": body["max_tokens"]}}
            await resp.write(b"data: " + orjson.dumps(usage) + b"\n\ndata: [DONE]\n\n")
            await resp.write_eof()
            self.served += 1
            return resp
        finally:
            self.inflight -= 1

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_get("/v1/models", self._models)

    def spec(self, ttft_s: float, tbt_s: float) -> EndpointSpec:
        return EndpointSpec(
            base_url=f"http://127.0.0.1:{self.port}/v1", model="m",
            extra_body={"ttft_s": ttft_s, "tbt_s": tbt_s},
        )


@pytest.fixture()
def server() -> Any:
    with PacedServer() as srv:
        yield srv


def schedule(n: int, *, gap_ms: float | None = None, users: int | None = None,
             out: int = 4, duration_s: float | None = None, think_s: float = 0.0) -> Schedule:
    offsets = None if gap_ms is None else (np.arange(n) * gap_ms * MS).astype(np.int64)
    return Schedule(
        offsets_ns=offsets, prompt_tokens=np.full(n, 8, dtype=np.int64),
        output_tokens=np.full(n, out, dtype=np.int64), warmup_requests=2,
        concurrency=users, think_time_s=think_s, duration_s=duration_s,
    )


LOCAL = dict(backend="local", drain_interval_s=0.05, start_delay_s=0.2)


def run(sched: Schedule, spec: EndpointSpec, path: Path, **kw: Any) -> Any:
    settings = LoadSettings(**{**LOCAL, **kw.pop("settings", {})})
    return run_load(sched, ["p"] * len(sched.prompt_tokens), spec, settings, path, progress=False, **kw)


def read_jsonl(path: Path) -> list[RequestRecord]:
    return [RequestRecord.from_dict(orjson.loads(line)) for line in path.read_bytes().splitlines()]


def test_open_loop_follows_schedule_without_drift(server: PacedServer, tmp_path: Path) -> None:
    result = run(schedule(60, gap_ms=20), server.spec(0.01, 0.005), tmp_path / "r.jsonl",
                 settings={"num_actors": 2})
    recs = sorted(result.records, key=lambda r: r.request_id)
    assert [r.request_id for r in recs] == list(range(60)) and not result.partial
    assert all(r.status == "ok" and r.output_tokens == 4 for r in recs)
    assert [r.scheduled_ns for r in recs] == [i * 20 * MS for i in range(60)]
    assert [r.warmup for r in recs[:3]] == [True, True, False]
    lag_ms = np.array([r.sent_ns - r.scheduled_ns for r in recs]) / MS
    # never early; small (robust stats: 3 threads of this one process share the GIL on 2 cores)
    assert lag_ms.min() >= 0 and np.median(lag_ms) < 2 and np.percentile(lag_ms, 90) < 5
    assert abs(np.median(lag_ms[-20:]) - np.median(lag_ms[:20])) < 2  # no drift over 1.2 s
    assert {r.actor for r in recs} == {0, 1} and recs[3].actor == 1
    assert len(read_jsonl(tmp_path / "r.jsonl")) == 60 and len(result.actors) == 2


def test_local_run_ends_with_its_last_record_not_at_the_next_drain(server: PacedServer, tmp_path: Path) -> None:
    """With a 5 s drain interval, a 0.2 s load returns well before the first drain would be due:
    the actors' end wakes the poll loop."""
    import time

    started = time.monotonic()
    result = run(schedule(4, gap_ms=20), server.spec(0.01, 0.005), tmp_path / "r.jsonl",
                 settings={"drain_interval_s": 5.0, "start_delay_s": 0.05})
    elapsed_s = time.monotonic() - started
    assert len(result.records) == 4 and not result.partial
    assert elapsed_s < 2.5, elapsed_s


def test_inflight_limit_shows_as_dispatch_lag(server: PacedServer, tmp_path: Path) -> None:
    sched = schedule(6, gap_ms=0.0, out=1)
    result = run(sched, server.spec(0.1, 0.0), tmp_path / "r.jsonl",
                 settings={"max_inflight_per_actor": 2})
    lag_ms = np.sort([r.sent_ns - r.scheduled_ns for r in result.records]) / MS
    assert len(lag_ms) == 6 and server.max_inflight == 2
    # Pairs wait for the pair before them (100 ms each); compare to the first pair, since a loaded
    # machine may delay the very first send by tens of ms.
    assert np.allclose(lag_ms - lag_ms[0], [0, 0, 100, 100, 200, 200], atol=25)


def test_closed_loop_keeps_n_in_flight(server: PacedServer, tmp_path: Path) -> None:
    think_s = 0.01
    result = run(schedule(24, users=4, think_s=think_s), server.spec(0.02, 0.01), tmp_path / "r.jsonl",
                 settings={"num_actors": 2})
    recs = {r.request_id: r for r in result.records}
    assert sorted(recs) == list(range(24)) and server.max_inflight == 4
    for i in range(4):
        assert recs[i].scheduled_ns == 0  # every user is ready at the start
    for i in range(20):  # user i % 4 sends request i + 4 when request i ended, plus think time
        assert recs[i + 4].scheduled_ns == recs[i].end_ns + int(think_s * 1e9)
        assert 0 <= recs[i + 4].sent_ns - recs[i + 4].scheduled_ns < 25 * MS  # dispatch lag; a loaded CI host adds ms
        assert recs[i + 4].actor == recs[i].actor == (i % 4) % 2


def test_duration_stops_sending(server: PacedServer, tmp_path: Path) -> None:
    result = run(schedule(100, gap_ms=10, duration_s=0.3), server.spec(0.0, 0.0), tmp_path / "r.jsonl")
    assert sorted(r.request_id for r in result.records) == list(range(30))
    assert not result.partial


def test_should_stop_and_incremental_file(server: PacedServer, tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    seen: list[int] = []

    def should_stop(records: list[RequestRecord]) -> str | None:
        assert len(read_jsonl(path)) == len(records)  # every drain is on disk before the check
        seen.append(len(records))
        return "slo lost" if len(records) >= 10 else None

    t0 = time.monotonic()
    result = run(schedule(200, gap_ms=20, out=20), server.spec(0.01, 0.01), path, should_stop=should_stop)
    assert time.monotonic() - t0 < 2.5  # the full schedule would take > 4 s
    assert result.partial and result.stop_reason == "slo lost"
    assert len(seen) >= 2 and seen == sorted(seen)
    cancelled = [r for r in result.records if r.error_type == "cancelled"]
    assert cancelled and all(r.status == "error" for r in cancelled)
    assert len(read_jsonl(path)) == len(result.records) < 200


def test_interrupt_returns_partial_result(server: PacedServer, tmp_path: Path) -> None:
    def interrupt(records: list[RequestRecord]) -> str | None:
        if len(records) >= 5:
            raise KeyboardInterrupt  # what Ctrl-C does while the driver polls
        return None

    result = run(schedule(200, gap_ms=10, out=30), server.spec(0.0, 0.01), tmp_path / "r.jsonl",
                 should_stop=interrupt)
    assert result.partial and result.stop_reason == "interrupted"
    ids = [r.request_id for r in result.records]
    assert len(ids) == len(set(ids)) and any(r.error_type == "cancelled" for r in result.records)
    assert len(read_jsonl(tmp_path / "r.jsonl")) == len(ids)


def test_real_ctrl_c_stops_the_run_and_keeps_every_drained_record(server: PacedServer, tmp_path: Path) -> None:
    import signal
    import threading

    # As at a terminal: a shell that runs this suite in the background would have SIGINT ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        result = run(schedule(300, gap_ms=10, out=30), server.spec(0.0, 0.01), tmp_path / "r.jsonl")
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result.partial and result.stop_reason == "interrupted"
    ids = [r.request_id for r in result.records]
    assert 0 < len(ids) < 300 and len(ids) == len(set(ids))
    assert len(read_jsonl(tmp_path / "r.jsonl")) == len(ids)


def test_actor_stop_turns_inflight_into_cancelled_records(server: PacedServer) -> None:
    sched = schedule(50, gap_ms=10, out=50)
    (plan,) = split_plans(sched, build_requests(sched, ["p"] * 50), 1, 1024)
    actor = LoadActor(0, server.spec(0.0, 0.01))
    assert actor.prepare(plan, warm_connections=False)["warmed_connections"] == 0
    before_ns = time.monotonic_ns()
    info = actor.start(time.time_ns())
    # The epoch maps the planned start (now) onto this process's monotonic clock.
    assert before_ns - 50 * MS < info["epoch_mono_ns"] <= time.monotonic_ns()
    time.sleep(0.2)
    actor.stop()
    records = [RequestRecord.from_dict(d) for d in actor.drain()]
    assert actor.status() == {"done": True, "error": None, "unreported": []}
    ids = sorted(r.request_id for r in records)
    assert ids == list(range(len(ids))) and 15 <= len(ids) <= 25  # ~20 sent in 0.2 s, none lost
    assert all(r.error_type == "cancelled" for r in records)  # each needs 0.5 s: all were in flight
    assert all(len(r.token_ns) == r.output_tokens for r in records)
    assert sum(r.output_tokens > 0 for r in records) >= len(records) - 3  # partial streams kept


def test_ray_backend_two_actors(server: PacedServer, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    try:
        result = run(schedule(30, gap_ms=10), server.spec(0.0, 0.002), tmp_path / "r.jsonl",
                     settings={"backend": "ray", "num_actors": 2, "start_delay_s": 0.5})
    finally:
        ray.shutdown()
    assert sorted(r.request_id for r in result.records) == list(range(30))
    assert all(r.status == "ok" for r in result.records)
    assert len({a["pid"] for a in result.actors}) == 2 and os.getpid() not in {a["pid"] for a in result.actors}
    # open loop, 15 requests per actor, all planned in the first second: one connection each
    assert [a["warmed_connections"] for a in result.actors] == [15, 15]
    assert len(server.models_peers) == 30 and set(server.post_peers) <= server.models_peers
    lag_ms = np.array([r.sent_ns - r.scheduled_ns for r in result.records]) / MS
    assert 0 <= lag_ms.min() and lag_ms.max() < 20


@pytest.mark.parametrize("warm", [True, False])
def test_warm_up_opens_the_first_rounds_connections(
    server: PacedServer, tmp_path: Path, warm: bool
) -> None:
    users = 12
    spec = dataclasses.replace(server.spec(0.03, 0.005), api_key="sk-test")
    result = run(schedule(3 * users, users=users), spec, tmp_path / "r.jsonl",
                 settings={"num_actors": 2, "warm_connections": warm})
    assert len(result.records) == 3 * users and all(r.status == "ok" for r in result.records)
    run_peers = set(server.post_peers)
    opened_by_run = run_peers - server.models_peers
    assert len(server.post_peers) == 3 * users
    if warm:
        # each actor opened one connection per user before the start; the run opened none
        assert [a["warmed_connections"] for a in result.actors] == [6, 6]
        assert all(0 < a["warm_up_s"] < 5 for a in result.actors)
        assert len(server.models_peers) == users and server.models_auth == {"Bearer sk-test"}
        assert opened_by_run == set() and run_peers == server.models_peers
    else:
        # cold start: every user of the first round opened its own connection
        assert [a["warmed_connections"] for a in result.actors] == [0, 0]
        assert server.models_peers == set() and len(opened_by_run) == users


def test_warm_up_against_a_dead_endpoint_fails_clearly(tmp_path: Path) -> None:
    port = free_port()
    spec = EndpointSpec(base_url=f"http://127.0.0.1:{port}/v1", model="m", connect_timeout_s=2.0)
    t0 = time.monotonic()
    with pytest.raises(EndpointUnreachableError, match=f"warm-up.*127.0.0.1:{port}/v1/models"):
        run(schedule(8, users=4), spec, tmp_path / "r.jsonl", settings={"num_actors": 2})
    assert time.monotonic() - t0 < 5


def test_start_delay_beyond_keepalive_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="client.start_delay_s=40"):
        LoadSettings(start_delay_s=40.0)
    assert LoadSettings(start_delay_s=40.0, warm_connections=False).start_delay_s == 40.0
