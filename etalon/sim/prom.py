"""Prometheus text exposition of the simulator's counters and gauges, with vLLM metric names."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SimCounters:
    """Monotonic counters; gauges are read from the scheduler at scrape time."""

    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    request_success_total: dict[str, int] = field(default_factory=lambda: {"length": 0, "stop": 0})


def render_metrics(model: str, counters: SimCounters, running: int, waiting: int,
                   kv_usage: float, preemptions: int, faults: dict[str, int], *,
                   prefix_cache_queries: int = 0, prefix_cache_hits: int = 0,
                   modes: dict[str, int] | None = None) -> str:
    """The exposition text; prefix-cache queries and hits count prompt tokens, as vLLM's do."""
    label = f'model_name="{model}"'
    lines = [
        "# TYPE vllm:num_requests_running gauge",
        f"vllm:num_requests_running{{{label}}} {running}",
        "# TYPE vllm:num_requests_waiting gauge",
        f"vllm:num_requests_waiting{{{label}}} {waiting}",
        "# TYPE vllm:gpu_cache_usage_perc gauge",
        f"vllm:gpu_cache_usage_perc{{{label}}} {kv_usage:.6f}",
        "# TYPE vllm:kv_cache_usage_perc gauge",
        f"vllm:kv_cache_usage_perc{{{label}}} {kv_usage:.6f}",
        "# TYPE vllm:prompt_tokens_total counter",
        f"vllm:prompt_tokens_total{{{label}}} {counters.prompt_tokens_total}",
        "# TYPE vllm:generation_tokens_total counter",
        f"vllm:generation_tokens_total{{{label}}} {counters.generation_tokens_total}",
        "# TYPE vllm:num_preemptions_total counter",
        f"vllm:num_preemptions_total{{{label}}} {preemptions}",
        "# TYPE vllm:prefix_cache_queries_total counter",
        f"vllm:prefix_cache_queries_total{{{label}}} {prefix_cache_queries}",
        "# TYPE vllm:prefix_cache_hits_total counter",
        f"vllm:prefix_cache_hits_total{{{label}}} {prefix_cache_hits}",
        "# TYPE vllm:request_success_total counter",
    ]
    for reason, value in counters.request_success_total.items():
        lines.append(f'vllm:request_success_total{{{label},finished_reason="{reason}"}} {value}')
    lines.append("# TYPE etalon_sim_faults_total counter")
    for fault_type, value in faults.items():
        lines.append(f'etalon_sim_faults_total{{type="{fault_type}"}} {value}')
    if modes is not None:  # etalon.sim.modes: multi-token chunks, reasoning, short outputs, wrong usage
        lines.append("# TYPE etalon_sim_modes_total counter")
        lines += [f'etalon_sim_modes_total{{type="{name}"}} {value}' for name, value in modes.items()]
    return "\n".join(lines) + "\n"


def parse_metrics(text: str) -> dict[str, float]:
    """Sample name (with labels) -> value; for tests and the calibrator."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values
