"""Pure planning: turn a Schedule and its prompts into per-actor request plans (no I/O, no clock)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from etalon.clients.base import PlannedRequest

# Open loop: the connections worth opening before the start are those of the requests planned in
# the first second. LLM requests last longer than that (TTFT + output), so by t=1 s nearly all of
# them are still in flight: their count estimates early peak concurrency without modelling latency.
WARM_WINDOW_S = 1.0

if TYPE_CHECKING:
    from etalon.core.workload import Schedule


@dataclass
class ActorPlan:
    """What one actor sends.

    Open loop (``open_loop``): ``requests`` in planned order, each at ``epoch + scheduled_ns``.
    Closed loop: ``users[u]`` is user u's requests in order; a user sends the next one when the
    previous one ended plus ``think_time_s``. Nothing new is sent at or after ``duration_s``.

    Sessions: ``sessions`` (open loop, each starting at its first turn's ``scheduled_ns``) or
    ``session_users`` (closed loop: user u runs its sessions back to back, ``think_time_s``
    apart) hold each session's turns; a turn's ``prompt`` is its new user message. Turn k+1 is
    sent ``session_think_time_s`` after turn k ended; a turn that would not fit
    ``max_context_tokens`` ends its session unsent.
    """

    actor_index: int
    open_loop: bool
    requests: list[PlannedRequest] = field(default_factory=list)
    users: list[list[PlannedRequest]] = field(default_factory=list)
    think_time_s: float = 0.0
    duration_s: float | None = None
    max_inflight: int = 1024
    sessions: list[list[PlannedRequest]] = field(default_factory=list)
    session_users: list[list[list[PlannedRequest]]] = field(default_factory=list)
    session_think_time_s: float = 0.0
    max_context_tokens: int | None = None

    @property
    def num_requests(self) -> int:
        return (len(self.requests) + sum(len(u) for u in self.users) + sum(len(t) for t in self.sessions)
                + sum(len(t) for u in self.session_users for t in u))

    def connections_to_warm(self, window_s: float = WARM_WINDOW_S) -> int:
        """Keep-alive connections to open before the start: what the first requests need at once.

        Closed loop: one per user (all are ready at t=0). Open loop: the requests planned within
        ``window_s`` (and before ``duration_s``), at least 1. Both capped by ``max_inflight``.
        """
        if not self.open_loop:
            users = sum(1 for u in self.users if u) + sum(1 for u in self.session_users if u)
            return min(users, self.max_inflight)
        horizon_s = window_s if self.duration_s is None else min(window_s, self.duration_s)
        horizon_ns = int(horizon_s * 1e9)
        early = sum(1 for r in self.requests if r.scheduled_ns < horizon_ns)
        early += sum(1 for t in self.sessions if t[0].scheduled_ns < horizon_ns)
        return min(max(early, 1), self.max_inflight)


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic GC while millions of long-lived objects are made: every collection would walk
    them all again (3x the build time of a 1M-request plan, measured), and none is garbage."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def build_requests(schedule: Schedule, prompts: list[Any]) -> list[PlannedRequest]:
    """One PlannedRequest per scheduled request; closed-loop requests get scheduled_ns 0 for now."""
    n = len(schedule.prompt_tokens)
    if len(prompts) != n:
        raise ValueError(f"got {len(prompts)} prompts for a schedule of {n} requests; they must match")
    if len(schedule.output_tokens) != n:
        raise ValueError(
            f"schedule.output_tokens has {len(schedule.output_tokens)} entries, prompt_tokens has {n}"
        )
    offsets = schedule.offsets_ns
    if offsets is not None and len(offsets) != n:
        raise ValueError(f"schedule.offsets_ns has {len(offsets)} entries, prompt_tokens has {n}")
    planned = offsets.tolist() if offsets is not None else [0] * n
    sessions = schedule.session_id.tolist() if schedule.session_id is not None else [None] * n
    turns = schedule.turn.tolist() if schedule.turn is not None else [None] * n
    names = schedule.stage_names
    stages = ([names[k] for k in schedule.load_stage.tolist()] if schedule.load_stage is not None
              else [None] * n)
    warmup = schedule.warmup_requests
    with gc_paused():
        return [
            PlannedRequest(i, prompts[i], p, o, s, i < warmup, session, turn, stage)
            for i, (p, o, s, session, turn, stage) in enumerate(
                zip(schedule.prompt_tokens.tolist(), schedule.output_tokens.tolist(), planned,
                    sessions, turns, stages)
            )
        ]


def _group_sessions(requests: list[PlannedRequest]) -> list[list[PlannedRequest]]:
    """Requests grouped by session (contiguous, in order)."""
    out: list[list[PlannedRequest]] = []
    for request in requests:
        if request.turn == 0 or not out:
            out.append([])
        out[-1].append(request)
    return out


def split_session_plans(schedule: Schedule, requests: list[PlannedRequest], num_actors: int,
                        max_inflight: int, max_context_tokens: int | None) -> list[ActorPlan]:
    """Sessions over at most ``num_actors`` actors; a session lives on one actor.

    Open loop: session j goes to actor j % A. Closed loop with N users: user u runs sessions
    u, u+N, ... and lives on actor u % A.
    """
    if num_actors < 1:
        raise ValueError(f"num_actors must be >= 1, got {num_actors}")
    sessions = _group_sessions(requests)
    common: dict[str, Any] = dict(
        think_time_s=float(schedule.think_time_s), duration_s=schedule.duration_s,
        max_inflight=max_inflight, session_think_time_s=float(schedule.session_think_time_s),
        max_context_tokens=max_context_tokens,
    )
    if schedule.offsets_ns is not None:
        count = min(num_actors, len(sessions)) or 1
        return [ActorPlan(actor_index=a, open_loop=True, sessions=sessions[a::count], **common)
                for a in range(count)]
    users_total = schedule.concurrency
    if users_total is None or users_total < 1:
        raise ValueError(f"closed-loop schedule needs concurrency >= 1, got {users_total}")
    users = [sessions[u::users_total] for u in range(users_total)]
    count = min(num_actors, users_total)
    return [ActorPlan(actor_index=a, open_loop=False, session_users=users[a::count], **common)
            for a in range(count)]


def split_plans(
    schedule: Schedule, requests: list[PlannedRequest], num_actors: int, max_inflight: int
) -> list[ActorPlan]:
    """Split requests over at most ``num_actors`` actors.

    Open loop: request i goes to actor i % A (ordered by planned time within an actor).
    Closed loop with N users: user u gets requests u, u+N, u+2N, ...; user u runs on actor u % A.
    Actors that would get nothing are not planned.
    """
    if num_actors < 1:
        raise ValueError(f"num_actors must be >= 1, got {num_actors}")
    common = dict(
        think_time_s=float(schedule.think_time_s),
        duration_s=schedule.duration_s,
        max_inflight=max_inflight,
    )
    if schedule.offsets_ns is not None:
        count = min(num_actors, len(requests)) or 1
        return [
            ActorPlan(
                actor_index=a,
                open_loop=True,
                requests=sorted(requests[a::count], key=lambda r: (r.scheduled_ns, r.request_id)),
                **common,  # type: ignore[arg-type]
            )
            for a in range(count)
        ]
    users_total = schedule.concurrency
    if users_total is None or users_total < 1:
        raise ValueError(f"closed-loop schedule needs concurrency >= 1, got {users_total}")
    users = [requests[u::users_total] for u in range(users_total)]
    count = min(num_actors, users_total)
    return [
        ActorPlan(actor_index=a, open_loop=False, users=users[a::count], **common)  # type: ignore[arg-type]
        for a in range(count)
    ]
