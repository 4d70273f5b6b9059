"""Shared test set-up: Ray binds loopback only and sends no usage stats; no MLflow outside tmp_path;
a user cache of the session's own."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ETALON_OFFLINE", "1")  # tests never download a trace
os.environ.pop("MLFLOW_TRACKING_URI", None)
# One user cache for the session (MLflow store templates, traces), not the user's own.
os.environ.setdefault("ETALON_CACHE_DIR", tempfile.mkdtemp(prefix="etalon-test-cache-"))
