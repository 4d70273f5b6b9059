"""One embedded simulator kept running between the jobs of a sweep, reset to a fresh state for each.

Starting the simulator (a Python process importing aiohttp and numpy) is ~0.3 s of every sweep
job. With Hydra's basic launcher the jobs of a sweep run one after another in this process, so the
sweep callback ``enable``s the pool: a job that ends normally hands its simulator back instead of
stopping it, and the next job whose server command and environment are the same takes it after
``POST /etalon/reset``, which gives back a server in the state of a fresh start (scheduler, KV
cache, counters, fault and output draws, request ids) and points its output at the new job's
``server.log``. The next job's port is the held server's port (``port_for``, used when the config
is loaded), so its command, its resolved config and its URLs are the real ones.

The sweep's first simulator is started ahead (``prestart``, from the sweep callback): it comes up
in its own process on another core while this one imports and connects MLflow and composes the
jobs' configs, and the first job takes it like any held one. It is not started ahead when the
sweep varies what the simulator runs (``sim``, ``server``, ``endpoint``, ``model``, experiments).

Nothing else is reused: a real engine keeps caches no reset can be trusted to clear, a simulator
with an emission log writes one file per run, and a job that failed or was interrupted stops its
server. Jobs in other processes (the Ray launcher) never see an enabled pool.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from etalon.config import ServerConfig
from etalon.runner.launch import LaunchedServer, render_command, render_env
from etalon.sim.config import RESET_PATH

log = logging.getLogger("etalon")

RESET_TIMEOUT_S = 5.0
RESET_BUSY_RETRY_S = 1.0  # a cancelled request can take a moment to unwind on the server
RESET_BUSY_PAUSE_S = 0.05

_lock = threading.Lock()
_enabled = False
_idle: LaunchedServer | None = None
_starting: threading.Thread | None = None  # a prestarted simulator still coming up
# Swept keys under which the first job's simulator may differ from the sweep's base config.
SERVER_KEYS = ("sim", "server", "endpoint", "model", "experiment")


def enable() -> None:
    """Jobs of this process may share one simulator from now on (until ``close``)."""
    global _enabled
    with _lock:
        _enabled = True


def prestart(config: Any, swept: list[str], log_path: Path) -> bool:
    """Launch the simulator that ``config`` (the sweep's base config) declares now, held for the
    first job, unless a swept key may change it; it logs to ``log_path`` until a job takes it.
    Returns whether one is starting. Any problem is left to the first job, which starts its own."""
    global _idle, _starting
    if any(key.split(".", 1)[0].split("/", 1)[0] in SERVER_KEYS for key in swept):
        return False
    try:
        launched = _launchable(config, log_path)
    except Exception as exc:  # an incomplete or invalid base config: the job reports it properly
        log.debug("simulator not started ahead of the sweep: %s: %s", type(exc).__name__, exc)
        return False
    if launched is None:
        return False
    with _lock:
        if not _enabled or _idle is not None or _starting is not None:
            return False
    try:
        launched.spawn()  # on this (the main) thread: the server's parent-death signal follows it
    except Exception as exc:
        log.debug("simulator not started ahead of the sweep: %s", exc)
        return False
    print(f"etalon: launching {launched.server.name} on port {launched.server.port} for the jobs of this sweep "
          f"(log: {launched.log_path})", file=sys.stderr, flush=True)
    with _lock:
        _idle = launched
        _starting = threading.Thread(target=_wait_held, args=(launched,), name="etalon-sim-prestart", daemon=True)
        _starting.start()
    return True


def _launchable(config: Any, log_path: Path) -> LaunchedServer | None:
    """The reusable simulator ``config`` would launch (its port picked), else None."""
    import copy

    from omegaconf import OmegaConf, open_dict

    from etalon.runner.endpoint import assign_port

    dcfg = copy.deepcopy(config)
    with open_dict(dcfg):
        dcfg.pop("hydra", None)
    endpoint, server = dcfg.get("endpoint"), dcfg.get("server")
    if endpoint is None or server is None or endpoint.get("base_url") is not None or endpoint.get("server") is not None:
        return None
    assign_port(dcfg)
    resolved = OmegaConf.to_container(dcfg.server, resolve=True)
    server_cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ServerConfig), resolved))
    assert isinstance(server_cfg, ServerConfig)
    if not reusable(dcfg.get("sim"), server_cfg):
        return None
    return LaunchedServer(server_cfg, log_path)


def _wait_held(launched: LaunchedServer) -> None:
    global _idle
    try:
        launched.wait_ready()
    except Exception as exc:  # the first job starts its own and reports what goes wrong
        log.info("simulator started ahead of the sweep did not come up (%s); the first job starts its own", exc)
        with _lock:
            if _idle is launched:
                _idle = None
        launched.stop()


def _wait_started() -> None:
    """Until a prestarted simulator is up (or has failed)."""
    global _starting
    starting = _starting
    if starting is not None:
        starting.join()
        _starting = None


def close(wait: bool = True) -> None:
    """Stop the held simulator, if any; jobs stop their servers again. ``wait=False``: it is
    stopped on a thread (it takes ~0.2 s to exit) while the caller goes on; the interpreter waits
    for that thread before it exits."""
    global _enabled, _idle
    _wait_started()
    with _lock:
        _enabled, held, _idle = False, _idle, None
    if held is None:
        return
    if wait:
        held.stop()
    else:
        threading.Thread(target=held.stop, name="etalon-sim-stop", daemon=False).start()


def reusable(sim: Any, server: Any) -> bool:
    """A simulator without an emission log (``sim`` and ``server`` as dicts or configs)."""
    engine = _get(server, "engine")
    return engine == "sim" and not _get(sim, "emission_log_path")


def port_for(sim: Any, server: Any) -> int | None:
    """The held simulator's port for a job that will launch a reusable simulator on ``host``."""
    with _lock:
        held = _idle if _enabled else None
    if held is None or not reusable(sim, server) or _get(server, "host") != held.server.host:
        return None
    return held.server.port


def take(server: ServerConfig, log_path: Path) -> LaunchedServer | None:
    """The held simulator, reset and logging to ``log_path``, when it runs exactly ``server``'s
    command and environment; else None (a held one that does not match is stopped)."""
    global _idle
    _wait_started()
    with _lock:
        held, _idle = (_idle, None) if _enabled else (None, _idle)
    if held is None:
        return None
    if _key(held.server) != _key(server) or not held.alive():
        held.stop()
        return None
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    problem = _reset(held, log_path)
    if problem is not None:
        log.info("simulator not reused (%s): starting a fresh one", problem)
        held.stop()
        return None
    assert held.process is not None  # alive
    with open(log_path, "ab") as f:
        f.write(f"# etalon: reusing {server.name} (pid {held.process.pid}, started earlier in this sweep, "
                f"reset to a fresh state): {' '.join(held.command)}\n".encode())
    held.log_path = log_path
    return held


def release(launched: LaunchedServer, keep: bool) -> None:
    """The job is done with ``launched``: hold it for the next job when the pool is on and ``keep``
    (a reusable simulator whose job ended cleanly) and it is still running; else stop it."""
    global _idle
    keep = keep and launched.alive()
    with _lock:
        if keep and _enabled:
            previous, _idle = _idle, launched
        else:
            previous, keep = None, False
    if previous is not None:
        previous.stop()
    if not keep:
        launched.stop()


def _reset(held: LaunchedServer, log_path: Path) -> str | None:
    url = held.server.root_url + RESET_PATH
    body = orjson.dumps({"log_path": str(log_path.resolve())})
    deadline = time.monotonic() + RESET_BUSY_RETRY_S
    while True:
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=RESET_TIMEOUT_S) as answer:  # noqa: S310 - loopback
                return None if answer.status == 200 else f"reset answered HTTP {answer.status}"
        except urllib.error.HTTPError as exc:
            if exc.code != 409 or time.monotonic() > deadline:
                return f"reset answered HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            return f"reset failed: {getattr(exc, 'reason', exc)}"
        time.sleep(RESET_BUSY_PAUSE_S)


def _key(server: ServerConfig) -> tuple[Any, ...]:
    return tuple(render_command(server)), tuple(sorted(render_env(server).items()))


def _get(node: Any, name: str) -> Any:
    """A field of a dict, a DictConfig (a Mapping too) or a dataclass; None when absent."""
    return node.get(name) if isinstance(node, Mapping) else getattr(node, name, None)


__all__ = ["close", "enable", "port_for", "prestart", "release", "reusable", "take"]
