"""A load actor lost mid-run (its process or its whole node died): what it owed is counted, never dropped.

The driver keeps every record the actor delivered before it died. Of the rest of its plan, the
requests that were due by the time the loss was seen may have been in flight (or finished and not
yet drained): each becomes one ``actor_lost`` error record. Requests planned later were never sent
and get no record, as in any stopped run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from etalon.core.records import STATUS_ERROR, RequestRecord
from etalon.loadgen.plan import ActorPlan

ACTOR_LOST = "actor_lost"


@dataclass(frozen=True)
class LostActor:
    """One actor the driver could no longer reach: where it ran, when it was seen gone, why."""

    actor: int
    node_id: str | None
    lost_at_ns: int  # run-relative (ns since the planned start), driver's view
    cause: str

    def describe(self) -> str:
        node = f" on node {self.node_id[:12]}" if self.node_id else ""
        return f"load actor {self.actor}{node} was lost mid-run ({self.cause})"


def due_unrecorded(plan: ActorPlan, delivered: bytearray, lost_at_ns: int) -> list[Any]:
    """The plan's requests that were due by ``lost_at_ns`` and never delivered.

    Open loop: every undelivered request planned at or before the loss. A chain of requests sent
    one after another (a closed-loop user, a session's turns, a user's sessions back to back) has at
    most one in flight: its first undelivered one (for an open-loop session, once it has started).
    """
    due = [r for r in plan.requests if not delivered[r.request_id] and r.scheduled_ns <= lost_at_ns]
    started = [s for s in plan.sessions if s and s[0].scheduled_ns <= lost_at_ns]
    chains = [*plan.users, *started, *([r for s in user for r in s] for user in plan.session_users)]
    for chain in chains:
        pending = [r for r in chain if not delivered[r.request_id]]
        if pending:
            due.append(pending[0])
    return due


def lost_records(plan: ActorPlan, delivered: bytearray, lost: LostActor) -> list[dict[str, Any]]:
    """One ``actor_lost`` error record (as a dict) per request the lost actor may have had in flight."""
    message = f"{lost.describe()}; the request may have been in flight and its outcome is unknown"
    return [
        RequestRecord(
            request_id=r.request_id,
            actor=lost.actor,
            scheduled_ns=r.scheduled_ns,
            sent_ns=r.scheduled_ns,  # when it was actually sent is unknown: the plan's time
            end_ns=max(lost.lost_at_ns, r.scheduled_ns),
            prompt_tokens=r.prompt_tokens,
            requested_output_tokens=r.max_tokens,
            status=STATUS_ERROR,
            error_type=ACTOR_LOST,
            error_message=message,
            warmup=r.warmup,
            node_id=lost.node_id,
        ).to_dict()
        for r in due_unrecorded(plan, delivered, lost.lost_at_ns)
    ]
