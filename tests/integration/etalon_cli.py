"""Run `python -m etalon.main` as a user would, with outputs and MLflow under a temp directory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]
TRACES_DIR = Path(os.environ.get("ETALON_TRACES", PROJECT_DIR.parent / "shared" / "traces"))


@dataclass
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    run_dir: Path
    mlflow_uri: str


def free_port() -> int:
    """A port the OS just handed out and nobody listens on now (tests never use a fixed port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
            "HF_HUB_OFFLINE": "1",
            "ETALON_TRACES": str(TRACES_DIR),
            "ETALON_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra or {})
    return env


def without_figures(overrides: tuple[str, ...] | list[str]) -> list[str]:
    """``plots=false`` first unless the test sets ``plots``: a run's PNGs cost ~4 s and only the
    tests about figures and reports look at them (they pass ``plots=true``)."""
    return list(overrides) if any(str(o).startswith("plots=") for o in overrides) else ["plots=false", *overrides]


def run_cli(
    tmp_path: Path,
    *overrides: str,
    env: dict[str, str] | None = None,
    timeout_s: float = 240,
    multirun: bool = False,
) -> CliRun:
    """Run etalon with outputs, cache and MLflow in ``tmp_path``; never raises on a failed run."""
    run_dir = tmp_path / "run"
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [sys.executable, "-m", "etalon.main"]
    if multirun:
        args += ["-m", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    else:
        args += [f"hydra.run.dir={run_dir}"]
    args += [
        f"tracking.tracking_uri={mlflow_uri}",
        f"tracking.artifact_location={(tmp_path / 'artifacts').as_uri()}",
        f"cache_dir={tmp_path / 'cache'}",
        *without_figures(overrides),
    ]
    proc = subprocess.run(
        args, cwd=PROJECT_DIR, env=cli_env(env), capture_output=True, text=True, timeout=timeout_s
    )
    return CliRun(proc.returncode, proc.stdout, proc.stderr, run_dir, mlflow_uri)
