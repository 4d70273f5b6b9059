"""Multi-turn send lag: how late turn k+1 leaves against turn k's end + think time (issue 9's 2 ms p99).

    python bench/multiturn_lag.py [--sessions 40] [--turns 4] [--think-s 0.05] [--repeat 2]
                                  [--modes shared pinned]

Starts the simulator (tiny_engine) as its own process, then runs ``workload=multi_turn`` against it
with ``client=local`` (the load loop and the driver in one process) and reads each turn's
``sent_ns - scheduled_ns`` from the records (turn 0 is excluded: it is scheduled by the arrival
process, not by a previous turn). Modes:
- ``shared``: the simulator and etalon share every core (the suite's situation);
- ``pinned``: the simulator on the last core, etalon on the others (``taskset``), as a client on
  its own cores would run.
Prints n, p50, p99 and max of the lag in ms per mode and repeat.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))

import numpy as np  # noqa: E402
import orjson  # noqa: E402

from etalon.runner.launch import pick_free_port  # noqa: E402
from etalon.runner.server import wait_for_health  # noqa: E402


def cores(pinned: bool) -> tuple[list[str], list[str]]:
    """(prefix for the simulator, prefix for etalon): taskset lists, or nothing when shared."""
    n = os.cpu_count() or 1
    if not pinned or n < 2:
        return [], []
    return ["taskset", "-c", str(n - 1)], ["taskset", "-c", f"0-{n - 2}" if n > 2 else "0"]


def lags_ms(records: Path) -> np.ndarray:
    out = []
    for line in records.read_bytes().splitlines():
        if line.strip():
            r = orjson.loads(line)
            if r.get("turn") and r.get("status") == "ok":
                out.append((r["sent_ns"] - r["scheduled_ns"]) / 1e6)
    return np.array(out)


def one_run(pinned: bool, sessions: int, turns: int, think_s: float) -> np.ndarray:
    sim_prefix, etalon_prefix = cores(pinned)
    port = pick_free_port()
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR), "RAY_USAGE_STATS_ENABLED": "0"}
    sim = subprocess.Popen([*sim_prefix, sys.executable, "-m", "etalon.sim", "serve", "--preset", "tiny_engine",
                            "--host", "127.0.0.1", "--port", str(port)], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_health(f"http://127.0.0.1:{port}/health", 60.0, sim)
        with tempfile.TemporaryDirectory() as tmp:
            args = [*etalon_prefix, sys.executable, "-m", "etalon.main", "workload=multi_turn", "model=etalon_sim",
                    "endpoint=openai_chat", f"endpoint.base_url=http://127.0.0.1:{port}/v1", "client=local",
                    "client.progress=false", "tracking=none", "plots=false", f"hydra.run.dir={tmp}/run",
                    f"cache_dir={tmp}/cache", f"workload.num_requests={sessions}", "workload.arrival.rate_rps=4",
                    f"workload.sessions.turns={turns}", "workload.sessions.turns_max=null",
                    f"workload.sessions.think_time_s={think_s}"]
            done = subprocess.run(args, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
            if done.returncode not in (0, 3):
                raise SystemExit(f"etalon failed ({done.returncode}):\n{done.stderr[-3000:]}")
            return lags_ms(next(Path(tmp, "run").rglob("records.jsonl")))
    finally:
        sim.terminate()
        sim.wait(timeout=10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=40)
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--think-s", type=float, default=0.05)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--modes", nargs="+", choices=("shared", "pinned"), default=["shared", "pinned"])
    a = p.parse_args()
    print(f"{'mode':8} {'run':>3} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for i in range(a.repeat):
        for mode in a.modes:
            lag = one_run(mode == "pinned", a.sessions, a.turns, a.think_s)
            if lag.size == 0:
                raise SystemExit("no later turns were recorded")
            print(f"{mode:8} {i:>3} {lag.size:>5} {np.median(lag):>8.3f} {np.percentile(lag, 99):>8.3f} "
                  f"{lag.max():>8.3f}", flush=True)


if __name__ == "__main__":
    main()
