"""This user's cache for etalon, kept between runs: ``ETALON_CACHE_DIR``, else
``$XDG_CACHE_HOME/etalon``, else ``~/.cache/etalon`` (downloaded traces, store templates)."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    base = os.environ.get("ETALON_CACHE_DIR")
    if base:
        return Path(base).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "etalon"
