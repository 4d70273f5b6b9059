"""Start or join Ray once per process, quietly: one instance serves every job of a sweep."""

from __future__ import annotations

import logging
from typing import Any

# What a local instance skips: the dashboard (its HTTP server and its head process) and usage
# stats. Ray's own log lines (its token-auth notice, "Started a local Ray instance") go to the
# run's log file through the root logger instead of the terminal.
LOCAL_INIT: dict[str, Any] = {"include_dashboard": False}


class RayStartError(RuntimeError):
    """Ray could not be started or joined; the message says what to do instead."""


def quiet_ray_logging() -> None:
    """Send the ``ray`` logger's records to the root logger (the run's log file; errors still
    reach the terminal) instead of Ray's own stderr handler."""
    import ray  # noqa: F401  (importing ray installs its handler; replace it after)

    ray_logger = logging.getLogger("ray")
    for handler in list(ray_logger.handlers):
        ray_logger.removeHandler(handler)
    ray_logger.propagate = True


def ensure_ray(address: str | None = None, **options: Any) -> Any:
    """The ``ray`` module, initialised: joins ``address`` (a cluster) or starts one local instance,
    unless this process (a sweep job, a Ray worker) is already connected."""
    import os

    import ray

    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet_ray_logging()
    kwargs = {**LOCAL_INIT, **options} if address is None else dict(options)
    try:
        ray.init(address=address, ignore_reinit_error=True, configure_logging=False, **kwargs)
    except Exception as exc:  # Ray raises bare Exceptions (node start-up timeouts, bad addresses)
        where = f"join the Ray cluster at {address}" if address else "start a local Ray instance"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RayStartError(f"could not {where}: {first} (client=local runs the load in this process, "
                            "without Ray)") from None
    return ray


__all__ = ["RayStartError", "ensure_ray", "quiet_ray_logging"]
