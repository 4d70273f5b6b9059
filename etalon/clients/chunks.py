"""Tokens per content chunk, reasoning vs answer, and the output checks of one finished stream (pure).

Per-chunk token counts (``chunk_tokens``), in order of preference (``chunk_tokens_source``):
1. ``continuous_usage``: the server sent a cumulative ``usage.completion_tokens`` with every content
   chunk (vLLM's ``stream_options.continuous_usage_stats``); a chunk carries the increase since the
   previous content chunk. Tokens counted in text-less events before a chunk (a swallowed
   ``<think>``) ride with that chunk; tokens counted after the last chunk (an EOS the server does
   not stream) are added to the last chunk, so the counts always sum to the output count.
2. ``tokenizer``: each chunk's text is tokenized (only when there are more tokens than chunks).
3. ``spread``: more tokens than chunks: every chunk gets one and the extra ones are shared in
   proportion to text length (largest remainder).
With fewer tokens than chunks the first ``n`` chunks carry one token each and the rest none.

The output count used (``output_tokens``, source ``output_tokens_source``) is the server's
``usage.completion_tokens`` unless it is invalid or implausible (more than ``max_tokens``, or more
than one token per streamed UTF-8 byte plus ``SPECIAL_TOKEN_ALLOWANCE`` plus reasoning tokens the
server reports without streaming them): then the continuous
count, the tokenizer's count or the number of chunks is used, the claim stays in
``server_output_tokens`` and the request is flagged.

Without any usage (llama.cpp's server streams none) a stream that ends with ``finish_reason``
"length" is the server saying it generated exactly ``max_tokens`` tokens by its own tokenizer: that
count is used (``finish_length``) when it is possible (no more chunks than it, no more than the
plausible limit) and no usage claim of the stream was rejected. Re-tokenizing the text instead
miscounts whenever the text does not round-trip through the tokenizer (random-weight models, byte
fallback: 30-35 counted for 32 generated).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from itertools import chain
from operator import sub
from typing import Any, Callable, Sequence

import numpy as np

from etalon.core.chunks import CHECK_FLAGS, FLAGS  # noqa: F401 - re-exported: the flag names
from etalon.core.records import STATUS_OK, RequestRecord

# Tokens a server may count without streaming any text for them (<think>, </think>, EOS, ...).
SPECIAL_TOKEN_ALLOWANCE = 16
FINISH_REASON_CHARS = 100



@dataclass
class StreamChunks:
    """What the hot loop collected: per content chunk its time, text, reasoning bit, usage claim."""

    times: list[int]
    texts: list[str]
    reasoning: list[bool]
    cumulative: list[Any]  # usage.completion_tokens sent with the chunk (None if not sent)
    usage: dict[str, Any] | None
    finish_reason: Any = None
    text_outside_choices: int = 0


def count_of(value: Any) -> int | None:
    """A token count as a server should send it: a non-negative int (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def finish_record(
    record: RequestRecord, chunks: StreamChunks, count_tokens: Callable[[str], int] | None
) -> None:
    """Fill the record's token fields, reasoning counts and flags from the collected chunks."""
    flags: list[str] = []
    try:
        joined = "".join(chunks.texts)
    except TypeError:  # a hostile server's numbers or lists as text
        chunks.texts = [t if isinstance(t, str) else str(t) for t in chunks.texts]
        joined = "".join(chunks.texts)
    text_bytes = len(joined.encode("utf-8", "surrogatepass"))
    limit = _plausible_limit(record.requested_output_tokens, text_bytes + _hidden_reasoning(chunks))
    claim = _usage_claim(chunks.usage, flags)
    record.server_output_tokens = claim
    if claim is not None and claim > limit:
        flags.append("usage_implausible")
        claim = None
    per_chunk = _continuous_counts(chunks.cumulative, limit, flags)
    # A server whose usage was rejected above is not trusted for its finish_reason either.
    length_stop = None if flags else _length_stop(record.requested_output_tokens, chunks, limit)
    n, record.output_tokens_source, per_chunk = _output_count(claim, per_chunk, chunks, count_tokens, flags,
                                                              length_stop)
    if per_chunk is not None:
        record.chunk_tokens, record.chunk_tokens_source = per_chunk, "continuous_usage"
    else:
        record.chunk_tokens, record.chunk_tokens_source = _allocated(n, chunks, count_tokens)
    record.chunk_ns = chunks.times
    record.chunk_reasoning = chunks.reasoning
    record.output_tokens = n
    record.token_ns = token_times(chunks.times, record.chunk_tokens)
    record.first_token_ns = record.token_ns[0] if record.token_ns else None
    record.reasoning_tokens = _reasoning_tokens(chunks, record.chunk_tokens, n)
    record.finish_reason = _finish_reason(chunks.finish_reason)
    if chunks.text_outside_choices:
        flags.append("text_outside_choices")
    if record.status == STATUS_OK:
        flags += output_flags(record, chunks.reasoning)
    record.flags = flags


def _plausible_limit(requested: int, text_bytes: int) -> int:
    limit = text_bytes + SPECIAL_TOKEN_ALLOWANCE
    return min(limit, requested) if requested > 0 else limit


def _hidden_reasoning(chunks: StreamChunks) -> int:
    """Reasoning tokens the server reports but did not stream (OpenAI hides them): no text for them."""
    if any(chunks.reasoning):
        return 0
    details = chunks.usage.get("completion_tokens_details") if isinstance(chunks.usage, dict) else None
    return (count_of(details.get("reasoning_tokens")) or 0) if isinstance(details, dict) else 0


def _usage_claim(usage: Any, flags: list[str]) -> int | None:
    if not isinstance(usage, dict) or "completion_tokens" not in usage:
        return None
    claim = count_of(usage["completion_tokens"])
    if claim is None:
        flags.append("usage_invalid")
    return claim


def _continuous_counts(cumulative: Sequence[Any], limit: int, flags: list[str]) -> list[int] | None:
    """Tokens per chunk from cumulative usage sent with every chunk; None when not (all) sent."""
    if not cumulative or cumulative.count(None) == len(cumulative):
        return None
    try:  # C-level checks: array("q") takes only integers (None, str and float raise) below 2**63
        counts = array("q", cumulative)
    except (TypeError, OverflowError):
        counts = None
    steps = list(map(sub, counts, chain((0,), counts))) if counts else []
    if not steps or counts[-1] > limit or min(steps) < 0:  # type: ignore[index]
        flags.append("chunk_usage_invalid")
        return None
    return steps


def _length_stop(requested: int, chunks: StreamChunks, limit: int) -> int | None:
    """``max_tokens`` when the stream ended on finish_reason "length" and that count is possible."""
    if requested > 0 and chunks.finish_reason == "length" and len(chunks.times) <= requested <= limit:
        return requested
    return None


def _output_count(
    claim: int | None, per_chunk: list[int] | None, chunks: StreamChunks,
    count_tokens: Callable[[str], int] | None, flags: list[str], length_stop: int | None = None,
) -> tuple[int, str, list[int] | None]:
    """(output count used, its source, per-chunk counts adjusted to it or None)."""
    if per_chunk is not None:
        streamed = sum(per_chunk)
        if claim is None or claim == streamed:
            return streamed, "usage" if claim is not None else "continuous_usage", per_chunk
        if claim > streamed:  # counted after the last content chunk (EOS, stop string)
            return claim, "usage", [*per_chunk[:-1], per_chunk[-1] + claim - streamed]
        flags.append("usage_below_chunks")
        return streamed, "continuous_usage", per_chunk
    if claim is not None:
        if claim < len(chunks.times):
            flags.append("usage_below_chunks")
        return claim, "usage", None
    if length_stop is not None:
        return length_stop, "finish_length", None
    if count_tokens is not None:
        return (count_tokens("".join(chunks.texts)) if chunks.texts else 0), "tokenizer", None
    return len(chunks.times), "chunks", None


def _allocated(
    n: int, chunks: StreamChunks, count_tokens: Callable[[str], int] | None
) -> tuple[list[int], str]:
    """Per-chunk counts summing to ``min(n, chunks)``-or-``n`` (rules 2 and 3 of the docstring)."""
    c = len(chunks.times)
    if c == 0:
        return [], "spread"  # tokens reported by usage but no text ever arrived: no times known
    if n <= c:
        return [1] * n + [0] * (c - n), "spread"
    if count_tokens is not None:
        weights = np.fromiter((max(count_tokens(t), 1) - 1 for t in chunks.texts), dtype=np.float64, count=c)
        if weights.sum() > 0:
            return share(n, weights), "tokenizer"
    lengths = np.fromiter((len(t) for t in chunks.texts), dtype=np.float64, count=c)
    return share(n, lengths), "spread"


def share(n: int, weights: np.ndarray) -> list[int]:
    """One token per chunk plus the ``n - chunks`` extra shared by weight (largest remainder).

    With ``weights = per-chunk tokenizer count - 1`` and ``n`` equal to their sum plus the number of
    chunks, every chunk gets exactly its tokenizer count."""
    extra = n - weights.shape[0]
    total = weights.sum()
    quota = extra * weights / total if total > 0 else np.full(weights.shape[0], extra / weights.shape[0])
    counts = np.floor(quota).astype(np.int64)
    leftover = extra - int(counts.sum())
    if leftover:
        counts[np.argsort(counts - quota, kind="stable")[:leftover]] += 1
    return (counts + 1).tolist()


def token_times(chunk_ns: list[int], chunk_tokens: list[int]) -> list[int]:
    """Each chunk's time once per token it carried (the TBT rule: see ``etalon.clients.openai``)."""
    if len(chunk_tokens) == len(chunk_ns) and chunk_tokens.count(1) == len(chunk_tokens):
        return chunk_ns
    return np.repeat(np.asarray(chunk_ns, dtype=np.int64), chunk_tokens).tolist()


def _reasoning_tokens(chunks: StreamChunks, chunk_tokens: list[int], n: int) -> int | None:
    """``usage.completion_tokens_details.reasoning_tokens`` if valid (<= n), else counted from chunks."""
    details = chunks.usage.get("completion_tokens_details") if isinstance(chunks.usage, dict) else None
    reported = count_of(details.get("reasoning_tokens")) if isinstance(details, dict) else None
    if reported is not None and reported <= n:
        return reported
    if not any(chunks.reasoning):
        return None
    return int(sum(k for k, r in zip(chunk_tokens, chunks.reasoning) if r))


def _finish_reason(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    return text[:FINISH_REASON_CHARS]


def output_flags(record: RequestRecord, reasoning: list[bool]) -> list[str]:
    """Requested vs received, finish_reason and reasoning-only checks of an ok record."""
    out = []
    requested, n = record.requested_output_tokens, record.output_tokens
    if requested > 0 and n < requested:
        out.append("output_short")
        if record.finish_reason == "length":
            out.append("finish_length_short")
    elif requested > 0 and n > requested:
        out.append("output_long")
    if reasoning and all(reasoning):
        out.append("reasoning_only")
    return out
