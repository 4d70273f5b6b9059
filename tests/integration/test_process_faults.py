"""Process faults with real signals and real processes: SIGTERM/SIGHUP stop a run like Ctrl-C,
kill -9 of etalon takes its simulator with it, and the next run marks the orphaned MLflow runs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.etalon_cli import PROJECT_DIR, cli_env, run_cli, without_figures


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(b")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def descendants(pid: int) -> set[int]:
    """Every process under ``pid`` (Ray's raylet and its workers are under the driver)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_bytes().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state != b"Z"


def _start(tmp_path: Path, *overrides: str) -> tuple[subprocess.Popen[bytes], Path]:
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "etalon.main", f"hydra.run.dir={run_dir}",
            f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"cache_dir={tmp_path / 'cache'}", "workload.num_requests=2000",
            "workload.arrival.rate_rps=20", "workload.warmup_requests=0", *without_figures(overrides)]
    proc = subprocess.Popen(args, cwd=PROJECT_DIR, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    return proc, run_dir


def _wait_for_records(proc: subprocess.Popen[bytes], run_dir: Path, min_bytes: int = 2000) -> int:
    """Wait until the run has written records; return the simulator's pid."""
    records = run_dir / "benchmark" / "records.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not records.exists() or records.stat().st_size < min_bytes):
        assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
        time.sleep(0.2)
    assert records.exists(), "no records after 120 s"
    sims = [p for p in _children(proc.pid) if "etalon.sim" in _cmdline(p)]
    assert len(sims) == 1, [_cmdline(p) for p in _children(proc.pid)]
    return sims[0]


def _finish(proc: subprocess.Popen[bytes], timeout_s: float = 120) -> str:
    try:
        _, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail("no exit after the signal; stderr tail:\n" + err.decode()[-3000:])
    return err.decode()


def _run_statuses(tmp_path: Path) -> list[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("etalon")
    return sorted(r.info.status for r in client.search_runs([experiment.experiment_id]))


@pytest.mark.parametrize(("signum", "client"), [(signal.SIGTERM, "local"), (signal.SIGHUP, "local"),
                                                (signal.SIGTERM, "default")])
def test_sigterm_and_sighup_stop_like_ctrl_c(tmp_path: Path, signum: int, client: str) -> None:
    proc, run_dir = _start(tmp_path, f"client={client}", "client.num_actors=1")
    sim_pid = _wait_for_records(proc, run_dir)
    proc.send_signal(signum)
    err = _finish(proc)
    assert proc.returncode == 128 + signum, err[-3000:]
    assert f"interrupted ({signal.Signals(signum).name})" in err and "Traceback" not in err
    lines = (run_dir / "benchmark" / "records.jsonl").read_bytes().splitlines()
    summary = json.loads((run_dir / "benchmark" / "summary.json").read_text())
    assert summary["partial"] is True and 0 < len(lines) < 2000
    assert summary["scalars"]["requests_ok"] >= 1
    assert not _alive(sim_pid)
    assert _run_statuses(tmp_path) == ["KILLED", "KILLED"]  # pipeline run and its stage run


def test_kill_9_takes_the_simulator_along_and_the_next_run_fails_the_orphans(tmp_path: Path) -> None:
    proc, run_dir = _start(tmp_path, "client=local")
    sim_pid = _wait_for_records(proc, run_dir, min_bytes=200)
    proc.kill()
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(sim_pid):
        time.sleep(0.1)
    assert not _alive(sim_pid), "the simulator outlived etalon's kill -9"
    assert _run_statuses(tmp_path) == ["RUNNING", "RUNNING"]
    after = run_cli(tmp_path, "client=local", "workload.num_requests=2", "workload.warmup_requests=0",
                    "tracking.artifact_location=" + (tmp_path / "artifacts").as_uri())
    assert after.returncode == 0, after.stderr[-2000:]
    assert "marked 2 MLflow run(s) FAILED" in after.stderr + after.stdout
    assert _run_statuses(tmp_path) == ["FAILED", "FAILED", "FINISHED", "FINISHED"]


def test_full_disk_keeps_whole_record_lines_and_the_summary(tmp_path: Path) -> None:
    """A real write failure: the kernel refuses writes past RLIMIT_FSIZE (EFBIG), like a full disk
    refuses them past its free space, partial last write included."""
    import resource

    limit = 400_000
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "etalon.main", f"hydra.run.dir={run_dir}", "tracking=none",
            "client=local", f"cache_dir={tmp_path / 'cache'}", "workload=closed_loop",
            "workload.arrival.concurrency=32", "workload.lengths.prompt_tokens=50",
            "workload.lengths.output_tokens=64", "workload.num_requests=800",
            "workload.warmup_requests=0", "sim.latency.tbt_s=0.001", "sim.latency.ttft_base_s=0.001"]
    proc = subprocess.run(
        args, cwd=PROJECT_DIR, env=cli_env(), capture_output=True, text=True, timeout=300,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "File too large" in proc.stdout + proc.stderr
    raw = (run_dir / "benchmark" / "records.jsonl").read_bytes()
    assert 0 < len(raw) <= limit and raw.endswith(b"\n")  # whole lines only
    lines = [json.loads(line) for line in raw.splitlines()]
    assert 0 < len(lines) < 800
    summary = json.loads((run_dir / "benchmark" / "summary.json").read_text())
    assert summary["partial"] is False and summary["scalars"]["requests_ok"] == 800
