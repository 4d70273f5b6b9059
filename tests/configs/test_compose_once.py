"""A sweep job's config is composed once: the launcher gets a copy of what the sweeper's check
composed, equal to a fresh compose, and a third request composes again."""

from __future__ import annotations

from pathlib import Path

from hydra import initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import OmegaConf

from etalon.config import register_configs
from etalon.runner import compose_once

CONF = Path(__file__).resolve().parents[2] / "conf"
register_configs()


def test_second_compose_of_a_job_is_the_kept_copy_and_the_third_composes_again(monkeypatch) -> None:
    compose_once.install_compose_once()
    compose_once.install_compose_once()  # idempotent: one layer
    composed: list[int] = []
    real = ConfigLoaderImpl._load_configuration_impl

    def counting(self, *args, **kwargs):
        composed.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ConfigLoaderImpl, "_load_configuration_impl", counting)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        hydra = GlobalHydra.instance().hydra
        master = hydra.compose_config("config", ["+experiment=quickstart"], run_mode=RunMode.MULTIRUN)
        loader = hydra.config_loader
        job = ["+experiment=quickstart", "workload.arrival.rate_rps=3"]
        composed.clear()
        checked = loader.load_sweep_config(master, list(job))
        launched = loader.load_sweep_config(master, list(job))
        assert len(composed) == 1
        assert launched is not checked
        assert OmegaConf.to_container(launched) == OmegaConf.to_container(checked)
        assert launched.workload.arrival.rate_rps == 3
        launched.workload.arrival.rate_rps = 5  # the launcher's changes stay in its copy
        again = loader.load_sweep_config(master, list(job))
        assert len(composed) == 2 and again.workload.arrival.rate_rps == 3
        other = loader.load_sweep_config(master, ["+experiment=quickstart", "workload.arrival.rate_rps=4"])
        assert len(composed) == 3 and other.workload.arrival.rate_rps == 4
    compose_once._kept.clear()
