"""Figures saved by worker processes: drawing and PNG-encoding a figure (its ``savefig``) is ~90%
of a figure's cost and holds the GIL, so a run's ~9 figures are handed to one worker per core and
waited for before anything reads them (a report page, MLflow's artifact copy) or the next load
starts. A sweep starts the pool once for all its jobs, a single run for itself.

Two ways in: ``draw`` sends a builder's name and its inputs (a run's figures: the table and the
summary), and the worker builds the figure too, so this process never imports matplotlib for it
(~0.6 s) nor spends ~0.1 s per figure building and pickling it; ``submit`` sends a figure built
here. Without a pool (one core, a pool that failed to start, other entry points), for inputs over
``MAX_DRAW_INPUT_BYTES``, or if a worker fails, figures are built or saved here."""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import signal
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Imported once by the fork server: what a worker needs to save any etalon figure and to build a
# run's figures (draw's builders; the sweep's load pandas in the worker on first use); and what
# the command's module imports: multiprocessing runs that module again in every worker (as
# __mp_main__), which then costs ~5 ms. Preloading the module itself would make runpy warn on
# stderr that it is already imported.
PRELOAD = ["numpy", "matplotlib.figure", "matplotlib.backends.backend_agg", "etalon.report.figures",
           "etalon.report.plots", "etalon.report.timeseries", "etalon.report.server_plots",
           "hydra", "omegaconf", "etalon.config", "etalon.runner.cli", "etalon.runner.compose_once",
           "etalon.runner.heap"]
MAX_WORKERS = 4
# A builder's inputs are pickled to its worker: above this (a run of tens of millions of tokens) the
# figure is built here and only the figure is sent.
MAX_DRAW_INPUT_BYTES = 64 << 20

_pool: ProcessPoolExecutor | None = None
# (future, the same work done in this process if the worker fails, its pickled input, path, kwargs)
_pending: list[tuple[Future[Any], Any, bytes, Path, dict[str, Any]]] = []
_starting: threading.Thread | None = None


def _quiet_worker() -> None:
    # Ctrl-C goes to the whole process group: the parent stops the run, a worker just ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _save_pickled(data: bytes, path: str, kwargs: dict[str, Any]) -> str:
    from etalon.report.figures import DPI

    fig = pickle.loads(data)
    fig.savefig(path, dpi=DPI, **kwargs)
    return path


def _builder(name: str) -> Any:
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


def _draw_pickled(data: bytes, path: str, kwargs: dict[str, Any]) -> str:
    from etalon.report.figures import DPI

    name, args = pickle.loads(data)
    _builder(name)(*args).savefig(path, dpi=DPI, **kwargs)
    return path


def start(workers: int | None = None) -> None:
    """Start the pool (idempotent) in the background: a fork server that imports matplotlib, one
    worker per core up to MAX_WORKERS, warmed before any load is sent (``wait`` before a load waits
    for this too). The caller goes on at once: forking the workers waits for the fork server's
    imports (~0.8 s here), which run on another core while this process connects to MLflow."""
    global _starting
    if _pool is not None or _starting is not None:
        return
    count = workers or min(os.cpu_count() or 1, MAX_WORKERS)
    if count < 2:
        return  # one core: a worker only adds pickling
    _starting = threading.Thread(target=_start_pool, args=(count,), name="etalon-figure-pool", daemon=True)
    _starting.start()


def _start_pool(count: int) -> None:
    global _pool
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    pool = ProcessPoolExecutor(max_workers=count, mp_context=context, initializer=_quiet_worker)
    try:
        warm = [pool.submit(os.getpid) for _ in range(count)]
    except Exception as exc:  # no pool (e.g. no /dev/shm): figures are saved inline, as before
        log.info("figure workers not started (%s: %s); figures are saved in this process", type(exc).__name__, exc)
        pool.shutdown(wait=False, cancel_futures=True)
        return
    _pending.extend((future, None, b"", Path(), {}) for future in warm)
    _pool = pool


def _started() -> ProcessPoolExecutor | None:
    """The pool, once its start (if one is under way) has finished."""
    global _starting
    if _starting is not None:
        _starting.join()
        _starting = None
    return _pool


def draw(builder: str, args: tuple[Any, ...], path: Path, **kwargs: Any) -> Path:
    """Save the figure ``builder(*args)`` at ``path`` as PNG (``builder``: "module:function"
    returning a matplotlib Figure; ``kwargs`` go to ``savefig``). A worker builds and saves it when
    the pool runs (the file exists after ``wait()``); otherwise, or for inputs over
    ``MAX_DRAW_INPUT_BYTES``, it is built here."""
    path = Path(path).resolve()
    pool = _started()
    if pool is not None:
        try:
            data = pickle.dumps((builder, args), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an input that does not pickle: built here
            log.debug("figure %s built here: %s", path, exc)
            data = b""
        if data and len(data) <= MAX_DRAW_INPUT_BYTES:
            try:
                _pending.append((pool.submit(_draw_pickled, data, str(path), kwargs), _draw_pickled, data, path, kwargs))
                return path
            except Exception as exc:  # a broken pool: built here
                log.debug("figure %s built here: %s", path, exc)
    from etalon.report.figures import save_figure

    return save_figure(_builder(builder)(*args), path, **kwargs)


def submit(fig: Any, path: Path, kwargs: dict[str, Any]) -> bool:
    """Queue ``fig`` to be saved at ``path`` by a worker; False (save it inline) without a pool or
    if the figure does not pickle."""
    pool = _started()
    if pool is None:
        return False
    try:
        data = pickle.dumps(fig, protocol=pickle.HIGHEST_PROTOCOL)
        path = Path(path).resolve()
        _pending.append((pool.submit(_save_pickled, data, str(path), kwargs), _save_pickled, data, path, kwargs))
    except Exception as exc:  # an unpicklable artist, a broken pool: this figure is saved inline
        log.debug("figure %s saved inline: %s", path, exc)
        return False
    return True


def wait() -> None:
    """Block until the pool has started and every queued figure is saved; a figure whose worker
    failed is built or saved here."""
    _started()
    while _pending:
        future, here, data, path, kwargs = _pending.pop(0)
        try:
            future.result()
        except Exception as exc:  # a worker died or could not save: do its work in this process
            if here is None:
                continue
            log.info("figure worker failed (%s: %s); saving %s here", type(exc).__name__, exc, path.name)
            here(data, str(path), kwargs)


def shutdown() -> None:
    """Wait for queued figures and stop the workers."""
    global _pool
    wait()
    if _pool is not None:
        _pool.shutdown(wait=True, cancel_futures=True)
        _pool = None


__all__ = ["draw", "shutdown", "start", "submit", "wait"]
