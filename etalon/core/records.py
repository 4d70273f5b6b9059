"""Request records: one per request, and a columnar table of many for vectorised metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Iterable

import numpy as np

from etalon.core.deadline_batch import gather_tokens

STATUS_OK = "ok"
STATUS_ERROR = "error"


@dataclass(slots=True)
class RequestRecord:
    """What one request did, as measured by the client.

    All ``*_ns`` values are integer nanoseconds since the run's planned start (t=0 of the
    schedule), read from the monotonic clock of the process that sent the request.
    ``token_ns`` holds the arrival time of every output token; a chunk that carries k tokens
    contributes k entries, the extra ones equal to the chunk's arrival time.

    Per content chunk (same index in each list): ``chunk_ns`` its arrival time, ``chunk_tokens`` the
    tokens it carried (``chunk_tokens_source``: ``continuous_usage``, ``tokenizer`` or ``spread``; see
    ``etalon.clients.chunks``), ``chunk_reasoning`` whether its text was reasoning rather than answer.
    ``token_ns`` is ``chunk_ns`` repeated ``chunk_tokens`` times. ``server_output_tokens`` is the
    server's ``usage.completion_tokens`` claim as sent (None if absent or not a count);
    ``output_tokens`` the count used (``output_tokens_source``). ``flags`` name the output checks the
    request failed (``etalon.clients.chunks.FLAGS``); a flagged request may still be ``ok``.
    """

    request_id: int
    actor: int = 0
    scheduled_ns: int = 0
    sent_ns: int = 0
    first_token_ns: int | None = None
    token_ns: list[int] = field(default_factory=list)
    end_ns: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    output_tokens_source: str = "usage"
    requested_output_tokens: int = 0
    status: str = STATUS_OK
    http_status: int | None = None
    error_type: str | None = None
    error_message: str | None = None
    warmup: bool = False
    # Multi-turn sessions: which conversation and which turn (0-based) this request was.
    session_id: int | None = None
    turn: int | None = None
    # What the server reported: usage.prompt_tokens and usage.prompt_tokens_details.cached_tokens.
    server_prompt_tokens: int | None = None
    cached_tokens: int | None = None
    # The load ramp stage the request was planned in (None outside ramps).
    load_stage: str | None = None
    chunk_ns: list[int] = field(default_factory=list)
    chunk_tokens: list[int] = field(default_factory=list)
    chunk_reasoning: list[bool] = field(default_factory=list)
    chunk_tokens_source: str | None = None
    finish_reason: str | None = None
    flags: list[str] = field(default_factory=list)
    server_output_tokens: int | None = None
    reasoning_tokens: int | None = None
    node_id: str | None = None  # the Ray node that sent it (None outside Ray)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestRecord:
        known = {k: v for k, v in data.items() if k in cls.__slots__}  # type: ignore[attr-defined]
        return cls(**known)


@dataclass(frozen=True)
class RecordTable:
    """Columnar view of many records (index i = i-th record).

    Token times are ragged: the tokens of request i are
    ``token_ns[token_offsets[i]:token_offsets[i + 1]]`` (int64, ns since run start).
    ``first_token_ns`` is -1 where a request produced no token.
    Content chunks are ragged the same way (``chunk_ns``, ``chunk_tokens``, ``chunk_reasoning`` by
    ``chunk_offsets``); ``chunk_offsets`` is None for a table built without chunk data, and so are
    ``flags`` (a tuple of flag names per request), ``finish_reason`` and ``reasoning_tokens`` (-1:
    unknown).
    """

    request_id: np.ndarray
    actor: np.ndarray
    scheduled_ns: np.ndarray
    sent_ns: np.ndarray
    first_token_ns: np.ndarray
    end_ns: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    requested_output_tokens: np.ndarray
    ok: np.ndarray
    warmup: np.ndarray
    http_status: np.ndarray
    error_type: np.ndarray
    token_ns: np.ndarray
    token_offsets: np.ndarray
    chunk_ns: np.ndarray | None = None
    chunk_tokens: np.ndarray | None = None
    chunk_reasoning: np.ndarray | None = None
    chunk_offsets: np.ndarray | None = None
    flags: np.ndarray | None = None
    finish_reason: np.ndarray | None = None
    reasoning_tokens: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.request_id.shape[0])

    @classmethod
    def from_records(cls, records: Iterable[RequestRecord]) -> RecordTable:
        recs = list(records)
        n = len(recs)
        counts = np.fromiter((len(r.token_ns) for r in recs), dtype=np.int64, count=n)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        tokens = np.fromiter(
            (t for r in recs for t in r.token_ns), dtype=np.int64, count=int(offsets[-1])
        )

        def col(name: str, dtype: Any, default: Any = 0) -> np.ndarray:
            values = (getattr(r, name) for r in recs)
            return np.fromiter(
                (default if v is None else v for v in values), dtype=dtype, count=n
            )

        return cls(
            request_id=col("request_id", np.int64),
            actor=col("actor", np.int64),
            scheduled_ns=col("scheduled_ns", np.int64),
            sent_ns=col("sent_ns", np.int64),
            first_token_ns=col("first_token_ns", np.int64, -1),
            end_ns=col("end_ns", np.int64),
            prompt_tokens=col("prompt_tokens", np.int64),
            output_tokens=col("output_tokens", np.int64),
            requested_output_tokens=col("requested_output_tokens", np.int64),
            ok=np.fromiter((r.status == STATUS_OK for r in recs), dtype=bool, count=n),
            warmup=col("warmup", bool, False),
            http_status=col("http_status", np.int64, 0),
            error_type=np.array([r.error_type or "" for r in recs], dtype=object),
            token_ns=tokens,
            token_offsets=offsets,
            **_chunk_columns(recs),
        )

    def select(self, mask: np.ndarray) -> RecordTable:
        """Rows where ``mask`` is true, token arrays re-packed."""
        idx = np.flatnonzero(mask)
        token_ns, offsets = gather_tokens(self.token_ns, self.token_offsets, idx)
        fields = {
            name: getattr(self, name)[idx]
            for name in self.__dataclass_fields__
            if name not in _RAGGED and getattr(self, name) is not None
        }
        if self.chunk_offsets is not None:
            chunk_gather, fields["chunk_offsets"] = _gather(self.chunk_offsets, idx)
            for name in ("chunk_ns", "chunk_tokens", "chunk_reasoning"):
                fields[name] = getattr(self, name)[chunk_gather]
        return RecordTable(**fields, token_ns=token_ns, token_offsets=offsets)


_RAGGED = ("token_ns", "token_offsets", "chunk_ns", "chunk_tokens", "chunk_reasoning", "chunk_offsets")


def _gather(offsets: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions of rows ``idx``'s items, their new offsets) of a ragged column."""
    counts = np.diff(offsets)[idx]
    new = np.zeros(idx.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=new[1:])
    return np.repeat(offsets[idx] - new[:-1], counts) + np.arange(int(new[-1])), new


def _chunk_columns(recs: list[RequestRecord]) -> dict[str, np.ndarray]:
    n = len(recs)
    counts = np.fromiter((len(r.chunk_ns) for r in recs), dtype=np.int64, count=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    total = int(offsets[-1])

    def ragged(name: str, dtype: Any) -> np.ndarray:
        lists = [getattr(r, name) for r in recs]
        if any(len(v) != k for v, k in zip(lists, counts.tolist())):
            lists = [_padded(v, k) for v, k in zip(lists, counts.tolist())]
        return np.fromiter(chain.from_iterable(lists), dtype=dtype, count=total)

    flags = np.empty(n, dtype=object)
    flags[:] = [tuple(r.flags) for r in recs]
    return {
        "chunk_ns": ragged("chunk_ns", np.int64),
        "chunk_tokens": ragged("chunk_tokens", np.int64),
        "chunk_reasoning": ragged("chunk_reasoning", bool),
        "chunk_offsets": offsets,
        "flags": flags,
        "finish_reason": np.array([r.finish_reason or "" for r in recs], dtype=object),
        "reasoning_tokens": np.fromiter(
            (-1 if r.reasoning_tokens is None else r.reasoning_tokens for r in recs), dtype=np.int64, count=n
        ),
    }


def _padded(values: list[Any], n: int) -> list[Any]:
    """Exactly ``n`` values (records from older files may lack a per-chunk list)."""
    return values if len(values) == n else (list(values) + [0] * n)[:n]
