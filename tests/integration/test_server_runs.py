"""Runs against a launched server: /metrics scraped during the run agrees with the client and the
simulator's own emission log; a server above its context is refused up front; a server that dies
mid-run stops the run (partial, non-zero, log tail); SIGTERM stops etalon and its server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.integration.etalon_cli import PROJECT_DIR, cli_env, run_cli, without_figures

SCRAPED = ("tracking=none", "client=local", "sim=tiny_engine", "sim.max_num_seqs=64", "sim.max_num_batched_tokens=8192",
           "sim.kv_cache_tokens=200000", "sim.latency.per_decode_seq_s=0.0002", "endpoint.metrics_interval_s=0.1", "workload.warmup_requests=0",
           "workload.num_requests=150", "workload.arrival.rate_rps=20", "print_summary=false")


def test_scraped_sim_metrics_agree_with_client_and_emission_log(tmp_path: Path) -> None:
    emissions = tmp_path / "emissions.jsonl"
    run = run_cli(tmp_path, *SCRAPED, "plots=true", f"sim.emission_log_path={emissions}", timeout_s=180)
    assert run.returncode == 0, run.stderr[-3000:]
    stage = run.run_dir / "benchmark"
    server = json.loads((stage / "summary.json").read_text())["server"]
    samples = pd.read_parquet(stage / "server_metrics.parquet")
    assert {"vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"} <= set(samples["name"])
    series = pd.read_csv(stage / "server_series.csv")
    assert len(series) >= 20 and series["kv_cache_usage"].max() > 0
    # With 64 sequences almost nothing waits (a new arrival waits for the next step at most): the
    # server's running count is the client's in-flight count.
    inflight = server["client_inflight_mean"]
    assert inflight > 2 and server["server_waiting_mean"] < 0.1 * inflight
    assert server["server_running_mean"] == pytest.approx(inflight, rel=0.10)
    assert server["server_running_mean"] + server["server_waiting_mean"] == pytest.approx(inflight, rel=0.10)
    logged = [json.loads(line) for line in emissions.read_text().splitlines()]
    ttft_s = np.array([(r["token_ns"][0] - r["arrival_ns"]) / 1e9 for r in logged if r["token_ns"]])
    assert server["server_ttft_count"] == len(ttft_s) == 150
    assert server["server_ttft_p50_s"] == pytest.approx(float(np.median(ttft_s)), rel=0.05)
    assert (stage / "server_timeline.png").stat().st_size > 10_000


def test_workload_above_the_servers_context_is_refused_before_any_request(tmp_path: Path) -> None:
    run = run_cli(tmp_path, "tracking=none", "client=local", "sim.context_tokens=256", timeout_s=120)
    assert run.returncode == 2
    assert "model.context_tokens=8192 but the server reports a context limit of 256" in run.stderr
    line = next(l for l in run.stderr.splitlines() if l.startswith("etalon: error:"))
    assert "the longest request needs" in line and "context limit is 256 (max_model_len in GET /v1/models)" in line
    records = list(tmp_path.rglob("records.jsonl"))
    assert all(p.stat().st_size == 0 for p in records)


def _launched_pid(log: Path, deadline_s: float = 60) -> int:
    """The pid of the sim etalon launched (found by the port in the command its server.log names)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and not log.exists():
        time.sleep(0.1)
    port = log.read_text().split("--port ", 1)[1].split()[0]
    while time.monotonic() < end:  # the header is written just before the exec: retry the scan
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmd = (entry / "cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if b"etalon.sim" in cmd and port.encode() in cmd:
                    return int(entry.name)
        time.sleep(0.1)
    raise AssertionError(f"no launched sim on port {port}")


def _start(run_dir: Path, *overrides: str) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "etalon.main", f"hydra.run.dir={run_dir}", "tracking=none", "client=local",
            "workload.warmup_requests=0", "print_summary=false", *without_figures(overrides)]
    return subprocess.Popen(args, cwd=PROJECT_DIR, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_records(path: Path, size: int, deadline_s: float = 90) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and (not path.exists() or path.stat().st_size < size):
        time.sleep(0.1)


def test_server_dying_mid_run_stops_the_run_partial_and_non_zero(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = _start(run_dir, "workload.num_requests=3000", "workload.arrival.rate_rps=30", f"cache_dir={tmp_path}")
    pid = _launched_pid(run_dir / "server.log")
    records = run_dir / "benchmark" / "records.jsonl"
    _wait_records(records, 5000)
    os.kill(pid, signal.SIGKILL)  # the server dies; etalon must notice, not measure on
    out, err = proc.communicate(timeout=120)
    text = err.decode()
    assert proc.returncode == 2, text[-3000:]
    error = next(l for l in text.splitlines() if l.startswith("etalon: error:"))
    assert "endpoint gone: the last 5 requests could not connect" in error and "launched server exited" in error
    assert "--- last lines of" in text and "etalon-sim listening on" in text  # the server.log tail
    summary = json.loads((run_dir / "benchmark" / "summary.json").read_text())
    assert summary["partial"] is True
    lines = records.read_bytes().splitlines()
    assert 0 < len(lines) < 3000 and sum(b'"status":"ok"' in l for l in lines) > 0  # measured, kept


def test_sigterm_stops_etalon_and_its_servers_group_keeping_results(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = _start(run_dir, "workload.num_requests=3000", "workload.arrival.rate_rps=20", f"cache_dir={tmp_path}")
    pid = _launched_pid(run_dir / "server.log")
    _wait_records(run_dir / "benchmark" / "records.jsonl", 3000)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 143  # 128 + SIGTERM
    assert not Path(f"/proc/{pid}").exists() or b"zombie" in Path(f"/proc/{pid}/status").read_bytes().lower()
    assert json.loads((run_dir / "benchmark" / "summary.json").read_text())["partial"] is True
