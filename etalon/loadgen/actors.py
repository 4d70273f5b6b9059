"""LoadActor: one driver loop on its own thread and event loop; a Ray actor or used in-process."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from typing import Any

from etalon.clients.base import EndpointSpec, make_client
from etalon.loadgen.driver import RecordBuffer, run_actor_load
from etalon.loadgen.plan import ActorPlan

STOP_JOIN_TIMEOUT_S = 30.0


def _new_event_loop(use_uvloop: bool) -> asyncio.AbstractEventLoop:
    if use_uvloop:
        try:
            import uvloop

            return uvloop.new_event_loop()
        except ImportError:
            pass
    return asyncio.new_event_loop()


def _node_ip() -> str:
    try:
        import ray

        if ray.is_initialized():
            return str(ray.util.get_node_ip_address())
    except ImportError:
        pass
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


class LoadActor:
    """Runs one ActorPlan; methods are called from another thread (Ray's, or the local runner's).

    The loop runs on its own thread so that ``drain``/``stop``/``status`` answer while it sends.
    Wrapped with ``ray.remote`` by ``etalon.loadgen.run``; the ``local`` backend uses it directly.
    """

    def __init__(self, actor_index: int, endpoint: EndpointSpec, use_uvloop: bool = True) -> None:
        self.actor_index = actor_index
        self._client = make_client(endpoint)
        self._use_uvloop = use_uvloop
        self._sink = RecordBuffer()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._loop_ready = threading.Event()
        self._done = threading.Event()
        self._error: str | None = None
        self.epoch_mono_ns: int | None = None

    def start(self, plan: ActorPlan, start_wall_ns: int) -> dict[str, Any]:
        """Start sending; ``start_wall_ns`` (wall clock) is mapped onto this process's monotonic clock."""
        if self._thread is not None:
            raise RuntimeError(f"load actor {self.actor_index} was already started")
        self.epoch_mono_ns = time.monotonic_ns() + (start_wall_ns - time.time_ns())
        self._thread = threading.Thread(
            target=self._run, args=(plan, self.epoch_mono_ns), name=f"etalon-load-{self.actor_index}",
            daemon=True,
        )
        self._thread.start()
        return self.info()

    def _run(self, plan: ActorPlan, epoch_ns: int) -> None:
        loop = _new_event_loop(self._use_uvloop)
        self._loop = loop
        try:
            self._stop_event = asyncio.Event()
            self._loop_ready.set()
            loop.run_until_complete(run_actor_load(self._client, plan, epoch_ns, self._sink, self._stop_event))
        except BaseException as exc:  # noqa: BLE001 - reported through status(), never lost
            self._error = f"{type(exc).__name__}: {exc}"
        finally:
            self._loop_ready.set()
            self._done.set()
            loop.close()

    def drain(self) -> list[dict[str, Any]]:
        """Records finished since the last drain, as ``RequestRecord.to_dict()`` dicts."""
        return [record.to_dict() for record in self._sink.drain()]

    def status(self) -> dict[str, Any]:
        return {"done": self._done.is_set(), "error": self._error}

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
            "node_ip": _node_ip(),
            "pid": os.getpid(),
            "epoch_mono_ns": self.epoch_mono_ns,
        }
