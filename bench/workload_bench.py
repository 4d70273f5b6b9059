"""Schedule + prompt build time and peak memory of large real-traffic workloads.

Usage: python bench/workload_bench.py [--cases synthetic sessions trace] [--scale 1.0]
Cases (each in its own process, so peak RSS is its own):
- synthetic: 1,000,000 independent requests (Poisson, prompts 64-512 tokens), schedule, prompts
  and per-request plans;
- sessions: 100,000 sessions x 5 turns (user messages 32-256 tokens), schedule, prompts and
  per-actor session plans;
- trace: a 100,000-row Mooncake-format trace (generated first, not timed; 1-6 blocks of 512
  tokens, shared prefixes), read and validated, prompts rebuilt from hash ids, schedule.
Figures are printed, never asserted; the target is < 20 s and < 4 GiB per case.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _synthetic(scale: float) -> dict[str, float]:
    from etalon.core.arrivals import PoissonArrivals
    from etalon.core.lengths import UniformLengths
    from etalon.core.sources import SyntheticPrompts
    from etalon.core.workload import build_schedule
    from etalon.datasets.tokenizers import load_tokenizer
    from etalon.loadgen.plan import build_requests, split_plans

    tokenizer = load_tokenizer("etalon-bpe-8k")
    start = time.perf_counter()
    schedule = build_schedule(PoissonArrivals(1000.0), UniformLengths(64, 512, 32, 128),
                              num_requests=int(1_000_000 * scale), duration_s=None, warmup_requests=0,
                              max_total_tokens=8192, seed=42)
    plan = SyntheticPrompts().build(schedule, tokenizer, 42, 8192)
    plans = split_plans(schedule, build_requests(schedule, plan.prompts), 4, 1024)
    return {"requests": float(sum(p.num_requests for p in plans)), "seconds": time.perf_counter() - start}


def _sessions(scale: float) -> dict[str, float]:
    from etalon.core.arrivals import PoissonArrivals
    from etalon.core.lengths import UniformLengths
    from etalon.core.sessions import Sessions
    from etalon.core.sources import SyntheticPrompts
    from etalon.core.workload import build_schedule
    from etalon.datasets.tokenizers import load_tokenizer
    from etalon.loadgen.plan import build_requests, split_session_plans

    tokenizer = load_tokenizer("etalon-bpe-8k")
    start = time.perf_counter()
    schedule = build_schedule(PoissonArrivals(100.0), UniformLengths(32, 256, 32, 256),
                              num_requests=int(100_000 * scale), duration_s=None, warmup_requests=0,
                              max_total_tokens=8192, seed=42, sessions=Sessions(turns=5, think_time_s=1.0))
    plan = SyntheticPrompts().build(schedule, tokenizer, 42, 8192)
    plans = split_session_plans(schedule, build_requests(schedule, plan.prompts), 4, 1024, 8192)
    return {"sessions": float(sum(len(p.sessions) for p in plans)),
            "requests": float(sum(p.num_requests for p in plans)), "seconds": time.perf_counter() - start}


def write_trace(path: Path, rows: int) -> None:
    """A Mooncake-format trace: 50 shared system prompts, conversations that extend them."""
    import numpy as np

    rng = np.random.default_rng(0)
    next_id = 1000
    with path.open("w") as out:
        for i in range(rows):
            system = int(rng.integers(50))
            own = int(rng.integers(0, 5))
            ids = [system, *range(next_id, next_id + own)]
            next_id += own
            tokens = len(ids) * 512 + int(rng.integers(1, 512))
            out.write(json.dumps({"timestamp": i * 10.0, "input_length": tokens, "output_length": 128,
                                  "hash_ids": [*ids, next_id]}) + "\n")
            next_id += 1


def _trace(scale: float) -> dict[str, float]:
    from etalon.core.lengths import FixedLengths
    from etalon.core.workload import build_schedule
    from etalon.datasets.mooncake import MooncakePrompts, mooncake_arrivals
    from etalon.datasets.tokenizers import load_tokenizer
    from etalon.loadgen.plan import build_requests, split_plans

    tokenizer = load_tokenizer("etalon-bpe-8k")
    rows = int(100_000 * scale)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.jsonl"
        write_trace(path, rows)
        start = time.perf_counter()
        source = MooncakePrompts(str(path))
        schedule = build_schedule(mooncake_arrivals(str(path)), FixedLengths(1, 1), num_requests=rows,
                                  duration_s=None, warmup_requests=0, max_total_tokens=8192, seed=42)
        plan = source.build(schedule, tokenizer, 42, 8192)
        from dataclasses import replace

        schedule = replace(schedule, prompt_tokens=plan.prompt_tokens, output_tokens=plan.output_tokens)
        plans = split_plans(schedule, build_requests(schedule, plan.prompts), 4, 1024)
        seconds = time.perf_counter() - start
    return {"rows": float(rows), "requests": float(sum(p.num_requests for p in plans)),
            "prompt_tokens": float(plan.prompt_tokens.sum()), "seconds": seconds}


CASES = {"synthetic": _synthetic, "sessions": _sessions, "trace": _trace}


def _child(case: str, scale: float) -> None:
    from etalon.loadgen.plan import gc_paused

    before = resource.getrusage(resource.RUSAGE_SELF)
    with gc_paused():  # as etalon builds workloads (etalon.stages.traffic, etalon.loadgen.run)
        figures = CASES[case](scale)
    after = resource.getrusage(resource.RUSAGE_SELF)
    # CPU seconds of the whole case (setup included): on a shared machine wall time also counts
    # the time other processes held the cores.
    figures["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    figures["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every case's size")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.scale)
        return
    for case in args.cases:
        run = subprocess.run([sys.executable, __file__, "--child", case, "--scale", str(args.scale)],
                             capture_output=True, text=True, check=False)
        if run.returncode != 0:
            print(f"{case}: failed\n{run.stderr[-2000:]}")
            continue
        figures = json.loads(run.stdout.strip().splitlines()[-1])
        details = ", ".join(f"{k} {v:,.0f}" for k, v in figures.items()
                            if k not in ("seconds", "peak_rss_gib", "cpu_s"))
        print(f"{case:>9}: {figures['seconds']:6.1f} s wall (build), {figures['cpu_s']:6.1f} s CPU (case), "
              f"peak RSS {figures['peak_rss_gib']:.2f} GiB ({details})")


if __name__ == "__main__":
    main()
