"""Ctrl-C, SIGTERM and SIGHUP all stop a run the same way: what was measured is kept and reported."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_RECEIVED: list[int] = []


def last_signal() -> int | None:
    """The stop signal received most recently in this process, if any."""
    return _RECEIVED[-1] if _RECEIVED else None


def exit_status() -> int:
    """The shell's convention for a process stopped by a signal: 128 + its number (Ctrl-C: 130)."""
    return 128 + (last_signal() or signal.SIGINT)


def signal_name() -> str:
    return signal.Signals(last_signal() or signal.SIGINT).name


@contextmanager
def _handlers(handler: Any, signals: tuple[signal.Signals, ...]) -> Iterator[None]:
    """Install ``handler`` for ``signals`` on the main thread; a signal someone chose to ignore
    (``nohup`` ignores SIGHUP, a background shell SIGINT) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in signals}
    for s, old in previous.items():
        if old is not signal.SIG_IGN:
            signal.signal(s, handler)
    try:
        yield
    finally:
        for s, old in previous.items():
            if old is not signal.SIG_IGN and old is not None:
                signal.signal(s, old)


@contextmanager
def interrupt_flag(wake: threading.Event | None = None) -> Iterator[threading.Event]:
    """A stop signal sets a flag the poll loop checks instead of raising wherever the main thread
    is, so a batch already drained from the actors is always written before the run stops; it
    also sets ``wake``, the event the poll loop sleeps on."""
    flag = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        _RECEIVED.append(signum)
        flag.set()
        if wake is not None:
            wake.set()

    with _handlers(on_signal, STOP_SIGNALS):
        yield flag


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt, as Ctrl-C does, so every ``finally`` (stopping a
    launched server, ending the MLflow run) runs and the summary is written."""

    def on_signal(signum: int, frame: Any) -> None:
        _RECEIVED.append(signum)
        raise KeyboardInterrupt

    def on_sigint(signum: int, frame: Any) -> None:
        _RECEIVED.append(signum)
        signal.default_int_handler(signum, frame)

    with _handlers(on_signal, (signal.SIGTERM, signal.SIGHUP)):
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            with _handlers(on_sigint, (signal.SIGINT,)):
                yield
        else:
            yield
