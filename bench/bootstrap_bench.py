"""Time the bootstrap confidence intervals of every headline metric (target: < 5 s for 100k
requests x 500 tokens, 1000 replicates), and check the pooled-TBT window against a direct replicate.

    python bench/bootstrap_bench.py [--requests 100000] [--tokens 500] [--replicates 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from etalon.core.bootstrap import HEADLINES, RunSample, confidence_intervals, pooled_quantile, resample_counts


def synthetic_sample(requests: int, tokens: int, seed: int = 0) -> RunSample:
    """A run whose requests each have their own decode speed (heterogeneous TBT), plus 1% stalls."""
    rng = np.random.default_rng(seed)
    base_tbt_s = rng.lognormal(np.log(0.02), 0.25, requests)
    gap_row = np.repeat(np.arange(requests), tokens - 1)
    gap_s = base_tbt_s[gap_row] * rng.lognormal(0.0, 0.1, gap_row.size)
    stalls = rng.random(gap_s.size) < 0.01
    gap_s[stalls] += rng.exponential(0.2, int(stalls.sum()))
    ttft_s = rng.lognormal(np.log(0.3), 0.5, requests)
    e2e_s = ttft_s + np.bincount(gap_row, weights=gap_s, minlength=requests)
    return RunSample(
        ttft_s=ttft_s, e2e_s=e2e_s, fluidity_index=np.clip(rng.normal(0.97, 0.03, requests), 0, 1),
        output_tokens=np.full(requests, tokens), good=rng.random(requests) < 0.9,
        gap_s=gap_s, gap_row=gap_row, window_s=float(requests / 8.0),
    )


def check_pooled_exact(sample: RunSample, replicates: int = 5) -> float:
    """Largest relative difference between the windowed pooled p99 and np.quantile on the
    explicitly resampled gaps (the direct O(tokens)-per-replicate way)."""
    weights = resample_counts(np.random.default_rng(1), sample.n, replicates)
    fast = pooled_quantile(sample.gap_s, sample.gap_row, weights, 0.99)
    worst = 0.0
    for b in range(replicates):
        direct = np.quantile(np.repeat(sample.gap_s, weights[b].astype(np.int64)[sample.gap_row]), 0.99, method="inverted_cdf")
        worst = max(worst, abs(fast[b] - direct) / direct)
    return worst


def reference_s() -> float:
    """A fixed workload (sorting 10M floats, ~0.8 s on an idle core) to read the figures against
    on a shared, loaded machine."""
    values = np.random.default_rng(0).random(10_000_000)
    t0 = time.perf_counter()
    np.sort(values)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--tokens", type=int, default=500)
    parser.add_argument("--replicates", type=int, default=1000)
    args = parser.parse_args()
    print(f"reference: np.sort of 10M floats took {reference_s():.2f} s here (~0.8 s on an idle core)")
    t0 = time.perf_counter()
    sample = synthetic_sample(args.requests, args.tokens)
    print(f"built {args.requests} requests x {args.tokens} tokens ({sample.gap_s.size:,} gaps) "
          f"in {time.perf_counter() - t0:.2f} s")
    t0, c0 = time.perf_counter(), time.process_time()
    cis = confidence_intervals(sample, level=0.95, replicates=args.replicates, seed=0)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    for h in HEADLINES:
        lo, hi = cis.get(h.key, (float("nan"), float("nan")))
        print(f"  {h.key:<22} [{lo:.6g}, {hi:.6g}]")
    print(f"bootstrap CI of {len(HEADLINES)} headline metrics, {args.replicates} replicates: "
          f"{elapsed:.2f} s wall, {cpu:.2f} s CPU (single-threaded; target < 5 s)")
    small = synthetic_sample(2000, args.tokens, seed=3)
    print(f"pooled TBT p99 window vs direct resample (2000 requests): max rel. diff {check_pooled_exact(small):.2e}")


if __name__ == "__main__":
    main()
