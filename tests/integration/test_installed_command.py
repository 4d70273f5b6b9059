"""`pip install` from a copy of the clone, then the installed `etalon` script from another directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.integration.etalon_cli import PROJECT_DIR, cli_env

SKIP = shutil.ignore_patterns(".git", "outputs", ".venv", "venv", "build", "*.egg-info", "__pycache__", "_conf",
                              ".pytest_cache", ".mypy_cache")


def _has_modern_setuptools() -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= 77


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv whose only etalon is a regular (non-editable) install of a copy of the clone;
    its dependencies come from this interpreter's site-packages (a .pth line), so nothing else is
    installed."""
    tmp = tmp_path_factory.mktemp("installed")
    clone = tmp / "clone"
    shutil.copytree(PROJECT_DIR, clone, symlinks=True, ignore=SKIP)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "_etalon_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps"]
    if _has_modern_setuptools():
        pip.append("--no-build-isolation")
    done = subprocess.run([*pip, str(clone)], capture_output=True, text=True, timeout=600, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    return venv


def _env() -> dict[str, str]:
    env = cli_env()
    env.pop("PYTHONPATH", None)  # only what was installed, nothing from the working tree
    env.pop("VIRTUAL_ENV", None)
    return env


def test_the_installed_package_carries_its_configs(installed: Path) -> None:
    probe = subprocess.run(
        [str(installed / "bin" / "python"), "-c",
         "import etalon, etalon.runner.cli as c; print(etalon.__file__); print(c.config_dir())"],
        cwd="/", capture_output=True, text=True, timeout=120, env=_env())
    module, conf = probe.stdout.split()
    site = str(next((installed / "lib").glob("python*/site-packages")))
    assert module.startswith(site) and conf.startswith(site), probe.stdout + probe.stderr
    assert (Path(conf) / "pipeline" / "characterize.yaml").is_file()  # pipelines/ shipped too


@pytest.mark.slow
def test_help_and_the_quickstart_run_from_another_directory(installed: Path, tmp_path: Path) -> None:
    etalon = str(installed / "bin" / "etalon")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    helped = subprocess.run([etalon, "--help"], cwd=elsewhere, capture_output=True, text=True, timeout=120, env=_env())
    assert helped.returncode == 0, helped.stderr[-3000:]
    presets = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "conf" / "experiment").glob("*.yaml"))
    assert f"experiment: {', '.join(presets)}" in helped.stdout  # the installed configs, every preset
    ran = subprocess.run([etalon, "+experiment=quickstart"], cwd=elsewhere, capture_output=True, text=True,
                         timeout=420, env=_env())
    assert ran.returncode == 0, ran.stderr[-3000:]
    run_dirs = list((elsewhere / "outputs" / "runs").glob("*/*_quickstart"))
    assert len(run_dirs) == 1
    assert f"etalon: run directory {run_dirs[0]}" in ran.stdout
    assert "fluidity-index" in (run_dirs[0] / "summary.txt").read_text()
    assert len((run_dirs[0] / "benchmark" / "records.jsonl").read_bytes().splitlines()) == 128
    # Quiet: no Ray / MLflow / alembic line and no Python warning (e.g. runpy's from the figure
    # workers) on the terminal: the progress bar is all there is.
    noise = [line for line in ran.stderr.replace("\r", "\n").splitlines()
             if any(word in line for word in ("WARNING", "INFO", "Warning", "Traceback"))]
    assert noise == [], noise
    assert os.path.exists(elsewhere / "outputs" / "mlflow.db")
