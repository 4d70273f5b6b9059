"""The command line as a user meets it: help, typo suggestions, one-line errors with exit status 2,
no empty run directory after a mistake, a summary that fits and is saved."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.etalon_cli import PROJECT_DIR, cli_env, run_cli

FAST = ("tracking=none", "client=local", "workload.num_requests=4", "workload.warmup_requests=0")


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith("etalon: error: "), lines
    return lines[0]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (("workload.arival.rate_rps=4",),
         "workload.arival.rate_rps: no such key under 'workload' (did you mean 'workload.arrival.rate_rps'?)"),
        (("+workload.arival.rate_rps=4",), "workload.arival: no such key in the workload schema (did you mean "
                                           "'workload.arrival'?)"),
        (("pipeline=capacity_search", "pipeline.stages.capacity_search.precison=0.1"),
         "pipeline.stages.capacity_search.precison: not a parameter of stage 'capacity_search' (did you mean "
         "'precision'?); valid parameters: configs, runner, labels"),
        (("workload=sharegtp",), "workload=sharegtp: no such preset (did you mean 'sharegpt'?)"),
        (("+experiment=quikstart",), "experiment=quikstart: no such preset (did you mean 'quickstart'?)"),
        (("workload.num_requests=100000000000",), "workload.num_requests: must be in [1, 10,000,000]"),
        (("experiment_name=../../escape",), "experiment_name: '../../escape' cannot name a run directory"),
        (("workload.lengths={_target_:etalon.core.lengths.FixedLengths,prompt_tokens:128}",),
         "workload.lengths: a {...} value is merged into the existing workload.lengths, which has no key "
         "'prompt_tokens'"),
        (("workload.num_requests=many",), "workload.num_requests=many: Value 'many' of type 'str' could not"),
    ],
)
def test_a_mistake_is_one_line_with_exit_status_2_and_leaves_no_run_dir(
    tmp_path: Path, overrides: tuple[str, ...], expected: str
) -> None:
    run = run_cli(tmp_path, *FAST, *overrides, timeout_s=120)
    assert run.returncode == 2, run.stderr[-2000:]
    assert expected in _one_error_line(run.stderr)
    assert not run.run_dir.exists()  # the run never started: nothing left behind
    assert not list(tmp_path.rglob("escape"))


def test_unwritable_cache_and_run_directories_are_one_line_and_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")  # works as root too, unlike chmod
    run = run_cli(tmp_path, *FAST, f"cache_dir={blocker}/cache", timeout_s=120)
    assert run.returncode == 2
    assert f"cache_dir: cannot write to {blocker}/cache" in _one_error_line(run.stderr)
    assert not run.run_dir.exists()
    run = run_cli(tmp_path, *FAST, f"hydra.run.dir={blocker}/run", timeout_s=120)
    assert run.returncode == 2
    assert f"cannot write {blocker}/run" in _one_error_line(run.stderr)
    mlflow_dir = f"sqlite:///{blocker}/db/mlflow.db"
    run = run_cli(tmp_path, "client=local", "workload.num_requests=4", f"tracking.tracking_uri={mlflow_dir}",
                  timeout_s=120)
    assert run.returncode == 2
    assert f"tracking.tracking_uri: cannot write to {blocker}/db" in _one_error_line(run.stderr)


def test_help_describes_the_tool_its_groups_and_examples() -> None:
    proc = subprocess.run([sys.executable, "-m", "etalon.main", "--help"], cwd=PROJECT_DIR, env=cli_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("etalon: measure how an LLM inference service feels")
    for group in ("experiment", "pipeline"):  # every preset on disk, sorted
        presets = sorted(p.stem for p in (PROJECT_DIR / "conf" / group).glob("*.yaml"))
        assert f"{group}: {', '.join(presets)}" in out
    assert out.count("  etalon ") >= 3  # three example commands
    assert "outputs/runs/<date>/<time>_<experiment_name>/" in out
    assert "eval \"$(etalon -sc install=bash)\"" in out
    assert "workload:\n" not in out and "_target_" not in out  # no config dump


def test_shell_completion_completes_groups_and_presets() -> None:
    env = cli_env({"COMP_LINE": "etalon workload=share", "COMP_POINT": str(len("etalon workload=share"))})
    proc = subprocess.run([sys.executable, "-m", "etalon.main", "-sc", "query=bash"], cwd=PROJECT_DIR, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    presets = sorted(p.stem for p in (PROJECT_DIR / "conf" / "workload").glob("share*.yaml"))
    assert "sharegpt" in presets
    assert sorted(proc.stdout.split()) == [f"workload={name}" for name in presets]
    install = subprocess.run([sys.executable, "-m", "etalon.main", "-sc", "install=bash"], cwd=PROJECT_DIR,
                             env=cli_env(), capture_output=True, text=True, timeout=120)
    assert "complete -o nospace -o default -F hydra_bash_completion" in install.stdout


def test_a_run_prints_its_directory_twice_and_saves_the_summary(tmp_path: Path) -> None:
    run = run_cli(tmp_path, "tracking=none", "client=local", "workload.num_requests=6", "workload.warmup_requests=0",
                  "workload.arrival.rate_rps=20", timeout_s=180)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert lines[0] == f"etalon: run directory {run.run_dir.resolve()}"
    assert lines[-1] == f"etalon: done; results in {run.run_dir.resolve()}"
    saved = (run.run_dir / "benchmark" / "summary.txt").read_text()
    assert saved in run.stdout + "\n"
    # plots=false (run_cli's default): tables, summary and report, no figure drawn
    assert not list(run.run_dir.rglob("*.png")) and (run.run_dir / "report.html").exists()
    assert (run.run_dir / "benchmark" / "metrics_percentiles.csv").exists()
    assert (run.run_dir / "summary.txt").read_text().startswith(saved)
    table = saved.splitlines()
    assert max(len(line) for line in table) <= 100
    header = " | ".join(table[:2])
    assert table[0].startswith("endpoint: sim http://127.0.0.1:") and "| model: etalon-sim" in header
    assert "workload: UniformLengths, 6 requests" in header and "load: PoissonArrivals, 20 req/s" in header
    assert table[2] == "=" * 100
    assert "e-0" not in saved  # no scientific notation in the table
