"""The two emission loops: ``independent`` timelines and the continuous-batching engine."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Sequence
from typing import Callable

from etalon.sim.config import SimConfig
from etalon.sim.engine import EngineCore, TokenEvent, step_time_s
from etalon.sim.streams import TokenStream

# Tokens due this close to "now" are written in the current batch (bounded early emission).
EARLY_NS = 50_000
# An engine that falls this far behind its step deadlines restarts its clock instead of bursting.
MAX_STEP_LAG_NS = 5_000_000
IDLE_LOOKBACK_NS = 50_000_000  # an idle engine starts its step at most this long before "now"
# The longest a ``sleep`` wait blocks the loop at once: a request that arrives meanwhile is read
# (and its arrival stamped) at most this late.
SLEEP_SLICE_NS = 250_000


class PreciseSleeper:
    """Sleeps to an absolute monotonic deadline: a loop timer for the bulk (it wakes up to ~1 ms
    late: epoll and uvloop count whole ms), then the last ``spin_wait_s`` one of two ways.

    - ``sleep`` (the default): the thread sleeps (nanosleep, ~10-60 us late) in slices of at most
      ``SLEEP_SLICE_NS``, the loop polling its sockets between slices. It costs no CPU, so a
      client on the same cores keeps them (spinning took ~70% of a core at 32 streams).
    - ``spin``: the loop yields to itself until the deadline, polling sockets all the while. The
      most precise (~0 us late on an idle core), and it holds a core whenever a token is due
      within ``spin_wait_s``, which with a few dozen streams is nearly always.
    """

    def __init__(self, spin_wait_s: float, wait: str = "sleep") -> None:
        self.spin_ns = int(spin_wait_s * 1e9)
        self.blocking = wait == "sleep"
        self._future: asyncio.Future[None] | None = None
        self.target_ns = 0

    async def until(self, target_ns: int) -> None:
        loop = asyncio.get_running_loop()
        self.target_ns = target_ns
        while True:
            remaining_ns = target_ns - time.monotonic_ns()
            if remaining_ns <= EARLY_NS or self.target_ns != target_ns:
                return
            if remaining_ns <= self.spin_ns:
                if self.blocking:  # to EARLY_NS before it: waking takes about as long again
                    time.sleep(min(remaining_ns - EARLY_NS, SLEEP_SLICE_NS) / 1e9)
                await asyncio.sleep(0)  # sockets are read, and an earlier deadline can arrive
                continue
            future = self._future = loop.create_future()
            handle = loop.call_later((remaining_ns - self.spin_ns) / 1e9, _resolve, future)
            try:
                await future
            finally:
                handle.cancel()
                self._future = None

    def interrupt(self) -> None:
        """Make a pending ``until`` return now (a new, earlier deadline exists)."""
        self.target_ns = -1
        if self._future is not None:
            _resolve(self._future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class IndependentScheduler:
    """Every request on its own timeline; infinite capacity. One loop serves all streams."""

    def __init__(self, config: SimConfig) -> None:
        self.latency = config.latency
        self.tbt_ns = int(self.latency.tbt_s * 1e9)
        self.sleeper = PreciseSleeper(config.spin_wait_s, config.precise_wait)
        self._heap: list[tuple[int, int, TokenStream]] = []
        self._order = itertools.count()
        self._idle = asyncio.Event()
        self.active = 0

    def running(self) -> int:
        return self.active

    def waiting(self) -> int:
        return 0

    def submit(self, stream: TokenStream, arrival_ns: int,
               prompt_ids: Sequence[int] | None = None) -> None:
        ttft_s = self.latency.ttft_base_s + self.latency.ttft_per_prompt_token_s * stream.spec.prompt_tokens
        due_ns = arrival_ns + int(ttft_s * 1e9)
        heapq.heappush(self._heap, (due_ns, next(self._order), stream))
        self.active += 1
        self._idle.set()
        if due_ns < self.sleeper.target_ns:
            self.sleeper.interrupt()

    def abort(self, stream: TokenStream) -> None:
        stream.alive = False  # dropped when it next comes due

    async def run(self) -> None:
        heap = self._heap
        while True:
            if not heap:
                self._idle.clear()
                await self._idle.wait()
                continue
            now_ns = time.monotonic_ns()
            if heap[0][0] > now_ns + EARLY_NS:
                await self.sleeper.until(heap[0][0])
                continue
            self._emit_due(now_ns)
            await asyncio.sleep(0)  # let the loop flush sockets and accept requests

    def _emit_due(self, now_ns: int) -> None:
        heap, tbt_ns, horizon_ns = self._heap, self.tbt_ns, now_ns + EARLY_NS
        pop, push = heapq.heappop, heapq.heappush
        while heap and heap[0][0] <= horizon_ns:
            due_ns, order, stream = pop(heap)
            if stream.emit(time.monotonic_ns()):
                push(heap, (due_ns + tbt_ns, order, stream))
            else:
                self.active -= 1


class EngineScheduler:
    """Iteration loop: schedule a step, sleep its modelled time to an absolute deadline, emit."""

    def __init__(self, config: SimConfig, on_preempt: Callable[[int], None] | None = None) -> None:
        self.latency = config.latency
        self.core = EngineCore(config.scheduler, config.max_num_seqs, config.max_num_batched_tokens,
                               config.kv_cache_tokens, config.block_size_tokens,
                               config.prefix_caching_enabled)
        self.sleeper = PreciseSleeper(config.spin_wait_s, config.precise_wait)
        self.streams: dict[int, TokenStream] = {}
        self._ids = itertools.count()
        self._work = asyncio.Event()
        self.steps = 0
        # Earliest arrival since the engine went idle: an idle engine's first step starts then, so
        # the API layer's work (reading the body, counting prompt tokens) is not modelled latency.
        self._idle_arrival_ns: int | None = None

    def running(self) -> int:
        return len(self.core.running)

    def waiting(self) -> int:
        return len(self.core.waiting)

    def check_fits(self, total_tokens: int) -> str | None:
        if self.core.fits_ever(total_tokens):
            return None
        return (f"prompt plus max_tokens is {total_tokens} tokens, more than the KV cache "
                f"({self.core.total_blocks * self.core.block_size_tokens} tokens) can ever hold")

    def submit(self, stream: TokenStream, arrival_ns: int,
               prompt_ids: Sequence[int] | None = None) -> None:
        """Queue a request; with the prefix cache on, ``prompt_ids`` key its cached blocks."""
        seq_id = next(self._ids)
        self.streams[seq_id] = stream
        token_ids = None
        if self.core.pool.caching and prompt_ids is not None:
            token_ids = [*prompt_ids, *stream.planned_output_ids()]
        self.core.add(seq_id, stream.spec.prompt_tokens, stream.spec.output_tokens, token_ids)
        stream.seq_id = seq_id
        if self._idle_arrival_ns is None or arrival_ns < self._idle_arrival_ns:
            self._idle_arrival_ns = arrival_ns
        self._work.set()

    def abort(self, stream: TokenStream) -> None:
        if self.streams.pop(stream.seq_id, None) is not None:
            self.core.abort(stream.seq_id)

    async def run(self) -> None:
        step_start_ns: int | None = None
        while True:
            if not self.core.has_work():
                self._work.clear()
                await self._work.wait()
                step_start_ns = None
                continue
            now_ns = time.monotonic_ns()
            if step_start_ns is None:
                step_start_ns = max(min(self._idle_arrival_ns or now_ns, now_ns), now_ns - IDLE_LOOKBACK_NS)
            elif now_ns - step_start_ns > MAX_STEP_LAG_NS:
                step_start_ns = now_ns
            self._idle_arrival_ns = None
            plan = self.core.schedule()
            if not plan.items:
                self._work.clear()
                await self._work.wait()
                continue
            deadline_ns = step_start_ns + int(step_time_s(plan, self.latency) * 1e9)
            await self.sleeper.until(deadline_ns)
            self._emit(self.core.commit(plan), deadline_ns - step_start_ns)
            self.steps += 1
            step_start_ns = deadline_ns
            if deadline_ns <= now_ns + EARLY_NS:
                await asyncio.sleep(0)  # zero-time steps still let the loop do I/O

    def _emit(self, events: list[TokenEvent], step_ns: int) -> None:
        streams = self.streams
        for event in events:
            stream = streams.get(event.seq_id)
            if stream is None:
                continue
            if stream.step_ns is not None:
                stream.step_ns.append(step_ns)
            if event.token_index == 1 and self.core.pool.caching:
                stream.spec.cached_tokens = event.cached_tokens
            alive = stream.emit(time.monotonic_ns())
            if event.finished or not alive:
                del streams[event.seq_id]
                if not event.finished:
                    self.core.abort(event.seq_id)

