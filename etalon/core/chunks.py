"""Chunk-level and reasoning metrics, and output-check counts, of a RecordTable (pure, vectorised).

Definitions (next to DESIGN section 3; token times follow the multi-token rule of
``etalon.clients.openai``: a chunk of k tokens delivers all k at its arrival):
- ``inter_chunk_latency_s``: gaps between consecutive content chunks that carry tokens, pooled.
- ``tokens_per_chunk``: tokens carried by each such chunk, pooled.
- ``ttft_answer_s``: first answer (non-reasoning) chunk - sent; equals TTFT without reasoning.
- ``tbt_reasoning_s`` / ``tbt_answer_s``: the TBT gaps between two reasoning tokens / two answer
  tokens (the gap from the last reasoning token to the first answer token is in neither).
- ``reasoning_tokens`` / ``answer_tokens`` per request: the server's
  ``completion_tokens_details.reasoning_tokens`` when sent, else the reasoning chunks' tokens.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from etalon.core.deadlines import NS_PER_S
from etalon.core.records import RecordTable

# flag -> what it means (summary, README). A flagged request keeps its status.
FLAGS: dict[str, str] = {
    "output_short": "fewer output tokens than requested (max_tokens)",
    "output_long": "more output tokens than requested (max_tokens not honoured)",
    "finish_length_short": "finish_reason 'length' although fewer than max_tokens tokens came back",
    "usage_invalid": "usage.completion_tokens is not a non-negative integer; not used",
    "usage_implausible": "usage claims more tokens than max_tokens or than the text streamed; not used",
    "usage_below_chunks": "usage claims fewer tokens than the per-chunk counts or the chunks streamed",
    "chunk_usage_invalid": "per-chunk usage stats are not a non-decreasing count; not used",
    "reasoning_only": "reasoning was streamed but no answer",
    "text_outside_choices": "an event carried text outside 'choices'; it was not counted",
}
# Flags that mean the output is not what was asked for: endpoint.output_check=fail fails on these.
CHECK_FLAGS = ("output_short", "output_long", "finish_length_short", "usage_invalid", "usage_implausible",
               "reasoning_only")

# (metric, unit) of the distributions this module adds to a run summary.
CHUNK_DISTRIBUTIONS: tuple[tuple[str, str], ...] = (
    ("inter_chunk_latency", "s"),
    ("tokens_per_chunk", "tokens"),
    ("ttft_answer", "s"),
    ("tbt_reasoning", "s"),
    ("tbt_answer", "s"),
    ("reasoning_tokens", "tokens"),
    ("answer_tokens", "tokens"),
)


@dataclass(frozen=True)
class ChunkValues:
    """Pooled or per-request values behind each of ``CHUNK_DISTRIBUTIONS`` (empty: no data)."""

    values: dict[str, np.ndarray] = field(default_factory=dict)
    totals: dict[str, float] = field(default_factory=dict)


def _segments(offsets: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(offsets.shape[0] - 1), np.diff(offsets))


def aligned_rows(t: RecordTable) -> np.ndarray:
    """Rows whose token times are their chunk times repeated by chunk tokens (chunk data usable)."""
    if t.chunk_offsets is None or t.chunk_tokens is None:
        return np.zeros(len(t), dtype=bool)
    per_row = np.bincount(_segments(t.chunk_offsets), weights=t.chunk_tokens, minlength=len(t)).astype(np.int64)
    has_chunks = np.diff(t.chunk_offsets) > 0
    return has_chunks & (per_row == np.diff(t.token_offsets))


def chunk_values(t: RecordTable, among: np.ndarray | None = None) -> ChunkValues:
    """The values of ``CHUNK_DISTRIBUTIONS`` over the rows of ``t`` that carry chunk data (and are
    true in the mask ``among``, when given)."""
    rows = aligned_rows(t) if among is None else aligned_rows(t) & among
    if not rows.any():
        return ChunkValues()
    t = t if rows.all() else t.select(rows)
    assert t.chunk_ns is not None and t.chunk_tokens is not None and t.chunk_reasoning is not None
    seg = _segments(t.chunk_offsets)  # type: ignore[arg-type]
    carrying = np.flatnonzero(t.chunk_tokens > 0)
    cseg, cns = seg[carrying], t.chunk_ns[carrying]
    same = cseg[1:] == cseg[:-1]
    reasoning = t.chunk_reasoning[carrying]
    values = {
        "inter_chunk_latency": np.diff(cns)[same] / NS_PER_S,
        "tokens_per_chunk": t.chunk_tokens[carrying].astype(np.float64),
        "ttft_answer": _first_answer_s(t, cseg, cns, reasoning),
        **_part_gaps(t),
        **_part_tokens(t),
    }
    totals = {f"{k}_total": float(values[k].sum()) for k in ("reasoning_tokens", "answer_tokens")}
    return ChunkValues(values, totals)


def _first_answer_s(t: RecordTable, cseg: np.ndarray, cns: np.ndarray, reasoning: np.ndarray) -> np.ndarray:
    """Per request: first answer chunk - sent (s); NaN where no answer chunk arrived."""
    out = np.full(len(t), np.nan)
    answer = ~reasoning
    rows, first = np.unique(cseg[answer], return_index=True)
    out[rows] = (cns[answer][first] - t.sent_ns[rows]) / NS_PER_S
    return out


def _part_gaps(t: RecordTable) -> dict[str, np.ndarray]:
    token_reasoning = np.repeat(t.chunk_reasoning, t.chunk_tokens)  # type: ignore[arg-type]
    tseg = _segments(t.token_offsets)
    inside = tseg[1:] == tseg[:-1]
    gaps = np.diff(t.token_ns) / NS_PER_S
    both_r = token_reasoning[1:] & token_reasoning[:-1]
    both_a = ~token_reasoning[1:] & ~token_reasoning[:-1]
    return {"tbt_reasoning": gaps[inside & both_r], "tbt_answer": gaps[inside & both_a]}


def _part_tokens(t: RecordTable) -> dict[str, np.ndarray]:
    reported = t.reasoning_tokens if t.reasoning_tokens is not None else np.full(len(t), -1)
    reasoning = np.clip(np.where(reported >= 0, reported, 0), 0, t.output_tokens)
    return {
        "reasoning_tokens": reasoning.astype(np.float64),
        "answer_tokens": (t.output_tokens - reasoning).astype(np.float64),
    }


def flag_counts(t: RecordTable) -> dict[str, int]:
    """Requests per output-check flag (sorted by name); empty when the table has no flag data."""
    if t.flags is None:
        return {}
    counts = Counter(flag for flags in t.flags for flag in set(flags))
    return dict(sorted(counts.items()))


def flagged_requests(t: RecordTable, names: tuple[str, ...] | None = None) -> int:
    """Requests with at least one flag (of ``names``, if given)."""
    if t.flags is None:
        return 0
    return sum(1 for flags in t.flags if flags and (names is None or any(f in names for f in flags)))


def finish_reason_counts(t: RecordTable) -> dict[str, int]:
    """Requests per server ``finish_reason`` ("none" where the server sent none)."""
    if t.finish_reason is None:
        return {}
    return dict(sorted(Counter(str(r) or "none" for r in t.finish_reason).items()))
