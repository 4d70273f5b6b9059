"""Bad input gets one clear line before any request is sent; Ctrl-C keeps what was measured."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.etalon_cli import PROJECT_DIR, cli_env, free_port, run_cli

CLOSED_URL = f"http://127.0.0.1:{free_port()}/v1"
FAST = ("tracking=none", "client=local", "workload.num_requests=4", "workload.warmup_requests=0")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (("workload=no_such_preset",), "workload=no_such_preset: no such preset"),
        (("workload.no_such_key=1",), "no_such_key"),
        (("workload.arrival.rate_rps=-2",), "rate_rps"),
        (("workload=closed_loop", "workload.arrival.concurrency=0"), "concurrency"),
        (("workload=azure_conv", "workload.arrival.path=/nonexistent/trace.csv"), "/nonexistent/trace.csv"),
        (("workload.max_total_tokens=100000",), "model.context_tokens=8192"),
        (("endpoint=openai_chat", f"endpoint.base_url={CLOSED_URL}"), f"cannot reach {CLOSED_URL}"),
        (("endpoint.api_key_env=ETALON_NO_SUCH_KEY_VAR",), "ETALON_NO_SUCH_KEY_VAR is not set"),
        (("sim.served_model_name=another-model",), "'etalon-sim' is not served"),
    ],
)
def test_bad_input_fails_fast_with_one_clear_line(tmp_path: Path, overrides: tuple[str, ...], expected: str) -> None:
    run = run_cli(tmp_path, *FAST, *overrides, timeout_s=120)
    assert run.returncode != 0
    assert expected in run.stderr, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    records = list(tmp_path.rglob("records.jsonl"))
    assert all(p.stat().st_size == 0 for p in records)


def test_ctrl_c_keeps_records_and_marks_the_summary_partial(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [
        sys.executable, "-m", "etalon.main", f"hydra.run.dir={run_dir}", "tracking=none", "client=local",
        "workload.num_requests=2000", "workload.arrival.rate_rps=20", "workload.warmup_requests=0",
    ]
    # A shell that starts jobs in the background (as CI may) ignores SIGINT in them, and Python keeps
    # an ignored SIGINT ignored: give the child the default a user's terminal would.
    proc = subprocess.Popen(
        args, cwd=PROJECT_DIR, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    records = run_dir / "benchmark" / "records.jsonl"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (not records.exists() or records.stat().st_size < 2000):
        time.sleep(0.2)
    assert records.exists(), proc.communicate(timeout=30)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail("no exit 120 s after Ctrl-C; stderr tail:\n" + err.decode()[-3000:])
    assert proc.returncode == 130, err.decode()[-2000:]
    lines = records.read_bytes().splitlines()
    assert 0 < len(lines) < 2000
    summary = json.loads((run_dir / "benchmark" / "summary.json").read_text())
    assert summary["partial"] is True
    assert "interrupted" in err.decode()
