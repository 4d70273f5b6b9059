"""Wall time of the quickstart, and how much of it is not the load.

    python bench/quickstart_wall.py [--project DIR] [--repeat 2] [-- extra overrides]

Runs ``python -m etalon.main +experiment=quickstart`` as a user would (a fresh sqlite MLflow store
and cache in a temp directory each time) and prints its wall time, its load window (first send to
last token, read from its records) and the rest: start-up, server launch, MLflow, summary, figures,
report. ``--project`` points at another checkout (``git worktree add /tmp/old <commit>``) to
compare before and after in one session.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_overhead import PROJECT_DIR, load_window_s, timed_etalon  # noqa: E402


def one_run(project: Path, extra: list[str]) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        wall = timed_etalon(project, [f"hydra.run.dir={tmp}/run", f"tracking.tracking_uri=sqlite:///{tmp}/mlflow.db",
                                      f"cache_dir={tmp}/cache", "+experiment=quickstart", *extra], tmp)
        return wall, load_window_s(Path(tmp, "run", "benchmark", "records.jsonl"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--project", type=Path, default=PROJECT_DIR)
    p.add_argument("extra", nargs="*", help="overrides (after --)")
    args = p.parse_args()
    for i in range(args.repeat):
        wall, load = one_run(args.project.resolve(), args.extra)
        print(f"{args.project} [{i + 1}/{args.repeat}] quickstart: wall {wall:.1f} s, load {load:.1f} s, "
              f"the rest {wall - load:.1f} s", flush=True)


if __name__ == "__main__":
    main()
