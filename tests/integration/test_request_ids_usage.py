"""The request-id header (UUID string, or none) and the server's prompt/cached token counts."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from etalon.clients.base import EndpointSpec
from etalon.clients.openai import usage_prompt_counts
from tests.integration.test_client_openai import DONE, ScriptedServer, chat, send, sse


@pytest.fixture(scope="module")
def server() -> Any:
    with ScriptedServer() as s:
        yield s


def _spec(server: ScriptedServer, model: str, **kw: Any) -> EndpointSpec:
    return EndpointSpec(base_url=f"http://127.0.0.1:{server.port}/v1", model=model, **kw)


def test_request_id_header_is_a_uuid_string_or_absent(server: ScriptedServer) -> None:
    usage = {"prompt_tokens": 12, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 8}}
    server.scripts["ids"] = [chat("a"), chat("b"), sse({"choices": [], "usage": usage}), DONE]
    record = send(_spec(server, "ids"))
    header = server.requests[-1]["headers"]["X-Request-Id"]
    assert uuid.UUID(header).version == 4 and str(uuid.UUID(header)) == header
    assert int(header.rsplit("-", 1)[-1], 16) == record.request_id  # the index, to match server logs
    assert (record.server_prompt_tokens, record.cached_tokens) == (12, 8)
    assert record.status == "ok"

    send(_spec(server, "ids", request_id_header=None))
    assert "X-Request-Id" not in server.requests[-1]["headers"]
    send(_spec(server, "ids", request_id_header="X-Trace"))
    assert re.fullmatch(r"[0-9a-f-]{36}", server.requests[-1]["headers"]["X-Trace"])


def test_no_usage_leaves_server_counts_unknown(server: ScriptedServer) -> None:
    server.scripts["nousage"] = [chat("hello"), DONE]
    record = send(_spec(server, "nousage"))
    assert (record.server_prompt_tokens, record.cached_tokens) == (None, None)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"prompt_tokens": 7}, (7, None)),
        ({"prompt_tokens": 7, "prompt_tokens_details": None}, (7, None)),
        ({"prompt_tokens": 7, "prompt_tokens_details": {"cached_tokens": 0}}, (7, 0)),
        ({"prompt_tokens": -1, "prompt_tokens_details": {"cached_tokens": "5"}}, (None, None)),
        ({"prompt_tokens": True, "prompt_tokens_details": [1]}, (None, None)),
        ({"prompt_tokens": 3.5}, (None, None)),
        (None, (None, None)),
        ("garbage", (None, None)),
    ],
)
def test_usage_prompt_counts_trusts_only_non_negative_integers(usage: Any, expected: tuple) -> None:
    assert usage_prompt_counts(usage) == expected
