"""Dataclass schemas for every config group, registered in Hydra's ConfigStore."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class ConfigError(ValueError):
    """A config value a user set is invalid; the message names the key."""


# Beyond this a run's schedule and records would not fit in memory; a typo, not a benchmark.
MAX_REQUESTS = 10_000_000
MAX_CONTEXT_TOKENS = 1 << 24  # 16M tokens: above every served model's context
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=,+-]{0,127}")


def safe_name(value: str, key: str = "experiment_name") -> str:
    """``value`` if it can name a directory (no separators, no ``..``); else a ConfigError."""
    text = str(value)
    _require(bool(SAFE_NAME.fullmatch(text)) and ".." not in text, key,
             f"{text!r} cannot name a run directory: use letters, digits and . _ = , + - "
             "(starting with a letter or digit, no '..', at most 128)")
    return text


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


@dataclass
class ModelConfig:
    """The served model: the name the endpoint knows, its tokenizer, its context limit."""

    name: str = MISSING
    tokenizer: str = "etalon-bpe-8k"
    context_tokens: int = 8192
    # Fail (instead of warning) when the tokenizer does not match the server's count of a prompt,
    # or is the shipped etalon-bpe-8k against a server that is not the simulator.
    strict_tokenizer: bool = False

    def __post_init__(self) -> None:
        _require(bool(self.name), "model.name", "must be set")
        _require(2 <= self.context_tokens <= MAX_CONTEXT_TOKENS, "model.context_tokens",
                 f"must be in [2, {MAX_CONTEXT_TOKENS:,}], got {self.context_tokens:,}")


OUTPUT_CHECKS = ("warn", "fail", "off")


@dataclass
class EndpointConfig:
    """Where requests go and how: client class, URL, auth, extra body, optional server to launch."""

    name: str = MISSING
    client: Any = field(default_factory=lambda: {"_target_": "etalon.clients.openai.OpenAIChatClient"})
    base_url: str | None = None
    api_key_env: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    extra_body: dict[str, Any] = field(default_factory=dict)
    ignore_eos: bool = True
    timeout_s: float = 600.0
    connect_timeout_s: float = 10.0
    server: Any = None
    # Prometheus /metrics polled during every run (null: off); metrics_url null: the server's own.
    metrics_interval_s: float | None = 1.0
    metrics_url: str | None = None
    # Ask for usage in every chunk (exact tokens per chunk); only for servers that accept it (vLLM).
    continuous_usage_stats: bool = False
    # Output checks (short/long outputs, implausible usage): warn, fail the run/probe, or off.
    output_check: str = "warn"
    # A header with a fresh UUID string per request (servers log it); null sends none.
    request_id_header: str | None = "X-Request-Id"

    def __post_init__(self) -> None:
        _require(
            self.output_check in OUTPUT_CHECKS,
            "endpoint.output_check",
            f"must be one of {', '.join(OUTPUT_CHECKS)}, got {self.output_check!r}",
        )
        if self.base_url is not None:
            _require(
                self.base_url.startswith(("http://", "https://")),
                "endpoint.base_url",
                f"must start with http:// or https://, got {self.base_url!r}",
            )
        _require(self.timeout_s > 0, "endpoint.timeout_s", f"must be > 0, got {self.timeout_s}")
        if self.request_id_header is not None:
            _require(bool(self.request_id_header.strip()) and ":" not in self.request_id_header,
                     "endpoint.request_id_header", f"must be a header name or null, got {self.request_id_header!r}")
        _require(
            self.metrics_interval_s is None or self.metrics_interval_s > 0,
            "endpoint.metrics_interval_s",
            f"must be > 0 or null (no scraping), got {self.metrics_interval_s}",
        )
        _require(
            self.connect_timeout_s > 0,
            "endpoint.connect_timeout_s",
            f"must be > 0, got {self.connect_timeout_s}",
        )


@dataclass
class ServerConfig:
    """A server etalon launches (the ``server`` group): an engine command template and how to run it.

    ``command`` is an argument list whose ``${...}`` fields Hydra fills (model, host, port, engine
    ``args``); an element that resolves to an empty string is dropped (optional flags). ``port``
    null: a free port is picked when the config is loaded. ``engine`` names the metric names and
    context-limit endpoints to use (vllm, sglang, tgi, llamacpp, sim).
    """

    name: str = MISSING
    engine: str = MISSING
    command: list[Any] = MISSING
    package: str = ""
    env: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int | None = None
    api_path: str = "/v1"
    health_path: str = "/health"
    metrics_path: str | None = "/metrics"
    startup_timeout_s: float = 600.0
    stop_signal: str = "SIGTERM"
    stop_grace_s: float = 30.0
    args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(len(self.command) > 0, "server.command", "must not be empty")
        _require(self.startup_timeout_s > 0, "server.startup_timeout_s", f"must be > 0, got {self.startup_timeout_s}")
        _require(self.stop_grace_s >= 0, "server.stop_grace_s", f"must be >= 0, got {self.stop_grace_s}")
        _require(self.stop_signal in ("SIGTERM", "SIGINT", "SIGQUIT", "SIGKILL"), "server.stop_signal",
                 f"must be SIGTERM, SIGINT, SIGQUIT or SIGKILL, got {self.stop_signal!r}")
        _require(self.port is None or 1 <= self.port <= 65535, "server.port",
                 f"must be within 1..65535 or null (pick a free port), got {self.port}")
        _require(self.health_path.startswith("/"), "server.health_path", f"must start with /, got {self.health_path!r}")
        for key in ("tensor_parallel_size", "pipeline_parallel_size"):
            value = self.args.get(key)
            _require(value is None or int(value) >= 1, f"server.args.{key}", f"must be >= 1, got {value}")

    @property
    def gpus(self) -> int:
        """GPUs one instance needs: tensor-parallel x pipeline-parallel size (1 if not declared)."""
        tp = self.args.get("tensor_parallel_size") or 1
        pp = self.args.get("pipeline_parallel_size") or 1
        return int(tp) * int(pp)

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root_url + self.api_path


@dataclass
class WorkloadConfig:
    """Arrival process, length sampler, prompt source, sessions, size of the run, warm-up and seed.

    ``prompts`` (a ``_target_``; null = synthetic unique text) says what requests contain;
    ``sessions`` (null = independent requests) makes each arrival a multi-turn conversation, and
    then ``num_requests``/``warmup_requests`` count sessions.
    """

    arrival: Any = MISSING
    lengths: Any = MISSING
    prompts: Any = None
    sessions: Any = None
    num_requests: int | None = 100
    duration_s: float | None = None
    warmup_requests: int = 0
    seed: int = 42
    max_total_tokens: int | None = None
    # Prompt text seed: null draws a fresh base per run (each stage and probe derives its own), so
    # no server prefix cache is warmed by repeated prompts; an int makes the prompt text reproducible.
    prompt_seed: int | None = None

    def __post_init__(self) -> None:
        _require(
            self.num_requests is not None or self.duration_s is not None,
            "workload.num_requests",
            "set num_requests and/or duration_s",
        )
        if self.num_requests is not None:
            _require(1 <= self.num_requests <= MAX_REQUESTS, "workload.num_requests",
                     f"must be in [1, {MAX_REQUESTS:,}], got {self.num_requests:,}")
        _require(self.warmup_requests <= MAX_REQUESTS, "workload.warmup_requests",
                 f"must be <= {MAX_REQUESTS:,}, got {self.warmup_requests:,}")
        rate = self.arrival.get("rate_rps") if isinstance(self.arrival, dict) else None
        if self.duration_s is not None and isinstance(rate, (int, float)) and self.num_requests is None:
            _require(rate * self.duration_s <= MAX_REQUESTS, "workload.duration_s",
                     f"{self.duration_s} s at {rate} rps is over {MAX_REQUESTS:,} requests")
        if self.duration_s is not None:
            _require(self.duration_s > 0, "workload.duration_s", f"must be > 0, got {self.duration_s}")
        _require(self.warmup_requests >= 0, "workload.warmup_requests", f"must be >= 0, got {self.warmup_requests}")
        if self.max_total_tokens is not None:
            _require(self.max_total_tokens >= 2, "workload.max_total_tokens", f"must be >= 2, got {self.max_total_tokens}")
        if self.prompt_seed is not None:
            _require(self.prompt_seed >= 0, "workload.prompt_seed", f"must be >= 0 or null, got {self.prompt_seed}")


@dataclass
class ClientConfig:
    """Load generator: Ray client actors and their concurrency."""

    num_actors: int = 1
    max_inflight_per_actor: int = 1024
    backend: str = "ray"
    actor_num_cpus: float = 0.5
    drain_interval_s: float = 0.25
    ray_address: str | None = None
    use_uvloop: bool = True
    start_delay_s: float = 1.0
    warm_connections: bool = True
    progress: bool = True
    placement: str = "SPREAD"  # Ray scheduling strategy of the load actors: SPREAD (across nodes) or DEFAULT
    records_format: str = "jsonl"  # jsonl (records.jsonl) or parquet (records.parquet/, bounded memory)
    records_batch_rows: int = 8192  # Parquet: records per part file, and per chunk when summarising
    actor_capacity_tokens_per_s: float = 100_000.0  # streamed tokens/s one actor handles (0: no warning)

    def __post_init__(self) -> None:
        _require(self.num_actors >= 1, "client.num_actors", f"must be >= 1, got {self.num_actors}")
        _require(
            self.max_inflight_per_actor >= 1,
            "client.max_inflight_per_actor",
            f"must be >= 1, got {self.max_inflight_per_actor}",
        )
        _require(self.backend in ("ray", "local"), "client.backend", f"must be 'ray' or 'local', got {self.backend!r}")
        _require(self.actor_num_cpus >= 0, "client.actor_num_cpus", f"must be >= 0, got {self.actor_num_cpus}")
        _require(
            self.placement in ("SPREAD", "DEFAULT"), "client.placement",
            f"must be 'SPREAD' or 'DEFAULT', got {self.placement!r}",
        )
        _require(
            self.records_format in ("jsonl", "parquet"), "client.records_format",
            f"must be 'jsonl' or 'parquet', got {self.records_format!r}",
        )
        _require(self.records_batch_rows >= 1, "client.records_batch_rows", f"must be >= 1, got {self.records_batch_rows}")
        _require(
            self.actor_capacity_tokens_per_s >= 0, "client.actor_capacity_tokens_per_s",
            f"must be >= 0, got {self.actor_capacity_tokens_per_s}",
        )
        _require(self.drain_interval_s > 0, "client.drain_interval_s", f"must be > 0, got {self.drain_interval_s}")
        _require(
            not self.warm_connections or 0 <= self.start_delay_s <= 30,
            "client.start_delay_s",
            f"must be in [0, 30] s while client.warm_connections is on (idle connections close), got {self.start_delay_s}",
        )


@dataclass
class TrackingConfig:
    """MLflow tracking: store URI, experiment name; disabled with tracking=none."""

    enabled: bool = True
    tracking_uri: str = "sqlite:///outputs/mlflow.db"
    artifact_location: str | None = None
    experiment_name: str = "etalon"
    run_name: str | None = None


@dataclass
class StageConfig:
    """One step of a pipeline: a name and a partial stage function (``_target_`` + params)."""

    name: str = MISSING
    run: Any = MISSING


STAGE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


@dataclass
class PipelineConfig:
    """A declarative pipeline (files in pipelines/): stages keyed by name, run in ``order``.

    Each stage is a partial stage function (``_target_``, ``_partial_: true``) with its parameters,
    addressable as ``pipeline.stages.<name>.<param>``. ``order`` lists every stage once; it may be
    left empty only when there is a single stage."""

    name: str = MISSING
    description: str = ""
    resume: bool = False
    order: list[str] = field(default_factory=list)
    stages: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(len(self.stages) > 0, "pipeline.stages", "a pipeline needs at least one stage")
        for name, stage in self.stages.items():
            _require(bool(STAGE_NAME.fullmatch(name)), f"pipeline.stages.{name}",
                     "a stage name is a letter then letters, digits, '_' or '-' (at most 64)")
            _require(isinstance(stage, dict) and "_target_" in stage, f"pipeline.stages.{name}",
                     "must be a mapping with a _target_ (the stage function) and its parameters")
        if not self.order:
            _require(len(self.stages) == 1, "pipeline.order",
                     f"must list the stages in the order they run (stages: {', '.join(self.stages)})")
            return
        for name in self.order:
            _require(name in self.stages, "pipeline.order",
                     f"unknown stage {name!r}{did_you_mean(name, self.stages)}; stages: {', '.join(self.stages)}")
        _require(len(set(self.order)) == len(self.order), "pipeline.order", f"names a stage twice: {self.order}")
        missing = [n for n in self.stages if n not in self.order]
        _require(not missing, "pipeline.order", f"does not list stage(s) {', '.join(missing)}")

    def steps(self) -> list[StageConfig]:
        """The stages in the order they run, each as a name and its partial stage function."""
        return [StageConfig(name=n, run=self.stages[n]) for n in (self.order or list(self.stages))]


def did_you_mean(word: str, choices: Any) -> str:
    """`` (did you mean 'x'?)`` for the nearest choice, or ``""`` when none is close."""
    import difflib

    match = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


@dataclass
class EtalonConfig:
    """The whole experiment: every group plus run-level settings."""

    model: ModelConfig = MISSING
    endpoint: EndpointConfig = MISSING
    workload: WorkloadConfig = MISSING
    slo: Any = MISSING
    client: ClientConfig = MISSING
    tracking: TrackingConfig = MISSING
    pipeline: PipelineConfig = MISSING
    sim: Any = None
    server: ServerConfig | None = None
    experiment_name: str = "default"
    cache_dir: str = "outputs/cache"
    print_summary: bool = True
    # A benchmark whose SLO fails (or a capacity search that finds no passing load) exits with
    # SLO_FAILED_EXIT (3), distinct from errors (1, 2) and Ctrl-C (130).
    fail_on_slo: bool = False
    confidence_level: float = 0.95
    bootstrap_replicates: int = 1000
    # Figures of each benchmark (latency CDFs and tails, token timelines, time series, server
    # timeline) and of a sweep's report as PNG files and in the reports; false skips them (faster
    # sweeps and CI gates; the capacity and prefill figures are always drawn).
    plots: bool = True

    def __post_init__(self) -> None:
        _require(0 < self.confidence_level < 1, "confidence_level", f"must be within (0, 1), got {self.confidence_level}")
        _require(self.bootstrap_replicates >= 0, "bootstrap_replicates",
                 f"must be >= 0 (0 turns intervals off), got {self.bootstrap_replicates}")
        safe_name(self.experiment_name)
        _require(
            self.endpoint.base_url is not None or self.endpoint.server is not None or self.server is not None,
            "endpoint.base_url",
            "must be set when no server is launched (server is null)",
        )

    @property
    def launches_server(self) -> bool:
        """etalon starts ``server`` itself when the endpoint has no base URL of its own."""
        return self.endpoint.base_url is None and self.endpoint.server is None and self.server is not None

    @property
    def endpoint_label(self) -> str:
        """What the terminal calls the endpoint: the engine etalon launched (``vllm``), else the
        endpoint preset's name (a launched vLLM used to read "endpoint sim")."""
        if self.launches_server and self.server is not None and self.server.engine != "sim":
            return f"{self.server.engine} (launched)"
        return self.endpoint.name


def register_configs() -> None:
    """Register the top-level schema (YAML presets under conf/ fill its values) and the resolvers."""
    from omegaconf import OmegaConf

    from etalon.resolvers import register_resolvers

    register_resolvers()
    cs = ConfigStore.instance()
    cs.store(name="etalon_schema", node=EtalonConfig)
    # Used in hydra.run.dir: a name that would escape outputs/ fails before Hydra creates anything.
    OmegaConf.register_new_resolver("etalon.safe_name", safe_name, replace=True)
