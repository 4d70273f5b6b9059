"""A run streamed to Parquet is summarised from its file; `python -m etalon.summarize RUN_DIR`
re-summarises it from the file alone with its own SLO (same numbers) and with a new one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from etalon.records import iter_tables
from tests.integration.etalon_cli import PROJECT_DIR, cli_env, run_cli


def _summarize(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "etalon.summarize", *args], cwd=PROJECT_DIR,
                          env=cli_env(), capture_output=True, text=True, timeout=120)


def _summarize_here(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from etalon.summarize import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_parquet_run_and_resummary_with_a_new_slo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = run_cli(tmp_path, "+experiment=quickstart", "client=local", "client.progress=false",
                  "client.records_format=parquet", "client.records_batch_rows=16", "tracking=none",
                  "workload.num_requests=40", "slo=tbt_ttft")
    assert run.returncode == 0, run.stderr[-3000:]
    stage = run.run_dir / "benchmark"
    parts = sorted((stage / "records.parquet").glob("part-*.parquet"))
    assert len(parts) >= 3 and not (stage / "records.jsonl").exists()
    rows = [len(t) for t in iter_tables(stage / "records.parquet", batch_rows=16)]
    original = orjson.loads((stage / "summary.json").read_bytes())
    assert sum(rows) == 40 + original["scalars"]["requests_warmup"] and max(rows) <= 16

    code, out, err = _summarize_here(capsys, str(run.run_dir), "--batch-rows", "7")
    assert code == 0, err
    assert "TbtTtftSlo" in out
    again = orjson.loads((stage / "resummary" / "summary.json").read_bytes())
    assert again["scalars"].pop("tbt_mean_s") == pytest.approx(original["scalars"].pop("tbt_mean_s"), rel=1e-12)
    # The stage adds sections the re-summary does not recompute (scraped server series, intervals,
    # traffic): every section the re-summary writes equals the original's.
    assert set(again) <= set(original)
    kept_scalars = {k: v for k, v in original["scalars"].items() if k in again["scalars"]}
    assert again["scalars"] == kept_scalars and set(kept_scalars) >= {"ttft_p99_s", "tbt_p99_s", "goodput_fraction"}
    assert {k: v for k, v in again.items() if k != "scalars"} == {k: original[k] for k in again if k != "scalars"}
    assert original["scalars"]["goodput_fraction"] == 1.0

    code, _, err = _summarize_here(capsys, str(run.run_dir), "slo.tbt_s=0.001", "--out", str(tmp_path / "strict"))
    assert code == 0, err
    new = orjson.loads((tmp_path / "strict" / "summary.json").read_bytes())
    assert new["settings"]["tbt_deadline_s"] == 0.001 and new["scalars"]["goodput_fraction"] == 0.0
    assert new["scalars"]["ttft_p99_s"] == original["scalars"]["ttft_p99_s"]  # measurements unchanged
    assert (tmp_path / "strict" / "metrics_requests.csv").read_text().count("\n") == 41

    bad = _summarize(str(run.run_dir), "slo=nope")  # as a user runs it: one line, exit status 2
    assert bad.returncode == 2 and "no such SLO preset" in bad.stderr and "Traceback" not in bad.stderr
