"""The simulator's prefix cache over HTTP: cached_tokens in usage, /metrics counters, TTFT savings."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson
import pytest

from etalon.runner.server import EmbeddedSimServer
from tests.integration.conftest_sim import metrics, sim_config, stream_request

# Prefill costs 1 ms per token, so a cached block of 16 tokens saves 16 ms of TTFT.
LATENCY = {"step_overhead_s": 0.002, "per_prefill_token_s": 1e-3, "per_decode_seq_s": 1e-4,
           "per_context_token_s": 0.0}
QUERIES = 'vllm:prefix_cache_queries_total{model_name="sim-test"}'
HITS = 'vllm:prefix_cache_hits_total{model_name="sim-test"}'


def _words(prefix: str, count: int) -> str:
    return " ".join(f"{prefix}{i}" for i in range(count))


def _chat(messages: list[dict[str, str]], max_tokens: int = 4) -> dict:
    return {"messages": messages, "max_tokens": max_tokens, "ignore_eos": True,
            "stream_options": {"include_usage": True}}


async def _session_run(base_url: str, bodies: list[dict]) -> tuple[list, dict[str, float]]:
    async with aiohttp.ClientSession() as session:
        results = [await stream_request(session, base_url, body, "/chat/completions")
                   for body in bodies]
        return results, await metrics(session, base_url)


@pytest.fixture()
def engine(tmp_path: Path):  # noqa: ANN201 - a context-managed server
    log_path = tmp_path / "emissions.jsonl"
    config = sim_config(scheduler="chunked", latency=LATENCY, emission_log_path=str(log_path),
                        chat_role_tokens=1)
    with EmbeddedSimServer(config) as server:
        yield server.base_url, log_path


def test_shared_system_prompt_is_served_from_cache(engine: tuple[str, Path]) -> None:
    base_url, log_path = engine
    system = {"role": "system", "content": _words("s", 63)}  # 1 marker + 63 words = 4 blocks
    bodies = [_chat([system, {"role": "user", "content": _words(f"u{k}-", 10)}]) for k in range(3)]
    results, values = asyncio.run(_session_run(base_url, bodies))
    prompt_tokens = 1 + 63 + 1 + 10 + 1  # role markers: system, user, generation prompt
    assert [r.usage["prompt_tokens"] for r in results] == [prompt_tokens] * 3
    assert [r.usage["prompt_tokens_details"]["cached_tokens"] for r in results] == [0, 64, 64]
    assert values[QUERIES] == 3 * prompt_tokens and values[HITS] == 128
    logged = [orjson.loads(line) for line in log_path.read_text().splitlines()]
    assert [e["cached_tokens"] for e in logged] == [0, 64, 64]
    # Saved prefill: 64 tokens * 1 ms, on the simulator's own clock (arrival to first token).
    server_ttft_s = [(e["token_ns"][0] - e["arrival_ns"]) / 1e9 for e in logged]
    assert server_ttft_s[0] - server_ttft_s[1] == pytest.approx(0.064, abs=0.005)


def test_second_turn_reuses_the_returned_text(engine: tuple[str, Path]) -> None:
    base_url, _ = engine
    user1 = {"role": "user", "content": _words("q", 40)}

    async def go() -> tuple:
        async with aiohttp.ClientSession() as session:
            first = await stream_request(session, base_url, _chat([user1], 30), "/chat/completions")
            history = [user1, {"role": "assistant", "content": "".join(first.texts)},
                       {"role": "user", "content": _words("r", 5)}]
            second = await stream_request(session, base_url, _chat(history, 3), "/chat/completions")
            return first, second

    first, second = asyncio.run(go())
    assert first.usage["prompt_tokens"] == 1 + 40 + 1
    assert second.usage["prompt_tokens"] == 1 + 40 + 1 + 30 + 1 + 5 + 1
    # Turn 1 computed its 42 prompt tokens and 29 of its 30 outputs: 71 tokens, 4 full blocks.
    assert second.usage["prompt_tokens_details"]["cached_tokens"] == 64


def test_independent_scheduler_reports_no_cache() -> None:
    config = sim_config(latency={"ttft_base_s": 0.001, "ttft_per_prompt_token_s": 0.0, "tbt_s": 0.001})
    with EmbeddedSimServer(config) as server:
        body = _chat([{"role": "user", "content": _words("x", 40)}])
        results, values = asyncio.run(_session_run(server.base_url, [body, body]))
    assert [r.usage for r in results] == [{"prompt_tokens": 40, "completion_tokens": 4,
                                           "total_tokens": 44}] * 2
    assert values[QUERIES] == 0 and values[HITS] == 0


def test_caching_off_computes_every_prompt_in_full(tmp_path: Path) -> None:
    log_path = tmp_path / "emissions.jsonl"
    config = sim_config(scheduler="chunked", latency=LATENCY, prefix_caching=False,
                        emission_log_path=str(log_path))
    with EmbeddedSimServer(config) as server:
        body = _chat([{"role": "user", "content": _words("x", 64)}])
        results, values = asyncio.run(_session_run(server.base_url, [body, body]))
    assert all("prompt_tokens_details" not in r.usage for r in results)
    logged = [orjson.loads(line) for line in log_path.read_text().splitlines()]
    server_ttft_s = [(e["token_ns"][0] - e["arrival_ns"]) / 1e9 for e in logged]
    # A hit would save the 64-token prefill (64 ms); a loaded host may slow either request by a
    # few ms, which is no saving.
    assert server_ttft_s[1] > server_ttft_s[0] - 0.016
    assert [e["cached_tokens"] for e in logged] == [None, None] and values[QUERIES] == 0
