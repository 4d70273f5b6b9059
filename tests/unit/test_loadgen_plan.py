"""Pure planning of load: requests from a Schedule and their split over actors and users."""

from __future__ import annotations

import numpy as np
import pytest

from etalon.core.workload import Schedule
from etalon.loadgen.plan import build_requests, split_plans


def make(n: int, offsets: list[int] | None, users: int | None = None) -> Schedule:
    return Schedule(
        offsets_ns=None if offsets is None else np.array(offsets, dtype=np.int64),
        prompt_tokens=np.arange(10, 10 + n, dtype=np.int64),
        output_tokens=np.arange(100, 100 + n, dtype=np.int64),
        warmup_requests=2, concurrency=users, think_time_s=0.5, duration_s=None,
    )


def test_build_requests_carries_schedule_values() -> None:
    sched = make(4, [0, 5, 5, 9])
    reqs = build_requests(sched, ["a", "b", "c", "d"])
    assert [(r.request_id, r.prompt, r.prompt_tokens, r.max_tokens, r.scheduled_ns, r.warmup) for r in reqs] == [
        (0, "a", 10, 100, 0, True), (1, "b", 11, 101, 5, True),
        (2, "c", 12, 102, 5, False), (3, "d", 13, 103, 9, False),
    ]
    with pytest.raises(ValueError, match="got 3 prompts for a schedule of 4 requests"):
        build_requests(sched, ["a", "b", "c"])


def test_open_loop_round_robin_over_actors() -> None:
    sched = make(7, [0, 1, 2, 3, 4, 5, 6])
    plans = split_plans(sched, build_requests(sched, list("abcdefg")), 3, 8)
    assert [[r.request_id for r in p.requests] for p in plans] == [[0, 3, 6], [1, 4], [2, 5]]
    assert all(p.open_loop and p.max_inflight == 8 and not p.users for p in plans)
    assert len(split_plans(sched, build_requests(sched, list("abcdefg")), 20, 8)) == 7


def test_closed_loop_users_round_robin_then_over_actors() -> None:
    sched = make(10, None, users=3)
    plans = split_plans(sched, build_requests(sched, list("abcdefghij")), 2, 8)
    assert [[[r.request_id for r in u] for u in p.users] for p in plans] == [
        [[0, 3, 6, 9], [2, 5, 8]],  # actor 0 runs users 0 and 2
        [[1, 4, 7]],  # actor 1 runs user 1
    ]
    assert [p.num_requests for p in plans] == [7, 3] and plans[0].think_time_s == 0.5
    assert len(split_plans(sched, build_requests(sched, list("abcdefghij")), 5, 8)) == 3


def test_connections_to_warm_match_the_first_requests() -> None:
    second = 1_000_000_000
    sched = make(6, [0, 0, second // 2, second - 1, second, 3 * second])
    (plan,) = split_plans(sched, build_requests(sched, list("abcdef")), 1, 8)
    assert plan.connections_to_warm() == 4  # planned before t = 1 s; 1 s and 3 s are later
    assert plan.connections_to_warm(window_s=4.0) == 6
    plan.duration_s = 0.4  # nothing is sent after the duration
    assert plan.connections_to_warm() == 2
    plan.max_inflight = 1
    assert plan.connections_to_warm(window_s=4.0) == 1
    late = make(2, [5 * second, 6 * second])
    (plan,) = split_plans(late, build_requests(late, ["a", "b"]), 1, 8)
    assert plan.connections_to_warm() == 1  # at least one, for the first request
    closed = make(10, None, users=3)
    plans = split_plans(closed, build_requests(closed, list("abcdefghij")), 2, 8)
    assert [p.connections_to_warm() for p in plans] == [2, 1]  # one per user of the actor
    plans = split_plans(closed, build_requests(closed, list("abcdefghij")), 1, 2)
    assert plans[0].connections_to_warm() == 2  # capped by max_inflight (3 users)
