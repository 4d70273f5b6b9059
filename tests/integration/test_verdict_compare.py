"""Verdicts, fail_on_slo exit status and `python -m etalon.compare` on real simulator runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.etalon_cli import PROJECT_DIR, cli_env, run_cli

FAST = ("+experiment=quickstart", "client=local", "tracking=none", "print_summary=false",
        "workload.num_requests=60", "workload.warmup_requests=0", "workload.arrival.rate_rps=20",
        "workload.lengths.output_tokens_min=40", "workload.lengths.output_tokens_max=60")


def compare(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "etalon.compare", *args], cwd=PROJECT_DIR, env=cli_env(),
                          capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def tbt_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two benchmarks of the simulator that differ only in its TBT: 20 ms (A) and 22 ms (B)."""
    dirs = []
    for tbt_s, seed in ((0.020, 1), (0.022, 2)):
        tmp = tmp_path_factory.mktemp(f"tbt{int(tbt_s * 1000)}")
        run = run_cli(tmp, *FAST, f"sim.latency.tbt_s={tbt_s}", f"workload.seed={seed}")
        assert run.returncode == 0, run.stderr[-3000:]
        dirs.append(run.run_dir)
    return dirs[0], dirs[1]


def test_compare_calls_a_2ms_tbt_slowdown_worse_with_an_interval_excluding_zero(tbt_pair, tmp_path: Path) -> None:
    gate = tmp_path / "gate.yaml"
    gate.write_text("tbt_p50_s: +5%\nttft_p99_s: +50%\n")
    out = tmp_path / "cmp"
    proc = compare(str(tbt_pair[0]), str(tbt_pair[1]), "--gate", str(gate), "--out", str(out), "--replicates", "400")
    assert proc.returncode == 3, proc.stdout + proc.stderr  # the TBT gate is violated
    (rows,) = json.loads((out / "comparison.json").read_text()).values()
    by_key = {r["key"]: r for r in rows}
    tbt = by_key["tbt_p50_s"]
    assert tbt["verdict"] == "worse" and tbt["low"] > 0
    assert tbt["relative"] == pytest.approx(0.10, abs=0.03)  # 22 ms vs 20 ms
    assert by_key["ttft_p50_s"]["verdict"] == "no detectable difference"  # TTFT did not change
    assert "gate tbt_p50_s +5%: VIOLATED" in proc.stdout and "gate ttft_p99_s +50%: ok" in proc.stdout
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "http://" not in page and "https://" not in page


def test_compare_bad_inputs_are_one_line(tbt_pair, tmp_path: Path) -> None:
    bad_gate = tmp_path / "gate.yaml"
    bad_gate.write_text("ttft_p99: +5%\n")
    proc = compare(str(tbt_pair[0]), str(tbt_pair[1]), "--gate", str(bad_gate))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and "unknown metric 'ttft_p99'" in proc.stderr
    bad_gate.write_text("ttft_p99_s: fast\n")
    proc = compare(str(tbt_pair[0]), str(tbt_pair[1]), "--gate", str(bad_gate))
    assert proc.returncode == 2 and "bad threshold 'fast'" in proc.stderr
    proc = compare(str(tbt_pair[0]), str(tmp_path))
    assert proc.returncode == 2 and "no records.jsonl" in proc.stderr and proc.stderr.count("\n") == 1


def test_fail_on_slo_exits_3_on_an_impossible_slo_and_0_on_an_easy_one(tmp_path: Path) -> None:
    small = (*FAST, "workload.num_requests=12", "fail_on_slo=true")
    hard = run_cli(tmp_path / "hard", *small, "slo.ttft_s=0.0001")
    assert hard.returncode == 3, hard.stderr[-2000:]
    assert "SLO FAIL" in hard.stdout and "exit status 3" in hard.stdout
    summary = json.loads((hard.run_dir / "benchmark" / "summary.json").read_text())
    assert summary["slo_passed"] is False and summary["slo"]["limits"]["ttft_p99_s"] == 0.0001
    assert summary["slo"]["values"]["ttft_p99_s"] > 0.05
    easy = run_cli(tmp_path / "easy", *small)
    assert easy.returncode == 0, easy.stderr[-2000:]
    last = easy.stdout.strip().splitlines()
    # the verdict block closes the output (only the "done; results in" line may follow it)
    assert any(line.startswith("=====") for line in last[-2:]) and any("SLO PASS" in line for line in last[-9:])
    assert json.loads((easy.run_dir / "benchmark" / "summary.json").read_text())["slo_passed"] is True


def test_capacity_search_prints_its_capacity_last(tmp_path: Path) -> None:
    run = run_cli(tmp_path, "+experiment=capacity_sim", "client=local", "tracking=none",
                  "pipeline.stages.capacity_search.probe_requests=80", "pipeline.stages.capacity_search.probe_duration_s=2.0",
                  "pipeline.stages.capacity_search.precision=0.2", "pipeline.stages.capacity_search.start_rate_rps=20",
                  timeout_s=400)
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads((run.run_dir / "capacity_search" / "capacity.json").read_text())
    tail = run.stdout[run.stdout.rindex("etalon verdict"):]
    printed = re.search(r"capacity: ([0-9.]+) requests/s\s+\(bracket ([0-9.]+) \.\. ([0-9.]+)\)", tail)
    assert printed is not None, tail
    assert float(printed.group(1)) == pytest.approx(data["max_rate_rps"], rel=1e-3)
    assert float(printed.group(3)) == pytest.approx(data["lowest_failing"], rel=1e-3)
    assert re.search(r"precision [0-9.]+% \(asked 20%\): reached|stopped: ", tail)
    assert "report.html" in tail and (run.run_dir / "report.html").exists()


def test_repeats_report_the_spread_between_seeds(tmp_path: Path) -> None:
    run = run_cli(tmp_path, *FAST, "workload.num_requests=10", "pipeline.stages.benchmark.repeats=3")
    assert run.returncode == 0, run.stderr[-2000:]
    stage = run.run_dir / "benchmark"
    block = json.loads((stage / "summary.json").read_text())["repeats"]
    assert block["repeats"] == 3 and block["seeds"] == [42, 43, 44] and block["slo_passed"] == [True] * 3
    ttft = [json.loads((d / "summary.json").read_text())["scalars"]["ttft_p50_s"]
            for d in (stage, stage / "repeat_2", stage / "repeat_3")]
    spread = block["spread"]["ttft_p50_s"]
    assert spread["min"] == min(ttft) and spread["max"] == max(ttft) and spread["n"] == 3
    assert "3/3 repeats passed" in run.stdout
