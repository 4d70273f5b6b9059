"""LoadActor: one driver loop on its own thread and event loop; a Ray actor or used in-process."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import sys
import threading
import time
from typing import Any, Callable, Iterator

from etalon.clients.base import EndpointSpec, make_client
from etalon.clients.warmup import timed_warm_up
from etalon.loadgen.driver import RecordBuffer, open_session, run_actor_load
from etalon.loadgen.plan import ActorPlan

STOP_JOIN_TIMEOUT_S = 30.0
# prepare() waits for the warm-up (each request bounded by the connect timeout) plus this much for
# the thread, loop and session to come up on a loaded machine.
PREPARE_SLACK_S = 30.0
GC_GEN0_THRESHOLD = 20_000


def _new_event_loop(use_uvloop: bool) -> asyncio.AbstractEventLoop:
    if use_uvloop:
        try:
            import uvloop

            return uvloop.new_event_loop()
        except ImportError:
            pass
    return asyncio.new_event_loop()


def _node_ip() -> str:
    # Never import ray here: importing it takes ~1 s of GIL time, which in the local backend would
    # stall the load loop that has just started. If ray is in use it is already imported.
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return str(ray.util.get_node_ip_address())
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def _node_id() -> str | None:
    """The Ray node this process runs on (hex id), or None outside Ray (same import rule as above)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return str(ray.get_runtime_context().get_node_id())
    return None


@contextlib.contextmanager
def _quiet_gc() -> Iterator[None]:
    """Keep the cyclic GC from pausing the load loop for tens of ms while it times tokens.

    A full collection walks every tracked object in the process (ray, pandas, mlflow modules:
    ~50 ms measured); freezing what exists before the run leaves only the run's own objects to walk,
    and a larger young generation makes collections rarer (the loop allocates ~10 objects per chunk).
    """
    thresholds = gc.get_threshold()
    # No gc.collect() first: it would hold the GIL ~100 ms right when the run starts. freeze() is a
    # list splice; garbage frozen with it is freed at unfreeze.
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


# How long another thread of this process may hold the GIL before the load loop gets it back when
# its timer fires (Python's default is 5 ms: a driver thread writing records, or a Ray method
# thread converting a drain, delayed due sends and chunk reads by up to that much).
LOAD_SWITCH_INTERVAL_S = 0.0005
_switch_lock = threading.Lock()
_switch_users = [0, 0.0]  # loops running in this process, the interval before the first


@contextlib.contextmanager
def _prompt_gil_handoff() -> Iterator[None]:
    """A short GIL switch interval while any load loop of this process runs (restored after)."""
    with _switch_lock:
        if _switch_users[0] == 0:
            _switch_users[1] = sys.getswitchinterval()
            sys.setswitchinterval(min(_switch_users[1], LOAD_SWITCH_INTERVAL_S))
        _switch_users[0] += 1
    try:
        yield
    finally:
        with _switch_lock:
            _switch_users[0] -= 1
            if _switch_users[0] == 0:
                sys.setswitchinterval(_switch_users[1])


async def _first_of(go: asyncio.Event, stop: asyncio.Event) -> bool:
    """Wait until ``go`` or ``stop`` is set; True if ``go`` came first (or both are set)."""
    waits = {asyncio.ensure_future(go.wait()), asyncio.ensure_future(stop.wait())}
    _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return go.is_set() and not stop.is_set()


class LoadActor:
    """Runs one ActorPlan; methods are called from another thread (Ray's, or the local runner's).

    Two phases: ``prepare`` starts the loop thread, opens the session and warms its connection pool;
    ``start`` then fixes the planned start, so warm-up time never falls inside the measured run.
    The loop runs on its own thread so that ``drain``/``stop``/``status`` answer while it sends.
    Wrapped with ``ray.remote`` by ``etalon.loadgen.run``; the ``local`` backend uses it directly.
    """

    def __init__(self, actor_index: int, endpoint: EndpointSpec, use_uvloop: bool = True) -> None:
        self.actor_index = actor_index
        self._endpoint = endpoint
        self._client = make_client(endpoint)
        self._use_uvloop = use_uvloop
        self._sink = RecordBuffer()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._go: asyncio.Event | None = None
        self._loop_ready = threading.Event()
        self._prepared = threading.Event()
        self._done = threading.Event()
        self.on_done: Callable[[], None] | None = None  # called once the loop has ended (local backend)
        self._error: str | None = None
        self._prepare_error: BaseException | None = None
        self.epoch_mono_ns: int | None = None
        self.warmed_connections = 0
        self.warm_up_s = 0.0
        self._node_ip = _node_ip()  # resolved once, before any load runs
        self._node_id = _node_id()

    def prepare(self, plan: ActorPlan, warm_connections: bool = True) -> dict[str, Any]:
        """Start the loop and open the session; with ``warm_connections``, first open the
        connections ``plan.connections_to_warm()`` asks for. Returns ``info()`` once ready, or raises
        the warm-up's EndpointError (bounded by the endpoint's connect timeout)."""
        if self._thread is not None:
            raise RuntimeError(f"load actor {self.actor_index} was already prepared")
        count = plan.connections_to_warm() if warm_connections else 0
        self._thread = threading.Thread(
            target=self._run, args=(plan, count), name=f"etalon-load-{self.actor_index}", daemon=True,
        )
        self._thread.start()
        if not self._prepared.wait(self._endpoint.connect_timeout_s + PREPARE_SLACK_S):
            self.stop()
            raise TimeoutError(f"load actor {self.actor_index}: connection warm-up did not finish")
        if self._prepare_error is not None:
            raise self._prepare_error
        return self.info()

    def start(self, start_wall_ns: int) -> dict[str, Any]:
        """Send the prepared plan from ``start_wall_ns`` (wall clock, mapped onto this process's
        monotonic clock)."""
        if not self._prepared.is_set() or self._loop is None or self._go is None:
            raise RuntimeError(f"load actor {self.actor_index} must be prepared before start")
        if self.epoch_mono_ns is not None:
            raise RuntimeError(f"load actor {self.actor_index} was already started")
        self.epoch_mono_ns = time.monotonic_ns() + (start_wall_ns - time.time_ns())
        self._loop.call_soon_threadsafe(self._go.set)
        return self.info()

    def _run(self, plan: ActorPlan, warm_count: int) -> None:
        loop = _new_event_loop(self._use_uvloop)
        self._loop = loop
        try:
            self._stop_event = asyncio.Event()
            self._go = asyncio.Event()
            self._loop_ready.set()
            with _quiet_gc(), _prompt_gil_handoff():
                loop.run_until_complete(self._lifecycle(plan, warm_count))
        except BaseException as exc:  # noqa: BLE001 - reported through status(), never lost
            self._error = f"{type(exc).__name__}: {exc}"
            if not self._prepared.is_set():
                self._prepare_error = exc
        finally:
            self._loop_ready.set()
            self._prepared.set()
            self._done.set()
            loop.close()
            if self.on_done is not None:
                self.on_done()

    async def _lifecycle(self, plan: ActorPlan, warm_count: int) -> None:
        assert self._go is not None and self._stop_event is not None
        async with open_session(plan.max_inflight) as session:
            if warm_count:
                assert session.connector is not None
                self.warmed_connections, self.warm_up_s = await timed_warm_up(
                    session.connector, self._endpoint, warm_count
                )
            self._prepared.set()
            if not await _first_of(self._go, self._stop_event):
                return  # stopped before the start: nothing was sent
            assert self.epoch_mono_ns is not None
            await run_actor_load(
                self._client, plan, self.epoch_mono_ns, self._sink, self._stop_event, session
            )

    def drain(self) -> list[dict[str, Any]]:
        """Records finished since the last drain, as ``RequestRecord.to_dict()`` dicts."""
        records = [record.to_dict() for record in self._sink.drain()]
        for record in records:
            record["node_id"] = self._node_id
        return records

    def status(self) -> dict[str, Any]:
        """``done``, ``error``, and ``unreported``: ids sent whose records are not drained yet."""
        return {"done": self._done.is_set(), "error": self._error, "unreported": self._sink.unreported()}

    def stop(self) -> None:
        """Cancel in-flight requests (they become ``cancelled`` records) and wait for the loop."""
        if self._thread is None:
            return
        self._loop_ready.wait()
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None and not self._done.is_set():
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:
                pass  # the loop closed between the check and the call: nothing left to stop
        self._thread.join(STOP_JOIN_TIMEOUT_S)

    def info(self) -> dict[str, Any]:
        return {
            "actor": self.actor_index,
            "node_ip": self._node_ip,
            "node_id": self._node_id,
            "pid": os.getpid(),
            "epoch_mono_ns": self.epoch_mono_ns,
            "warmed_connections": self.warmed_connections,
            "warm_up_s": self.warm_up_s,
        }
