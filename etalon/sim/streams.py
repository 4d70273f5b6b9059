"""One response's token stream: OpenAI SSE chunk bytes written straight to the transport."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Callable

import orjson

from etalon.sim.modes import StreamMode
from etalon.sim.tokens import TokenTable

# A client that stops reading gets cut off instead of growing the server's memory.
MAX_WRITE_BUFFER_BYTES = 8 * 1024 * 1024
MALFORMED_LINE = b"data: {this is not json\n\n"


@dataclass(slots=True)
class StreamFaults:
    """Faults drawn for one request: the token index (1-based) where each one strikes."""

    stall_at: int | None = None
    stall_s: float = 0.0
    disconnect_at: int | None = None
    malformed_at: int | None = None


@dataclass(slots=True)
class StreamSpec:
    """What the request asked for, after validation."""

    request_id: str  # X-Request-Id or generated; names the request in the emission log
    response_id: str  # the OpenAI "id" field, always generated (safe to embed)
    api: str  # "chat" or "completions"
    model: str
    prompt_tokens: int
    output_tokens: int
    finish_reason: str
    streaming: bool
    include_usage: bool
    continuous_usage: bool = False  # stream_options.continuous_usage_stats: usage in every chunk
    reported_tokens: int | None = None  # a wrong final usage.completion_tokens (sim.modes)
    number: int = 0  # arrival number; seeds the request's mode draws
    # Prompt tokens served from the prefix cache; set by an engine with caching on, else None.
    cached_tokens: int | None = None
    arrival_ns: int = 0  # when the request reached the server (monotonic), for the emission log


class TokenStream:
    """Writes one token per chunk (or what its ``mode`` says: etalon.sim.modes); the scheduler
    calls ``emit`` when the next chunk is due."""

    __slots__ = ("spec", "table", "transport", "chunked", "faults", "emitted", "token_ns", "mode",
                 "done", "alive", "seq_id", "step_ns", "_prefix", "_suffix", "_backlog", "_on_fault", "_offset")

    def __init__(self, spec: StreamSpec, table: TokenTable, transport: Any, chunked: bool,
                 faults: StreamFaults, on_fault: Callable[[str], None], offset: int,
                 mode: StreamMode | None = None) -> None:
        self.spec = spec
        self.mode = mode
        self.table = table
        self.transport = transport
        self.chunked = chunked
        self.faults = faults
        self.emitted = 0
        self.token_ns: list[int] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.alive = True
        self.seq_id = -1  # set by the engine scheduler
        # The modelled duration of the engine step that emitted each chunk (kept for the emission
        # log only): what the cost model planned, beside token_ns, when the machine delivered it.
        self.step_ns: list[int] | None = None
        self._on_fault = on_fault
        self._offset = offset
        self._backlog: list[bytes] | None = None
        head = _chunk_head(spec)
        if spec.api == "chat":
            self._prefix = head + b'"delta":{"content":'
            self._suffix = b'},"logprobs":null,"finish_reason":null}]}\n\n'
        else:
            self._prefix = head + b'"text":'
            self._suffix = b',"logprobs":null,"finish_reason":null}]}\n\n'

    def emit(self, now_ns: int) -> bool:
        """Write the next token (plus the closing chunks after the last); False once finished."""
        if not self.alive:
            return False
        k = self.emitted
        if self.mode is None:
            n = 1
            self.token_ns.append(now_ns)
        else:
            n = self.mode.chunk_size(self.spec.output_tokens - k)
            self.token_ns.extend([now_ns] * n)
        self.emitted = k + n
        if self.spec.streaming:
            self._write_token(k, n)
        if self.emitted >= self.spec.output_tokens:
            self.finish()
            return False
        return self.alive

    def _write_token(self, k: int, n: int) -> None:
        """Write the chunk of tokens ``k..k+n-1`` (0-based); faults strike at 1-based indices."""
        table = self.table
        if self.mode is None:
            body = self._prefix + table.json_texts[(self._offset + k) % len(table.json_texts)] + self._suffix
        else:
            body = self.mode.chunk_bytes(self, k, n)
        if k == 0 and self.spec.api == "chat":
            body = _role_chunk(self.spec) + body  # the role rides with the first token
        if _hits(self.faults.malformed_at, k, n):
            self._on_fault("malformed")
            body = MALFORMED_LINE + body
        if self.emitted >= self.spec.output_tokens:
            body += self._closing_chunks()
        self._write(body)
        if _hits(self.faults.stall_at, k, n) and self.alive:
            self._on_fault("stall")
            self._backlog = []
            asyncio.get_running_loop().call_later(self.faults.stall_s, self._flush_backlog)
        if _hits(self.faults.disconnect_at, k, n) and self.alive:
            self._on_fault("disconnect")
            self.transport.close()
            self.alive = False
            self._resolve()

    def _write(self, body: bytes) -> None:
        frame = b"%x\r\n%s\r\n" % (len(body), body) if self.chunked else body
        if self._backlog is not None:
            self._backlog.append(frame)
            return
        transport = self.transport
        if transport is None or transport.is_closing() or (
                transport.get_write_buffer_size() > MAX_WRITE_BUFFER_BYTES):
            self.alive = False
            self._resolve()
            return
        transport.write(frame)

    def _flush_backlog(self) -> None:
        backlog, self._backlog = self._backlog or [], None
        if backlog and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(backlog))
            if self.emitted >= self.spec.output_tokens:
                self._resolve()

    def _closing_chunks(self) -> bytes:
        spec = self.spec
        head = _chunk_head(spec)
        if spec.api == "chat":
            out = head + b'"delta":{},"logprobs":null,"finish_reason":"%s"}]}\n\n' % (
                spec.finish_reason.encode())
        else:
            out = head + b'"text":"","logprobs":null,"finish_reason":"%s"}]}\n\n' % (
                spec.finish_reason.encode())
        if spec.include_usage:
            final = usage(spec) if self.mode is None else self.mode.final_usage(usage(spec, self.mode.reported),
                                                                                spec.output_tokens)
            out += b"data: " + orjson.dumps({
                "id": spec.response_id, "object": _object_name(spec), "created": _created(),
                "model": spec.model, "choices": [], "usage": final}) + b"\n\n"
        return out + b"data: [DONE]\n\n"

    def finish(self) -> None:
        if self._backlog is None:  # a stalled stream resolves when its backlog is flushed
            self._resolve()

    def _resolve(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def text(self) -> str:
        return self.table.text(self._offset, self.emitted)

    def planned_output_ids(self) -> list[int]:
        """Token ids of every output token this stream will send (what its text re-encodes to)."""
        return self.table.output_ids(self._offset, self.spec.output_tokens)


def _hits(at: int | None, k: int, n: int) -> bool:
    """Whether the 1-based token index ``at`` is among tokens ``k+1..k+n``."""
    return at is not None and k < at <= k + n


def usage(spec: StreamSpec, completion_tokens: int | None = None) -> dict[str, Any]:
    """OpenAI ``usage``; ``prompt_tokens_details.cached_tokens`` when the prefix cache is on."""
    done = spec.output_tokens if completion_tokens is None else completion_tokens
    out: dict[str, Any] = {"prompt_tokens": spec.prompt_tokens, "completion_tokens": done,
                           "total_tokens": spec.prompt_tokens + done}
    if spec.cached_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": spec.cached_tokens}
    return out


def _created() -> int:
    return int(time.time())


def _object_name(spec: StreamSpec) -> str:
    return "chat.completion.chunk" if spec.api == "chat" else "text_completion"


def _chunk_head(spec: StreamSpec) -> bytes:
    return b'data: {"id":"%s","object":"%s","created":%d,"model":%s,"choices":[{"index":0,' % (
        spec.response_id.encode(), _object_name(spec).encode(), _created(), orjson.dumps(spec.model))


def _role_chunk(spec: StreamSpec) -> bytes:
    return _chunk_head(spec) + (
        b'"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n')
