"""Token-level truth against the simulator's own emission log: multi-token chunks, reasoning output,
short outputs and wrong usage (sim.modes), each with a known answer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson

from etalon.clients.base import EndpointSpec
from etalon.core.metrics import deadline_miss_rate
from etalon.core.records import RecordTable
from etalon.core.summary import summarize
from etalon.core.workload import Schedule
from etalon.loadgen import LoadSettings, run_load
from etalon.runner.server import EmbeddedSimServer
from tests.integration.conftest_sim import metrics, sim_config

LATENCY = {"ttft_base_s": 0.03, "ttft_per_prompt_token_s": 0.0, "tbt_s": 0.015}


def _run(tmp_path: Path, modes: dict[str, Any], n: int, output_tokens: int) -> tuple[list, dict, dict, int]:
    """(records, emission log by request id, /metrics values, actor epoch) of a closed-loop run."""
    log_path = tmp_path / "emission.jsonl"
    config = sim_config(scheduler="independent", latency=LATENCY, emission_log_path=str(log_path),
                        modes={"seed": 3, **modes})
    schedule = Schedule(offsets_ns=None, prompt_tokens=np.full(n, 4), output_tokens=np.full(n, output_tokens),
                        warmup_requests=0, concurrency=min(n, 16), think_time_s=0.0, duration_s=None)
    with EmbeddedSimServer(config) as sim:
        base_url = sim.start()
        spec = EndpointSpec(base_url=base_url, model="sim-test", ignore_eos=True, continuous_usage_stats=True)
        result = run_load(schedule, ["hello"] * n, spec, LoadSettings(backend="local", num_actors=1),
                          tmp_path / "records.jsonl", progress=False)

        async def scrape() -> dict[str, float]:
            async with aiohttp.ClientSession() as session:
                return await metrics(session, base_url)

        values = asyncio.run(scrape())
    # X-Request-Id is a UUID whose last 12 hex digits are etalon's request id.
    emitted = {int(d["request_id"].rsplit("-", 1)[-1], 16): d for d in map(orjson.loads, log_path.read_bytes().splitlines())}
    return result.records, emitted, values, result.actors[0]["epoch_mono_ns"]


def _mode(values: dict[str, float], name: str) -> float:
    return values[f'etalon_sim_modes_total{{type="{name}"}}']


def _sim_chunk_ns(entry: dict[str, Any]) -> list[int]:
    """The sim's time of each chunk: token times, one per chunk (its first token)."""
    starts = np.cumsum([0, *entry["chunk_tokens"][:-1]])
    return [entry["token_ns"][s] for s in starts]


def test_speculative_chunks_sum_to_usage_follow_the_tbt_rule_and_match_the_emission_log(tmp_path: Path) -> None:
    records, emitted, values, epoch = _run(tmp_path, {"speculative_tokens": 3, "acceptance_rate": 0.6}, 32, 40)
    client_gaps, sim_gaps = [], []
    for rec in records:
        sim = emitted[rec.request_id]
        assert rec.status == "ok" and rec.flags == [] and rec.chunk_tokens_source == "continuous_usage"
        assert sum(rec.chunk_tokens) == rec.output_tokens == rec.server_output_tokens == sim["output_tokens"] == 40
        assert rec.chunk_tokens == sim["chunk_tokens"]  # exactly the sim's chunking
        assert rec.token_ns == np.repeat(rec.chunk_ns, rec.chunk_tokens).tolist()
        client_gaps += np.diff(rec.chunk_ns).tolist()
        sim_gaps += np.diff(_sim_chunk_ns(sim)).tolist()
    sizes = np.concatenate([r.chunk_tokens for r in records])
    assert sizes.min() == 1 and sizes.max() == 4 and (sizes > 1).mean() > 0.3
    # Inter-chunk latency as the client saw it vs the sim's own emission log (median within 3%).
    median_client, median_sim = np.median(client_gaps), np.median(sim_gaps)
    assert abs(median_client - median_sim) <= 0.03 * median_sim, (median_client, median_sim)
    # Counted in /metrics: one speculative chunk per sim chunk, the accepted drafts are the rest.
    assert _mode(values, "speculative_chunks") == sizes.shape[0]
    assert _mode(values, "draft_tokens_accepted") == int((sizes - 1).sum())
    # Deadline metrics use the documented rule: the scalar reference on gaps built by hand from
    # (chunk time, chunk tokens) agrees with the summary for every request.
    table = RecordTable.from_records(records)
    summary = summarize(table, ttft_deadline_s=0.05, tbt_deadline_s=0.02)
    for i, rec in enumerate(records):
        times = [t for t, k in zip(rec.chunk_ns, rec.chunk_tokens) for _ in range(k)]
        xs = [(times[0] - rec.sent_ns) / 1e9] + [(b - a) / 1e9 for a, b in zip(times, times[1:])]
        _, missed, total = deadline_miss_rate(xs, 0.05, 0.02)
        assert (summary.requests.missed[i], summary.requests.total[i]) == (missed, total)
    assert summary.distributions[("tokens_per_chunk", "tokens")]["mean"] == sizes.mean()


def test_reasoning_time_to_first_answer_token_and_counts(tmp_path: Path) -> None:
    reasoning = 8
    records, emitted, values, epoch = _run(tmp_path, {"reasoning_tokens": reasoning}, 24, 30)
    client_s, sim_s = [], []
    for rec in records:
        sim = emitted[rec.request_id]
        assert rec.status == "ok" and rec.flags == []
        assert rec.reasoning_tokens == reasoning and rec.output_tokens - rec.reasoning_tokens == 30 - reasoning
        assert rec.chunk_reasoning == [True] * reasoning + [False] * (30 - reasoning)
        first_answer = rec.chunk_ns[rec.chunk_reasoning.index(False)]
        client_s.append((first_answer - rec.sent_ns) / 1e9)
        sim_s.append((sim["token_ns"][reasoning] - (rec.sent_ns + epoch)) / 1e9)
    error = np.abs(np.asarray(client_s) - np.asarray(sim_s)) / np.asarray(sim_s)
    assert np.median(error) <= 0.03, (np.median(client_s), np.median(sim_s))
    summary = summarize(RecordTable.from_records(records), ttft_deadline_s=1.0, tbt_deadline_s=1.0)
    assert summary.rates["reasoning_tokens_total"] == 24 * reasoning
    assert summary.rates["answer_tokens_total"] == 24 * (30 - reasoning)
    assert summary.distributions[("ttft_answer", "s")]["p50"] == np.median(client_s)
    assert summary.distributions[("ttft", "s")]["p50"] < summary.distributions[("ttft_answer", "s")]["p50"]
    assert _mode(values, "reasoning_tokens") == 24 * reasoning


def test_short_outputs_flag_exactly_those_requests(tmp_path: Path) -> None:
    records, emitted, values, _ = _run(tmp_path, {"short_output_prob": 0.1}, 80, 20)
    short_sim = {i for i, e in emitted.items() if e["output_tokens"] < 20}
    assert short_sim  # seeded: the draws are the same every run
    assert {r.request_id for r in records if "output_short" in r.flags} == short_sim
    for rec in records:
        assert rec.status == "ok" and rec.output_tokens == emitted[rec.request_id]["output_tokens"]
        assert rec.finish_reason == ("stop" if rec.request_id in short_sim else "length")
    assert _mode(values, "short_outputs") == len(short_sim)
    assert _mode(values, "continuous_usage_requests") == 80


def test_wrong_usage_is_flagged_and_the_streamed_count_used(tmp_path: Path) -> None:
    records, emitted, values, _ = _run(tmp_path, {"wrong_usage_prob": 0.1}, 60, 20)
    wrong_sim = {i for i, e in emitted.items() if e["reported_tokens"] is not None}
    assert wrong_sim
    assert {r.request_id for r in records if "usage_implausible" in r.flags} == wrong_sim
    for rec in records:
        wrong = rec.request_id in wrong_sim
        # 20 x 1000 claimed for 20 requested: impossible, so also a malformed_usage error record.
        assert rec.error_type == ("malformed_usage" if wrong else None)
        assert rec.output_tokens == 20 and rec.server_output_tokens == (20_000 if wrong else 20)
        assert rec.output_tokens_source == ("continuous_usage" if wrong else "usage")
    assert _mode(values, "wrong_usage") == len(wrong_sim)
