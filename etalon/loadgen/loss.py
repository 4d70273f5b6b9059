"""A load actor that dies mid-run: its undrained requests become ``actor_lost`` records, the others go on."""

from __future__ import annotations

import time
from typing import Any

from etalon.core.records import STATUS_ERROR, RequestRecord
from etalon.loadgen.plan import ActorPlan

ACTOR_LOST = "actor_lost"


class ActorLossBook:
    """Per actor: the requests sent whose records have not come back (as of the last poll).

    ``seen(i, status, batch)`` after each poll of actor ``i``; ``lost(i, why)`` when it died returns
    one error record per request it had sent and not handed over. Requests sent after the last poll
    and before the death are not known to have been sent, so they are not counted.
    """

    def __init__(self) -> None:
        self._plans: dict[int, dict[int, Any]] = {}
        self._pending: dict[int, set[int]] = {}
        self.start_wall_ns = 0
        self.deaths: list[str] = []

    def plan(self, plans: list[ActorPlan]) -> None:
        for i, plan in enumerate(plans):
            requests = [*plan.requests, *(r for user in plan.users for r in user),
                        *(r for turns in getattr(plan, "sessions", ()) for r in turns),
                        *(r for user in getattr(plan, "session_users", ()) for turns in user for r in turns)]
            self._plans[i] = {r.request_id: r for r in requests}
            self._pending[i] = set()

    def seen(self, actor: int, status: dict[str, Any], batch: list[dict[str, Any]]) -> None:
        drained = {d["request_id"] for d in batch}
        self._pending[actor] = set(status.get("unreported", ())) - drained

    def lost(self, actor: int, why: str) -> list[dict[str, Any]]:
        now_ns = max(0, time.time_ns() - self.start_wall_ns) if self.start_wall_ns else 0
        message = f"load actor {actor} died ({why[:200]}); this request's result was lost with it"
        records = []
        for request_id in sorted(self._pending.pop(actor, set())):
            planned = self._plans.get(actor, {}).get(request_id)
            scheduled_ns = planned.scheduled_ns if planned is not None else 0
            records.append(RequestRecord(
                request_id=request_id, actor=actor, scheduled_ns=scheduled_ns,
                sent_ns=scheduled_ns, end_ns=max(now_ns, scheduled_ns),
                prompt_tokens=planned.prompt_tokens if planned is not None else 0,
                requested_output_tokens=planned.max_tokens if planned is not None else 0,
                status=STATUS_ERROR, error_type=ACTOR_LOST, error_message=message,
                warmup=planned.warmup if planned is not None else False,
            ).to_dict())
        self.deaths.append(
            f"load actor {actor} died ({why[:200]}): {len(records)} in-flight request(s) counted as "
            f"lost (error_type {ACTOR_LOST}), the rest of its plan not sent; the other actors went on"
        )
        return records
