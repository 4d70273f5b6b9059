"""One measurement at a time per endpoint, across the Ray jobs of a sweep."""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from contextlib import contextmanager
from typing import Iterator

log = logging.getLogger("etalon")

LOCK_NAMESPACE = "etalon"
POLL_INTERVAL_S = 0.1
# A waiter that has not polled for this long is gone (its process died): it loses its place.
STALE_WAITER_S = 5.0
# Keys this process holds now: nested work (parallel search tasks) must not wait on its own holder.
_HELD: set[str] = set()


def held_keys() -> set[str]:
    """The endpoint keys whose lock this process holds at the moment."""
    return set(_HELD)


@contextmanager
def endpoint_lock(key: str) -> Iterator[None]:
    """Hold the cluster-wide lock of ``key`` while inside; a no-op when Ray is not running.

    Jobs that measure the same endpoint would distort each other's load, so a sweep on the Ray
    launcher serialises them; jobs against different endpoints still run in parallel.
    """
    if os.environ.get("ETALON_DISABLE_ENDPOINT_LOCK") == "1" or not _ray_running():
        yield
        return
    lock = _lock_actor(key)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    waited = False
    import ray

    while not ray.get(lock.try_acquire.remote(token)):
        if not waited:
            log.info("waiting for another job measuring %s to finish", key)
            waited = True
        time.sleep(POLL_INTERVAL_S)
    _HELD.add(key)
    try:
        yield
    finally:
        _HELD.discard(key)
        ray.get(lock.release.remote(token))


def _ray_running() -> bool:
    # Ray that this process never imported is not running in it: importing it just to ask costs
    # every local run ~0.3 s.
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


def _lock_actor(key: str):  # type: ignore[no-untyped-def]
    import ray

    @ray.remote(num_cpus=0)
    class EndpointLock:
        """First come, first served: waiters queue in the order they first asked."""

        def __init__(self) -> None:
            self.holder: str | None = None
            self.waiting: dict[str, float] = {}  # token -> last poll (monotonic s), in arrival order

        def try_acquire(self, token: str) -> bool:
            now = time.monotonic()
            self.waiting[token] = now  # keeps its place: dict order is first-insertion order
            for stale in [t for t, seen in self.waiting.items() if now - seen > STALE_WAITER_S]:
                del self.waiting[stale]
            if self.holder is None and next(iter(self.waiting)) == token:
                del self.waiting[token]
                self.holder = token
            return self.holder == token

        def release(self, token: str) -> None:
            if self.holder == token:
                self.holder = None

    name = "endpoint-lock:" + key
    return EndpointLock.options(  # type: ignore[attr-defined]
        name=name, namespace=LOCK_NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote()
