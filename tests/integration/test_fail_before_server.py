"""Values that can only fail late (memory, an unwritable cache_dir) fail before the server starts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from etalon.core.lengths import FixedLengths
from etalon.core.arrivals import PoissonArrivals
from etalon.core.workload import build_schedule
from tests.integration.etalon_cli import run_cli

FAST = ("tracking=none", "client=local", "workload.warmup_requests=0")


def test_a_billion_requests_fail_before_the_server_starts(tmp_path: Path) -> None:
    run = run_cli(tmp_path, *FAST, "workload.num_requests=1000000000", timeout_s=180)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "workload.num_requests: must be in [1, 10,000,000], got 1,000,000,000" in run.stderr
    assert "MemoryError" not in run.stderr and "Traceback" not in run.stderr
    assert not list(tmp_path.rglob("records.jsonl"))


def test_unwritable_cache_dir_fails_before_the_server_starts(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    run = run_cli(tmp_path, *FAST, "workload.num_requests=4",
                  f"cache_dir={tmp_path / 'a-file' / 'cache'}", timeout_s=180)
    assert run.returncode == 2, run.stderr[-2000:]
    assert f"cache_dir: cannot write to {tmp_path / 'a-file' / 'cache'}" in run.stderr
    assert not list(tmp_path.rglob("records.jsonl"))


def test_clipped_requests_are_counted() -> None:
    arrival = PoissonArrivals(rate_rps=10.0)
    fits = build_schedule(arrival, FixedLengths(prompt_tokens=100, output_tokens=500), num_requests=20,
                          duration_s=None, warmup_requests=0, max_total_tokens=8192, seed=1)
    over = build_schedule(arrival, FixedLengths(prompt_tokens=100, output_tokens=9000), num_requests=20,
                          duration_s=None, warmup_requests=0, max_total_tokens=8192, seed=1)
    assert fits.clipped_requests == 0 and over.clipped_requests == 20
    assert np.all(over.prompt_tokens + over.output_tokens <= 8192)
