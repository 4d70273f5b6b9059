"""OpenAI streaming client against a scripted aiohttp SSE server on 127.0.0.1 (OS-chosen port)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from etalon.clients.base import (
    EndpointSpec,
    EndpointStatusError,
    EndpointUnreachableError,
    PlannedRequest,
    make_client,
)
from etalon.clients.openai import (
    OpenAIChatClient,
    OpenAICompletionsClient,
    preflight,
    spread_token_times,
)
from tests.integration.etalon_cli import free_port
from tests.integration.threaded_server import ThreadedServer

MS = 1_000_000


def sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def chat(content: str | None = None, role: str | None = None, finish: str | None = None) -> bytes:
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    return sse({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def usage(completion_tokens: int) -> bytes:
    return sse({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": completion_tokens}})


DONE = b"data: [DONE]\n\n"


class ScriptedServer(ThreadedServer):
    """Serves, per request, the script registered under the request's ``model`` name.

    A script is a list of steps: bytes (written and flushed), a float (sleep seconds),
    ``("status", code, body)`` (plain HTTP error), or ``"disconnect"`` (drop the connection).
    """

    def __init__(self) -> None:
        super().__init__()
        self.scripts: dict[str, list[Any]] = {}
        self.requests: list[dict[str, Any]] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.requests.append({"path": request.path, "headers": request.headers.copy(), "body": body})
        script = self.scripts[body["model"]]
        if script and isinstance(script[0], tuple):
            _, code, text = script[0]
            return web.Response(status=code, text=text, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for step in script:
            if isinstance(step, float):
                await asyncio.sleep(step)
            elif step == "disconnect":
                assert request.transport is not None
                request.transport.close()
                return resp
            else:
                await resp.write(step)
        await resp.write_eof()
        return resp

    async def _models(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") == "Bearer wrong":
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        return web.json_response({"data": [{"id": "m1"}]})

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/v1/completions", self._handle)
        app.router.add_get("/v1/models", self._models)

    def spec(self, model: str, **kw: Any) -> EndpointSpec:
        return EndpointSpec(base_url=f"http://127.0.0.1:{self.port}/v1", model=model, **kw)


@pytest.fixture(scope="module")
def server() -> Any:
    with ScriptedServer() as srv:
        yield srv


def send(spec: EndpointSpec, request: PlannedRequest | None = None) -> Any:
    request = request or PlannedRequest(7, "hi there", 2, 16, scheduled_ns=0)

    async def go() -> Any:
        client = make_client(spec)
        epoch_ns = time.monotonic_ns()
        async with aiohttp.ClientSession() as session:
            return await client.send(session, request, epoch_ns)

    return asyncio.run(go())


def test_k_token_chunks_and_non_content_chunks(server: ScriptedServer) -> None:
    server.scripts["k"] = [
        chat(role="assistant"), 0.05, chat("a"), 0.05, chat("b" * 20), chat(finish="stop"),
        usage(4), DONE,
    ]
    rec = send(server.spec("k", api_key="sk-secret", ignore_eos=True, extra_body={"top_p": 0.5}))
    assert rec.status == "ok" and rec.error_type is None and rec.http_status == 200
    assert rec.output_tokens == 4 and rec.output_tokens_source == "usage"
    # 2 content chunks, 4 tokens: the long chunk carries the 2 extra tokens (largest remainder).
    t = rec.token_ns
    assert len(t) == 4 and t[1] == t[2] == t[3] and t[0] == rec.first_token_ns
    assert 40 * MS <= t[1] - t[0] <= 80 * MS  # the second chunk came 50 ms after the first
    assert 45 * MS <= t[0] - rec.sent_ns <= 100 * MS  # role-only chunk at 0 ms is not a token
    assert rec.sent_ns <= t[0] <= t[3] <= rec.end_ns
    sent = server.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["Authorization"] == "Bearer sk-secret"
    assert sent["headers"]["X-Request-Id"].endswith("-000000000007")  # a UUID string ending in the index
    body = sent["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 16 and body["min_tokens"] == 16 and body["ignore_eos"] is True
    assert body["top_p"] == 0.5 and body["messages"] == [{"role": "user", "content": "hi there"}]


def test_tokenizer_counts_when_no_usage(server: ScriptedServer) -> None:
    from etalon.datasets.tokenizers import load_tokenizer

    text = ["Hello big", " world, tokens", " here and there"]
    server.scripts["tok"] = [chat(role="assistant"), *(chat(x) for x in text), DONE]
    rec = send(server.spec("tok", tokenizer="etalon-bpe-8k"))
    expected = len(load_tokenizer("etalon-bpe-8k").encode("".join(text)))
    assert expected > len(text)
    assert rec.status == "ok" and rec.output_tokens_source == "tokenizer"
    assert rec.output_tokens == expected and len(rec.token_ns) == expected
    rec = send(server.spec("tok"))
    assert (rec.output_tokens_source, rec.output_tokens, len(rec.token_ns)) == ("chunks", 3, 3)


def test_completions_client_and_crlf_split_events(server: ScriptedServer) -> None:
    def comp(text: str) -> bytes:
        return b"data: " + orjson.dumps({"choices": [{"text": text}]}) + b"\r\n\r\n"

    whole = comp("x") + comp("") + comp("y")
    server.scripts["comp"] = [whole[:9], 0.02, whole[9:], b": keep-alive\n\n", usage(2), DONE]
    rec = send(server.spec("comp", client_target="etalon.clients.openai.OpenAICompletionsClient"))
    assert server.requests[-1]["path"] == "/v1/completions"
    assert server.requests[-1]["body"]["prompt"] == "hi there"
    assert rec.status == "ok" and rec.output_tokens == 2 and len(rec.token_ns) == 2


@pytest.mark.parametrize(
    "script, error_type, http_status",
    [
        ([("status", 500, '{"error": {"message": "engine exploded"}}')], "http_error", 500),
        ([chat("a"), chat("b"), "disconnect"], "stream_broken", 200),
        ([chat("a"), b"data: {not json\n\n", DONE], "malformed_chunk", 200),
        ([chat("a"), chat("b")], "stream_broken", 200),  # clean end without [DONE]
        ([chat("a"), sse({"error": {"message": "oom"}})], "stream_error", 200),
    ],
)
def test_errors_become_records(
    server: ScriptedServer, script: list[Any], error_type: str, http_status: int
) -> None:
    server.scripts["err"] = script
    rec = send(server.spec("err"))
    assert rec.status == "error" and rec.error_type == error_type
    assert rec.http_status == http_status and rec.error_message
    if error_type == "http_error":
        assert "engine exploded" in rec.error_message and "500" in rec.error_message
    else:
        assert rec.output_tokens == len(rec.token_ns) >= 1  # tokens before the failure are kept


def test_timeout_becomes_record(server: ScriptedServer) -> None:
    server.scripts["slow"] = [chat("a"), 2.0, DONE]
    rec = send(server.spec("slow", timeout_s=0.3))
    assert rec.status == "error" and rec.error_type == "timeout"
    assert 0.25e9 <= rec.end_ns - rec.sent_ns <= 1.5e9 and len(rec.token_ns) == 1


def test_connection_refused_record_and_preflight(server: ScriptedServer) -> None:
    spec = EndpointSpec(base_url=f"http://127.0.0.1:{free_port()}/v1", model="m")
    rec = send(spec)
    assert rec.status == "error" and rec.error_type == "connection_error" and rec.http_status is None
    with pytest.raises(EndpointUnreachableError, match=r"cannot reach http://127\.0\.0\.1:\d+/v1/models"):
        preflight(spec)
    assert preflight(server.spec("m")) == ["m1"]
    with pytest.raises(EndpointStatusError, match="401") as info:
        preflight(server.spec("m", api_key="wrong"))
    assert info.value.status == 401


def test_api_key_not_in_repr_and_bad_target(server: ScriptedServer) -> None:
    spec = server.spec("m", api_key="sk-topsecret")
    assert "sk-topsecret" not in repr(spec) and "sk-topsecret" not in repr(make_client(spec))
    assert isinstance(make_client(spec), OpenAIChatClient)
    assert isinstance(
        make_client(server.spec("m", client_target="etalon.clients.openai.OpenAICompletionsClient")),
        OpenAICompletionsClient,
    )
    with pytest.raises(ValueError, match="client_target 'etalon.clients.nope.X'"):
        make_client(server.spec("m", client_target="etalon.clients.nope.X"))


def test_spread_token_times_rule() -> None:
    assert spread_token_times([10, 20], ["a", "b"], 2) == [10, 20]
    assert spread_token_times([10, 20, 30], ["a", "b", "c"], 2) == [10, 20]
    assert spread_token_times([10, 20], ["ab", "abcdef"], 6) == [10, 10, 20, 20, 20, 20]
    assert spread_token_times([], [], 3) == []


def test_sse_framing_edge_cases(server: ScriptedServer) -> None:
    """``data:`` without a space, comments and ``id:``/``event:`` lines, an empty ``data:`` event
    (not dispatched by the SSE rules: a keep-alive, not a malformed chunk), ``\\r\\n`` split between
    the ``\\r`` and the ``\\n`` across reads, and several events in one read."""
    two = b'data:{"choices":[{"delta":{"content":"b"}}]}\r\n\r\n' + chat("c")
    server.scripts["edge"] = [
        chat(role="assistant"), b": ping\n\n", b"data:\n\n", b"data: \r\n\r\n",
        b'id: 1\nevent: message\n: note\ndata: {"choices":[{"delta":{"content":"a"}}]}\r', 0.05,
        b"\n\r\n", two, usage(3), DONE,
    ]
    rec = send(server.spec("edge"))
    assert (rec.status, rec.error_type, rec.error_message) == ("ok", None, None)
    assert rec.output_tokens == 3 and len(rec.token_ns) == 3 and rec.token_ns == sorted(rec.token_ns)
    # "a" completes only with the read that brings its blank line, 50 ms after its first bytes.
    assert rec.token_ns[0] - rec.sent_ns >= 45 * MS
