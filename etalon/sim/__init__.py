"""The embedded simulated OpenAI-compatible LLM server (continuous-batching engine model)."""

from __future__ import annotations

from etalon.sim.config import (
    FaultsConfig,
    LatencyConfig,
    OutputLengthsConfig,
    SimConfig,
    SimConfigError,
    load_sim_config,
    sim_config_from_dict,
)

__all__ = [
    "FaultsConfig",
    "LatencyConfig",
    "OutputLengthsConfig",
    "SimConfig",
    "SimConfigError",
    "load_sim_config",
    "sim_config_from_dict",
]
