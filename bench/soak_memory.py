"""Soak: a long open-loop run against the embedded simulator with records streamed to Parquet and
none kept in memory; prints the driver's RSS every ``--sample-s`` seconds (it should stay flat).

Run: python bench/soak_memory.py [--minutes 12] [--rate-rps 40] [--tokens 16]
A 12-minute run at 40 rps sends as many requests (28.8k) as a 2-hour run at 4 rps.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from etalon.clients.base import EndpointSpec
from etalon.core.workload import Schedule
from etalon.loadgen import LoadSettings, run_load
from etalon.runner.server import EmbeddedSimServer


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def sampler(stop: threading.Event, every_s: float, samples: list[tuple[float, float]]) -> None:
    start = time.monotonic()
    while not stop.wait(every_s):
        samples.append((time.monotonic() - start, rss_mib()))
        print(f"t={samples[-1][0]:7.0f} s  driver RSS {samples[-1][1]:7.1f} MiB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=12.0)
    parser.add_argument("--rate-rps", type=float, default=40.0)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--sample-s", type=float, default=30.0)
    args = parser.parse_args()
    n = int(args.minutes * 60 * args.rate_rps)
    offsets = (np.arange(n) / args.rate_rps * 1e9).astype(np.int64)
    sched = Schedule(offsets_ns=offsets, prompt_tokens=np.full(n, 8, dtype=np.int64),
                     output_tokens=np.full(n, args.tokens, dtype=np.int64), warmup_requests=0,
                     concurrency=None, think_time_s=0.0, duration_s=None)
    config = {"scheduler": "independent", "max_num_seqs": 1024, "max_num_batched_tokens": 1_000_000,
              "latency": {"ttft_base_s": 0.05, "ttft_per_prompt_token_s": 0.0, "tbt_s": 0.01}}
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedSimServer(config) as sim:
        spec = EndpointSpec(base_url=sim.start(), model="etalon-sim", ignore_eos=True)
        settings = LoadSettings(backend="local", records_format="parquet", start_delay_s=0.5)
        print(f"{n} requests at {args.rate_rps} rps, {args.tokens} tokens each; start RSS {rss_mib():.1f} MiB")
        thread = threading.Thread(target=sampler, args=(stop, args.sample_s, samples), daemon=True)
        thread.start()
        result = run_load(sched, ["soak"] * n, spec, settings, Path(tmp) / "records.jsonl",
                          progress=False, keep_records=False)
        stop.set()
        from etalon.records import iter_tables

        rows = sum(len(t) for t in iter_tables(result.records_path))
    rss = np.array([s[1] for s in samples])
    half = rss[len(rss) // 2 :] if rss.size else rss
    print(f"records in file: {rows} of {n}; partial={result.partial}")
    if rss.size:
        print(f"RSS min {rss.min():.1f} / max {rss.max():.1f} MiB; second half spread {np.ptp(half):.1f} MiB")


if __name__ == "__main__":
    main()
