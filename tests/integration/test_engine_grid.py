"""Engine grid search and the calibrated twin, end to end on the simulator (slow: several searches)."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from tests.integration.etalon_cli import run_cli

FAST_GRID = ("client=local", "pipeline.stages.capacity_compare.probe_duration_s=2.0", "pipeline.stages.capacity_compare.precision=0.2",
             "pipeline.stages.capacity_compare.max_probes=6", "pipeline.stages.capacity_compare.expand_fraction=1.0",
             "pipeline.stages.capacity_compare.interpolate=false")


@pytest.mark.heavy
@pytest.mark.slow
def test_grid_of_two_presets_by_two_max_num_seqs_names_the_best_one_server_at_a_time(tmp_path: Path) -> None:
    run = run_cli(tmp_path, "+experiment=engine_grid_sim", *FAST_GRID, timeout_s=600)
    assert run.returncode == 0, run.stderr[-3000:]
    stage = run.run_dir / "capacity_compare"
    result = json.loads((stage / "capacity_comparison.json").read_text())
    rows = result["comparison"]
    assert [r["config"] for r in rows] == [
        "sim=tiny_engine sim.max_num_seqs=4", "sim=tiny_engine sim.max_num_seqs=8",
        "sim=llama2_7b_a100 sim.max_num_seqs=4", "sim=llama2_7b_a100 sim.max_num_seqs=8"]
    capacities = [r["max_rate_rps"] for r in rows]
    assert all(c is not None and c > 0 for c in capacities), rows
    best = max(rows, key=lambda r: (r["max_rate_rps"], r["output_tokens_per_s"]))
    assert [r["config"] for r in rows if r["best"]] == [best["config"]]
    assert f"etalon: best configuration: {best['config']}" in run.stdout
    # Each search launched its own server, and no two ran at once on this host.
    windows = sorted(json.loads(p.read_text()) for p in stage.glob("*/server_window_ns.json"))
    assert len(windows) == 4 and len(list(stage.glob("*/server.log"))) == 4
    assert all(a[1] <= b[0] for a, b in zip(windows, windows[1:])), windows
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=run.mlflow_uri)
    tagged = client.search_runs(client.get_experiment_by_name("etalon").experiment_id,
                                filter_string="tags.`etalon.stage` = 'capacity_compare'")
    assert [r.data.tags.get("etalon.best_config") for r in tagged] == [best["config"]]


@pytest.mark.heavy
@pytest.mark.slow
def test_twin_calibrated_against_a_known_sim_has_the_same_capacity(tmp_path: Path) -> None:
    run = run_cli(tmp_path, "+experiment=calibrate_sim", "client=local", "tracking=none", timeout_s=600)
    assert run.returncode == 0, run.stderr[-3000:]
    fitted = json.loads((run.run_dir / "calibrate" / "calibration.json").read_text())["sim"]
    # the target is conf/sim/small_engine.yaml (12 ms step overhead, 4 ms per decoding sequence, 4
    # sequences) plus 20 ms per request started
    assert fitted["max_num_seqs"] == 4
    # coefficients are only sane here (timers on a loaded machine run late); the capacity is the check
    assert fitted["latency"]["per_decode_seq_s"] == pytest.approx(0.004, rel=0.5)
    assert fitted["latency"]["step_overhead_s"] == pytest.approx(0.012, rel=0.5)
    assert fitted["latency"]["per_new_seq_s"] == pytest.approx(0.02, rel=0.5)
    # each profile point draws fresh prompts, so the sim's prefix cache never shortens a prefill
    cached = [orjson.loads(line).get("cached_tokens") for path in (run.run_dir / "calibrate").rglob("records.jsonl")
              for line in path.read_bytes().splitlines() if line.strip()]
    assert cached and all(c == 0 for c in cached), sorted(set(cached))
    assert fitted["latency"]["per_prefill_token_s"] == pytest.approx(1e-4, rel=0.2)
    result = json.loads((run.run_dir / "twin_capacity" / "twin_vs_real.json").read_text())
    assert result["real"] and result["twin"]
    assert result["twin_over_real"] == pytest.approx(1.0, abs=0.05)
    assert (run.run_dir / "calibrate" / "twin_sim.yaml").read_text().count("step_overhead_s") == 1
