"""Stages are addressed by name: overrides, experiments, and the loader's checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from etalon.config import ConfigError, EtalonConfig, PipelineConfig, register_configs
from etalon.runner.stage_params import check_stage_params

CONF = Path(__file__).resolve().parents[2] / "conf"
register_configs()


def _typed(overrides: list[str]) -> EtalonConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = OmegaConf.to_object(compose(config_name="config", overrides=overrides))
    assert isinstance(cfg, EtalonConfig)
    return cfg


def test_a_stage_parameter_is_set_by_the_stage_name() -> None:
    cfg = _typed(["pipeline=capacity_search", "pipeline.stages.capacity_search.precision=0.1"])
    (step,) = cfg.pipeline.steps()
    assert step.name == "capacity_search"
    assert step.run["precision"] == 0.1
    assert step.run["growth"] == 2.0  # the rest of the stage is the pipeline file's


def test_an_experiment_overrides_one_value_and_keeps_the_stage_list() -> None:
    cfg = _typed(["+experiment=characterize_sim", "pipeline.stages.benchmark.rate_rps=3.0"])
    steps = cfg.pipeline.steps()
    assert [s.name for s in steps] == ["prefill_profile", "capacity_search", "benchmark"]
    prefill, search, bench = (s.run for s in steps)
    assert (prefill["min_prompt_tokens"], prefill["max_prompt_tokens"]) == (512, 4096)  # the experiment's
    assert prefill["statistic"] == "min" and prefill["repetitions"] == 3  # the pipeline file's
    assert (search["start_rate_rps"], search["precision"], search["growth"]) == (8.0, 0.05, 2.0)
    assert bench["rate_from"] == "capacity_search" and bench["rate_rps"] == 3.0
    check_stage_params(cfg.pipeline)


def test_a_misspelled_stage_parameter_lists_the_valid_ones() -> None:
    cfg = _typed(["pipeline=capacity_search", "++pipeline.stages.capacity_search.precison=0.1"])
    with pytest.raises(ConfigError) as err:
        check_stage_params(cfg.pipeline)
    message = str(err.value)
    assert message.startswith("pipeline.stages.capacity_search.precison: not a parameter")
    assert "did you mean 'precision'?" in message
    assert "valid parameters: configs, runner, labels, grid, search, start_rate_rps" in message


def test_a_misspelled_parameter_of_a_stage_with_explicit_keywords() -> None:
    cfg = _typed(["++pipeline.stages.benchmark.rate_form=capacity_search"])
    with pytest.raises(ConfigError, match=r"did you mean 'rate_from'\?\); valid parameters: rate_from, rate_rps"):
        check_stage_params(cfg.pipeline)


def _pipeline(stages: dict, order: list[str]) -> PipelineConfig:
    return PipelineConfig(name="p", stages=stages, order=order)


STAGE = {"_target_": "etalon.stages.benchmark.run", "_partial_": True}


def test_the_order_names_every_stage_exactly_once() -> None:
    with pytest.raises(ConfigError, match=r"pipeline.order: unknown stage 'benchmrk' \(did you mean 'benchmark'\?\)"):
        _pipeline({"benchmark": STAGE}, ["benchmrk"])
    with pytest.raises(ConfigError, match="does not list stage.s. second"):
        _pipeline({"benchmark": STAGE, "second": STAGE}, ["benchmark"])
    with pytest.raises(ConfigError, match="must list the stages in the order they run"):
        _pipeline({"benchmark": STAGE, "second": STAGE}, [])
    with pytest.raises(ConfigError, match="names a stage twice"):
        _pipeline({"benchmark": STAGE, "second": STAGE}, ["benchmark", "second", "second"])
    ok = _pipeline({"b": STAGE, "a": STAGE}, ["a", "b"])
    assert [s.name for s in ok.steps()] == ["a", "b"]


def test_a_stage_name_cannot_escape_the_run_directory() -> None:
    with pytest.raises(ConfigError, match=r"pipeline.stages.\.\./x: a stage name is a letter"):
        _pipeline({"../x": STAGE}, [])
    with pytest.raises(ConfigError, match="must be a mapping with a _target_"):
        _pipeline({"b": {"rate_rps": 1.0}}, [])


def test_the_converter_turns_a_stage_list_into_named_stages(tmp_path: Path) -> None:
    from tools.convert_pipelines import convert

    old = (
        "name: x\n"
        "stages:\n"
        "  - name: first\n"
        "    run:\n"
        "      _target_: etalon.stages.benchmark.run\n"
        "      _partial_: true\n"
        "      rate_rps: 2.0   # a comment\n"
        "  - name: second\n"
        "    run:\n"
        "      _target_: etalon.stages.benchmark.run\n"
        "      rate_from: first\n"
        "resume: true\n"
    )
    new = convert(old)
    assert new is not None
    parsed = OmegaConf.to_container(OmegaConf.create(new))
    assert parsed == {
        "name": "x",
        "order": ["first", "second"],
        "stages": {
            "first": {"_target_": "etalon.stages.benchmark.run", "_partial_": True, "rate_rps": 2.0},
            "second": {"_target_": "etalon.stages.benchmark.run", "rate_from": "first"},
        },
        "resume": True,
    }
    assert "# a comment" in new
    assert convert(new) is None  # already converted: untouched
