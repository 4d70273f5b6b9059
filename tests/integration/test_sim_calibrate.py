"""``python -m etalon.sim calibrate`` recovers the latency coefficients of a simulated engine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from etalon.runner.server import EmbeddedSimServer
from tests.integration.conftest_sim import sim_config

TRUE_LATENCY = {"step_overhead_s": 0.01, "per_prefill_token_s": 1e-4, "per_decode_seq_s": 1e-3,
                "per_context_token_s": 2e-6}


def test_calibrate_recovers_coefficients(tmp_path: Path) -> None:
    config = sim_config(scheduler="chunked", max_num_seqs=16, max_num_batched_tokens=8192,
                        latency=TRUE_LATENCY)
    out = tmp_path / "fitted.yaml"
    with EmbeddedSimServer(config) as server:
        subprocess.run([sys.executable, "-m", "etalon.sim", "calibrate", "--base-url",
                        server.base_url, "--model", "sim-test", "--out", str(out),
                        "--prompt-tokens", "128,512,1024", "--batch-sizes", "1,4,8"],
                       check=True, timeout=60, capture_output=True)
    fitted = OmegaConf.load(out).latency
    for key, value in TRUE_LATENCY.items():
        assert fitted[key] == pytest.approx(value, rel=0.05), key
