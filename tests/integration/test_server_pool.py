"""One simulator for the jobs of a sweep: reset to a fresh state per job, never while busy, and
never when its command differs or it keeps an emission log."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import pandas as pd

from etalon.runner.server import EmbeddedSimServer
from etalon.sim.config import RESET_PATH
from tests.integration.conftest_sim import metrics, sim_config, stream_request
from tests.integration.etalon_cli import run_cli

SWEEP = ("+experiment=quickstart", "workload.num_requests=10", "workload.warmup_requests=0",
         "client.progress=false", "plots=false", "tracking.enabled=false")


def _reset(base_url: str, body: dict | None = None) -> int:
    root = base_url.removesuffix("/v1")
    request = urllib.request.Request(root + RESET_PATH, data=json.dumps(body or {}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _success_total(base_url: str) -> float:
    async def read() -> float:
        async with aiohttp.ClientSession() as session:
            values = await metrics(session, base_url)
        return sum(v for k, v in values.items() if k.startswith("vllm:request_success_total"))

    return asyncio.run(read())


def test_reset_refused_while_busy_then_clears_counters_and_moves_the_log(tmp_path: Path) -> None:
    config = sim_config(latency={"ttft_base_s": 0.0, "ttft_per_prompt_token_s": 0.0, "tbt_s": 0.05},
                        output_lengths={"kind": "fixed", "median_tokens": 20})
    with EmbeddedSimServer(config) as server:
        base_url = server.base_url

        async def busy_then_reset() -> tuple[int, int]:
            async with aiohttp.ClientSession() as session:
                task = asyncio.create_task(stream_request(session, base_url, {"prompt": "hi", "max_tokens": 20}))
                await asyncio.sleep(0.3)  # mid-stream (20 tokens x 50 ms)
                during = await asyncio.to_thread(_reset, base_url)
                result = await task
                return during, result.status

        during, status = asyncio.run(busy_then_reset())
        assert (during, status) == (409, 200)
        assert _success_total(base_url) == 1
        log_path = tmp_path / "next_job" / "server.log"
        log_path.parent.mkdir()
        assert _reset(base_url, {"log_path": str(log_path)}) == 200
        assert _success_total(base_url) == 0  # a fresh start's counters
        assert log_path.exists()


def test_reset_refused_for_a_server_with_an_emission_log(tmp_path: Path) -> None:
    config = sim_config(emission_log_path=str(tmp_path / "emissions.jsonl"))
    with EmbeddedSimServer(config) as server:
        assert _reset(server.base_url) == 409


def _first_and_last(job_dir: Path, name: str) -> tuple[float, float]:
    frame = pd.read_parquet(job_dir / "benchmark" / "server_metrics.parquet")
    frame = frame[frame["name"] == name].groupby("time_ns")["value"].sum().sort_index()
    return float(frame.iloc[0]), float(frame.iloc[-1])


def test_sweep_jobs_share_one_reset_simulator(tmp_path: Path) -> None:
    """The simulator starts with the sweep, ahead of its first job (its start-up log is the
    sweep's server.log); every job takes it reset, job 0 included."""
    run = run_cli(tmp_path, *SWEEP, "workload.arrival.rate_rps=4,8,16", multirun=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.count("etalon: launching sim") == 1
    assert "for the jobs of this sweep" in run.stderr
    assert run.stderr.count("etalon: reusing sim") == 3
    sweep = tmp_path / "sweep"
    prestart = (sweep / "server.log").read_text()
    assert prestart.startswith("# etalon: launching sim:") and "listening on" in prestart
    for job in ("0", "1", "2"):
        log = (sweep / job / "server.log").read_text()
        assert log.startswith("# etalon: reusing sim (pid"), job
        # The server's own counters start at zero in every job and count that job's requests only.
        first, last = _first_and_last(sweep / job, "vllm:request_success_total")
        assert (first, last) == (0.0, 10.0), job


def test_sweep_over_sim_settings_starts_a_simulator_per_setting(tmp_path: Path) -> None:
    """None is started ahead either: the sweep's base config is not what its jobs run."""
    run = run_cli(tmp_path, *SWEEP, "workload.num_requests=4", "sim.latency.tbt_s=0.01,0.02", multirun=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.count("etalon: launching sim") == 2
    assert "for the jobs of this sweep" not in run.stderr
    assert "etalon: reusing sim" not in run.stderr


def test_a_failed_job_stops_its_simulator(tmp_path: Path) -> None:
    """Job 0 fails its output check (every output cut short); its server is not handed on, so job
    1, with the same simulator command, starts a fresh one."""
    run = run_cli(tmp_path, *SWEEP, "workload.num_requests=4", "sim.modes.short_output_prob=1.0",
                  "endpoint.output_check=fail,warn", multirun=True)
    assert (tmp_path / "sweep" / "0" / "error.txt").exists(), run.stderr[-3000:]
    assert not (tmp_path / "sweep" / "1" / "error.txt").exists(), run.stderr[-3000:]
    assert run.stderr.count("etalon: launching sim") == 2, run.stderr[-3000:]


def test_a_simulator_with_an_emission_log_is_started_per_job(tmp_path: Path) -> None:
    run = run_cli(tmp_path, *SWEEP, "workload.num_requests=4", "workload.arrival.rate_rps=4,8",
                  f"sim.emission_log_path={tmp_path / 'emissions.jsonl'}", multirun=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.count("etalon: launching sim") == 2
    assert "etalon: reusing sim" not in run.stderr
    assert len((tmp_path / "emissions.jsonl").read_text().splitlines()) == 8  # 4 requests per job
