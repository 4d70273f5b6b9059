"""The schedule: planned send offsets and token counts of every request of a run (pure, seeded)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np

from etalon.core.arrivals import Arrivals, ClosedLoop, OpenLoopArrivals
from etalon.core.lengths import LengthSampler, clip_lengths
from etalon.core.sessions import Sessions, session_layout

# A closed loop bounded only by duration_s cannot know how many requests its users will send.
# The schedule holds enough for every user to finish CLOSED_LOOP_REQUESTS_PER_USER_S requests per
# second for the whole duration (a request under 0.5 s each, end to end), capped at
# CLOSED_LOOP_MAX_REQUESTS; the driver stops at duration_s, or earlier if the schedule runs out.
CLOSED_LOOP_REQUESTS_PER_USER_S = 2.0
CLOSED_LOOP_MAX_REQUESTS = 100_000
_NS_PER_S = 1_000_000_000


@dataclass(frozen=True, eq=False)
class Schedule:
    """What to send: one entry per request, warm-up requests first.

    ``offsets_ns`` are planned send times (int64 ns from run start, non-decreasing) for an open
    loop, or None for a closed loop of ``concurrency`` users with ``think_time_s`` between requests.
    The first ``warmup_requests`` requests are sent but excluded from metrics. No request is sent
    after ``duration_s`` (None: no time limit).

    Sessions (``session_id`` set): request i is turn ``turn[i]`` of session ``session_id[i]``,
    a session's turns contiguous and in order; ``prompt_tokens`` is the turn's new user message
    and ``offsets_ns`` (open loop) its session's start. ``think_time_s`` is then the pause between
    a user's sessions (closed loop) and ``session_think_time_s`` the pause between turns.
    ``load_stage[i]`` indexes ``stage_names`` (ramps).
    """

    offsets_ns: np.ndarray | None
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    warmup_requests: int
    concurrency: int | None
    think_time_s: float
    duration_s: float | None
    session_id: np.ndarray | None = None
    turn: np.ndarray | None = None
    session_think_time_s: float = 0.0
    load_stage: np.ndarray | None = None
    stage_names: tuple[str, ...] = ()
    clipped_requests: int = 0  # requests shortened to fit max_total_tokens

    def __post_init__(self) -> None:
        n = self.prompt_tokens.shape[0]
        if self.output_tokens.shape != (n,) or (self.offsets_ns is not None and self.offsets_ns.shape != (n,)):
            raise ValueError("offsets_ns, prompt_tokens and output_tokens must have one entry per request")
        if (self.offsets_ns is None) == (self.concurrency is None):
            raise ValueError("a schedule has either offsets_ns (open loop) or concurrency (closed loop)")

    def __len__(self) -> int:
        return int(self.prompt_tokens.shape[0])

    @property
    def num_sessions(self) -> int:
        return 0 if self.session_id is None or not self.session_id.size else int(self.session_id[-1]) + 1

    @property
    def closed_loop(self) -> bool:
        return self.offsets_ns is None

    @property
    def measured_requests(self) -> int:
        """Requests that count in the metrics (all but the warm-up)."""
        return max(len(self) - self.warmup_requests, 0)


def _validate(num_requests: int | None, duration_s: float | None, warmup_requests: int,
              max_total_tokens: int | None, seed: int) -> None:
    if num_requests is None and duration_s is None:
        raise ValueError("set workload.num_requests or workload.duration_s (or both): a run needs an end")
    if num_requests is not None and (isinstance(num_requests, bool) or not isinstance(num_requests, numbers.Integral)
                                     or num_requests < 1):
        raise ValueError(f"num_requests must be an integer >= 1, got {num_requests!r}")
    if duration_s is not None and (isinstance(duration_s, bool) or not isinstance(duration_s, numbers.Real)
                                   or not math.isfinite(duration_s) or duration_s <= 0):
        raise ValueError(f"duration_s must be a finite number > 0, got {duration_s!r}")
    if isinstance(warmup_requests, bool) or not isinstance(warmup_requests, numbers.Integral) or warmup_requests < 0:
        raise ValueError(f"warmup_requests must be an integer >= 0, got {warmup_requests!r}")
    if max_total_tokens is not None and (isinstance(max_total_tokens, bool)
                                         or not isinstance(max_total_tokens, numbers.Integral)
                                         or max_total_tokens < 2):
        raise ValueError(f"max_total_tokens must be an integer >= 2, got {max_total_tokens!r}")
    if seed is None or isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")


def closed_loop_request_count(arrival: ClosedLoop, num_requests: int | None, duration_s: float | None,
                              warmup_requests: int) -> int:
    """How many requests a closed-loop schedule holds (see CLOSED_LOOP_REQUESTS_PER_USER_S)."""
    if num_requests is not None:
        return warmup_requests + num_requests
    assert duration_s is not None
    per_user = math.ceil(duration_s * CLOSED_LOOP_REQUESTS_PER_USER_S)
    return warmup_requests + min(arrival.concurrency * per_user, CLOSED_LOOP_MAX_REQUESTS)


def build_schedule(arrival: Arrivals, lengths: LengthSampler, *, num_requests: int | None,
                   duration_s: float | None, warmup_requests: int, max_total_tokens: int | None,
                   seed: int, sessions: Sessions | None = None,
                   session_turns: Callable[[int], np.ndarray] | None = None) -> Schedule:
    """Draw the run's schedule. The same arguments give the same schedule, bit for bit.

    Arrivals and lengths draw from independent child streams of ``SeedSequence(seed)``, so
    changing the arrival process leaves the lengths unchanged (and vice versa). Warm-up requests
    come first and are in addition to ``num_requests``. With ``sessions``, ``num_requests`` and
    ``warmup_requests`` count sessions, and lengths are drawn per turn; ``session_turns(count)``
    (a dataset's conversations) replaces the drawn number of turns per session.
    """
    _validate(num_requests, duration_s, warmup_requests, max_total_tokens, seed)
    arrival_seed, lengths_seed = np.random.SeedSequence(int(seed)).spawn(2)
    if arrival.closed_loop:
        arrival = cast(ClosedLoop, arrival)
        offsets_ns = None
        count = closed_loop_request_count(arrival, num_requests, duration_s, warmup_requests)
        concurrency, think_time_s = int(arrival.concurrency), float(arrival.think_time_s)
    else:
        total = None if num_requests is None else warmup_requests + num_requests
        offsets_s = cast(OpenLoopArrivals, arrival).offsets_s(total, duration_s, np.random.default_rng(arrival_seed))
        offsets_ns = np.rint(np.asarray(offsets_s, dtype=np.float64) * _NS_PER_S).astype(np.int64)
        count, concurrency, think_time_s = int(offsets_ns.size), None, 0.0
    stage_of = getattr(arrival, "stage_of", None)
    load_stage = None if stage_of is None or offsets_ns is None else stage_of(offsets_ns / _NS_PER_S)
    extra: dict[str, object] = {}
    warmup = int(min(warmup_requests, count))
    if sessions is not None:
        turns = (session_turns(count) if session_turns is not None
                 else sessions.draw_turns(count, np.random.default_rng(np.random.SeedSequence([int(seed), 7]))))
        session_id, turn = session_layout(turns)
        if offsets_ns is not None:
            offsets_ns = offsets_ns[session_id]
        if load_stage is not None:
            load_stage = load_stage[session_id]
        warmup = int(turns[:warmup].sum())
        count = int(session_id.size)
        extra = {"session_id": session_id, "turn": turn, "session_think_time_s": float(sessions.think_time_s)}
    prompt, output = lengths.sample(count, np.random.default_rng(lengths_seed))
    prompt, output = np.asarray(prompt, dtype=np.int64), np.asarray(output, dtype=np.int64)
    clipped = 0
    if max_total_tokens is not None:
        clipped = int(((prompt + output) > int(max_total_tokens)).sum())
        prompt, output = clip_lengths(prompt, output, int(max_total_tokens))
    return Schedule(
        offsets_ns=offsets_ns,
        prompt_tokens=prompt,
        output_tokens=output,
        warmup_requests=warmup,
        concurrency=concurrency,
        think_time_s=think_time_s,
        duration_s=None if duration_s is None else float(duration_s),
        load_stage=load_stage,
        stage_names=tuple(arrival.stage_names()) if load_stage is not None else (),  # type: ignore[union-attr]
        clipped_requests=clipped,
        **extra,  # type: ignore[arg-type]
    )
