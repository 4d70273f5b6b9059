"""Wall time of the quickstart, and how much of it is not the load.

    python bench/quickstart_wall.py [--project DIR] [--repeat 2] [--existing-store] [-- extra overrides]

Runs ``python -m etalon.main +experiment=quickstart`` as a user would and prints its wall time, its load window (first send to
last token, read from its records) and the rest: start-up, server launch, MLflow, summary, figures,
report. By default each run gets a fresh sqlite MLflow store and cache in a temp directory (a
first run on a machine: MLflow creates and migrates its schema, ~2 s); with ``--existing-store``
an untimed run creates them first and the timed runs reuse them, as a user's later runs do.
``--project`` points at another checkout (``git worktree add /tmp/old <commit>``) to
compare before and after in one session.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_overhead import PROJECT_DIR, load_window_s, timed_etalon  # noqa: E402


def one_run(project: Path, extra: list[str], tmp: str, run: str = "run") -> tuple[float, float]:
    wall = timed_etalon(project, [f"hydra.run.dir={tmp}/{run}", f"tracking.tracking_uri=sqlite:///{tmp}/mlflow.db",
                                  f"cache_dir={tmp}/cache", "+experiment=quickstart", *extra], tmp)
    return wall, load_window_s(Path(tmp, run, "benchmark", "records.jsonl"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--project", type=Path, default=PROJECT_DIR)
    p.add_argument("--existing-store", action="store_true", help="timed runs reuse a store and cache made first")
    p.add_argument("extra", nargs="*", help="overrides (after --)")
    args = p.parse_args()
    project = args.project.resolve()
    with tempfile.TemporaryDirectory() as shared:
        if args.existing_store:
            one_run(project, args.extra, shared, "first")
        for i in range(args.repeat):
            with tempfile.TemporaryDirectory() as fresh:
                wall, load = one_run(project, args.extra, shared if args.existing_store else fresh, f"run{i}")
            print(f"{args.project} [{i + 1}/{args.repeat}] quickstart: wall {wall:.1f} s, load {load:.1f} s, "
                  f"the rest {wall - load:.1f} s{' (existing store)' if args.existing_store else ''}", flush=True)


if __name__ == "__main__":
    main()
