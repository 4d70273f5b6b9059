"""Every conf/workload preset instantiates and yields a schedule of the size it promises."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from etalon.core.workload import build_schedule

REPO = Path(__file__).resolve().parents[2]
PRESETS = sorted((REPO / "conf" / "workload").glob("*.yaml"))
TRACES = REPO.parent / "shared" / "traces"


def _schedule(preset: Path, monkeypatch: pytest.MonkeyPatch):
    if not TRACES.is_dir():
        pytest.skip(f"reference traces not found at {TRACES}")
    monkeypatch.setenv("ETALON_TRACES", str(TRACES))
    root = OmegaConf.create({"model": {"context_tokens": 4096}, "workload": OmegaConf.load(preset)})
    workload = root.workload
    arrival, lengths = instantiate(workload.arrival), instantiate(workload.lengths)
    return workload, build_schedule(arrival, lengths, num_requests=workload.num_requests,
                                    duration_s=workload.duration_s, warmup_requests=workload.warmup_requests,
                                    max_total_tokens=workload.max_total_tokens, seed=workload.seed)


def test_all_presets_are_present() -> None:
    names = {p.stem for p in PRESETS}
    assert {"quickstart", "poisson_zipf", "gamma_bursty", "closed_loop", "azure_conv", "sharegpt", "arxiv",
            "bwb"} <= names


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_builds_a_clipped_schedule(preset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workload, schedule = _schedule(preset, monkeypatch)
    if workload.num_requests is None:  # bounded by duration_s (a ramp, a whole-trace replay)
        assert len(schedule) >= 1 and np.all(schedule.offsets_ns < workload.duration_s * 1e9)
    else:
        assert len(schedule) == workload.num_requests + workload.warmup_requests
    assert np.all(schedule.prompt_tokens + schedule.output_tokens <= 4096)
    assert np.all(schedule.prompt_tokens >= 1) and np.all(schedule.output_tokens >= 1)


def test_quickstart_sends_for_about_sixteen_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    _, schedule = _schedule(REPO / "conf" / "workload" / "quickstart.yaml", monkeypatch)
    assert len(schedule) == 128
    assert 12.0 < schedule.offsets_ns[-1] / 1e9 < 20.0
    assert schedule.prompt_tokens.min() >= 64 and schedule.prompt_tokens.max() <= 512


def test_azure_replay_pairs_each_arrival_with_its_own_lengths(monkeypatch: pytest.MonkeyPatch) -> None:
    _, schedule = _schedule(REPO / "conf" / "workload" / "azure_conv.yaml", monkeypatch)
    # First rows of AzureLLMInferenceTrace_conv.csv: 18:15:46.6805900 (374, 44), 18:15:50.9951690 (396, 109).
    assert schedule.prompt_tokens[:2].tolist() == [374, 396]
    assert schedule.output_tokens[:2].tolist() == [44, 109]
    assert schedule.offsets_ns[:2].tolist() == [0, 4_314_579_000]
