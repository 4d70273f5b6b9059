"""Public metrics API: plain functions over numbers, usable without running a benchmark.

Per request (``inter_token_times_s[0]`` is the TTFT, the rest are gaps between tokens, all in s):
``deadline_miss_rate``, ``fluidity_index``, ``min_tbt_deadline_to_meet``. Over many requests:
``miss_rate_curve``, ``throughput_views``. Vectorised forms over a ``RecordTable``'s ragged token
layout: ``deadline_miss_counts``, ``min_tbt_deadlines``, ``miss_rate_quantile_curve``. Run level:
``summarize``. Definitions: DESIGN.md section 3.
"""

from __future__ import annotations

from etalon.core.metrics import (
    deadline_miss_counts,
    deadline_miss_rate,
    distribution,
    fluidity_index,
    min_tbt_deadline_to_meet,
    min_tbt_deadlines,
    miss_rate_curve,
    miss_rate_quantile_curve,
    miss_rates,
    pooled_gaps_s,
    throughput_views,
    throughput_views_ragged,
)
from etalon.core.summary import RequestMetrics, RunSummary, summarize

__all__ = [
    "RequestMetrics",
    "RunSummary",
    "deadline_miss_counts",
    "deadline_miss_rate",
    "distribution",
    "fluidity_index",
    "min_tbt_deadline_to_meet",
    "min_tbt_deadlines",
    "miss_rate_curve",
    "miss_rate_quantile_curve",
    "miss_rates",
    "pooled_gaps_s",
    "summarize",
    "throughput_views",
    "throughput_views_ragged",
]
