"""Prometheus text exposition of the simulator's counters and gauges, with vLLM metric names."""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass, field

# Geometric buckets (5% apart, 1 ms .. ~60 s): fine enough that a quantile interpolated inside a
# bucket is within ~2.5% of the exact one (vLLM's own buckets are far coarser).
LATENCY_BUCKETS_S = tuple(round(0.001 * 1.05 ** i, 9) for i in range(int(math.log(60_000) / math.log(1.05)) + 1))
HISTOGRAMS = {"ttft": "vllm:time_to_first_token_seconds", "itl": "vllm:inter_token_latency_seconds",
              "e2e": "vllm:e2e_request_latency_seconds"}


class LatencyHistogram:
    """A Prometheus histogram: per-bucket counts (rendered cumulative), sum and count."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS_S) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0
        self._prefixes: list[str] | None = None  # the bucket lines' text up to the value, built once

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def render(self, name: str, label: str) -> list[str]:
        # Rendered on the server's event loop at every scrape: keep it to one join per bucket.
        if self._prefixes is None:
            bounds = (*[f"{b:.9g}" for b in self.buckets], "+Inf")
            self._prefixes = [f'{name}_bucket{{{label},le="{bound}"}} ' for bound in bounds]
        lines = [f"# TYPE {name} histogram"]
        lines += [prefix + str(total) for prefix, total in zip(self._prefixes, itertools.accumulate(self.counts))]
        lines += [f"{name}_sum{{{label}}} {self.sum:.9g}", f"{name}_count{{{label}}} {self.count}"]
        return lines


@dataclass
class SimCounters:
    """Monotonic counters; gauges are read from the scheduler at scrape time."""

    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    request_success_total: dict[str, int] = field(default_factory=lambda: {"length": 0, "stop": 0})
    histograms: dict[str, LatencyHistogram] = field(
        default_factory=lambda: {key: LatencyHistogram() for key in HISTOGRAMS})

    def observe_request(self, arrival_ns: int, token_ns: list[int]) -> None:
        """Server-side latencies of one finished request, from its arrival (ns, monotonic)."""
        if not token_ns:
            return
        self.histograms["ttft"].observe((token_ns[0] - arrival_ns) / 1e9)
        for a, b in zip(token_ns, token_ns[1:]):
            self.histograms["itl"].observe((b - a) / 1e9)
        self.histograms["e2e"].observe((token_ns[-1] - arrival_ns) / 1e9)


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
    for key, name in HISTOGRAMS.items():
        lines += counters.histograms[key].render(name, label)
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
