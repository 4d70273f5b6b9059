"""The quickstart as a user runs it: real CLI, real simulator, real Ray actors, MLflow in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pytest

from tests.integration.etalon_cli import run_cli


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("quickstart")
    # client=default: the preset runs in-process; this test keeps the Ray actor path covered.
    run = run_cli(tmp, "+experiment=quickstart", "client=default", "plots=true", "workload.num_requests=40",
                  "workload.warmup_requests=4", f"+sim.emission_log_path={tmp / 'emissions.jsonl'}")
    assert run.returncode == 0, run.stderr[-3000:]
    run.emission_log = tmp / "emissions.jsonl"
    return run


def emission_aligned(run_dir: Path, emission_log: Path) -> list[tuple[dict, list[int]]]:
    """Each measured record with the simulator's emission times of its tokens, both on this
    machine's monotonic clock (record times + the actor's epoch), in ns."""
    actors = {a["actor"]: a["epoch_mono_ns"] for a in orjson.loads((run_dir / "benchmark" / "load_actors.json").read_bytes())}
    # The simulator logs the X-Request-Id header: a UUID whose last group is the request index in hex.
    emitted = {int(e["request_id"].rsplit("-", 1)[-1], 16): e["token_ns"]
               for e in map(orjson.loads, emission_log.read_bytes().splitlines())}
    pairs = []
    for r in _records(run_dir / "benchmark" / "records.jsonl"):
        if r["warmup"]:
            continue
        epoch = actors[r["actor"]]
        r = {**r, "sent_ns": r["sent_ns"] + epoch, "token_ns": [t + epoch for t in r["token_ns"]]}
        pairs.append((r, emitted[r["request_id"]]))
    return pairs


def _records(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def test_quickstart_writes_config_records_and_summary(quickstart) -> None:
    stage_dir = quickstart.run_dir / "benchmark"
    resolved = (quickstart.run_dir / "resolved_config.yaml").read_text()
    assert "experiment_name: quickstart" in resolved
    records = _records(stage_dir / "records.jsonl")
    assert len(records) == 44
    assert sum(r["warmup"] for r in records) == 4
    assert all(r["status"] == "ok" for r in records)
    # Every request got exactly the tokens it asked for (ignore_eos), each one timestamped.
    for r in records:
        assert r["output_tokens"] == r["requested_output_tokens"] == len(r["token_ns"])
        assert r["output_tokens_source"] == "usage"
        assert r["sent_ns"] <= r["first_token_ns"] <= r["token_ns"][-1] <= r["end_ns"]
    summary = json.loads((stage_dir / "summary.json").read_text())
    assert summary["partial"] is False
    assert "fluidity" in quickstart.stdout.lower()
    figures = {p.name for p in stage_dir.glob("*.png")}
    assert {"latency_cdfs.png", "latency_tails.png", "token_timeline.png", "timeseries.png",
            "server_timeline.png"} <= figures, figures


def test_quickstart_ttft_follows_the_simulator_latency_model(quickstart) -> None:
    pairs = emission_aligned(quickstart.run_dir, quickstart.emission_log)
    assert len(pairs) == 40
    lags_ms = []
    for r, emitted_ns in pairs:
        assert len(emitted_ns) == len(r["token_ns"]) == r["output_tokens"]
        # conf/sim/simple.yaml: the simulator never sends the first token before 0.05 s + 2e-5 s per
        # prompt token after the request left the client (a load-independent bound)...
        assert (emitted_ns[0] - r["sent_ns"]) / 1e9 >= 0.05 + 2e-5 * r["prompt_tokens"] - 0.001
        # ...and the client sees every token after the simulator wrote it (causality)
        assert all(seen >= sent for seen, sent in zip(r["token_ns"], emitted_ns))
        lags_ms.append((r["token_ns"][0] - emitted_ns[0]) / 1e6)
    # what the client adds to TTFT is small: the measured TTFT is the simulator's own
    assert np.percentile(lags_ms, 50) < 5.0, lags_ms


def test_quickstart_is_logged_to_mlflow(quickstart) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=quickstart.mlflow_uri)
    experiment = client.get_experiment_by_name("etalon")
    runs = client.search_runs([experiment.experiment_id])
    pipeline_runs = [r for r in runs if r.data.tags.get("etalon.stage") == "pipeline"]
    stage_runs = [r for r in runs if r.data.tags.get("etalon.stage") == "benchmark"]
    assert len(pipeline_runs) == 1 and len(stage_runs) == 1
    parent, child = pipeline_runs[0], stage_runs[0]
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert parent.data.params["workload.arrival.rate_rps"] == "8.0"
    assert parent.data.tags["etalon.pipeline"] == "benchmark"
    assert len(parent.data.tags["mlflow.source.git.commit"]) in (40, 7) or parent.data.tags[
        "mlflow.source.git.commit"
    ] == "unknown"
    for run in (parent, child):
        assert run.info.status == "FINISHED"
        assert run.data.metrics["ttft_p50_s"] > 0.05
        assert 0.0 <= run.data.metrics["fluidity_index_mean"] <= 1.0
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"records.jsonl", "summary.json"} <= artifacts
    assert any(p.endswith(".png") for p in artifacts)


def _accuracy_run(tmp_path: Path) -> tuple[float, float, float, float]:
    """One 32-stream closed-loop run: (client TTFT p50, true TTFT p50, client TBT p50, true TBT p50)."""
    run = run_cli(
        tmp_path,
        "+experiment=quickstart",
        "client=default",  # the Ray actor path, as before the preset ran in-process
        "workload=closed_loop",
        "workload.arrival.concurrency=32",
        "workload.lengths.prompt_tokens=500",
        "workload.lengths.output_tokens=64",
        "workload.num_requests=96",
        "workload.warmup_requests=0",
        "tracking=none",
        f"+sim.emission_log_path={tmp_path / 'emissions.jsonl'}",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((run.run_dir / "benchmark" / "summary.json").read_text())["scalars"]
    assert summary["requests_ok"] == 96
    # The truth is what the simulator emitted (its emission log), not its configured latency: on a
    # loaded machine the simulator itself runs late, and that is not the client's error.
    pairs = emission_aligned(run.run_dir, tmp_path / "emissions.jsonl")
    assert len(pairs) == 96
    true_ttft_s = [(e[0] - r["sent_ns"]) / 1e9 for r, e in pairs]
    true_gaps_s = [(b - a) / 1e9 for _, e in pairs for a, b in zip(e, e[1:])]
    return (summary["ttft_p50_s"], float(np.percentile(true_ttft_s, 50)),
            summary["tbt_p50_s"], float(np.percentile(true_gaps_s, 50)))


def test_client_measures_the_simulator_within_3_percent_at_32_streams(tmp_path: Path) -> None:
    # The bound is ~2 ms on a ~65 ms TTFT. A host whose other tenants take the cores for a few ms
    # delays the client's reads by that much (CI failed once at +6.4%, with 0.2 ms lag here), so
    # the run is repeated up to twice: a client that is off by more than 3% is off in every run.
    attempts = []
    for attempt in range(3):
        client_ttft, true_ttft, client_tbt, true_tbt = _accuracy_run(tmp_path / f"attempt{attempt}")
        attempts.append(f"TTFT p50 {client_ttft * 1e3:.2f} ms vs {true_ttft * 1e3:.2f} ms emitted, "
                        f"TBT p50 {client_tbt * 1e3:.2f} ms vs {true_tbt * 1e3:.2f} ms")
        if (client_ttft == pytest.approx(true_ttft, rel=0.03)
                and client_tbt == pytest.approx(true_tbt, rel=0.03)):
            return
    pytest.fail("client off by more than 3% in 3 runs: " + "; ".join(attempts))
