"""The asyncio load driver of one actor: sends an ActorPlan at its planned times (no Ray here)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING

import aiohttp

from etalon.clients.base import PlannedRequest
from etalon.core.records import STATUS_ERROR, STATUS_OK, RequestRecord
from etalon.core.redaction import redact_text
from etalon.core.sessions import turn_fits

if TYPE_CHECKING:
    from etalon.clients.base import Client
    from etalon.loadgen.plan import ActorPlan

# Timers fire up to ~1 ms late (epoll and libuv have ms resolution): sleep until this much before
# the deadline, then sleep the short rest, so lateness stays ~1 ms without busy-waiting.
EARLY_WAKE_NS = 1_000_000
KEEPALIVE_S = 60.0


class RecordBuffer:
    """Finished records, appended by the loop thread and drained by another thread.

    It also knows which requests were sent but are not drained yet (``unreported``): if the
    process dies, exactly those are lost, and the caller counts them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[RequestRecord] = []
        self._unreported: set[int] = set()

    def started(self, request_id: int) -> None:
        with self._lock:
            self._unreported.add(request_id)

    def append(self, record: RequestRecord) -> None:
        with self._lock:
            self._items.append(record)

    def drain(self) -> list[RequestRecord]:
        with self._lock:
            items, self._items = self._items, []
            for record in items:
                self._unreported.discard(record.request_id)
        return items

    def unreported(self) -> list[int]:
        with self._lock:
            return sorted(self._unreported)


async def sleep_until(deadline_ns: int) -> None:
    """Sleep until the monotonic clock reaches ``deadline_ns`` (absolute, so no drift)."""
    remaining_ns = deadline_ns - time.monotonic_ns()
    if remaining_ns > EARLY_WAKE_NS:
        await asyncio.sleep((remaining_ns - EARLY_WAKE_NS) / 1e9)
        remaining_ns = deadline_ns - time.monotonic_ns()
    # uvloop rounds timers to whole ms, so a sub-ms sleep can return early: re-check, never send early.
    while (remaining_ns := deadline_ns - time.monotonic_ns()) > 0:
        await asyncio.sleep(remaining_ns / 1e9)


def cancelled_record(request: PlannedRequest, actor_index: int, now_ns: int) -> RequestRecord:
    """Record of a request whose task was cancelled before the client even ran."""
    return failed_record(
        request, actor_index, now_ns, "cancelled", "request cancelled when the run was stopped"
    )


def failed_record(
    request: PlannedRequest, actor_index: int, now_ns: int, error_type: str, message: str
) -> RequestRecord:
    """Error record of a request the client produced no record for."""
    return RequestRecord(
        request_id=request.request_id,
        actor=actor_index,
        scheduled_ns=request.scheduled_ns,
        sent_ns=now_ns,
        end_ns=now_ns,
        prompt_tokens=request.prompt_tokens,
        requested_output_tokens=request.max_tokens,
        output_tokens=0,
        status=STATUS_ERROR,
        error_type=error_type,
        error_message=message,
        warmup=request.warmup,
        session_id=request.session_id,
        turn=request.turn,
        load_stage=request.load_stage,
    )


def _ready_at(request: PlannedRequest, scheduled_ns: int) -> PlannedRequest:
    """``request`` re-planned at ``scheduled_ns`` (positional: dataclasses.replace costs ~5 us)."""
    return PlannedRequest(
        request.request_id, request.prompt, request.prompt_tokens, request.max_tokens,
        scheduled_ns, request.warmup, request.session_id, request.turn, request.load_stage,
    )


class ActorLoad:
    """One actor's dispatch state: semaphore, in-flight tasks, stop flag."""

    def __init__(
        self,
        client: Client,
        plan: ActorPlan,
        epoch_ns: int,
        sink: RecordBuffer,
        session: aiohttp.ClientSession,
    ) -> None:
        self.client = client
        self.plan = plan
        self.epoch_ns = epoch_ns
        self.sink = sink
        self.stopping = False
        self._inflight: dict[asyncio.Task[RequestRecord], PlannedRequest] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._duration_ns = None if plan.duration_s is None else int(plan.duration_s * 1e9)
        self._sem = asyncio.Semaphore(plan.max_inflight)
        self._session = session
        self._session_tasks: set[asyncio.Task[int | None]] = set()
        self._session_failures: list[BaseException] = []

    async def run(self) -> None:
        plan = self.plan
        if plan.sessions:
            self._loops = [asyncio.create_task(self._open_sessions())]
        elif plan.session_users:
            self._loops = [asyncio.create_task(self._session_user(u)) for u in plan.session_users]
        elif plan.open_loop:
            self._loops = [asyncio.create_task(self._open_loop())]
        else:
            self._loops = [asyncio.create_task(self._user(u)) for u in plan.users]
        results = await asyncio.gather(*self._loops, return_exceptions=True)
        while pending := [t for t in self._session_tasks if not t.done()]:
            await asyncio.wait(pending)
        await self._wait_inflight()
        failures = [r for r in results if isinstance(r, Exception)] + self._session_failures
        if failures and not self.stopping:
            raise failures[0]  # a driver bug must fail the actor, not end the run quietly
        if self.stopping:
            self._record_unstarted()

    def stop(self) -> None:
        """Stop dispatching and cancel in-flight requests (they become ``cancelled`` records)."""
        self.stopping = True
        for task in [*self._loops, *self._session_tasks]:
            task.cancel()
        for send in self._inflight:
            send.cancel()

    def _past_duration(self, offset_ns: int) -> bool:
        return self._duration_ns is not None and offset_ns >= self._duration_ns

    async def _open_loop(self) -> None:
        for request in self.plan.requests:
            if self.stopping or self._past_duration(request.scheduled_ns):
                break
            await sleep_until(self.epoch_ns + request.scheduled_ns)
            await self._sem.acquire()  # at the limit the wait shows up as dispatch lag
            self._spawn(request)
        if not self.stopping:
            await self._wait_inflight()

    async def _wait_inflight(self) -> None:
        while pending := [t for t in self._inflight if not t.done()]:
            await asyncio.wait(pending)

    async def _user(self, requests: list[PlannedRequest]) -> None:
        ready_ns = self.epoch_ns
        think_ns = int(self.plan.think_time_s * 1e9)
        for request in requests:
            if self.stopping or self._past_duration(ready_ns - self.epoch_ns):
                return
            await sleep_until(ready_ns)
            await self._sem.acquire()
            # Sent inline, not as a new task: a task would cost two loop iterations between the
            # previous end_ns and this sent_ns, and every iteration also serves all other streams.
            # Cancelling this user task cancels the send, which turns it into a record; the stop
            # flag is re-checked at the top of the loop.
            record = await self._send(_ready_at(request, ready_ns - self.epoch_ns))
            ready_ns = self.epoch_ns + record.end_ns + think_ns

    async def _open_sessions(self) -> None:
        """Start each session at its planned time; its turns then run inside its own task."""
        for turns in self.plan.sessions:
            start_ns = turns[0].scheduled_ns
            if self.stopping or self._past_duration(start_ns):
                break
            await sleep_until(self.epoch_ns + start_ns)
            task = asyncio.create_task(self._run_session(turns, self.epoch_ns + start_ns))
            self._session_tasks.add(task)
            task.add_done_callback(self._session_ended)

    def _session_ended(self, task: asyncio.Task[int | None]) -> None:
        self._session_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._session_failures.append(task.exception())  # type: ignore[arg-type]

    async def _session_user(self, sessions: list[list[PlannedRequest]]) -> None:
        """Closed loop: one user's sessions back to back, ``think_time_s`` apart."""
        ready_ns = self.epoch_ns
        for turns in sessions:
            end_ns = await self._run_session(turns, ready_ns)
            if end_ns is None:
                return
            ready_ns = end_ns + int(self.plan.think_time_s * 1e9)

    async def _run_session(self, turns: list[PlannedRequest], ready_ns: int) -> int | None:
        """Send a session's turns in order, each resending the history with the server's answers.

        A failed turn ends the session; a turn that would not fit the context is not sent.
        Returns when the session ended (absolute monotonic ns), None when the run is over.
        """
        exchange = self.client.exchange  # type: ignore[attr-defined]
        think_ns = int(self.plan.session_think_time_s * 1e9)
        limit = self.plan.max_context_tokens
        history: list[dict[str, str]] = []
        history_tokens = 0
        for turn in turns:
            if self.stopping or self._past_duration(ready_ns - self.epoch_ns):
                return None
            if not turn_fits(history_tokens, turn.prompt_tokens, turn.max_tokens, limit):
                break  # ended by the context limit: counted from the records, never sent
            await sleep_until(ready_ns)
            await self._sem.acquire()
            messages = [*history, {"role": "user", "content": turn.prompt}]  # type: ignore[dict-item]
            request = PlannedRequest(
                turn.request_id, messages, history_tokens + turn.prompt_tokens, turn.max_tokens,
                ready_ns - self.epoch_ns, turn.warmup, turn.session_id, turn.turn, turn.load_stage)
            self.sink.started(request.request_id)
            try:
                record, text = await exchange(self._session, request, self.epoch_ns)
            except Exception as exc:  # noqa: BLE001 - a client that raises still owes a record
                record, text = self._raised(request, exc), ""
            finally:
                self._sem.release()
            record.actor = self.plan.actor_index
            self.sink.append(record)
            ready_ns = self.epoch_ns + record.end_ns
            if record.status != STATUS_OK:
                break
            history = [*messages, {"role": "assistant", "content": text}]
            history_tokens = request.prompt_tokens + record.output_tokens
            ready_ns += think_ns
        return ready_ns

    def _spawn(self, request: PlannedRequest) -> asyncio.Task[RequestRecord]:
        task = asyncio.create_task(self._send(request))
        self._inflight[task] = request
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[RequestRecord]) -> None:
        if not task.cancelled():
            del self._inflight[task]  # cancelled-before-start tasks stay for _record_unstarted

    async def _send(self, request: PlannedRequest) -> RequestRecord:
        self.sink.started(request.request_id)
        try:
            record = await self.client.send(self._session, request, self.epoch_ns)
        except Exception as exc:  # noqa: BLE001 - a client that raises still owes a record
            record = self._raised(request, exc)
        finally:
            self._sem.release()
        record.actor = self.plan.actor_index
        self.sink.append(record)
        return record

    def _raised(self, request: PlannedRequest, exc: Exception) -> RequestRecord:
        """The ``client_error`` record of a request whose client raised instead of recording."""
        message = f"the client raised {type(exc).__name__}: {str(exc)[:300]}"
        return failed_record(request, self.plan.actor_index, time.monotonic_ns() - self.epoch_ns,
                             "client_error", redact_text(message, self.client.spec.secret_values()))

    def _record_unstarted(self) -> None:
        now_ns = time.monotonic_ns() - self.epoch_ns
        for task, request in list(self._inflight.items()):
            if task.cancelled():
                self.sink.append(cancelled_record(request, self.plan.actor_index, now_ns))
        self._inflight.clear()


def open_session(max_inflight: int) -> aiohttp.ClientSession:
    """The actor's one session; its pool holds up to ``max_inflight`` connections, idle ones for
    ``KEEPALIVE_S`` (longer than any warm-up-to-start gap LoadSettings allows)."""
    connector = aiohttp.TCPConnector(
        limit=max_inflight, limit_per_host=0, keepalive_timeout=KEEPALIVE_S
    )
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))


async def run_actor_load(
    client: Client,
    plan: ActorPlan,
    epoch_ns: int,
    sink: RecordBuffer,
    stop_event: asyncio.Event | None = None,
    session: aiohttp.ClientSession | None = None,
) -> None:
    """Run ``plan`` on the current loop; records go to ``sink``; setting ``stop_event`` stops it.

    ``epoch_ns`` is the run's planned start on this process's monotonic clock; every record's
    timestamps are ns since then. ``session`` (e.g. with a warmed pool) is used and left open;
    without one, a fresh session is opened and closed.
    """
    if session is None:
        async with open_session(plan.max_inflight) as own:
            await run_actor_load(client, plan, epoch_ns, sink, stop_event, own)
        return
    load = ActorLoad(client, plan, epoch_ns, sink, session)
    if stop_event is None:
        await load.run()
        return
    runner = asyncio.create_task(load.run())
    watcher = asyncio.create_task(stop_event.wait())
    await asyncio.wait({runner, watcher}, return_when=asyncio.FIRST_COMPLETED)
    if not runner.done():
        load.stop()
    watcher.cancel()
    await runner
