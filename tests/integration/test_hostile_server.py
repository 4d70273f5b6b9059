"""Hostile servers: whatever comes back, every request sent yields exactly one record, and no
secret leaks (into a record, a message, or another host through a redirect)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from etalon.clients.base import (
    EndpointProtocolError,
    EndpointSpec,
    EndpointStatusError,
    PlannedRequest,
)
from etalon.clients.openai import preflight
from etalon.core.workload import Schedule
from etalon.loadgen import LoadSettings, run_load
from tests.integration.test_client_openai import DONE, ScriptedServer, send, sse
from tests.integration.threaded_server import ThreadedServer

KEY = "sk-hostile-4f9a2c71"


class HostileServer(ScriptedServer):
    """The scripted SSE server, plus: a 401 that echoes the caller's key, redirects (to
    ``redirect_to``) and an HTML page on ``/v1/models`` for the models named in ``html_models``."""

    def __init__(self) -> None:
        super().__init__()
        self.redirect_to = ""
        self.models_mode = "ok"

    async def _route(self, request: web.Request) -> web.StreamResponse:
        model = (await request.json())["model"]
        if model == "echo-key":
            auth = request.headers.get("Authorization", "")
            return web.json_response({"error": {"message": f"invalid key {auth}"}}, status=401)
        if model.startswith("redirect-"):
            self.requests.append({"path": request.path, "headers": request.headers.copy()})
            status = int(model.split("-")[1])
            return web.Response(status=status, headers={"Location": self.redirect_to})
        return await self._handle(request)

    async def _models(self, request: web.Request) -> web.Response:
        if self.models_mode == "html":
            return web.Response(text="<html><body>Welcome to nginx!</body></html>", content_type="text/html")
        if self.models_mode == "echo-key":
            auth = request.headers.get("Authorization", "")
            return web.json_response({"error": {"message": f"key {auth} is not valid"}}, status=401)
        if self.models_mode == "redirect":
            return web.Response(status=307, headers={"Location": self.redirect_to})
        return web.json_response({"object": "list", "data": [{"id": "m1"}, {"id": "echo-key"}]})

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._route)
        app.router.add_get("/v1/models", self._models)


class Recorder(ThreadedServer):
    """Another host: records every request it gets, whatever its method or path."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str | None]] = []

    async def _any(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, request.headers.get("Authorization")))
        return web.json_response({"data": []})

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._any)


@pytest.fixture(scope="module")
def hostile() -> Any:
    with HostileServer() as srv:
        yield srv


@pytest.fixture()
def other_host() -> Any:
    with Recorder() as srv:
        yield srv


def content(text: Any) -> bytes:
    return sse({"choices": [{"index": 0, "delta": {"content": text}}]})


def usage_of(value: Any) -> bytes:
    return sse({"choices": [], "usage": value})


@pytest.mark.parametrize(
    ("name", "script", "error_type"),
    [
        ("usage-string", [content("a"), usage_of("lots"), DONE], "malformed_usage"),
        ("usage-huge", [content("a"), usage_of({"completion_tokens": 2**62}), DONE], "malformed_usage"),
        ("usage-count-string", [content("a"), usage_of({"completion_tokens": "7"}), DONE], "malformed_usage"),
        ("usage-negative", [content("a"), usage_of({"completion_tokens": -3}), DONE], "malformed_usage"),
        ("content-number", [content("a"), content(5), DONE], "malformed_chunk"),
        ("content-object", [content({"x": 1}), DONE], "malformed_chunk"),
        ("choice-string", [sse({"choices": ["a"]}), DONE], "malformed_chunk"),
        ("only-done", [DONE], "empty_stream"),
        ("json-number", [b"data: 5\n\n", DONE], "malformed_chunk"),
    ],
)
def test_hostile_payload_is_one_error_record(hostile: HostileServer, name: str, script: list,
                                              error_type: str) -> None:
    hostile.scripts[name] = script
    rec = send(hostile.spec(name))
    assert rec.status == "error" and rec.error_type == error_type, (rec.error_type, rec.error_message)
    assert rec.http_status == 200 and rec.sent_ns <= rec.end_ns
    assert len(rec.token_ns) == rec.output_tokens <= 1  # never 2**62 token times


def test_plausible_usage_is_kept(hostile: HostileServer) -> None:
    # 3 characters of text can hold 12 byte-level tokens; usage reports 10: trusted.
    hostile.scripts["usage-ok"] = [content("abc"), usage_of({"completion_tokens": 10}), DONE]
    rec = send(hostile.spec("usage-ok"))
    assert rec.status == "ok" and rec.output_tokens == 10 and rec.output_tokens_source == "usage"


def test_nothing_after_done_changes_the_record(hostile: HostileServer) -> None:
    hostile.scripts["after-done"] = [
        content("a"), content("b"), usage_of({"completion_tokens": 2}), DONE,
        content("late"), sse({"error": {"message": "too late"}}), usage_of({"completion_tokens": 99}),
    ]
    rec = send(hostile.spec("after-done"))
    assert rec.status == "ok" and rec.error_type is None
    assert rec.output_tokens == 2 and len(rec.token_ns) == 2


def test_key_echoed_in_a_401_is_redacted(hostile: HostileServer) -> None:
    rec = send(hostile.spec("echo-key", api_key=KEY))
    assert rec.status == "error" and rec.http_status == 401
    assert KEY not in rec.error_message and "***REDACTED***" in rec.error_message


def test_header_secret_echoed_is_redacted(hostile: HostileServer) -> None:
    rec = send(hostile.spec("echo-key", headers={"Authorization": f"Bearer {KEY}"}))
    assert KEY not in rec.error_message and "***REDACTED***" in rec.error_message


@pytest.mark.parametrize("status", [302, 307, 308])
def test_post_redirect_is_not_followed(hostile: HostileServer, other_host: Recorder, status: int) -> None:
    hostile.redirect_to = f"http://127.0.0.1:{other_host.port}/v1/chat/completions"
    rec = send(hostile.spec(f"redirect-{status}", api_key=KEY))
    assert rec.status == "error" and rec.error_type == "redirect" and rec.http_status == status
    assert str(other_host.port) in rec.error_message
    assert other_host.seen == []  # neither the key nor a GET went to the other host


def test_preflight_rejects_html_on_models(hostile: HostileServer) -> None:
    hostile.models_mode = "html"
    try:
        with pytest.raises(EndpointProtocolError, match="text/html.*not an OpenAI model list"):
            preflight(hostile.spec("m1"))
    finally:
        hostile.models_mode = "ok"


def test_preflight_redacts_an_echoed_key(hostile: HostileServer) -> None:
    hostile.models_mode = "echo-key"
    try:
        with pytest.raises(EndpointStatusError) as caught:
            preflight(hostile.spec("m1", api_key=KEY))
    finally:
        hostile.models_mode = "ok"
    assert KEY not in str(caught.value) and "***REDACTED***" in str(caught.value)


def test_preflight_does_not_follow_a_redirect(hostile: HostileServer, other_host: Recorder) -> None:
    hostile.models_mode = "redirect"
    hostile.redirect_to = f"http://127.0.0.1:{other_host.port}/v1/models"
    try:
        with pytest.raises(EndpointStatusError, match="307.*not followed"):
            preflight(hostile.spec("m1", api_key=KEY))
    finally:
        hostile.models_mode = "ok"
    assert other_host.seen == []


def _schedule(n: int, users: int | None) -> Schedule:
    offsets = None if users else (np.arange(n) * 5_000_000).astype(np.int64)
    return Schedule(offsets_ns=offsets, prompt_tokens=np.full(n, 4, dtype=np.int64),
                    output_tokens=np.full(n, 4, dtype=np.int64), warmup_requests=0,
                    concurrency=users, think_time_s=0.0, duration_s=None)


@pytest.mark.parametrize("users", [None, 2])
def test_run_with_hostile_usage_keeps_every_record(hostile: HostileServer, tmp_path: Path,
                                                   users: int | None) -> None:
    hostile.scripts["run-usage"] = [content("a"), usage_of("lots"), DONE]
    settings = LoadSettings(backend="local", drain_interval_s=0.05, start_delay_s=0.1)
    result = run_load(_schedule(10, users), ["p"] * 10, hostile.spec("run-usage"), settings,
                      tmp_path / "r.jsonl", progress=False)
    assert sorted(r.request_id for r in result.records) == list(range(10))
    assert {r.error_type for r in result.records} == {"malformed_usage"}
    assert len((tmp_path / "r.jsonl").read_bytes().splitlines()) == 10


class RaisingClient:
    """A custom client (``endpoint.client._target_``) with a bug: it raises instead of recording."""

    def __init__(self, spec: EndpointSpec) -> None:
        self.spec = spec

    async def send(self, session: Any, request: PlannedRequest, epoch_ns: int) -> Any:
        raise RuntimeError(f"bug while sending with key {self.spec.api_key}")


def test_a_raising_client_still_yields_one_record_per_request(hostile: HostileServer,
                                                               tmp_path: Path) -> None:
    spec = hostile.spec("m1", api_key=KEY,
                        client_target="tests.integration.test_hostile_server.RaisingClient")
    settings = LoadSettings(backend="local", drain_interval_s=0.05, start_delay_s=0.1,
                            warm_connections=False)
    result = run_load(_schedule(6, 2), ["p"] * 6, spec, settings, tmp_path / "r.jsonl",
                      progress=False)
    assert sorted(r.request_id for r in result.records) == list(range(6))  # closed loop went on
    assert {r.error_type for r in result.records} == {"client_error"}
    assert all(KEY not in (r.error_message or "") for r in result.records)
