"""Load generation: per-actor asyncio drivers, Ray load actors, and the run loop that drains them."""

from __future__ import annotations

from etalon.loadgen.run import LoadResult, LoadSettings, preflight, run_load

__all__ = ["LoadResult", "LoadSettings", "preflight", "run_load"]
