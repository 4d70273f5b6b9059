"""The simulator's OpenAI-compatible API: formats, token counts, errors, emission log, launcher."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from etalon.runner.server import EmbeddedSimServer, ServerStartError
from tests.integration.conftest_sim import metrics, sim_config, stream_request

FAST = {"ttft_base_s": 0.005, "ttft_per_prompt_token_s": 0.0, "tbt_s": 0.001}


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    log_path = tmp_path_factory.mktemp("sim") / "emissions.jsonl"
    config = sim_config(tokenizer="etalon-bpe-8k", context_tokens=512, latency=FAST,
                        emission_log_path=str(log_path),
                        output_lengths={"kind": "fixed", "median_tokens": 7})
    with EmbeddedSimServer(config) as server:
        yield server.base_url, log_path


def _run(coro):  # noqa: ANN001, ANN202 - tiny test shim
    return asyncio.run(coro)


async def _with_session(fn):  # noqa: ANN001, ANN202
    async with aiohttp.ClientSession() as session:
        return await fn(session)


def test_chat_stream_format_usage_and_token_roundtrip(api_server: tuple[str, Path]) -> None:
    from etalon.datasets.tokenizers import load_tokenizer

    base_url, _ = api_server
    prompt = "The quick brown fox jumps over the lazy dog."
    body = {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": prompt}],
            "max_tokens": 25, "ignore_eos": True, "stream_options": {"include_usage": True}}
    result = _run(_with_session(lambda s: stream_request(s, base_url, body, "/chat/completions")))
    tokenizer = load_tokenizer("etalon-bpe-8k")
    assert result.status == 200 and len(result.texts) == 25
    assert result.finish_reason == "length"
    expected_prompt = len(tokenizer.encode("Be brief.")) + len(tokenizer.encode(prompt))
    assert result.usage == {"prompt_tokens": expected_prompt, "completion_tokens": 25,
                            "total_tokens": expected_prompt + 25}
    assert len(tokenizer.encode("".join(result.texts))) == 25  # one token per chunk


def test_without_ignore_eos_length_follows_distribution(api_server: tuple[str, Path]) -> None:
    base_url, _ = api_server

    async def go(session: aiohttp.ClientSession):  # noqa: ANN202
        natural = await stream_request(session, base_url, {"prompt": "hi", "max_tokens": 50})
        capped = await stream_request(session, base_url, {"prompt": "hi", "max_tokens": 4})
        floored = await stream_request(session, base_url,
                                       {"prompt": "hi", "max_tokens": 50, "min_tokens": 11})
        return natural, capped, floored

    natural, capped, floored = _run(_with_session(go))
    assert (len(natural.texts), natural.finish_reason) == (7, "stop")
    assert (len(capped.texts), capped.finish_reason) == (4, "length")
    assert (len(floored.texts), floored.finish_reason) == (11, "stop")


def test_non_streaming_completion(api_server: tuple[str, Path]) -> None:
    base_url, _ = api_server

    async def go(session: aiohttp.ClientSession):  # noqa: ANN202
        body = {"model": "sim-test", "prompt": "hello", "max_completion_tokens": 9, "ignore_eos": True}
        async with session.post(base_url + "/completions", json=body) as response:
            return response.status, await response.json()

    status, answer = _run(_with_session(go))
    assert status == 200
    assert answer["usage"]["completion_tokens"] == 9
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["choices"][0]["text"].count(" ") == 9


@pytest.mark.parametrize(("path", "body", "status", "code"), [
    ("/completions", {"model": "nope", "prompt": "x"}, 400, "model_not_found"),
    ("/completions", {"model": "sim-test", "prompt": "x " * 600}, 400, "context_length_exceeded"),
    ("/completions", {"model": "sim-test", "prompt": "x", "max_tokens": 600}, 400,
     "context_length_exceeded"),
    ("/chat/completions", {"model": "sim-test", "messages": [{"role": "user", "content": "x"}],
                           "n": 2}, 400, "unsupported_n"),
    ("/completions", b"{not json", 400, "invalid_json"),
    ("/nowhere", {}, 404, "not_found"),
])
def test_error_bodies(api_server: tuple[str, Path], path: str, body: object, status: int,
                      code: str) -> None:
    base_url, _ = api_server

    async def go(session: aiohttp.ClientSession):  # noqa: ANN202
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with session.post(base_url + path, data=data,
                                headers={"Content-Type": "application/json"}) as response:
            return response.status, await response.json()

    got_status, answer = _run(_with_session(go))
    assert got_status == status
    assert answer["error"]["code"] == code
    assert answer["error"]["type"] == "invalid_request_error" and answer["error"]["message"]


def test_emission_log_matches_client_timing(api_server: tuple[str, Path]) -> None:
    base_url, log_path = api_server
    body = {"prompt": "hello", "max_tokens": 12, "ignore_eos": True}
    result = _run(_with_session(
        lambda s: stream_request(s, base_url, body, headers={"X-Request-Id": "emission-check"})))
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    entry = next(line for line in lines if line["request_id"] == "emission-check")
    assert (entry["prompt_tokens"], entry["output_tokens"]) == (1, 12)
    lags_s = [(got - written) / 1e9 for got, written in zip(result.chunk_ns, entry["token_ns"])]
    assert len(lags_s) == 12
    assert all(0 <= lag < 0.01 for lag in lags_s)  # same monotonic clock, loopback delivery


def test_models_health_and_counters(api_server: tuple[str, Path]) -> None:
    base_url, _ = api_server

    async def go(session: aiohttp.ClientSession):  # noqa: ANN202
        before = await metrics(session, base_url)
        await stream_request(session, base_url, {"prompt": "a b c", "max_tokens": 5, "ignore_eos": True})
        after = await metrics(session, base_url)
        async with session.get(base_url + "/models") as response:
            models = await response.json()
        return before, after, models

    before, after, models = _run(_with_session(go))
    key = 'vllm:generation_tokens_total{model_name="sim-test"}'
    assert after[key] - before[key] == 5
    assert models["data"][0]["id"] == "sim-test"


def test_launcher_reports_child_stderr_on_bad_config() -> None:
    with pytest.raises(ServerStartError, match="sim.scheduler='fifo'"):
        EmbeddedSimServer(sim_config(scheduler="fifo")).start(timeout_s=10)


def test_launcher_stop_is_idempotent() -> None:
    server = EmbeddedSimServer(sim_config())
    server.start()
    process = server._child.process  # noqa: SLF001 - checking the child really ended
    server.stop()
    server.stop()
    assert process is not None and process.returncode == 0  # clean exit on SIGTERM
