"""Every preset composes, converts to the typed schema and instantiates its `_target_`s."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from etalon.config import ConfigError, EtalonConfig, register_configs

CONF = Path(__file__).resolve().parents[2] / "conf"
register_configs()


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=False)


def _typed(overrides: list[str]) -> EtalonConfig:
    cfg = OmegaConf.to_object(_compose(overrides))
    assert isinstance(cfg, EtalonConfig)
    return cfg


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_every_experiment_composes_and_instantiates(experiment: str) -> None:
    cfg = _typed([f"+experiment={experiment}"])
    assert cfg.pipeline.stages, experiment
    for stage in cfg.pipeline.steps():
        assert callable(instantiate(stage.run))
    slo = instantiate(cfg.slo)
    assert slo.tbt_deadline_s > 0


@pytest.mark.parametrize("pipeline", _options("pipeline"))
def test_every_pipeline_composes(pipeline: str) -> None:
    cfg = _typed([f"pipeline={pipeline}"])
    assert cfg.pipeline.name == pipeline
    for stage in cfg.pipeline.steps():
        assert callable(instantiate(stage.run))


TRACES = Path(os.environ.get("ETALON_TRACES", Path(__file__).resolve().parents[3] / "shared" / "traces"))


@pytest.mark.parametrize("workload", _options("workload"))
def test_every_workload_instantiates(workload: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if ".csv" in (CONF / "workload" / f"{workload}.yaml").read_text() and not TRACES.is_dir():
        pytest.skip(f"reference traces not found at {TRACES}")
    monkeypatch.setenv("ETALON_TRACES", str(TRACES))
    cfg = _typed([f"workload={workload}"])
    arrival = instantiate(cfg.workload.arrival)
    lengths = instantiate(cfg.workload.lengths)
    assert hasattr(lengths, "sample")
    assert hasattr(arrival, "closed_loop")


@pytest.mark.parametrize("slo", _options("slo"))
def test_every_slo_instantiates(slo: str) -> None:
    cfg = _typed([f"slo={slo}"])
    assert instantiate(cfg.slo).name


@pytest.mark.parametrize("sim", _options("sim"))
def test_every_sim_preset_builds_a_valid_sim_config(sim: str) -> None:
    from etalon.sim.config import sim_config_from_dict

    cfg = _typed([f"sim={sim}"])
    sim_cfg = sim_config_from_dict(cfg.sim)
    assert sim_cfg.served_model_name == cfg.model.name


@pytest.mark.parametrize("group", ["model", "endpoint", "client", "tracking"])
def test_every_option_of_plain_groups_converts(group: str) -> None:
    for option in _options(group):
        cfg = _typed([f"{group}={option}"])
        assert getattr(cfg, group) is not None


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("client.num_actors=0", "client.num_actors"),
        ("client.backend=threads", "client.backend"),
        ("workload.num_requests=0", "workload.num_requests"),
        ("endpoint.base_url=ftp://x", "endpoint.base_url"),
        ("model.context_tokens=1", "model.context_tokens"),
        ("confidence_level=1.5", "confidence_level"),  # its check was shadowed by a second __post_init__
        ("bootstrap_replicates=-1", "bootstrap_replicates"),
    ],
)
def test_bad_values_name_their_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _typed([override])


def test_unknown_key_is_rejected() -> None:
    with pytest.raises(Exception, match="workload.no_such_key|no_such_key"):
        _compose(["workload.no_such_key=1"])


def test_any_value_can_be_overridden() -> None:
    cfg = _typed(["workload.arrival.rate_rps=3.5", "workload.seed=7", "client.num_actors=2"])
    assert cfg.workload.arrival["rate_rps"] == 3.5
    assert cfg.workload.seed == 7
    assert cfg.client.num_actors == 2
