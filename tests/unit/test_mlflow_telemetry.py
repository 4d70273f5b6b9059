"""MLflow's usage telemetry (a thread that posts from the measuring process) is off in etalon's
processes unless the user turns it on; the check runs outside pytest and CI variables, which would
turn it off by themselves."""

from __future__ import annotations

import os
import subprocess
import sys

_CI_VARS = ("PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "CI", "CIRCLECI", "GITLAB_CI", "JENKINS_URL", "TRAVIS",
            "TF_BUILD", "BITBUCKET_BUILD_NUMBER", "CODEBUILD_BUILD_ARN", "BUILDKITE", "TEAMCITY_VERSION",
            "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")


def _disabled(module: str, **env: str) -> bool:
    clean = {k: v for k, v in os.environ.items() if k not in _CI_VARS}
    code = f"import {module}; from mlflow.telemetry.utils import is_telemetry_disabled; print(is_telemetry_disabled())"
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1] == "True"


def test_baseline_mlflow_alone_has_telemetry_on():
    assert not _disabled("json")  # what MLflow does by itself here: the test below means something


def test_etalon_turns_it_off_and_the_user_can_turn_it_on():
    assert _disabled("etalon.main")
    assert not _disabled("etalon.main", MLFLOW_DISABLE_TELEMETRY="false")
