"""Run a Schedule against an endpoint with N load actors (Ray or in-process), writing records as JSONL."""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol

import orjson


from etalon.clients.base import EndpointError, EndpointSpec
from etalon.clients.openai import preflight as _client_preflight
from etalon.core.health import endpoint_gone
from etalon.core.records import STATUS_OK, RequestRecord
from etalon.loadgen.actors import LoadActor
from etalon.loadgen.headroom import headroom_warning
from etalon.loadgen.driver import KEEPALIVE_S
from etalon.loadgen.interrupts import interrupt_flag
from etalon.loadgen.loss import ActorLossBook
from etalon.loadgen.ray_init import RayStartError
from etalon.loadgen.plan import ActorPlan, build_requests, gc_paused, split_plans, split_session_plans
from etalon.records.files import PARQUET_NAME, RECORD_FORMATS, ParquetSink
from etalon.loadgen.sink import RecordsFile

if TYPE_CHECKING:
    from etalon.core.workload import Schedule

log = logging.getLogger("etalon")

STOP_INTERRUPTED = "interrupted"
STOP_ENDPOINT_GONE = "endpoint gone"
BACKENDS = ("ray", "local")
PLACEMENTS = ("SPREAD", "DEFAULT")  # Ray scheduling strategies for the load actors
# Warmed connections must still be pooled at the start: keep the gap well inside the pool's idle limit.
MAX_WARM_START_DELAY_S = KEEPALIVE_S / 2


@dataclass
class LoadSettings:
    """How the load is generated: actors, their concurrency limit, backend, drain cadence.

    ``warm_connections``: each actor opens the keep-alive connections its first requests need
    before the planned start (see ``etalon.clients.warmup`` for what this changes in the figures).
    """

    num_actors: int = 1
    max_inflight_per_actor: int = 1024
    backend: str = "ray"
    actor_num_cpus: float = 0.5
    drain_interval_s: float = 0.25
    ray_address: str | None = None
    use_uvloop: bool = True
    start_delay_s: float = 1.0
    warm_connections: bool = True
    placement: str = "SPREAD"
    records_format: str = "jsonl"
    records_batch_rows: int = 8192
    actor_capacity_tokens_per_s: float = 100_000.0  # 0: no headroom warning

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"client.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.records_format not in RECORD_FORMATS or self.records_batch_rows < 1:
            raise ValueError(
                f"client.records_format must be one of {RECORD_FORMATS} and client.records_batch_rows "
                f">= 1, got {self.records_format!r} and {self.records_batch_rows}"
            )
        if self.placement not in PLACEMENTS:
            raise ValueError(f"client.placement must be one of {PLACEMENTS}, got {self.placement!r}")
        if self.num_actors < 1 or self.max_inflight_per_actor < 1:
            raise ValueError(
                f"client.num_actors ({self.num_actors}) and client.max_inflight_per_actor "
                f"({self.max_inflight_per_actor}) must be >= 1"
            )
        if self.drain_interval_s <= 0 or self.start_delay_s < 0:
            raise ValueError(
                f"client.drain_interval_s must be > 0 and client.start_delay_s >= 0, got "
                f"{self.drain_interval_s} and {self.start_delay_s}"
            )
        if self.warm_connections and self.start_delay_s > MAX_WARM_START_DELAY_S:
            raise ValueError(
                f"client.start_delay_s={self.start_delay_s} is too long for client.warm_connections="
                f"true: warmed connections idle out after {KEEPALIVE_S:g} s; use start_delay_s <= "
                f"{MAX_WARM_START_DELAY_S:g} or warm_connections=false"
            )


@dataclass
class LoadResult:
    """What a load run produced. ``partial`` means it stopped before the schedule ran out
    (``stop_reason`` says why: a should_stop message, ``interrupted``, or an actor failure)."""

    records: list[RequestRecord]
    partial: bool
    stop_reason: str | None
    actors: list[dict[str, Any]] = field(default_factory=list)
    wall_start_ns: int = 0
    duration_s: float = 0.0
    records_path: Path | None = None  # where the records were written (JSONL file or Parquet dir)
    records_in_memory: bool = True  # False: ``records`` is empty, read them from ``records_path``


class _Backend(Protocol):
    def prepare(self, plans: list[ActorPlan], warm: bool) -> list[dict[str, Any]]: ...
    def start(self, start_wall_ns: int) -> list[dict[str, Any]]: ...
    def poll(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]: ...
    def watch(self, wake: threading.Event) -> None: ...
    def stop(self) -> None: ...
    def shutdown(self) -> None: ...


class _LocalBackend:
    """Actors as plain objects in this process, each with its own thread and event loop."""

    def __init__(self, endpoint: EndpointSpec, settings: LoadSettings, count: int) -> None:
        self._actors = [LoadActor(i, endpoint, settings.use_uvloop) for i in range(count)]

    def prepare(self, plans: list[ActorPlan], warm: bool) -> list[dict[str, Any]]:
        from concurrent.futures import ThreadPoolExecutor

        # Each prepare blocks until its actor is warm: warm all actors at once, not one by one.
        with ThreadPoolExecutor(len(plans)) as pool:
            return list(pool.map(lambda a, p: a.prepare(p, warm), self._actors, plans))

    def start(self, start_wall_ns: int) -> list[dict[str, Any]]:
        return [a.start(start_wall_ns) for a in self._actors]

    def watch(self, wake: threading.Event) -> None:
        """Each actor sets ``wake`` when its loop ends: the run ends with its last record, not up to
        a drain interval later."""
        for actor in self._actors:
            actor.on_done = wake.set

    def poll(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        statuses = [a.status() for a in self._actors]  # status first: a done actor's drain is final
        return [r for a in self._actors for r in a.drain()], statuses

    def stop(self) -> None:
        for actor in self._actors:
            actor.stop()

    def shutdown(self) -> None:
        self.stop()


def _actor_death_cause(exc: BaseException) -> str:
    """The line of a Ray actor error that says why it died (the error its creation raised, when
    there is one; Ray's message wraps it in a remote traceback)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    raised = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b:?", line)
              and not line.startswith(("ray.exceptions", "ActorDiedError", "RayActorError"))]
    return (raised[-1] if raised else lines[0] if lines else type(exc).__name__)[:300]


class _RayBackend:
    """One Ray actor process per LoadActor, placed by ``client.placement`` (SPREAD: across nodes).

    An actor that stops answering (its process or node died) is recorded in ``lost`` and skipped
    from then on; the run loop stops the others and counts what the lost one had in flight."""

    def __init__(self, endpoint: EndpointSpec, settings: LoadSettings, count: int) -> None:
        from etalon.loadgen.ray_init import ensure_ray

        with _keep_sigterm_handler():
            ray = ensure_ray(settings.ray_address)
        self._ray = ray
        remote = ray.remote(LoadActor).options(
            num_cpus=settings.actor_num_cpus, scheduling_strategy=settings.placement, max_restarts=0
        )
        # Ray's handles are typed loosely: treat them as Any rather than as LoadActor.
        self._actors: list[Any] = [remote.remote(i, endpoint, settings.use_uvloop) for i in range(count)]
        try:
            infos = ray.get([a.info.remote() for a in self._actors])  # wait until every process is up
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
            for actor in self._actors:
                ray.kill(actor)
            raise RayStartError(f"a load actor died while starting, before any request was sent: "
                                f"{_actor_death_cause(exc)} (Ray's logs: /tmp/ray/session_latest/logs)") from None
        self._node_ids: list[str | None] = [info.get("node_id") for info in infos]
        self.losses = ActorLossBook()
        self._dead: set[int] = set()

    def prepare(self, plans: list[ActorPlan], warm: bool) -> list[dict[str, Any]]:
        self.losses.plan(plans)
        refs = [a.prepare.remote(p, warm) for a, p in zip(self._actors, plans)]
        infos, errors = [], []
        for ref in refs:  # fetch every result: an unfetched failure is logged by Ray as unhandled
            try:
                infos.append(self._ray.get(ref))
            except self._ray.exceptions.RayTaskError as exc:
                errors.append(exc)
        if errors and isinstance(errors[0].cause, EndpointError):
            raise errors[0].cause from None  # the user's error, without Ray's remote traceback
        if errors:
            raise errors[0]
        return infos

    def start(self, start_wall_ns: int) -> list[dict[str, Any]]:
        self.losses.start_wall_ns = start_wall_ns
        return self._ray.get([a.start.remote(start_wall_ns) for a in self._actors])

    def watch(self, wake: threading.Event) -> None:
        """Nothing to do: an actor's end is learnt from its status at the next drain."""

    def poll(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Status, then drain, of every live actor; a dead one (its process or its node gone) has
        its undrained requests become ``actor_lost`` records and counts as done, so the others
        finish the run."""
        lost_errors = (self._ray.exceptions.RayActorError, self._ray.exceptions.ActorUnavailableError)
        live = [i for i in range(len(self._actors)) if i not in self._dead]
        status_refs = {i: self._actors[i].status.remote() for i in live}
        drain_refs = {i: self._actors[i].drain.remote() for i in live}
        records: list[dict[str, Any]] = []
        statuses = [{"done": True, "error": None} for _ in self._actors]
        for i in live:
            try:
                statuses[i] = self._ray.get(status_refs[i])
                batch = self._ray.get(drain_refs[i])
            except lost_errors as exc:
                self._dead.add(i)
                node = self._node_ids[i]
                lost = self.losses.lost(i, f"{type(exc).__name__}" + (f" on node {node[:12]}" if node else ""))
                for record in lost:
                    record["node_id"] = node
                records += lost
                continue
            self.losses.seen(i, statuses[i], batch)
            records += batch
        return records, statuses

    def stop(self) -> None:
        for i in range(len(self._actors)):
            if i not in self._dead:
                try:
                    self._ray.get(self._actors[i].stop.remote())
                except (self._ray.exceptions.RayActorError, self._ray.exceptions.ActorUnavailableError):
                    pass  # died meanwhile: the next poll counts what it lost

    def shutdown(self) -> None:
        for actor in self._actors:
            try:
                self._ray.kill(actor)
            except Exception:  # noqa: BLE001 - an actor already gone needs no kill
                pass


def _deaths(backend: _Backend) -> list[str]:
    """One line per load actor that died mid-run (told once, here, as a warning)."""
    losses = getattr(backend, "losses", None)
    deaths = list(losses.deaths) if losses is not None else []
    for line in deaths:
        log.warning("%s", line)
    return deaths


@contextmanager
def _keep_sigterm_handler() -> Iterator[None]:
    """ray.init replaces the SIGTERM handler with sys.exit; etalon's (stop like Ctrl-C) stays."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def preflight(endpoint: EndpointSpec) -> list[str]:
    """Fail fast (EndpointUnreachableError / EndpointStatusError) before a run; returns model ids."""
    return _client_preflight(endpoint)


def run_load(
    schedule: Schedule,
    prompts: list[Any],
    endpoint: EndpointSpec,
    settings: LoadSettings,
    records_path: Path,
    *,
    should_stop: Callable[[list[RequestRecord]], str | None] | None = None,
    progress: bool = True,
    keep_records: bool = True,
    max_context_tokens: int | None = None,
) -> LoadResult:
    """Send ``schedule`` and collect one record per sent request.

    Records are appended to ``records_path`` (JSONL, one ``RequestRecord.to_dict()`` per line)
    after every drain; with ``client.records_format=parquet`` they go to ``records.parquet`` next to
    it in bounded part files instead, and ``keep_records=False`` (which ``should_stop`` overrides)
    keeps none in memory, so a run of any length holds only one drain batch. Ctrl-C (and SIGTERM,
    SIGHUP) does not propagate: actors are stopped, what they have is written,
    and the result comes back with ``partial=True, stop_reason="interrupted"``; the caller writes
    its summary and then re-raises KeyboardInterrupt itself.
    """
    warning = headroom_warning(schedule, settings.num_actors, settings.actor_capacity_tokens_per_s)
    if warning:
        log.warning("%s", warning)
    with gc_paused():
        requests = build_requests(schedule, prompts)
        if schedule.session_id is not None:
            _check_session_client(endpoint)
            plans = split_session_plans(schedule, requests, settings.num_actors,
                                        settings.max_inflight_per_actor, max_context_tokens)
        else:
            plans = split_plans(schedule, requests, settings.num_actors, settings.max_inflight_per_actor)
    backend_cls = _RayBackend if settings.backend == "ray" else _LocalBackend
    backend: _Backend = backend_cls(endpoint, settings, len(plans))
    try:
        keep = keep_records or should_stop is not None
        return _drive(backend, plans, settings, Path(records_path), should_stop, progress, keep)
    finally:
        backend.shutdown()


def _check_session_client(endpoint: EndpointSpec) -> None:
    """Sessions resend the server's answers, so the client must return them (``exchange``)."""
    import importlib

    module_name, _, class_name = endpoint.client_target.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if cls is None or not hasattr(cls, "exchange"):
        raise ValueError(f"workload.sessions needs a client that returns the answer text "
                         f"(an exchange() method); {endpoint.client_target} has none")


def _drive(
    backend: _Backend,
    plans: list[ActorPlan],
    settings: LoadSettings,
    records_path: Path,
    should_stop: Callable[[list[RequestRecord]], str | None] | None,
    progress: bool,
    keep: bool = True,
) -> LoadResult:
    from tqdm import tqdm

    records: list[RequestRecord] = []
    records_path.parent.mkdir(parents=True, exist_ok=True)
    total = sum(p.num_requests for p in plans)
    stop_reason: str | None = None
    start_wall_ns = time.time_ns()
    # On a terminal the bar redraws in place; in a log file (CI, nohup) a line every 10 s is enough.
    interactive = sys.stderr.isatty()
    bar_args = {"mininterval": 0.1 if interactive else 10.0, "ascii": not interactive}
    sink: Any = (  # JSONL keeps the caller's file name; Parquet is records.parquet/ beside it
        RecordsFile(records_path) if settings.records_format == "jsonl"
        else ParquetSink(records_path.parent / PARQUET_NAME, settings.records_batch_rows)
    )
    with (
        sink if isinstance(sink, RecordsFile) else contextlib.closing(sink),
        tqdm(total=total, unit="req", disable=not progress, **bar_args) as bar,
        interrupt_flag(wake := threading.Event()) as interrupted,
    ):
        collect = _Collector(records, sink, bar, keep)
        infos: list[dict[str, Any]] = []
        try:
            # Every actor is warm before the start is picked, so warm-up never delays a planned send.
            backend.watch(wake)
            backend.prepare(plans, settings.warm_connections)
            start_wall_ns = time.time_ns() + int(settings.start_delay_s * 1e9)
            infos = backend.start(start_wall_ns)
            stop_reason = _poll_until_done(backend, collect, settings, should_stop, interrupted, wake)
        except KeyboardInterrupt:  # only where the flag could not be installed (not the main thread)
            stop_reason = STOP_INTERRUPTED
        if stop_reason is not None:
            backend.stop()
            collect(backend.poll()[0])
    deaths = _deaths(backend)
    return LoadResult(
        records=records,
        partial=stop_reason is not None or bool(deaths),
        stop_reason=stop_reason or ("; ".join(deaths) if deaths else None),
        actors=infos,
        wall_start_ns=start_wall_ns,
        duration_s=max(0.0, (time.time_ns() - start_wall_ns) / 1e9),
        records_path=sink.path,
        records_in_memory=keep,
    )


def _poll_until_done(
    backend: _Backend,
    collect: _Collector,
    settings: LoadSettings,
    should_stop: Callable[[list[RequestRecord]], str | None] | None,
    interrupted: threading.Event,
    wake: threading.Event,
) -> str | None:
    """Drain every ``drain_interval_s`` (sooner when ``wake`` is set: a stop signal, or a local
    actor's end) until all actors finish; return a stop reason or None."""
    while True:
        wake.wait(settings.drain_interval_s)
        wake.clear()  # before the statuses are read: an end after them sets it again
        if interrupted.is_set():
            return STOP_INTERRUPTED
        batch, statuses = backend.poll()
        collect(batch)
        errors = [s["error"] for s in statuses if s["error"]]
        if errors:
            return f"load actor failed: {errors[0]}"
        if batch and (gone := endpoint_gone(collect.records)):
            return f"{STOP_ENDPOINT_GONE}: {gone}"
        if should_stop is not None and (reason := should_stop(collect.records)):
            return reason
        if all(s["done"] for s in statuses):
            return None


class _Collector:
    """Appends drained record dicts to the JSONL file (written per drain) and the in-memory list."""

    def __init__(self, records: list[RequestRecord], sink: Any, bar: Any, keep: bool = True) -> None:
        self.records = records
        self._keep = keep
        self._sink = sink
        self._bar = bar
        self._errors = 0

    def __call__(self, batch: list[dict[str, Any]]) -> None:
        if not batch:
            return
        if isinstance(self._sink, RecordsFile):
            self._sink.write(b"".join(orjson.dumps(d) + b"\n" for d in batch), len(batch))
        else:
            self._sink.write(batch)
        if self._keep:
            self.records.extend(RequestRecord.from_dict(d) for d in batch)
        self._errors += sum(d["status"] != STATUS_OK for d in batch)
        self._bar.update(len(batch))
        self._bar.set_postfix(errors=self._errors, refresh=False)
