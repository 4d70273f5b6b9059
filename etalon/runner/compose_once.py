"""Each job of a sweep composed once: Hydra's sweeper composes every job's config to check it
before any job starts, then its launcher composes each one again to run it (~0.15 s a compose)."""

from __future__ import annotations

import copy
from typing import Any

# Checked configs kept for the launcher at most; a longer sweep composes its later jobs again.
MAX_KEPT = 64

_kept: dict[tuple[int, int, tuple[str, ...]], Any] = {}


def install_compose_once() -> None:
    """Make ``ConfigLoaderImpl.load_sweep_config`` keep a copy of what it composed for a job, and
    hand that copy to the next call with the same loader, master config and overrides (the
    launcher's) instead of composing again; the call after that composes anew. Idempotent."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    if getattr(ConfigLoaderImpl.load_sweep_config, "_etalon_compose_once", False):
        return
    original = ConfigLoaderImpl.load_sweep_config

    def load_sweep_config(self: Any, master_config: Any, sweep_overrides: list[str]) -> Any:
        key = (id(self), id(master_config), tuple(sweep_overrides))
        kept = _kept.pop(key, None)
        if kept is not None:
            return kept
        composed = original(self, master_config, sweep_overrides)
        if len(_kept) < MAX_KEPT:
            _kept[key] = copy.deepcopy(composed)  # ~7 ms; the caller may change what it got
        return composed

    load_sweep_config._etalon_compose_once = True  # type: ignore[attr-defined]
    ConfigLoaderImpl.load_sweep_config = load_sweep_config  # type: ignore[method-assign]


__all__ = ["MAX_KEPT", "install_compose_once"]
