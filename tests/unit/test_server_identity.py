"""What servers report about themselves, and the engine grid's expansion (pure)."""

from __future__ import annotations

import pytest

from etalon.clients.server_info import engine_info, models_info
from etalon.stages.base import StageError
from etalon.stages.capacity_parallel import best_row, expand_grid, override_value


def test_models_info_reads_vllm_max_model_len() -> None:
    body = {"object": "list", "data": [{"id": "tiny-llama", "max_model_len": 4096, "root": "/m"}]}
    assert models_info(body) == (["tiny-llama"], 4096)
    assert models_info({"data": [{"id": "gpt-4o"}]}) == (["gpt-4o"], None)
    assert models_info("garbage") == ([], None)


@pytest.mark.parametrize(("path", "body", "expected"), [
    ("/get_model_info", {"model_path": "m", "context_length": 32768}, (32768, None)),
    ("/get_server_info", {"context_length": 8192, "version": "0.4.9"}, (8192, "0.4.9")),
    ("/info", {"model_id": "m", "max_input_tokens": 4095, "max_total_tokens": 4096, "version": "3.0.1"},
     (4096, "3.0.1")),
    ("/props", {"default_generation_settings": {"n_ctx": 2048}, "build_info": "b4567"}, (2048, "b4567")),
    ("/version", {"version": "0.32.0"}, (None, "0.32.0")),
    ("/info", ["not", "a", "dict"], (None, None)),
])
def test_engine_info_per_engine(path: str, body: object, expected: tuple) -> None:
    assert engine_info(path, body) == expected


def test_expand_grid_is_every_config_times_every_combination() -> None:
    grid = {"sim": ["a", "b"], "sim.max_num_seqs": [4, 8]}
    assert expand_grid(None, grid) == [["sim=a", "sim.max_num_seqs=4"], ["sim=a", "sim.max_num_seqs=8"],
                                       ["sim=b", "sim.max_num_seqs=4"], ["sim=b", "sim.max_num_seqs=8"]]
    assert expand_grid([["x=1"], ["x=2"]], {"y": [True]}) == [["x=1", "y=true"], ["x=2", "y=true"]]
    assert override_value(None) == "null" and override_value([1, 2]) == "[1,2]"
    with pytest.raises(StageError, match="grid.y"):
        expand_grid(None, {"y": []})


def test_best_row_is_the_highest_capacity_then_token_rate() -> None:
    rows = [{"config": "a", "max_rate_rps": 10.0, "output_tokens_per_s": 100.0},
            {"config": "b", "max_rate_rps": 12.0, "output_tokens_per_s": 90.0},
            {"config": "c", "max_rate_rps": 12.0, "output_tokens_per_s": 95.0},
            {"config": "d", "max_rate_rps": None, "output_tokens_per_s": None}]
    assert best_row(rows, "max_rate_rps")["config"] == "c"
    assert best_row([rows[3]], "max_rate_rps") is None
