"""Figures saved by worker processes while a sweep runs: drawing and PNG-encoding a figure (its
``savefig``) is ~90% of a figure's cost and holds the GIL, so a sweep's ~9 figures per job are
handed, pickled, to one worker per core and waited for before anything reads them (a report page,
MLflow's artifact copy) or the next load starts. Outside a sweep, or if a worker fails, figures are
saved inline, as before."""

from __future__ import annotations

import logging
import os
import pickle
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# What a worker needs to unpickle and save any etalon figure, imported once by the fork server.
PRELOAD = ["numpy", "matplotlib.figure", "matplotlib.backends.backend_agg", "etalon.report.figures"]
MAX_WORKERS = 4

_pool: ProcessPoolExecutor | None = None
_pending: list[tuple[Future[Any], bytes, Path, dict[str, Any]]] = []


def _quiet_worker() -> None:
    # Ctrl-C goes to the whole process group: the parent stops the run, a worker just ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _save_pickled(data: bytes, path: str, kwargs: dict[str, Any]) -> str:
    from etalon.report.figures import DPI

    fig = pickle.loads(data)
    fig.savefig(path, dpi=DPI, **kwargs)
    return path


def start(workers: int | None = None) -> None:
    """Start the pool (idempotent): a fork server that imports matplotlib, one worker per core up to
    MAX_WORKERS, warmed now, before any load is sent (``wait`` before a load waits for this too)."""
    global _pool
    if _pool is not None:
        return
    import multiprocessing

    count = workers or min(os.cpu_count() or 1, MAX_WORKERS)
    if count < 2:
        return  # one core: a worker only adds pickling
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    _pool = ProcessPoolExecutor(max_workers=count, mp_context=context, initializer=_quiet_worker)
    for _ in range(count):
        _pending.append((_pool.submit(os.getpid), b"", Path(), {}))


def submit(fig: Any, path: Path, kwargs: dict[str, Any]) -> bool:
    """Queue ``fig`` to be saved at ``path`` by a worker; False (save it inline) without a pool or
    if the figure does not pickle."""
    if _pool is None:
        return False
    try:
        data = pickle.dumps(fig, protocol=pickle.HIGHEST_PROTOCOL)
        path = Path(path).resolve()
        _pending.append((_pool.submit(_save_pickled, data, str(path), kwargs), data, path, kwargs))
    except Exception as exc:  # an unpicklable artist, a broken pool: this figure is saved inline
        log.debug("figure %s saved inline: %s", path, exc)
        return False
    return True


def wait() -> None:
    """Block until every queued figure is saved; a figure whose worker failed is saved here."""
    while _pending:
        future, data, path, kwargs = _pending.pop(0)
        try:
            future.result()
        except Exception as exc:  # a worker died or could not save: save it in this process
            if not data:
                continue
            log.info("figure worker failed (%s: %s); saving %s here", type(exc).__name__, exc, path.name)
            _save_pickled(data, str(path), kwargs)


def shutdown() -> None:
    """Wait for queued figures and stop the workers."""
    global _pool
    wait()
    if _pool is not None:
        _pool.shutdown(wait=True, cancel_futures=True)
        _pool = None


__all__ = ["shutdown", "start", "submit", "wait"]
