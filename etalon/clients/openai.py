"""Streaming OpenAI-compatible clients (chat and completions) that turn each request into a record.

Token timing rule (documented contract of this module):
- Every SSE event whose choice carries non-empty text (``delta.content``, ``delta.reasoning_content``
  or ``delta.reasoning`` for chat, ``text`` for completions) is a *content chunk*; its time is the
  monotonic time at which the read that completed the event returned, minus ``epoch_ns``.
  Events without text (role-only, finish-only, usage-only, keep-alive comments) are not tokens.
- The output token count ``n`` comes from ``usage.completion_tokens`` when the server sends it
  and it is plausible (source ``usage``), else from the tokenizer over the concatenated text
  (``tokenizer``), else it is the number of content chunks (``chunks``); see
  ``etalon.clients.chunks`` for the plausibility rule and the flags.
- Each content chunk's token count (``chunk_tokens``) comes from per-chunk usage
  (``endpoint.continuous_usage_stats``, which vLLM and the simulator honour), else from the
  tokenizer over the chunk's text, else from sharing the ``n - c`` extra tokens in proportion to
  text length (the spread rule); they always sum to ``n`` (``n < c``: the first ``n`` chunks carry
  one token each, the rest none).
- TBT when a chunk carries several tokens (used by every TBT, TPOT and deadline metric): a chunk
  of k tokens delivers all k at its arrival time, so ``token_ns`` repeats the chunk's time k times.
  The first token of the chunk gets the whole gap since the previous chunk, the other k - 1 get
  gaps of 0. Hence mean TBT over a request equals TPOT (no token is dropped, unlike counting one
  gap per chunk), p99 TBT shows the stall a user actually saw, and in the deadline recurrence a
  chunk is late if its first token is; its other tokens are met and bank a full TBT deadline each.
  The gap between chunks themselves is reported apart as inter-chunk latency, next to tokens per
  chunk.
- A chat chunk whose delta has no ``content`` but ``reasoning_content``/``reasoning`` is a
  reasoning chunk (``chunk_reasoning``); TTFT is the first token of any kind, time to first answer
  token the first non-reasoning chunk.

Connections: a client sends on the actor's pooled session. By default (``client.warm_connections``)
the pool is warmed before the run, so the first requests do not pay for TCP connect; see
``etalon.clients.warmup`` for what that changes in the figures and how to restore cold starts.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Callable

import aiohttp
import numpy as np
import orjson

from etalon.clients.chunks import StreamChunks, finish_record
from etalon.clients.base import (
    EndpointProtocolError,
    EndpointSpec,
    EndpointStatusError,
    EndpointUnreachableError,
    PlannedRequest,
)
from etalon.core.redaction import redact_text
from etalon.core.records import STATUS_ERROR, RequestRecord

ERROR_MESSAGE_CHARS = 500
_DONE = b"[DONE]"


class _StreamState:
    """What one response stream produced so far (mutated by the hot loop)."""

    __slots__ = ("times", "texts", "usages", "marked", "usage", "done", "error_type", "error_message",
                 "finish_reason", "outside")

    def __init__(self) -> None:
        self.times: list[int] = []
        self.texts: list[str] = []
        self.usages: list[Any] = []  # the usage sent with each content chunk (None if none)
        # (chunk index, choice) of chunks from reads holding the bytes "reasoning": only those can
        # be reasoning chunks; they are told apart after the stream, off the timing path.
        self.marked: list[tuple[int, dict[str, Any]]] = []
        self.finish_reason: Any = None
        self.outside = 0  # events with text outside "choices"
        self.usage: dict[str, Any] | None = None
        self.done = False
        self.error_type: str | None = None
        self.error_message: str | None = None

    def fail(self, error_type: str, message: str) -> None:
        if self.error_type is None:  # the first failure is the cause; later ones are fallout
            self.error_type = error_type
            self.error_message = message[:ERROR_MESSAGE_CHARS]


class OpenAIStreamingClient:
    """Shared streaming machinery; subclasses say which path, body and text field to use."""

    path = "/chat/completions"

    def __init__(self, spec: EndpointSpec) -> None:
        self.spec = spec
        self._url = spec.base_url.rstrip("/") + self.path
        self._headers = spec.request_headers()
        self._timeout = aiohttp.ClientTimeout(
            total=spec.timeout_s, sock_connect=spec.connect_timeout_s
        )
        self._count_tokens = _token_counter(spec.tokenizer) if spec.tokenizer else None
        self._secrets = spec.secret_values()
        # Request ids are UUID strings (llama.cpp's server rejects a bare integer): a random version-4
        # prefix per client, the request's index in the last 12 hex digits (to match server logs).
        self._uuid_prefix = str(uuid.uuid4())[:24]

    def request_uuid(self, request_id: int) -> str:
        """The request-id header value: a UUID string whose last group is the request index in hex."""
        return f"{self._uuid_prefix}{request_id & 0xFFFFFFFFFFFF:012x}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self._url!r}, model={self.spec.model!r})"

    def prompt_fields(self, request: PlannedRequest) -> dict[str, Any]:
        if isinstance(request.prompt, list):
            return {"messages": request.prompt}
        return {"messages": [{"role": "user", "content": request.prompt}]}

    @staticmethod
    def chunk_text(choice: dict[str, Any]) -> str | None:
        delta = choice.get("delta")
        if not delta:
            return None
        return delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")

    @staticmethod
    def reasoning_flags(marked: list[tuple[int, dict[str, Any]]], n: int) -> list[bool]:
        """Per content chunk: is its text reasoning (the delta has no answer ``content``)?
        ``marked``: the (index, choice) of the only chunks that can be."""
        flags = [False] * n
        for i, choice in marked:
            delta = choice.get("delta")
            flags[i] = not (isinstance(delta, dict) and delta.get("content"))
        return flags

    def body(self, request: PlannedRequest) -> bytes:
        body: dict[str, Any] = {
            "model": self.spec.model,
            **self.prompt_fields(request),
            "max_tokens": request.max_tokens,
            "stream": True,
            "stream_options": (
                {"include_usage": True, "continuous_usage_stats": True}
                if self.spec.continuous_usage_stats else {"include_usage": True}
            ),
        }
        if self.spec.ignore_eos:
            body["ignore_eos"] = True
            body["min_tokens"] = request.max_tokens
        body.update(self.spec.extra_body)
        return orjson.dumps(body)

    async def send(
        self, session: aiohttp.ClientSession, request: PlannedRequest, epoch_ns: int
    ) -> RequestRecord:
        """Send one streaming request; every failure (and cancellation) becomes an error record."""
        record, _ = await self._exchange(session, request, epoch_ns)
        return record

    async def exchange(
        self, session: aiohttp.ClientSession, request: PlannedRequest, epoch_ns: int
    ) -> tuple[RequestRecord, str]:
        """``send``, also returning the text the server streamed (a conversation's next history)."""
        record, state = await self._exchange(session, request, epoch_ns)
        return record, "".join(state.texts)

    async def _exchange(
        self, session: aiohttp.ClientSession, request: PlannedRequest, epoch_ns: int
    ) -> tuple[RequestRecord, _StreamState]:
        record = RequestRecord(
            request_id=request.request_id,
            scheduled_ns=request.scheduled_ns,
            prompt_tokens=request.prompt_tokens,
            requested_output_tokens=request.max_tokens,
            warmup=request.warmup,
            session_id=request.session_id,
            turn=request.turn,
            load_stage=request.load_stage,
        )
        state = _StreamState()
        headers = self._headers
        if self.spec.request_id_header:
            headers = {**headers, self.spec.request_id_header: self.request_uuid(request.request_id)}
        data = self.body(request)
        record.sent_ns = time.monotonic_ns() - epoch_ns
        try:
            # Redirects are not followed: the key would go to another host, and a 302/303 turns the
            # POST into a GET. A redirect is an error record naming where it pointed.
            async with session.post(
                self._url, data=data, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as resp:
                record.http_status = resp.status
                if resp.status >= 400:
                    state.fail("http_error", f"HTTP {resp.status}: {await _error_text(resp)}")
                elif resp.status >= 300:
                    state.fail("redirect", _redirect_message(resp))
                else:
                    await self._read_stream(resp, epoch_ns, state)
        except asyncio.CancelledError:
            # Stopping a run cancels in-flight requests; they are data, not lost work.
            state.fail("cancelled", "request cancelled when the run was stopped")
        except Exception as exc:  # noqa: BLE001 - every failure must become a record
            state.fail(*_classify(exc, started=record.http_status is not None))
        record.end_ns = time.monotonic_ns() - epoch_ns
        self._finish_guarded(record, state)
        return record, state

    def _finish_guarded(self, record: RequestRecord, state: _StreamState) -> None:
        """``_finish``, and whatever the server sent, one record; secrets never in its message."""
        try:
            self._finish(record, state)
        except Exception as exc:  # noqa: BLE001 - a record is owed for every request sent
            record.token_ns, record.first_token_ns, record.output_tokens = [], None, 0
            record.status, record.error_type = STATUS_ERROR, "client_error"
            record.error_message = f"cannot build the record: {type(exc).__name__}: {exc}"
        if record.error_message and self._secrets:
            record.error_message = redact_text(record.error_message, self._secrets)

    async def _read_stream(
        self, resp: aiohttp.ClientResponse, epoch_ns: int, state: _StreamState
    ) -> None:
        # Hot loop: one clock read per network read, one orjson.loads per event, two list appends
        # per content chunk. Events are split on blank lines ourselves (faster than readline), and
        # readany() is awaited directly (iter_any() adds an iterator frame per read).
        clock = time.monotonic_ns
        loads = orjson.loads
        chunk_text = self.chunk_text
        times = state.times
        texts = state.texts
        usages = state.usages
        marked = state.marked
        readany = resp.content.readany
        pending = b""
        parsed = 0  # JSON events seen: a stream of [DONE] alone answered nothing
        while data := await readany():
            now_ns = clock() - epoch_ns
            if pending:
                data = pending + data
            if b"\r" in data:
                data = data.replace(b"\r\n", b"\n")
            maybe_reasoning = b"reasoning" in data  # C-level scan; chunks are told apart after the stream
            events = data.split(b"\n\n")
            pending = events.pop()
            for event in events:
                if event.startswith(b"data:") and b"\n" not in event:
                    payload: bytes | None = event[5:]
                else:
                    payload = _data_field(event)
                if payload is None:
                    continue
                try:
                    obj = loads(payload)
                    parsed += 1
                    choices = obj.get("choices")
                    usage = obj.get("usage")
                    if choices:
                        choice = choices[0]
                        text = chunk_text(choice)
                        if text:
                            if type(text) is not str:
                                state.fail("malformed_chunk", f"text is not a string: {event[:200]!r}")
                                return
                            times.append(now_ns)
                            texts.append(text)
                            usages.append(usage)
                            if maybe_reasoning:
                                marked.append((len(times) - 1, choice))
                        if choice.get("finish_reason") is not None:
                            state.finish_reason = choice["finish_reason"]
                    elif _has_text_outside_choices(obj):
                        state.outside += 1
                    if usage:
                        if type(usage) is not dict:
                            state.fail("malformed_usage", f"usage is not an object: {event[:200]!r}")
                            return
                        state.usage = usage
                    if "error" in obj:
                        state.fail("stream_error", _message_of(obj))
                        return
                except (orjson.JSONDecodeError, AttributeError, TypeError, IndexError, KeyError):
                    if _is_done(payload):
                        # [DONE] ends the stream: whatever a server sends after it is not parsed.
                        state.done = True
                        if not parsed:
                            state.fail("empty_stream", "stream held no event before data: [DONE]")
                        await _drain_after_done(resp)
                        return
                    if not payload.strip():
                        continue  # an empty data field dispatches no event (SSE): a keep-alive
                    state.fail("malformed_chunk", f"cannot parse SSE event: {event[:200]!r}")
                    return
        if not state.done:
            state.fail("stream_broken", "stream ended without data: [DONE]")

    def _finish(self, record: RequestRecord, state: _StreamState) -> None:
        if state.usage is not None:
            record.server_prompt_tokens, record.cached_tokens = prompt_usage(state.usage)
        # An impossible usage claim fails the stream (issue 15: malformed_usage); finish_record then
        # still flags it (usage_implausible) and states the count used instead.
        _usage_tokens(state, record.requested_output_tokens)
        if state.error_type is not None:
            record.status = STATUS_ERROR
            record.error_type = state.error_type
            record.error_message = state.error_message
        finish_record(record, self._chunks(state), self._count_tokens)

    def _chunks(self, state: _StreamState) -> StreamChunks:
        """The content chunks with their reasoning bit and per-chunk usage (off the timing path)."""
        n = len(state.times)
        return StreamChunks(
            times=state.times,
            texts=state.texts,
            reasoning=self.reasoning_flags(state.marked, n),
            cumulative=_per_chunk_usage(state.usages) if self.spec.continuous_usage_stats else [None] * n,
            usage=state.usage,
            finish_reason=state.finish_reason,
            text_outside_choices=state.outside,
        )


class OpenAIChatClient(OpenAIStreamingClient):
    """``POST {base_url}/chat/completions`` with one user message, streamed."""

    path = "/chat/completions"


class OpenAICompletionsClient(OpenAIStreamingClient):
    """``POST {base_url}/completions`` with a raw prompt, streamed."""

    path = "/completions"

    def prompt_fields(self, request: PlannedRequest) -> dict[str, Any]:
        if isinstance(request.prompt, list):
            return {"prompt": "".join(m.get("content") or "" for m in request.prompt)}
        return {"prompt": request.prompt}

    @staticmethod
    def chunk_text(choice: dict[str, Any]) -> str | None:
        return choice.get("text")

    @staticmethod
    def reasoning_flags(marked: list[tuple[int, dict[str, Any]]], n: int) -> list[bool]:
        return [False] * n


def prompt_usage(usage: Any) -> tuple[int | None, int | None]:
    """``(usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens)``; None where absent or
    not a non-negative integer (a server's usage block is untrusted input)."""
    if not isinstance(usage, dict):
        return None, None
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return _count_or_none(usage.get("prompt_tokens")), _count_or_none(cached)


def _count_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def spread_token_times(times: list[int], texts: list[str], n_tokens: int) -> list[int]:
    """Token arrival times from content-chunk times (rule in the module docstring)."""
    n_chunks = len(times)
    if n_tokens == n_chunks:
        return times
    if n_tokens < n_chunks:
        return times[:n_tokens]
    if n_chunks == 0:
        return []  # tokens reported by usage but no text ever arrived: no arrival times known
    lengths = np.fromiter((len(t) for t in texts), dtype=np.float64, count=n_chunks)
    extra = n_tokens - n_chunks
    quota = extra * lengths / lengths.sum()
    counts = np.floor(quota).astype(np.int64)
    leftover = extra - int(counts.sum())
    if leftover:
        counts[np.argsort(counts - quota, kind="stable")[:leftover]] += 1
    return np.repeat(np.asarray(times, dtype=np.int64), counts + 1).tolist()


def _per_chunk_usage(usages: list[Any]) -> list[Any]:
    """Each content chunk's ``usage.completion_tokens`` (None where it sent none)."""
    try:
        return [u["completion_tokens"] for u in usages]
    except (KeyError, TypeError, IndexError):  # some chunk without usage: the careful path
        return [u.get("completion_tokens") if isinstance(u, dict) else None for u in usages]


def _has_text_outside_choices(obj: dict[str, Any]) -> bool:
    return any(obj.get(key) for key in ("text", "content", "delta", "message", "reasoning_content"))


async def _drain_after_done(resp: aiohttp.ClientResponse) -> None:
    """Read the rest of the body unparsed, as far as its end (which ends the request, as before),
    so the connection goes back to the pool. Nothing read or failing here changes the record; the
    request timeout still bounds a server that keeps sending after [DONE]."""
    try:
        while await resp.content.readany():
            pass
    except (TimeoutError, aiohttp.ClientError):
        pass


def _usage_tokens(state: _StreamState, requested_tokens: int) -> int | None:
    """``usage.completion_tokens`` if it is a plausible count, else None (and the stream fails).

    Plausible: an int (not a bool) from 0 to the larger of the tokens requested and what the text
    can hold (4 per character: a UTF-8 character is at most 4 byte-level tokens, plus one per chunk).
    Hidden reasoning tokens count in usage but stay within the tokens requested.
    """
    if state.usage is None or "completion_tokens" not in state.usage:
        return None
    value = state.usage["completion_tokens"]
    text_chars = sum(len(t) for t in state.texts)
    limit = max(requested_tokens, 4 * text_chars + len(state.texts))
    if type(value) is int and 0 <= value <= limit:
        return value
    state.fail("malformed_usage", f"usage.completion_tokens={str(value)[:80]!r} is not a token count "
               f"from 0 to {limit} (requested {requested_tokens}, {text_chars} characters received)")
    return None


def _redirect_message(resp: aiohttp.ClientResponse) -> str:
    location = resp.headers.get("Location", "")[:200]
    return (f"HTTP {resp.status} redirect to {location!r} not followed: requests and credentials "
            "go only to the configured endpoint (set endpoint.base_url to the final URL)")


def _token_counter(name: str) -> Callable[[str], int]:
    from etalon.datasets.tokenizers import load_tokenizer  # lazy: only when usage may be missing

    tokenizer = load_tokenizer(name)

    def count(text: str) -> int:
        encoded = tokenizer.encode(text)
        ids = getattr(encoded, "ids", encoded)  # HF tokenizers.Encoding or a plain list of ids
        return len(ids)

    return count


def _data_field(event: bytes) -> bytes | None:
    """The data of a general SSE event (comments, ``event:``/``id:`` lines, multi-line data)."""
    lines = [line[5:] for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(line[1:] if line.startswith(b" ") else line for line in lines)


def _is_done(payload: bytes) -> bool:
    return payload.strip() == _DONE


def _message_of(obj: Any) -> str:
    """The human message of an OpenAI-style error body, else the body itself."""
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if obj.get("message"):
            return str(obj["message"])
    return orjson.dumps(obj).decode(errors="replace")


async def _error_text(resp: aiohttp.ClientResponse) -> str:
    raw = await resp.content.read(16 * 1024)
    try:
        return _message_of(orjson.loads(raw))[:ERROR_MESSAGE_CHARS]
    except orjson.JSONDecodeError:
        return raw.decode(errors="replace").strip()[:ERROR_MESSAGE_CHARS] or resp.reason or ""


def _classify(exc: BaseException, *, started: bool) -> tuple[str, str]:
    """(error_type, message) for an exception raised while sending or streaming."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, TimeoutError):
        return "timeout", text
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "stream_broken", text
    if isinstance(exc, (aiohttp.ClientConnectionError, ConnectionError)):
        return ("stream_broken" if started else "connection_error"), text
    return "client_error", text


async def check_endpoint(session: aiohttp.ClientSession, spec: EndpointSpec) -> list[str]:
    """GET ``{base_url}/models``; return the served model ids, or raise a typed EndpointError."""
    url = spec.base_url.rstrip("/") + "/models"
    timeout = aiohttp.ClientTimeout(total=spec.connect_timeout_s)
    secrets = spec.secret_values()
    try:
        async with session.get(
            url, headers=spec.request_headers(), timeout=timeout, allow_redirects=False
        ) as resp:
            if resp.status in (401, 403) or resp.status >= 500:
                text = redact_text(await _error_text(resp), secrets)
                raise EndpointStatusError(url, resp.status, text)
            if 300 <= resp.status < 400:
                raise EndpointStatusError(url, resp.status, _redirect_message(resp))
            if resp.status >= 400:
                return []  # reachable; some servers simply do not list models
            body = await resp.read()
            content_type = resp.headers.get("Content-Type", "")
    except (aiohttp.ClientConnectionError, TimeoutError, OSError) as exc:
        raise EndpointUnreachableError(f"cannot reach {url}: {type(exc).__name__}: {exc}") from exc
    return _model_ids(url, body, content_type, secrets)


def _model_ids(url: str, body: bytes, content_type: str, secrets: list[str]) -> list[str]:
    """The ids of an OpenAI model list; a 200 that is not JSON is not an OpenAI endpoint."""
    try:
        listing = orjson.loads(body)
    except orjson.JSONDecodeError:
        start = redact_text(body[:120].decode(errors="replace"), secrets)
        raise EndpointProtocolError(
            f"{url} answered HTTP 200 with {content_type or 'no content type'}, not an OpenAI model "
            f"list (starts {' '.join(start.split())!r}): is endpoint.base_url the API root (.../v1)?"
        ) from None
    try:
        return [str(m["id"]) for m in listing.get("data", [])]
    except (AttributeError, TypeError, KeyError):
        return []


def preflight(spec: EndpointSpec) -> list[str]:
    """Blocking ``check_endpoint`` with its own session; fails fast before a run starts."""

    async def check() -> list[str]:
        async with aiohttp.ClientSession() as session:
            return await check_endpoint(session, spec)

    return asyncio.run(check())
