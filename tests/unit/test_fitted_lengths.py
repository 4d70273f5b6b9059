"""fitted_lengths: recovers known log-normal parameters from a trace file; the fitted presets match their trace."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from etalon.core.lengths import LogNormalLengths
from etalon.core.workload import build_schedule
from etalon.datasets.traces import TraceFileError, fitted_lengths, read_trace

REPO = Path(__file__).resolve().parents[2]
TRACES = REPO.parent / "shared" / "traces"
SHAREGPT = TRACES / "sharegpt_8k_filtered_stats_llama2_tokenizer.csv"
PRESETS = {"sharegpt_fitted": SHAREGPT, "azure_conv_fitted": TRACES / "AzureLLMInferenceTrace_conv.csv"}

needs_traces = pytest.mark.skipif(not SHAREGPT.is_file(), reason=f"reference traces not found at {TRACES}")


def _write_lognormal_csv(path: Path, n: int, seed: int) -> None:
    # Drawn independently of LogNormalLengths, so the fit is not checked against its own generator.
    rng = np.random.default_rng(seed)
    cov = [[0.8**2, 0.4 * 0.8 * 0.6], [0.4 * 0.8 * 0.6, 0.6**2]]
    logs = rng.multivariate_normal([math.log(800), math.log(150)], cov, size=n)
    tokens = np.maximum(np.rint(np.exp(logs)), 1).astype(np.int64)
    rows = "\n".join(f"{p},{o},{p + o},{p / o:.3f}" for p, o in tokens)
    path.write_text("num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio\n" + rows + "\n")


def test_fit_recovers_known_parameters(tmp_path: Path) -> None:
    path = tmp_path / "lengths.csv"
    _write_lognormal_csv(path, 20_000, seed=3)
    fit = fitted_lengths(str(path))
    assert isinstance(fit, LogNormalLengths)
    assert fit.prompt_median_tokens == pytest.approx(800, rel=0.03)
    assert fit.output_median_tokens == pytest.approx(150, rel=0.03)
    assert fit.prompt_sigma == pytest.approx(0.8, abs=0.02)
    assert fit.output_sigma == pytest.approx(0.6, abs=0.02)
    assert fit.correlation == pytest.approx(0.4, abs=0.03)
    trace = read_trace(path)
    assert fit.min_tokens == min(trace.prompt_tokens.min(), trace.output_tokens.min())
    assert (fit.max_prompt_tokens, fit.max_output_tokens) == (trace.prompt_tokens.max(), trace.output_tokens.max())


def test_fit_hand_computed_on_azure_layout(tmp_path: Path) -> None:
    path = tmp_path / "azure.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:03,10000,1000\n"
                    "2023-11-16 18:00:00,10,1\n2023-11-16 18:00:01,100,10\n2023-11-16 18:00:02,1000,100\n")
    fit = fitted_lengths(str(path))
    # log lengths are ln(10) * [1, 2, 3, 4] and ln(10) * [0, 1, 2, 3]: std ln(10) * sqrt(1.25), correlation 1.
    assert (fit.prompt_median_tokens, fit.output_median_tokens) == (550.0, 55.0)
    assert fit.prompt_sigma == pytest.approx(math.log(10) * math.sqrt(1.25))
    assert fit.output_sigma == pytest.approx(math.log(10) * math.sqrt(1.25))
    assert fit.correlation == pytest.approx(1.0)
    assert (fit.min_tokens, fit.max_prompt_tokens, fit.max_output_tokens) == (1, 10000, 1000)
    two = fitted_lengths(str(path), max_rows=2)  # first two rows of the file: (10000, 1000) and (10, 1)
    assert (two.prompt_median_tokens, two.max_prompt_tokens, two.min_tokens) == (5005.0, 10000, 1)


def test_constant_column_fits_zero_sigma_and_no_correlation(tmp_path: Path) -> None:
    path = tmp_path / "constant.csv"
    path.write_text("num_prefill_tokens,num_decode_tokens\n5,64\n50,64\n500,64\n")
    fit = fitted_lengths(str(path))
    assert (fit.output_sigma, fit.correlation, fit.output_median_tokens) == (0.0, 0.0, 64.0)
    assert fit.sample(3, np.random.default_rng(0))[1].tolist() == [64, 64, 64]


def test_fit_is_a_target_and_bad_files_raise_trace_errors(tmp_path: Path) -> None:
    path = tmp_path / "lengths.csv"
    _write_lognormal_csv(path, 200, seed=1)
    sampler = instantiate({"_target_": "etalon.datasets.traces.fitted_lengths", "path": str(path), "max_rows": 50})
    assert isinstance(sampler, LogNormalLengths)
    assert sampler.max_prompt_tokens == read_trace(path, max_rows=50).prompt_tokens.max()
    with pytest.raises(TraceFileError, match="no such file"):
        fitted_lengths(str(tmp_path / "missing.csv"))
    with pytest.raises(TraceFileError, match="max_rows must be an integer >= 1"):
        fitted_lengths(str(path), max_rows=0)


@needs_traces
def test_fit_on_sharegpt_reproduces_its_medians() -> None:
    trace = read_trace(SHAREGPT)
    prompt, output = fitted_lengths(str(SHAREGPT)).sample(100_000, np.random.default_rng(42))
    assert np.median(prompt) == pytest.approx(np.median(trace.prompt_tokens), rel=0.05)
    assert np.median(output) == pytest.approx(np.median(trace.output_tokens), rel=0.05)
    assert prompt.max() <= trace.prompt_tokens.max() and output.max() <= trace.output_tokens.max()


def _load_preset(name: str):
    root = OmegaConf.create({"model": {"context_tokens": 4096},
                             "workload": OmegaConf.load(REPO / "conf" / "workload" / f"{name}.yaml")})
    return root.workload


@needs_traces
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_parameters_are_the_rounded_fit(name: str) -> None:
    preset = instantiate(_load_preset(name).lengths)
    fit = fitted_lengths(str(PRESETS[name]))
    for key in ("prompt_sigma", "output_sigma", "correlation"):
        assert getattr(preset, key) == pytest.approx(getattr(fit, key), abs=5e-4), key
    for key in ("prompt_median_tokens", "output_median_tokens", "min_tokens", "max_prompt_tokens",
                "max_output_tokens"):
        assert getattr(preset, key) == getattr(fit, key), key


@pytest.mark.parametrize(("name", "medians", "rate_rps"),
                         [("sharegpt_fitted", (1730, 415), 1.0), ("azure_conv_fitted", (1020, 129), 5.5)])
def test_fitted_preset_builds_a_trace_like_schedule(name: str, medians: tuple[int, int], rate_rps: float) -> None:
    # The presets need no trace file. Medians: the traces' own (ShareGPT 1730/415, Azure conv 1020/129).
    workload = _load_preset(name)
    lengths = instantiate(workload.lengths)
    prompt, output = lengths.sample(100_000, np.random.default_rng(0))
    assert (np.median(prompt), np.median(output)) == pytest.approx(medians, rel=0.02)
    schedule = build_schedule(instantiate(workload.arrival), lengths, num_requests=workload.num_requests,
                              duration_s=workload.duration_s, warmup_requests=workload.warmup_requests,
                              max_total_tokens=workload.max_total_tokens, seed=workload.seed)
    assert len(schedule) == workload.num_requests + workload.warmup_requests
    assert np.all(schedule.prompt_tokens + schedule.output_tokens <= 4096) and schedule.output_tokens.min() >= 1
    assert schedule.offsets_ns[-1] / 1e9 == pytest.approx(len(schedule) / rate_rps, rel=0.15)
