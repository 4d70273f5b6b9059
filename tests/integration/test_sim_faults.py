"""Each injected fault as a plain aiohttp client sees it, at the configured rate, and in /metrics."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from etalon.runner.server import EmbeddedSimServer
from tests.integration.conftest_sim import StreamResult, metrics, sim_config, stream_request

FAST = {"ttft_base_s": 0.002, "ttft_per_prompt_token_s": 0.0, "tbt_s": 0.002}
BODY = {"prompt": "hello", "max_tokens": 20, "ignore_eos": True}


def _run_faulty(faults: dict, count: int, rate_rps: float | None = None,
                latency: dict | None = None) -> tuple[list[StreamResult], dict[str, float]]:
    config = sim_config(latency=latency or FAST, faults={"seed": 7, **faults})
    with EmbeddedSimServer(config) as server:
        async def go() -> tuple[list[StreamResult], dict[str, float]]:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
                tasks = []
                for _ in range(count):
                    tasks.append(asyncio.create_task(stream_request(session, server.base_url, BODY)))
                    if rate_rps:
                        await asyncio.sleep(1 / rate_rps)
                results = await asyncio.gather(*tasks)
                return list(results), await metrics(session, server.base_url)
        return asyncio.run(go())


def _fault_count(values: dict[str, float], fault_type: str) -> float:
    return values[f'etalon_sim_faults_total{{type="{fault_type}"}}']


def test_error_rate_gives_500_share() -> None:
    results, values = _run_faulty({"error_rate": 0.3}, 300)
    failed = [r for r in results if r.status == 500]
    assert 0.22 <= len(failed) / 300 <= 0.38
    assert failed[0].body["error"]["type"] == "server_error"
    assert _fault_count(values, "error_500") == len(failed)
    assert all(len(r.texts) == 20 for r in results if r.status == 200)


def test_rate_limit_answers_429_with_retry_after() -> None:
    # 90 requests at 60/s against a 20/s bucket (burst 20): about 20 + 1.5 * 20 = 50 pass
    results, values = _run_faulty({"rate_limit_rps": 20.0, "retry_after_s": 2}, 90, rate_rps=60)
    limited = [r for r in results if r.status == 429]
    passed = [r for r in results if r.status == 200]
    assert 40 <= len(passed) <= 60 and len(limited) == 90 - len(passed)
    assert {r.headers.get("Retry-After") for r in limited} == {"2"}
    assert _fault_count(values, "rate_limited_429") == len(limited)


def test_stalls_pause_streams() -> None:
    results, values = _run_faulty({"stall_prob": 0.5, "stall_s": 0.2}, 40)
    stalled = [r for r in results if max(r.tbt_s) > 0.18]
    assert 12 <= len(stalled) <= 28
    assert all(len(r.texts) == 20 for r in results)  # a stall delays tokens, loses none
    assert _fault_count(values, "stall") == len(stalled)


def test_disconnects_cut_streams() -> None:
    results, values = _run_faulty({"disconnect_prob": 0.5}, 40)
    cut = [r for r in results if r.finish_reason is None]
    assert 12 <= len(cut) <= 28
    assert all(len(r.texts) < 20 for r in cut)
    assert all(len(r.texts) == 20 for r in results if r.finish_reason == "length")
    assert _fault_count(values, "disconnect") == len(cut)


def test_malformed_chunks_are_not_json() -> None:
    results, values = _run_faulty({"malformed_prob": 1.0}, 20)
    assert [r.malformed_lines for r in results] == [1] * 20
    assert all(len(r.texts) == 20 for r in results)
    assert _fault_count(values, "malformed") == 20


def test_slow_start_delays_the_first_byte() -> None:
    config = sim_config(latency=FAST, faults={"slow_start_prob": 1.0, "slow_start_s": 0.3})
    with EmbeddedSimServer(config) as server:
        async def go() -> float:
            async with aiohttp.ClientSession() as session:
                started = time.monotonic()
                async with session.post(server.base_url + "/completions",
                                        json={"model": "sim-test", "stream": True, **BODY}) as response:
                    headers_s = time.monotonic() - started
                    await response.read()
                return headers_s
        headers_s = asyncio.run(go())
    assert 0.29 <= headers_s < 0.4
