"""A finished stage is found again by the next run of the same config (characterize's resume)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from etalon.config import register_configs
from etalon.runner.experiment import load_config
from etalon.runner.pipeline import _resume_file

CONF = Path(__file__).resolve().parents[2] / "conf"
register_configs()


def _composed(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _key(overrides: list[str]) -> Path:
    cfg = load_config(_composed(overrides))  # picks a free port for the server etalon launches
    stage = cfg.pipeline.steps()[0]
    return _resume_file(cfg, stage, "sim@host", {}, Path("/cache"))


def test_the_port_etalon_picks_for_its_own_server_does_not_change_the_key() -> None:
    a = load_config(_composed(["+experiment=characterize_sim"]))
    b = load_config(_composed(["+experiment=characterize_sim"]))
    assert a.server is not None and b.server is not None and a.server.port != b.server.port
    stage = a.pipeline.steps()[0]
    assert _resume_file(a, stage, "k", {}, Path("/c")) == _resume_file(b, stage, "k", {}, Path("/c"))


def test_what_determines_the_result_changes_the_key() -> None:
    base = _key(["+experiment=characterize_sim"])
    assert _key(["+experiment=characterize_sim", "sim.max_num_seqs=4"]) != base
    assert _key(["+experiment=characterize_sim", "pipeline.stages.prefill_profile.repetitions=2"]) != base
    assert _key(["+experiment=characterize_sim", "tracking=none"]) == base


def test_the_terminal_names_the_engine_etalon_launched() -> None:
    launched = load_config(_composed(["server=vllm", "model.name=tiny-llama"]))
    assert launched.launches_server and launched.endpoint_label == "vllm (launched)"
    assert load_config(_composed([])).endpoint_label == "sim"  # the embedded simulator keeps its name
