"""Mooncake-format prefix-reuse traces: JSONL rows of ``timestamp`` (ms), ``input_length``,
``output_length`` and ``hash_ids`` (one id per block of ``block_size_tokens`` prompt tokens).

Rows that share a hash id share that block's tokens exactly (ids are chained: equal ids mean an
equal prefix), so replaying the built prompts reproduces the trace's prefix reuse. Block k of a
row has ``block_size_tokens`` tokens except the last, which holds the rest of ``input_length``.
Replay options: ``time_scale`` (< 1 replays faster), a window ``start_s``/``end_s`` (seconds after
the first row), ``length_scale`` (block size, last-block and output lengths scaled; the reuse
structure is kept).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from etalon.core.arrivals import ReplayArrivals
from etalon.core.prompts import word_pool
from etalon.core.sources import Prompt, PromptPlan, child_seed

if TYPE_CHECKING:
    from etalon.core.prompts import Tokenizer
    from etalon.core.workload import Schedule

DEFAULT_BLOCK_SIZE_TOKENS = 512
BUILTIN_TRACES = {"etalon-mooncake-sample": Path(__file__).resolve().parent / "assets" / "mooncake_sample.jsonl"}
_CORPUS_WORDS = 1 << 15


class MooncakeTraceError(ValueError):
    """A trace file is missing or has a bad row; the message names the file and line."""


@dataclass(frozen=True, eq=False)
class MooncakeTrace:
    """The rows of a trace window: arrival seconds from the window start, lengths, block ids."""

    path: str
    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    hash_ids: list[list[int]]
    block_size_tokens: int

    def __len__(self) -> int:
        return int(self.input_tokens.size)

    def block_reuse(self) -> float:
        """Share of prompt tokens in full blocks whose hash id an earlier row already had."""
        seen: set[int] = set()
        reused = 0
        for ids, tokens in zip(self.hash_ids, self.input_tokens.tolist()):
            full = min(len(ids), tokens // self.block_size_tokens)
            reused += sum(self.block_size_tokens for h in ids[:full] if h in seen)
            seen.update(ids)
        return reused / float(self.input_tokens.sum())


def _fail(path: str, line: int, problem: str) -> MooncakeTraceError:
    return MooncakeTraceError(f"mooncake trace {path}: line {line}: {problem}")


def _whole(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _parse_row(path: str, line: int, row: Any, block: int) -> tuple[float, int, int, list[int]]:
    if not isinstance(row, dict):
        raise _fail(path, line, "a row must be a JSON object")
    stamp = row.get("timestamp")
    if isinstance(stamp, bool) or not isinstance(stamp, (int, float)) or not math.isfinite(stamp):
        raise _fail(path, line, f"timestamp must be a number of ms, got {stamp!r}")
    for key in ("input_length", "output_length"):
        if not _whole(row.get(key), 1):
            raise _fail(path, line, f"{key} must be a whole number >= 1, got {row.get(key)!r}")
    ids = row.get("hash_ids")
    if not isinstance(ids, list) or not ids or not all(_whole(h, 0) for h in ids):
        raise _fail(path, line, f"hash_ids must be a non-empty list of ids >= 0, got {ids!r}")
    tokens = row["input_length"]
    if not (len(ids) - 1) * block < tokens <= len(ids) * block:
        raise _fail(path, line, f"{len(ids)} hash_ids of {block}-token blocks cannot hold input_length="
                                f"{tokens} (the block size does not fit this trace; set block_size_tokens)")
    return float(stamp), tokens, row["output_length"], ids


def read_mooncake(path: str, block_size_tokens: int = DEFAULT_BLOCK_SIZE_TOKENS,
                  start_s: float | None = None, end_s: float | None = None,
                  length_scale: float = 1.0) -> MooncakeTrace:
    """Read and validate a trace, then cut its window and scale its lengths."""
    if not _whole(block_size_tokens, 1):
        raise MooncakeTraceError(f"mooncake trace {path}: block_size_tokens must be >= 1, got {block_size_tokens!r}")
    if not (isinstance(length_scale, (int, float)) and math.isfinite(length_scale) and length_scale > 0):
        raise MooncakeTraceError(f"mooncake trace {path}: length_scale must be > 0, got {length_scale!r}")
    resolved = BUILTIN_TRACES.get(path) or Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise MooncakeTraceError(f"mooncake trace {path}: no such file ({resolved})")
    rows = _read_rows(str(path), resolved, resolved.stat().st_mtime_ns, block_size_tokens)
    stamps_s = np.array([r[0] for r in rows]) / 1000.0
    arrival_s = stamps_s - stamps_s[0]
    keep = np.ones(arrival_s.size, dtype=bool)
    if start_s is not None:
        keep &= arrival_s >= start_s
    if end_s is not None:
        keep &= arrival_s < end_s
    picked = [rows[i] for i in np.flatnonzero(keep)]
    if not picked:
        raise MooncakeTraceError(f"mooncake trace {path}: no row in the window start_s={start_s}, end_s={end_s}")
    arrival = arrival_s[keep] - arrival_s[keep][0]
    block = max(1, round(block_size_tokens * length_scale))
    inputs = [(len(ids) - 1) * block + max(1, round((n - (len(ids) - 1) * block_size_tokens) * length_scale))
              for _, n, _, ids in picked]
    outputs = [max(1, round(o * length_scale)) for _, _, o, _ in picked]
    return MooncakeTrace(str(path), arrival, np.array(inputs, dtype=np.int64), np.array(outputs, dtype=np.int64),
                         [ids for *_, ids in picked], block)


@lru_cache(maxsize=4)
def _read_rows(path: str, resolved: Path, mtime_ns: int, block: int) -> list[tuple[float, int, int, list[int]]]:
    rows = []
    previous = -math.inf
    try:
        handle = resolved.open(encoding="utf-8")
    except OSError as exc:
        raise MooncakeTraceError(f"mooncake trace {path}: cannot read: {exc}") from None
    with handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as exc:
                raise _fail(path, line, f"not valid JSON ({exc.msg})") from None
            row = _parse_row(path, line, raw, block)
            if row[0] < previous:
                raise _fail(path, line, f"timestamp {row[0]:g} ms is before the previous row's "
                                        f"{previous:g} ms (rows must be sorted by time)")
            previous = row[0]
            rows.append(row)
    if not rows:
        raise MooncakeTraceError(f"mooncake trace {path}: is empty (no rows)")
    return rows


def mooncake_arrivals(path: str, time_scale: float = 1.0, start_s: float | None = None,
                      end_s: float | None = None, block_size_tokens: int = DEFAULT_BLOCK_SIZE_TOKENS) -> ReplayArrivals:
    """The trace window's arrival times, for ``workload.arrival``."""
    trace = read_mooncake(path, block_size_tokens, start_s, end_s)
    try:
        return ReplayArrivals(trace.arrival_s, time_scale=time_scale)
    except ValueError as exc:
        raise MooncakeTraceError(f"mooncake trace {path}: {exc}") from None


@dataclass(frozen=True)
class MooncakePrompts:
    """Prompts rebuilt from the trace window's hash ids (request i = row i), for ``workload.prompts``."""

    path: str
    block_size_tokens: int = DEFAULT_BLOCK_SIZE_TOKENS
    start_s: float | None = None
    end_s: float | None = None
    length_scale: float = 1.0

    def __post_init__(self) -> None:
        read_mooncake(self.path, self.block_size_tokens, self.start_s, self.end_s, self.length_scale)

    def trace(self) -> MooncakeTrace:
        return read_mooncake(self.path, self.block_size_tokens, self.start_s, self.end_s, self.length_scale)

    def build(self, schedule: Schedule, tokenizer: Tokenizer, seed: int,
              max_total_tokens: int | None) -> PromptPlan:
        trace = self.trace()
        n = len(schedule)
        if n > len(trace):
            raise MooncakeTraceError(f"mooncake trace {self.path}: {n} requests planned, the window has "
                                     f"{len(trace)} rows")
        inputs, outputs = trace.input_tokens[:n], trace.output_tokens[:n]
        if max_total_tokens is not None and int((inputs + 1).max()) > max_total_tokens:
            line = int(np.argmax(inputs + 1 > max_total_tokens))
            raise MooncakeTraceError(f"mooncake trace {self.path}: row {line} has input_length={int(inputs[line])}, "
                                     f"more than the model's context of {max_total_tokens} tokens allows")
        blocks = BlockTexts(tokenizer, seed, trace.block_size_tokens)
        prompts: list[Prompt] = [blocks.prompt(ids, int(tokens))
                                 for ids, tokens in zip(trace.hash_ids[:n], inputs.tolist())]
        if max_total_tokens is not None:
            outputs = np.minimum(outputs, max_total_tokens - inputs)
        return PromptPlan(prompts, inputs.copy(), outputs.copy())


_MASK64 = (1 << 64) - 1


def _mix64(value: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit hash of an int (cheap, seeded by the caller)."""
    z = value & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


class BlockTexts:
    """The text of each hash id's block: two leading words unique to the id, then a seeded slice
    of a word corpus; every piece is one token that keeps its count after any text."""

    def __init__(self, tokenizer: Tokenizer, seed: int, block_size_tokens: int) -> None:
        pool = word_pool(tokenizer)
        self.words = pool.words
        rng = np.random.default_rng(child_seed(seed, 5))
        pieces = self.words[rng.integers(len(self.words), size=_CORPUS_WORDS)]
        self.text = "".join(pieces)
        if len(tokenizer.encode(self.text)) != _CORPUS_WORDS:
            raise MooncakeTraceError("the tokenizer merges words across spaces; trace blocks cannot be exact")
        self.char_at = np.concatenate(([0], np.cumsum([len(p) for p in pieces]))).tolist()
        self.block = block_size_tokens
        self.seed = seed
        self._slots: dict[int, tuple[str, int]] = {}

    def _slot(self, hash_id: int) -> tuple[str, int]:
        """(two leading words, corpus start) of a hash id, fixed at its first use."""
        slot = self._slots.get(hash_id)
        if slot is None:
            k, num = len(self._slots), len(self.words)
            if k >= num * num:
                raise MooncakeTraceError(f"more than {num * num} distinct hash ids")
            start = _mix64(self.seed * 0x9E3779B97F4A7C15 + hash_id) % _CORPUS_WORDS
            slot = (self.words[k % num] + self.words[k // num], start)
            self._slots[hash_id] = slot
        return slot

    def _tokens(self, hash_id: int, count: int) -> str:
        lead, start = self._slot(hash_id)
        if count <= 2:
            return lead if count == 2 else lead[: lead.index(" ", 1)] if " " in lead[1:] else lead
        parts, body, pos = [lead], count - 2, start
        while body > 0:
            take = min(body, _CORPUS_WORDS - pos)
            parts.append(self.text[self.char_at[pos]:self.char_at[pos + take]])
            body, pos = body - take, 0
        return "".join(parts)

    def prompt(self, hash_ids: list[int], input_tokens: int) -> str:
        last = input_tokens - (len(hash_ids) - 1) * self.block
        return "".join(self._tokens(h, self.block) for h in hash_ids[:-1]) + self._tokens(hash_ids[-1], last)
