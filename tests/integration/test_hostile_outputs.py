"""Hostile servers: implausible usage, ANSI error bodies, text outside choices, reasoning-only and
short 'length' streams: each a flagged or sanitised record, never a crash or a silent ok."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from etalon.clients.base import EndpointStatusError, PlannedRequest
from etalon.clients.openai import preflight
from tests.integration.etalon_cli import run_cli
from tests.integration.test_client_openai import DONE, ScriptedServer, chat, send, sse
from tests.integration.threaded_server import ThreadedServer

ANSI = "\x1b[2J\x1b[HAll good: 0 errors\x1b]0;owned\x07\r\nFAKE LINE"


@pytest.fixture(scope="module")
def server() -> Any:
    with ScriptedServer() as srv:
        yield srv


def _request(max_tokens: int) -> PlannedRequest:
    return PlannedRequest(1, "hi", 2, max_tokens, scheduled_ns=0)


def test_huge_usage_for_33_chunks_is_flagged_and_33_used(server: ScriptedServer) -> None:
    server.scripts["huge"] = [*(chat(" tok") for _ in range(33)), chat(finish="length"),
                              sse({"choices": [], "usage": {"completion_tokens": 2_000_000}}), DONE]
    rec = send(server.spec("huge", ignore_eos=True), _request(33))
    # An impossible claim fails the stream (malformed_usage) and is flagged; the count used is stated.
    assert rec.status == "error" and rec.error_type == "malformed_usage" and rec.flags == ["usage_implausible"]
    assert rec.output_tokens == 33 and rec.output_tokens_source == "chunks"
    assert rec.server_output_tokens == 2_000_000 and len(rec.token_ns) == 33


def test_negative_and_string_usage_are_flagged(server: ScriptedServer) -> None:
    for name, bad in (("neg", -5), ("str", "9")):
        server.scripts[name] = [chat("a"), chat("b"), sse({"choices": [], "usage": {"completion_tokens": bad}}), DONE]
        rec = send(server.spec(name), _request(2))
        assert rec.error_type == "malformed_usage" and rec.flags == ["usage_invalid"] and rec.output_tokens == 2


def test_text_without_choices_is_flagged_not_counted(server: ScriptedServer) -> None:
    server.scripts["nochoice"] = [chat("a"), sse({"choices": [], "text": "hidden"}), sse({"content": "x"}),
                                  chat(finish="stop"), sse({"choices": [], "usage": {"completion_tokens": 1}}), DONE]
    rec = send(server.spec("nochoice"), _request(1))
    assert rec.status == "ok" and rec.flags == ["text_outside_choices"] and rec.output_tokens == 1


def test_length_below_max_tokens_and_reasoning_only(server: ScriptedServer) -> None:
    server.scripts["len"] = [chat("a"), chat("b"), chat(finish="length"),
                             sse({"choices": [], "usage": {"completion_tokens": 2}}), DONE]
    rec = send(server.spec("len"), _request(10))
    assert rec.flags == ["output_short", "finish_length_short"] and rec.finish_reason == "length"
    think = [sse({"choices": [{"index": 0, "delta": {"reasoning_content": t}}]}) for t in ("hm", "m")]
    server.scripts["think"] = [*think, chat(finish="length"), sse({"choices": [], "usage": {"completion_tokens": 2}}), DONE]
    rec = send(server.spec("think"), _request(2))
    assert rec.flags == ["reasoning_only"] and rec.chunk_reasoning == [True, True] and rec.reasoning_tokens == 2


def test_ansi_error_body_is_kept_raw_in_the_record(server: ScriptedServer) -> None:
    server.scripts["ansi"] = [("status", 500, ANSI)]
    rec = send(server.spec("ansi"), _request(4))
    assert rec.status == "error" and rec.http_status == 500 and "\x1b[2J" in rec.error_message
    assert b"\\u001b[2J" in orjson.dumps(rec.to_dict())  # escaped in the JSON record file


class HostileModels(ThreadedServer):
    """/v1/models answers 500 with an ANSI body; /v1/chat/completions likewise."""

    async def _fail(self, request: web.Request) -> web.Response:
        return web.Response(status=500, text=ANSI + "x" * 5000)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/models", self._fail)
        app.router.add_post("/v1/chat/completions", self._fail)


def test_ansi_error_body_is_sanitised_on_the_terminal(tmp_path: Path) -> None:
    with HostileModels() as hostile:
        base_url = f"http://127.0.0.1:{hostile.port}/v1"
        with pytest.raises(EndpointStatusError) as info:
            from etalon.clients.base import EndpointSpec

            preflight(EndpointSpec(base_url=base_url, model="m"))
        message = str(info.value)
        assert "\x1b" not in message and "\r" not in message and "\n" not in message
        assert "All good: 0 errors" in message and len(message) < 500
        assert "\x1b[2J" in info.value.server_message  # raw kept apart
        run = run_cli(tmp_path, "tracking=none", "client=local", "endpoint=openai_chat",
                      f"endpoint.base_url={base_url}", "workload.num_requests=2", timeout_s=120)
    assert run.returncode != 0 and "answered HTTP 500" in run.stderr
    assert "\x1b" not in run.stderr and "\x07" not in run.stderr and "FAKE LINE" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_output_check_fail_fails_the_run_with_one_line_and_keeps_records(tmp_path: Path) -> None:
    run = run_cli(tmp_path, "tracking=none", "client=local", "workload.num_requests=20",
                  "workload.warmup_requests=0", "sim.modes.short_output_prob=0.3", "sim.modes.seed=1",
                  "endpoint.output_check=fail", timeout_s=180)
    assert run.returncode != 0
    lines = [line for line in run.stderr.splitlines() if "endpoint.output_check=fail" in line]
    assert len(lines) == 1 and "output_short" in lines[0] and "Traceback" not in run.stderr
    records = [orjson.loads(line) for line in (run.run_dir / "benchmark" / "records.jsonl").read_bytes().splitlines()]
    short = [r for r in records if "output_short" in r["flags"]]
    assert len(records) == 20 and short and all(r["output_tokens"] < r["requested_output_tokens"] for r in short)
    assert f"{len(short)} of 20 requests" in lines[0]
