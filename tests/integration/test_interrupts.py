"""Ctrl-C / SIGTERM stop a pipeline: partial results written, later stages never run, exit 128 + signal."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.etalon_cli import PROJECT_DIR, cli_env, without_figures

# characterize on the tiny engine with a small profile and long probes, so the signal lands in a probe.
CHARACTERIZE = [
    "+experiment=characterize_sim", "tracking=none", "client=local", "client.start_delay_s=0.2",
    "pipeline.stages.prefill_profile.max_prompt_tokens=1024", "pipeline.stages.prefill_profile.repetitions=1",
    "pipeline.stages.capacity_search.probe_duration_s=60", "pipeline.stages.capacity_search.probe_requests=3000",
    "pipeline.stages.capacity_search.start_rate_rps=4", "pipeline.stages.capacity_search.early_stop=false",
]


def _start(tmp_path: Path, overrides: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "etalon.main", f"hydra.run.dir={run_dir}", f"cache_dir={tmp_path / 'cache'}",
            *without_figures(overrides)]
    # Background shells ignore SIGINT in their jobs: give the child a terminal's default.
    proc = subprocess.Popen(args, cwd=PROJECT_DIR, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return proc, run_dir


def _wait_for_probe_records(proc: subprocess.Popen[bytes], cache: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.stat().st_size > 500 for p in cache.glob("probes/*/records.jsonl")):
            return
        time.sleep(0.2)
    out, err = proc.communicate(timeout=30)
    pytest.fail("no probe records appeared; stderr tail:\n" + err.decode()[-3000:])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_in_characterize_capacity_stage_stops_the_pipeline(tmp_path: Path, sig: int) -> None:
    proc, run_dir = _start(tmp_path, CHARACTERIZE)
    _wait_for_probe_records(proc, tmp_path / "cache")
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("no exit 120 s after the signal")
    stderr = err.decode()
    assert proc.returncode == 128 + sig, stderr[-2000:]  # 130 for Ctrl-C, 143 for SIGTERM
    assert "interrupted" in stderr
    assert not (run_dir / "benchmark" / "records.jsonl").exists()  # the benchmark stage never ran
    capacity = json.loads((run_dir / "capacity_search" / "capacity.json").read_text())
    assert capacity["interrupted"] is True
    interrupted = [p for p in capacity["probes"] if p["interrupted"]]
    assert len(interrupted) == 1 and capacity["lowest_failing"] is None  # no verdict, not a fail
    # The interrupted probe is not cached: a re-run measures it again.
    assert not list((tmp_path / "cache").glob("probes/*/probe.json"))
    assert not list((tmp_path / "cache").glob("stages/capacity_search-*.json"))
