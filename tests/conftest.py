"""Shared test set-up: Ray binds loopback only and sends no usage stats; no MLflow outside tmp_path."""

from __future__ import annotations

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ETALON_OFFLINE", "1")  # tests never download a trace
os.environ.pop("MLFLOW_TRACKING_URI", None)
