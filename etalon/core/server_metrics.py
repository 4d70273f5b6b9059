"""Server-side metrics from scraped Prometheus samples: engine names mapped onto common series,
histogram quantiles from bucket deltas over a run window, and the client's in-flight count."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# One scrape: sample name -> [(labels, value)], as prometheus_client's parser yields them.
Labels = tuple[tuple[str, str], ...]
Samples = dict[str, list[tuple[Labels, float]]]

# Gauges: the first name a server exposes wins. vLLM (v1 and v0 names; the simulator uses vLLM's),
# SGLang, TGI, llama.cpp (llama-server --metrics).
GAUGES: dict[str, tuple[str, ...]] = {
    "running": ("vllm:num_requests_running", "sglang:num_running_reqs", "tgi_batch_current_size",
                "llamacpp:requests_processing"),
    "waiting": ("vllm:num_requests_waiting", "sglang:num_queue_reqs", "tgi_queue_size",
                "llamacpp:requests_deferred"),
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage",
                       "llamacpp:kv_cache_usage_ratio"),
    "prefix_cache_hit_rate": ("vllm:gpu_prefix_cache_hit_rate", "sglang:cache_hit_rate"),
}
# Counters turned into per-second rates (or running totals) between consecutive scrapes.
GENERATED_TOKENS = ("vllm:generation_tokens_total", "sglang:generation_tokens_total",
                    "llamacpp:tokens_predicted_total", "tgi_request_generated_tokens_sum")
PREEMPTIONS = ("vllm:num_preemptions_total",)
PREFIX_HITS = ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total")
PREFIX_QUERIES = ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total")
# Histogram families (seconds) of server-side request latencies.
HISTOGRAMS: dict[str, tuple[str, ...]] = {
    "ttft": ("vllm:time_to_first_token_seconds", "sglang:time_to_first_token_seconds"),
    "itl": ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds",
            "sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds",
            "tgi_request_mean_time_per_token_duration"),
    "e2e": ("vllm:e2e_request_latency_seconds", "sglang:e2e_request_latency_seconds", "tgi_request_duration"),
}
SERIES = ("running", "waiting", "kv_cache_usage", "prefix_cache_hit_rate", "generation_tokens_per_s",
          "preemptions")
QUANTILES = (0.5, 0.9, 0.99)
# Fractions summed over label sets would exceed 1: they are averaged instead.
AVERAGED = ("kv_cache_usage", "prefix_cache_hit_rate")


@dataclass
class Scrape:
    """One poll of /metrics: wall-clock time (ns) and its samples."""

    time_ns: int
    samples: Samples = field(default_factory=dict)


def _first_present(samples: Samples, names: tuple[str, ...]) -> list[tuple[Labels, float]] | None:
    return next((samples[n] for n in names if n in samples), None)


def _total(samples: Samples, names: tuple[str, ...], mean: bool = False) -> float:
    found = _first_present(samples, names)
    if not found:
        return math.nan
    values = [v for _, v in found]
    return float(np.mean(values) if mean else np.sum(values))


def common_series(scrapes: list[Scrape]) -> dict[str, np.ndarray]:
    """``time_ns`` plus each of ``SERIES`` per scrape (NaN where the server has no such metric).

    Rates (generated tokens/s, prefix-cache hit rate from hit/query counters) are over the interval
    ending at each scrape; the first scrape has none."""
    n = len(scrapes)
    out: dict[str, np.ndarray] = {"time_ns": np.array([s.time_ns for s in scrapes], dtype=np.int64)}
    for key in ("running", "waiting", "kv_cache_usage", "prefix_cache_hit_rate"):
        out[key] = np.array([_total(s.samples, GAUGES[key], key in AVERAGED) for s in scrapes])
    tokens = np.array([_total(s.samples, GENERATED_TOKENS) for s in scrapes])
    out["preemptions"] = np.array([_total(s.samples, PREEMPTIONS) for s in scrapes])
    out["generation_tokens_per_s"] = _rate(tokens, out["time_ns"])
    hits = np.array([_total(s.samples, PREFIX_HITS) for s in scrapes])
    queries = np.array([_total(s.samples, PREFIX_QUERIES) for s in scrapes])
    if n > 1 and np.isfinite(hits).any():
        d_hits, d_queries = np.diff(hits, prepend=np.nan), np.diff(queries, prepend=np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(d_queries > 0, d_hits / d_queries, np.nan)
        out["prefix_cache_hit_rate"] = np.where(np.isfinite(ratio), ratio, out["prefix_cache_hit_rate"])
    return out


def _rate(counter: np.ndarray, time_ns: np.ndarray) -> np.ndarray:
    if counter.size < 2:
        return np.full(counter.size, np.nan)
    dt_s = np.diff(time_ns) / 1e9
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(dt_s > 0, np.diff(counter) / dt_s, np.nan)
    return np.concatenate([[np.nan], rate])


def bucket_counts(samples: Samples, family: str) -> dict[float, float]:
    """Cumulative count per upper bound ``le`` of one histogram family, summed over other labels."""
    counts: dict[float, float] = {}
    for labels, value in samples.get(f"{family}_bucket", []):
        le = dict(labels).get("le")
        if le is not None:
            bound = math.inf if le in ("+Inf", "Inf") else float(le)
            counts[bound] = counts.get(bound, 0.0) + value
    return counts


def histogram_quantile(q: float, cumulative: dict[float, float]) -> float:
    """Prometheus' ``histogram_quantile``: the bucket holding rank ``q * count``, linearly
    interpolated inside it (the lowest bucket from 0; a rank in +Inf gives the highest finite bound)."""
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return math.nan
    total = cumulative[bounds[-1]]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank and count > lower_count:
            if math.isinf(bound):
                return lower_bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def window_quantiles(first: Samples, last: Samples) -> dict[str, float]:
    """Server TTFT / inter-token / e2e quantiles of the requests finished between two scrapes
    (bucket deltas), as ``server_<kind>_p<q>_s``; kinds the server does not expose are absent."""
    out: dict[str, float] = {}
    for kind, names in HISTOGRAMS.items():
        family = next((n for n in names if f"{n}_bucket" in last), None)
        if family is None:
            continue
        start, end = bucket_counts(first, family), bucket_counts(last, family)
        delta = {b: end[b] - start.get(b, 0.0) for b in end}
        if not delta or max(delta.values()) <= 0:
            continue
        for q in QUANTILES:
            out[f"server_{kind}_p{round(q * 100):d}_s"] = histogram_quantile(q, delta)
        out[f"server_{kind}_count"] = max(delta.values())
    return out


def inflight_at(sent_ns: np.ndarray, end_ns: np.ndarray, t_ns: np.ndarray) -> np.ndarray:
    """Requests the client had in flight at each time ``t_ns`` (sent <= t < end), vectorised."""
    started = np.searchsorted(np.sort(sent_ns), t_ns, side="right")
    ended = np.searchsorted(np.sort(end_ns), t_ns, side="right")
    return (started - ended).astype(np.int64)


def mean_inflight(sent_ns: np.ndarray, end_ns: np.ndarray, start_ns: int, stop_ns: int) -> float:
    """Time-averaged client in-flight count over [start, stop]: total request time inside the
    window divided by its length (exact, no sampling)."""
    if stop_ns <= start_ns:
        return math.nan
    inside = np.clip(end_ns, start_ns, stop_ns) - np.clip(sent_ns, start_ns, stop_ns)
    return float(inside.sum() / (stop_ns - start_ns))


__all__ = ["GAUGES", "HISTOGRAMS", "SERIES", "Scrape", "bucket_counts", "common_series", "histogram_quantile",
           "inflight_at", "mean_inflight", "window_quantiles"]
