"""Per-job overhead of a sweep: wall time of an N-job multirun minus the time its loads ran.

    python bench/sweep_overhead.py [--jobs 4] [--project DIR] [--repeat 2] [--as-shipped] [-- extra overrides]

Runs ``python -m etalon.main -m +experiment=quickstart`` over N request rates (client=local, a
fresh sqlite MLflow store and cache in a temp directory each time; ``--as-shipped`` keeps the
checkout's own quickstart client, which before issue 13 was a Ray actor), reads each job's records and
prints: sweep wall time, the sum of the jobs' load windows (first send to last token), and
(wall - loads) / N, the per-job overhead (start-up, server launch, MLflow, summary, figures,
report; the sweep's own start and end spread over its jobs). ``--project`` points at another
checkout (e.g. ``git worktree add /tmp/old <commit>``) to compare before and after in one session:
its package is imported through PYTHONPATH. Extra overrides after ``--`` go to every job.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

PROJECT_DIR = Path(__file__).resolve().parents[1]


def load_window_s(records: Path) -> float:
    sent, end = [], []
    for line in records.read_bytes().splitlines():
        if line.strip():
            r = orjson.loads(line)
            sent.append(r["sent_ns"])
            end.append(r["end_ns"])
    return (max(end) - min(sent)) / 1e9 if sent else 0.0


def timed_etalon(project: Path, args: list[str], cwd: str) -> float:
    """Wall time of ``python -m etalon.main ARGS`` with ``project``'s package; exits on a failure."""
    env = {**os.environ, "PYTHONPATH": str(project), "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "etalon.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=1200)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"etalon failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall


def one_sweep(project: Path, jobs: int, extra: list[str], as_shipped: bool = False) -> tuple[float, float]:
    rates = ",".join(str(2 ** (i + 1)) for i in range(jobs))
    with tempfile.TemporaryDirectory() as tmp:
        wall = timed_etalon(project, [
            "-m", f"hydra.sweep.dir={tmp}/sweep", f"tracking.tracking_uri=sqlite:///{tmp}/mlflow.db",
            f"cache_dir={tmp}/cache", "+experiment=quickstart", *([] if as_shipped else ["client=local"]),
            "workload.num_requests=12", "workload.warmup_requests=0", f"workload.arrival.rate_rps={rates}", *extra,
        ], tmp)
        loads = sum(load_window_s(p) for p in Path(tmp, "sweep").glob("*/*/records.jsonl"))
    return wall, loads


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--project", type=Path, default=PROJECT_DIR)
    p.add_argument("--as-shipped", action="store_true", help="the checkout's own quickstart client, not client=local")
    p.add_argument("extra", nargs="*", help="overrides for every job (after --)")
    args = p.parse_args()
    for i in range(args.repeat):
        wall, loads = one_sweep(args.project.resolve(), args.jobs, args.extra, args.as_shipped)
        print(f"{args.project} [{i + 1}/{args.repeat}] {args.jobs} jobs: wall {wall:.1f} s, loads {loads:.1f} s, "
              f"per-job overhead {(wall - loads) / args.jobs:.2f} s", flush=True)


if __name__ == "__main__":
    main()
