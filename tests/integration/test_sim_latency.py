"""Timing behaviour of the simulator against its latency model: accuracy, knee, chunking, KV."""

from __future__ import annotations

import asyncio
import dataclasses
import statistics

import aiohttp
import orjson
import pytest

from etalon.runner.server import EmbeddedSimServer
from etalon.sim.config import load_sim_config
from etalon.sim.schedulers import EARLY_NS, MAX_STEP_LAG_NS
from tests.integration.conftest_sim import metrics, percentile, sim_config, stream_request

# The engine tests below resend one prompt and measure the uncached cost model: caching off.
ENGINE_LATENCY = {"step_overhead_s": 0.005, "per_prefill_token_s": 1e-4, "per_decode_seq_s": 1e-3,
                  "per_context_token_s": 1e-6}


def _prompt(words: int) -> str:
    return " ".join(["word"] * words)


async def _open_loop(base_url: str, rate_rps: float, duration_s: float, body: dict) -> list:
    """Constant-rate arrivals (planned send times), each request streamed to the end."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []
        for k in range(int(rate_rps * duration_s)):
            await asyncio.sleep(max(0.0, start + k / rate_rps - loop.time()))
            tasks.append(asyncio.create_task(stream_request(session, base_url, body)))
        return list(await asyncio.gather(*tasks))


def test_independent_hits_ttft_and_tbt_at_256_streams(tmp_path) -> None:
    latency = {"ttft_base_s": 0.05, "ttft_per_prompt_token_s": 2e-5, "tbt_s": 0.02}
    log_path = tmp_path / "emissions.jsonl"
    with EmbeddedSimServer(sim_config(latency=latency, emission_log_path=str(log_path))) as server:
        async def go() -> list:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
                warm = {"prompt": "x", "max_tokens": 1, "ignore_eos": True}
                await asyncio.gather(*(stream_request(session, server.base_url, warm, headers={"X-Request-Id": f"w{i}"})
                                       for i in range(256)))  # open 256 pooled connections
                body = {"prompt": _prompt(100), "max_tokens": 50, "ignore_eos": True}
                tasks = []
                for i in range(256):  # ramp over 0.5 s so the client never bursts; all 256 overlap
                    tasks.append(asyncio.create_task(
                        stream_request(session, server.base_url, body, headers={"X-Request-Id": f"r{i}"})))
                    await asyncio.sleep(0.002)
                return await asyncio.gather(*tasks)
        results = asyncio.run(go())
    assert all(len(r.texts) == 50 for r in results)
    entries = {e["request_id"]: e for e in map(orjson.loads, log_path.read_bytes().splitlines())}
    # Judged on the simulator's own emission log, not on client times in a band around the model
    # (a loaded host delays single emissions; that failed repeatably on a busy machine).
    late_ms, gaps_s = [], []
    for i, r in enumerate(results):
        e = entries[f"r{i}"]
        tokens_ns = e["token_ns"]
        assert len(tokens_ns) == len(r.chunk_ns) == 50
        assert all(seen >= sent for seen, sent in zip(r.chunk_ns, tokens_ns))  # causality
        due_ns = e["arrival_ns"] + round(1e9 * (0.05 + 2e-5 * e["prompt_tokens"]))
        assert tokens_ns[0] >= due_ns - EARLY_NS  # never early
        late_ms.append((tokens_ns[0] - due_ns) / 1e6)
        gaps_s += [(b - a) / 1e9 for a, b in zip(tokens_ns, tokens_ns[1:])]
    # Tokens are due on an absolute timeline (first + k x TBT): a late emission does not move the
    # next one, so the typical gap is the model's whatever the load.
    assert statistics.median(gaps_s) == pytest.approx(0.02, abs=0.0005)
    assert statistics.mean(gaps_s) == pytest.approx(0.02, abs=0.0005)
    assert statistics.median(late_ms) < 20, sorted(late_ms)[-5:]


def test_engine_ttft_and_tbt_match_model_below_capacity(tmp_path) -> None:
    log_path = tmp_path / "emissions.jsonl"
    config = sim_config(scheduler="chunked", max_num_seqs=8, max_num_batched_tokens=512,
                        latency=ENGINE_LATENCY, prefix_caching=False, emission_log_path=str(log_path))
    with EmbeddedSimServer(config) as server:
        async def go() -> list:
            async with aiohttp.ClientSession() as session:
                body = {"prompt": _prompt(200), "max_tokens": 20, "ignore_eos": True}
                return [await stream_request(session, server.base_url, body, headers={"X-Request-Id": f"r{i}"})
                        for i in range(5)]
        results = asyncio.run(go())
    entries = {e["request_id"]: e for e in map(orjson.loads, log_path.read_bytes().splitlines())}
    # prefill step: 5 ms + 200 * 0.1 ms + 200 context tokens * 1 us
    expected_ttft_s = 0.005 + 0.020 + 0.0002
    # decode step k (k = 1..19) attends to 200 + k tokens: 5 ms + 1 ms + (200 + k) us
    expected_steps_ns = [round(1e9 * expected_ttft_s)] + [round(1e9 * (0.006 + (200 + k) * 1e-6)) for k in range(1, 20)]
    # The truth is the simulator's own log: the cost model is what each step planned (exact), and
    # a loaded machine only delivers late, never early; a band around the configured model on the
    # delivered times failed on a busy host.
    ttft_s = []
    for i, r in enumerate(results):
        entry = entries[f"r{i}"]
        tokens_ns = entry["token_ns"]
        assert len(tokens_ns) == len(r.chunk_ns) == len(entry["step_ns"]) == 20
        assert [abs(a - b) <= 1 for a, b in zip(entry["step_ns"], expected_steps_ns)] == [True] * 20, entry["step_ns"]
        assert all(seen >= sent for seen, sent in zip(r.chunk_ns, tokens_ns))  # causality
        ttft_s.append((tokens_ns[0] - r.sent_ns) / 1e9)
        assert ttft_s[-1] >= expected_ttft_s - 0.0005  # the engine never emits early
        gaps_s = [(b - a) / 1e9 for a, b in zip(tokens_ns, tokens_ns[1:])]
        # nor decodes faster than its model: a late step is caught up by at most MAX_STEP_LAG_NS
        assert sum(gaps_s) >= (sum(expected_steps_ns[1:]) - MAX_STEP_LAG_NS - EARLY_NS) / 1e9
    assert statistics.median(ttft_s) < 2 * expected_ttft_s


def _ttft_by_third(results: list, q: float) -> tuple[float, float]:
    ordered = sorted(results, key=lambda r: r.sent_ns)
    third = len(ordered) // 3
    return (percentile([r.ttft_s for r in ordered[:third]], q),
            percentile([r.ttft_s for r in ordered[-third:]], q))


def test_tiny_engine_rate_sweep_shows_the_knee() -> None:
    preset = load_sim_config("tiny_engine", model={"name": "sim-test", "tokenizer": None})
    with EmbeddedSimServer(dataclasses.asdict(preset)) as server:
        body = {"prompt": _prompt(64), "max_tokens": 20, "ignore_eos": True}
        below = asyncio.run(_open_loop(server.base_url, 10, 2.5, body))
        above = asyncio.run(_open_loop(server.base_url, 60, 2.5, body))
    assert all(len(r.texts) == 20 for r in below + above)
    # Flat below the ~29 req/s capacity: a third holds ~8 requests, so its p99 is its slowest one,
    # which one scheduler hiccup of a loaded host moves; a queue that builds up moves the median.
    first_s, last_s = _ttft_by_third(below, 50)
    assert last_s < 0.05 and last_s < 2 * first_s + 0.01
    assert _ttft_by_third(below, 99)[1] < 0.1
    first_s, last_s = _ttft_by_third(above, 99)
    assert last_s > 1.0 and last_s > 2 * first_s  # the queue grows for the whole run


def _mixed_load_tbt_p99(scheduler: str) -> float:
    config = sim_config(scheduler=scheduler, max_num_seqs=16, max_num_batched_tokens=256,
                        prefix_caching=False, latency={"step_overhead_s": 0.004, "per_prefill_token_s": 5e-5,
                                 "per_decode_seq_s": 2e-4, "per_context_token_s": 0.0})
    with EmbeddedSimServer(config) as server:
        async def go() -> list:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
                short = {"prompt": _prompt(32), "max_tokens": 150, "ignore_eos": True}
                long = {"prompt": _prompt(2000), "max_tokens": 2, "ignore_eos": True}
                decoders = [asyncio.create_task(stream_request(session, server.base_url, short))
                            for _ in range(6)]
                for _ in range(8):  # a 2000-token prompt every 120 ms while the short ones decode
                    await asyncio.sleep(0.12)
                    asyncio.create_task(stream_request(session, server.base_url, long))
                return await asyncio.gather(*decoders)
        results = asyncio.run(go())
    return percentile([g for r in results for g in r.tbt_s], 99)


def test_chunked_prefill_lowers_tbt_p99_against_prefill_first() -> None:
    prefill_first_s = _mixed_load_tbt_p99("prefill_first")
    chunked_s = _mixed_load_tbt_p99("chunked")
    # prefill-first stalls decodes for a whole 2000-token prefill: 4 ms + 100 ms;
    # chunked caps a step at 256 tokens: about 4 ms + 250 * 50 us + 6 * 0.2 ms = 17.7 ms
    assert prefill_first_s > 0.09
    assert chunked_s < 0.03 and chunked_s < prefill_first_s / 3


def test_kv_pressure_preempts_and_loses_no_tokens() -> None:
    config = sim_config(scheduler="prefill_first", max_num_seqs=16, max_num_batched_tokens=2048,
                        kv_cache_tokens=1024, block_size_tokens=16, prefix_caching=False,
                        latency={"step_overhead_s": 0.0005})
    with EmbeddedSimServer(config) as server:
        async def go() -> tuple[list, dict]:
            async with aiohttp.ClientSession() as session:
                body = {"prompt": _prompt(100), "max_tokens": 100, "ignore_eos": True}
                results = await asyncio.gather(*(stream_request(session, server.base_url, body)
                                                 for _ in range(8)))
                return list(results), await metrics(session, server.base_url)
        results, values = asyncio.run(go())
    assert all(len(r.texts) == 100 and r.finish_reason == "length" for r in results)
    # 8 sequences of up to 200 tokens need 8 * 13 blocks; the cache has 64
    assert values['vllm:num_preemptions_total{model_name="sim-test"}'] >= 1
    assert values['vllm:gpu_cache_usage_perc{model_name="sim-test"}'] == 0.0
