"""Dataclass schemas of the simulated server (Hydra structured configs) and preset loading."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEDULERS = ("independent", "prefill_first", "chunked")
OUTPUT_LENGTH_KINDS = ("fixed", "uniform", "lognormal")
PRECISE_WAITS = ("sleep", "spin")
PRESET_DIR = Path(__file__).resolve().parents[2] / "conf" / "sim"
RESET_PATH = "/etalon/reset"  # POST: back to a fresh start (etalon reuses one simulator across sweep jobs)
STANDALONE_MODEL = {"name": "etalon-sim", "tokenizer": "etalon-bpe-8k", "context_tokens": 8192}


class SimConfigError(ValueError):
    """A simulator config value is invalid; the message names the key."""


@dataclass
class LatencyConfig:
    """Latency model. Engine step time = overhead + per_prefill_token*P + per_decode_seq*D +
    per_context_token*C + per_new_seq*N (N: sequences whose first prefill chunk is in the step:
    request handling that holds the engine back, as tokenizing and admitting a request does on a
    CPU host); the ``ttft_*``/``tbt_s`` fields drive only the ``independent`` scheduler."""

    step_overhead_s: float = 0.0
    per_prefill_token_s: float = 0.0
    per_decode_seq_s: float = 0.0
    per_context_token_s: float = 0.0
    per_new_seq_s: float = 0.0
    ttft_base_s: float = 0.05
    ttft_per_prompt_token_s: float = 0.00002
    tbt_s: float = 0.02


@dataclass
class OutputLengthsConfig:
    """Output length when ``ignore_eos`` is false; always capped by max_tokens, floored by min_tokens."""

    kind: str = "lognormal"
    median_tokens: int = 200
    sigma: float = 0.6
    min_tokens: int = 1
    max_tokens: int = 2048


@dataclass
class FaultsConfig:
    """Injected faults; every probability is per request and everything is off by default."""

    error_rate: float = 0.0
    rate_limit_rps: float | None = None
    retry_after_s: float = 1.0
    stall_prob: float = 0.0
    stall_s: float = 0.5
    disconnect_prob: float = 0.0
    malformed_prob: float = 0.0
    slow_start_prob: float = 0.0
    slow_start_s: float = 0.5
    seed: int = 0


@dataclass
class ModesConfig:
    """Output modes that real servers show, each seeded and counted in /metrics (all off by default).

    ``speculative_tokens`` k > 0: every decode step yields one chunk of 1 + a draft tokens, where
    each of the k draft tokens is accepted with ``acceptance_rate`` until the first rejection
    (chunks of 1..k+1 tokens; the step time model is unchanged). ``reasoning_tokens`` R: the first R
    output tokens of a chat stream are ``delta.reasoning_content`` and are reported in
    ``usage.completion_tokens_details.reasoning_tokens``. ``short_output_prob``: a request with
    ``ignore_eos`` stops early anyway (uniform in [1, max_tokens - 1], finish_reason "stop").
    ``wrong_usage_prob``: the final ``usage.completion_tokens`` is multiplied by
    ``wrong_usage_factor`` (per-chunk usage stays truthful).
    """

    speculative_tokens: int = 0
    acceptance_rate: float = 0.7
    reasoning_tokens: int = 0
    short_output_prob: float = 0.0
    wrong_usage_prob: float = 0.0
    wrong_usage_factor: int = 1000
    seed: int = 0


@dataclass
class SimConfig:
    """The whole simulated server: identity, scheduler limits, latency model, faults."""

    served_model_name: str = "etalon-sim"
    context_tokens: int = 8192
    tokenizer: str | None = "etalon-bpe-8k"
    scheduler: str = "independent"
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    kv_cache_tokens: int = 1_000_000
    block_size_tokens: int = 16
    # Automatic prefix caching (vLLM's): null means on for the engine schedulers, off for
    # `independent` (which has no KV cache to reuse and rejects true).
    prefix_caching: bool | None = None
    # Chat rendering: each message costs this many role-marker tokens before its content, and the
    # assistant's generation prompt as many again (0: prompt tokens = the contents' tokens).
    chat_role_tokens: int = 0
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    output_lengths: OutputLengthsConfig = field(default_factory=OutputLengthsConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    modes: ModesConfig = field(default_factory=ModesConfig)
    seed: int = 0
    emission_log_path: str | None = None
    # Timers wake up to ~1 ms late (epoll has ms resolution); the last spin_wait_s before a due
    # emission is waited out precisely instead, so emissions land within ~0.1 ms: by sleeping the
    # thread in short slices (precise_wait=sleep, no CPU) or by spinning the loop (spin: ~0 us late
    # on an idle core, but it holds a core and starves a client on the same cores).
    spin_wait_s: float = 0.001
    precise_wait: str = "sleep"

    def __post_init__(self) -> None:
        if self.precise_wait not in PRECISE_WAITS:
            raise SimConfigError(
                f"sim.precise_wait={self.precise_wait!r} is not one of {', '.join(PRECISE_WAITS)}")
        if not 0 <= self.spin_wait_s <= 0.1:
            raise SimConfigError(f"sim.spin_wait_s={self.spin_wait_s} must be within [0, 0.1]")
        if self.scheduler not in SCHEDULERS:
            raise SimConfigError(
                f"sim.scheduler={self.scheduler!r} is not one of {', '.join(SCHEDULERS)}"
            )
        for key in ("context_tokens", "max_num_seqs", "max_num_batched_tokens",
                    "kv_cache_tokens", "block_size_tokens"):
            if getattr(self, key) < 1:
                raise SimConfigError(f"sim.{key}={getattr(self, key)} must be >= 1")
        if self.chat_role_tokens < 0:
            raise SimConfigError(f"sim.chat_role_tokens={self.chat_role_tokens} must be >= 0")
        if self.prefix_caching and self.scheduler == "independent":
            raise SimConfigError(
                "sim.prefix_caching=true needs an engine scheduler (prefill_first or chunked): "
                "the independent scheduler has no KV cache")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise SimConfigError(
                f"sim.max_num_batched_tokens={self.max_num_batched_tokens} must be >= "
                f"sim.max_num_seqs={self.max_num_seqs} (every running sequence decodes one token)"
            )
        if self.output_lengths.kind not in OUTPUT_LENGTH_KINDS:
            raise SimConfigError(
                f"sim.output_lengths.kind={self.output_lengths.kind!r} is not one of "
                f"{', '.join(OUTPUT_LENGTH_KINDS)}"
            )
        _check_latency(self.latency)
        _check_faults(self.faults)
        _check_modes(self.modes)

    @property
    def prefix_caching_enabled(self) -> bool:
        """Whether the prefix cache is on (``prefix_caching`` with null resolved by scheduler)."""
        if self.prefix_caching is None:
            return self.scheduler != "independent"
        return self.prefix_caching


def _check_latency(latency: LatencyConfig) -> None:
    for key, value in vars(latency).items():
        if value < 0:
            raise SimConfigError(f"sim.latency.{key}={value} must be >= 0")


def _check_faults(faults: FaultsConfig) -> None:
    for key in ("error_rate", "stall_prob", "disconnect_prob", "malformed_prob", "slow_start_prob"):
        value = getattr(faults, key)
        if not 0.0 <= value <= 1.0:
            raise SimConfigError(f"sim.faults.{key}={value} must be within [0, 1]")
    if faults.rate_limit_rps is not None and faults.rate_limit_rps <= 0:
        raise SimConfigError(f"sim.faults.rate_limit_rps={faults.rate_limit_rps} must be > 0")


def _check_modes(modes: ModesConfig) -> None:
    for key in ("acceptance_rate", "short_output_prob", "wrong_usage_prob"):
        value = getattr(modes, key)
        if not 0.0 <= value <= 1.0:
            raise SimConfigError(f"sim.modes.{key}={value} must be within [0, 1]")
    for key in ("speculative_tokens", "reasoning_tokens"):
        if getattr(modes, key) < 0:
            raise SimConfigError(f"sim.modes.{key}={getattr(modes, key)} must be >= 0")
    if modes.wrong_usage_factor < 2:
        raise SimConfigError(f"sim.modes.wrong_usage_factor={modes.wrong_usage_factor} must be >= 2")


def sim_config_from_dict(values: dict[str, Any]) -> SimConfig:
    """Validate a plain (resolved) dict against the schema and build a SimConfig."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        merged = OmegaConf.merge(OmegaConf.structured(SimConfig), values)
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise SimConfigError(f"invalid sim config: {exc}") from exc
    assert isinstance(config, SimConfig)
    return config


def load_sim_config(
    preset: str | None = None,
    config_path: str | None = None,
    overrides: list[str] | None = None,
    model: dict[str, Any] | None = None,
) -> SimConfig:
    """Load a preset from conf/sim (or a YAML file), resolving ``${model.*}`` from ``model``."""
    from omegaconf import OmegaConf

    if (preset is None) == (config_path is None):
        raise SimConfigError("give exactly one of --preset NAME or --config PATH.yaml")
    path = Path(config_path) if config_path else PRESET_DIR / f"{preset}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
        raise SimConfigError(f"sim config {str(path)!r} not found (presets: {known})")
    root = OmegaConf.create({"model": {**STANDALONE_MODEL, **(model or {})}})
    root.sim = OmegaConf.load(path)
    for item in overrides or []:
        if "=" not in item:
            raise SimConfigError(f"--set {item!r} must look like key=value")
        root.sim.merge_with(OmegaConf.from_dotlist([item]))
    values = OmegaConf.to_container(root.sim, resolve=True)
    assert isinstance(values, dict)
    return sim_config_from_dict({str(k): v for k, v in values.items()})
