"""The request-id header (UUID string, or none) and the server's prompt/cached token counts."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from etalon.clients.base import EndpointSpec
from etalon.clients.openai import prompt_usage as usage_prompt_counts
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


class IdentityServer(ScriptedServer):
    """/v1/models (with a per-start "created"), /version, /metrics with an *_info sample, /tokenize."""

    max_model_len = 4096
    created = 1

    def add_routes(self, app: Any) -> None:
        from aiohttp import web

        async def models(_r: Any) -> Any:
            self.created += 1
            return web.json_response({"data": [{"id": "tiny", "created": self.created, "owned_by": "vllm",
                                                "max_model_len": self.max_model_len, "permission": [{"id": "x"}]}]})

        async def version(_r: Any) -> Any:
            return web.json_response({"version": "0.32.0"})

        async def metrics(_r: Any) -> Any:
            return web.Response(text='# HELP x\nvllm:cache_config_info{enable_prefix_caching="True"} 1.0\n'
                                     'vllm:num_requests_running{model_name="tiny"} 3.0\n')

        async def tokenize(request: Any) -> Any:
            body = await request.json()
            return web.json_response({"count": 2 * len(body["prompt"].split()) + 6, "max_model_len": 4096})

        app.router.add_get("/v1/models", models)
        app.router.add_get("/version", version)
        app.router.add_get("/metrics", metrics)
        app.router.add_post("/tokenize", tokenize)


def test_observed_identity_ignores_volatile_fields_and_sees_settings() -> None:
    from etalon.clients.identity import describe_server, observe_server, server_token_count

    with IdentityServer() as srv:
        spec = EndpointSpec(base_url=f"http://127.0.0.1:{srv.port}/v1", model="tiny")
        first, again = observe_server(spec), observe_server(spec)
        assert first == again  # "created" changed between the two, it is not identity
        assert first["models"] == [{"id": "tiny", "owned_by": "vllm", "max_model_len": 4096}]
        assert first["version"] == {"version": "0.32.0"}
        assert first["info_metrics"] == ['vllm:cache_config_info{enable_prefix_caching="True"} 1.0']
        assert describe_server(first, spec.base_url) == f"tiny (max_model_len 4096), version 0.32.0 at {spec.base_url}"
        srv.max_model_len = 2048  # "restarted with other settings"
        assert observe_server(spec) != first
        assert server_token_count(spec, "a b c") == (12, f"http://127.0.0.1:{srv.port}/tokenize")


def test_server_without_identity_endpoints() -> None:
    from etalon.clients.identity import observe_server, server_token_count

    with ScriptedServer() as srv:  # answers only POST completions: everything else is 404/405
        spec = EndpointSpec(base_url=f"http://127.0.0.1:{srv.port}/v1", model="m")
        assert observe_server(spec)["version"] is None
        assert server_token_count(spec, "hello") is None


def test_tokenizer_check_warns_or_fails_with_strict(capsys: pytest.CaptureFixture[str]) -> None:
    from etalon.config import ConfigError
    from etalon.runner.tokens_check import check_tokenizer
    from tests.integration.test_prefill_profile import compose_config

    cfg, _ = compose_config([])
    with IdentityServer() as srv:
        spec = EndpointSpec(base_url=f"http://127.0.0.1:{srv.port}/v1", model="tiny")
        assert check_tokenizer(cfg, spec, simulator=True) is None and capsys.readouterr().out == ""
        count = check_tokenizer(cfg, spec, simulator=False)
        out = capsys.readouterr().out
        assert "is the shipped 'etalon-bpe-8k' but the endpoint is not the simulator" in out
        assert f"a prompt planned as 256 tokens is {count} tokens by the server" in out and count != 256
        cfg.model.strict_tokenizer = True
        with pytest.raises(ConfigError, match="model.tokenizer: is the shipped"):
            check_tokenizer(cfg, spec, simulator=False)
