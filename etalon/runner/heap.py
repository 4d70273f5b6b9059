"""How an etalon process runs Python's cyclic garbage collector: rare full collections, none at exit."""

from __future__ import annotations

import atexit
import gc

# Full collections happen after this many young-generation collections (Python's default: 10) and
# only once the survivors grew by a quarter, as before.
FULL_COLLECTION_THRESHOLD = 100


def tune_collector() -> None:
    """Call once at process start.

    A full collection walks every object the imported libraries hold (hydra, pandas, MLflow with
    SQLAlchemy, matplotlib: ~250k objects, 0.15-0.5 s each here), and with Python's thresholds a
    4-job sweep ran 10 of them (2.1 s; 6 while modules imported), a quickstart 8 (1.3 s). Cycles
    among young objects are still collected as before; the load loop has its own setting
    (``etalon.loadgen.actors``).

    At exit, interpreter teardown walks the whole heap again, several times (~1.8 s measured after
    the last exit handler): freezing it in the exit handler registered first, which runs last
    (after the log files, child processes and MLflow are closed), skips that; the memory goes back
    to the OS with the process.
    """
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_THRESHOLD)
    atexit.register(gc.freeze)


__all__ = ["FULL_COLLECTION_THRESHOLD", "tune_collector"]
