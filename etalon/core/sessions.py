"""Multi-turn sessions: how many turns each conversation has, and when a turn may be sent.

A session's turn k resends the whole history (earlier user messages and the text the server
returned) plus a new user message; the schedule holds, per turn, the new message's token count
and the turn's output budget. Sessions arrive by the workload's arrival process (open loop: one
start time per session) or run back to back on N users (closed loop).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

END_COMPLETED = "completed"
END_FAILED = "failed_turn"
END_CONTEXT = "context_limit"
END_UNFINISHED = "unfinished"


@dataclass(frozen=True)
class Sessions:
    """Conversations of ``turns`` turns (or uniform in [turns, turns_max]); the next turn is sent
    ``think_time_s`` after the previous answer ended. ``from_dataset``: each session plays one
    conversation of the prompt source (a dataset with ``conversations: true``), all its user
    turns (at most ``turns_max``)."""

    turns: int = 3
    turns_max: int | None = None
    think_time_s: float = 0.0
    from_dataset: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.turns, bool) or not isinstance(self.turns, numbers.Integral) or self.turns < 1:
            raise ValueError(f"sessions.turns must be an integer >= 1, got {self.turns!r}")
        if self.turns_max is not None and not self.from_dataset and (isinstance(self.turns_max, bool)
                                           or not isinstance(self.turns_max, numbers.Integral)
                                           or self.turns_max < self.turns):
            raise ValueError(f"sessions.turns_max must be an integer >= sessions.turns={self.turns}, "
                             f"got {self.turns_max!r}")
        if (isinstance(self.think_time_s, bool) or not isinstance(self.think_time_s, numbers.Real)
                or not math.isfinite(self.think_time_s) or self.think_time_s < 0):
            raise ValueError(f"sessions.think_time_s must be a finite number >= 0, got {self.think_time_s!r}")

    def draw_turns(self, num_sessions: int, rng: np.random.Generator) -> np.ndarray:
        """Turns of each session (int64)."""
        if self.turns_max is None or self.turns_max == self.turns:
            return np.full(num_sessions, self.turns, dtype=np.int64)
        return rng.integers(self.turns, self.turns_max, size=num_sessions, endpoint=True).astype(np.int64)


def session_layout(turns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(session_id, turn) of every request when session s's turns are contiguous, in order."""
    turns = np.asarray(turns, dtype=np.int64)
    session_id = np.repeat(np.arange(turns.size, dtype=np.int64), turns)
    starts = np.concatenate(([0], np.cumsum(turns)[:-1])) if turns.size else np.zeros(0, np.int64)
    turn = np.arange(session_id.size, dtype=np.int64) - np.repeat(starts, turns)
    return session_id, turn


def turn_fits(history_tokens: int, user_tokens: int, max_tokens: int, limit_tokens: int | None) -> bool:
    """Whether a turn (history + new message + its answer budget) fits the model's context."""
    return limit_tokens is None or history_tokens + user_tokens + max_tokens <= limit_tokens
