"""Build hook: ship conf/ (with pipelines/, which conf/pipeline links to) inside the package as
etalon/_conf, so an installed `etalon` command finds its configs from any directory. Editable
installs read conf/ from the clone instead (etalon.runner.cli.config_dir)."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithConfigs(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "etalon" / "_conf"
        if target.exists():
            shutil.rmtree(target)
        # symlinks=False copies what conf/pipeline points at (pipelines/), not the link.
        shutil.copytree(Path(__file__).parent / "conf", target, symlinks=False,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithConfigs})
