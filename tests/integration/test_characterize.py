"""`python -m etalon.main +experiment=characterize_sim` end to end: profile -> capacity -> benchmark,
all nested under one MLflow run; a second run redoes nothing (resume + probe/profile caches)."""

from __future__ import annotations

import time

import orjson
import pytest

from tests.integration.etalon_cli import run_cli

# Minutes of sim capacity search; a known open defect: the second run re-measures a stage (see
# the integration note), so the resume test fails today. Run with: python -m pytest -m heavy
pytestmark = pytest.mark.heavy

FAST = ["+experiment=characterize_sim", "client.start_delay_s=0.2", "workload.num_requests=120"]


@pytest.fixture(scope="module")
def characterize(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("characterize")
    started = time.monotonic()
    run = run_cli(tmp, *FAST, timeout_s=600)
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stderr[-4000:]
    print(f"\ncharacterize_sim took {elapsed:.1f} s")
    return run, tmp


def test_characterize_leaves_profile_capacity_and_benchmark(characterize) -> None:
    run, _ = characterize
    profile = orjson.loads((run.run_dir / "prefill_profile" / "prefill_profile.json").read_bytes())
    # tiny_engine: 4 ms per 512-token chunk + 50 us per token -> slope ~ 57.8 us/token.
    assert 5.0e-5 <= profile["b_s_per_token"] + 4096 * profile["c_s_per_token2"] <= 7.0e-5
    capacity = orjson.loads((run.run_dir / "capacity_search" / "capacity.json").read_bytes())
    assert capacity["slo"] == "deadline"
    assert 0.9 * 31.06 <= capacity["max_rate_rps"] <= 1.1 * 31.06
    assert capacity["fluid_token_generation_rate_tokens_per_s"] > 0.8 * 20 * 28
    stage = orjson.loads((run.run_dir / "benchmark" / "stage_result.json").read_bytes())
    assert stage["data"]["rate_rps"] == capacity["max_rate_rps"]
    # The benchmark at the found capacity is judged against the same SLO and says whether it held.
    check = stage["data"]["capacity_check"]
    assert check["load"] == capacity["max_rate_rps"] and check["verified"] == (stage["scalars"]["slo_passed"] == 1.0)
    assert stage["scalars"]["capacity_verified"] == float(check["verified"])
    assert capacity["converged"] is True and capacity["cached_prompt_tokens"] in (None, 0)  # fresh prompts: no hits


def test_characterize_is_nested_in_one_mlflow_run(characterize) -> None:
    from mlflow.tracking import MlflowClient

    run, _ = characterize
    client = MlflowClient(tracking_uri=run.mlflow_uri)
    experiment = client.get_experiment_by_name("etalon")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("etalon.stage") == "pipeline"]
    assert len(parents) == 1
    parent_id = parents[0].info.run_id
    by_stage = {r.data.tags.get("etalon.stage"): r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id}
    assert {"prefill_profile", "capacity_search", "benchmark"} <= set(by_stage)
    probes = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == by_stage["capacity_search"].info.run_id]
    assert len(probes) >= 4 and all(r.info.run_name.startswith("probe_") for r in probes)
    assert by_stage["benchmark"].data.metrics["output_tokens_per_s"] > 0
    profile_run = by_stage["prefill_profile"].info.run_id
    assert "prefill_profile.json" in {a.path for a in client.list_artifacts(profile_run)}
    models = [m for m in client.search_logged_models(experiment_ids=[experiment.experiment_id])
              if m.source_run_id == profile_run]
    assert [m.name for m in models] == ["prefill_predictor"]
    import mlflow
    import numpy as np
    import pandas as pd

    mlflow.set_tracking_uri(run.mlflow_uri)
    predicted = mlflow.pyfunc.load_model(models[0].model_uri).predict(pd.DataFrame({"prompt_tokens": [512, 4096]}))
    profile = orjson.loads((run.run_dir / "prefill_profile" / "prefill_profile.json").read_bytes())
    expected = [profile["a_s"] + profile["b_s_per_token"] * p + profile["c_s_per_token2"] * p * p for p in (512, 4096)]
    assert np.allclose(predicted, expected)


def test_second_characterize_run_redoes_nothing(characterize) -> None:
    from mlflow.tracking import MlflowClient

    run, tmp = characterize
    started = time.monotonic()
    again = run_cli(tmp, *FAST, timeout_s=300)  # same cache and MLflow store
    assert again.returncode == 0, again.stderr[-3000:]
    print(f"\nsecond characterize_sim took {time.monotonic() - started:.1f} s")
    client = MlflowClient(tracking_uri=run.mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("etalon").experiment_id])
    parents = sorted((r for r in runs if r.data.tags.get("etalon.stage") == "pipeline"),
                     key=lambda r: r.info.start_time)
    assert len(parents) == 2
    second = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[1].info.run_id]
    assert {r.data.tags["etalon.stage"] for r in second} == {"prefill_profile", "capacity_search", "benchmark"}
    assert all(r.data.tags.get("etalon.cached") == "true" for r in second)
