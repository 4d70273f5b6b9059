"""Launch a server from its template (the ``server`` group): a free port, its own process group,
``server.log``, readiness, and a stop of the whole group on every path."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from typing import IO, Any

from etalon.config import ServerConfig
from etalon.runner.server import ServerStartError

LOG_TAIL_LINES = 20
SERVER_LOG = "server.log"
# Readiness polls: every 20 ms for the first 2 s (the simulator is up in ~0.3 s, and every poll
# missed is start-up time in each sweep job), then backing off to 0.5 s for engines loading a model.
READY_POLL_FAST_S = 0.02
READY_FAST_WINDOW_S = 2.0
READY_POLL_SLOW_S = 0.5


def pick_free_port(host: str = "127.0.0.1") -> int:
    """A port the OS hands out now on ``host`` (nobody listens there at this moment)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_answers(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Something accepts TCP connections on ``host:port`` (another server is already there)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def render_command(server: ServerConfig) -> list[str]:
    """The argument list to execute: every element as text, empty ones (unset optional flags) dropped."""
    return [str(part) for part in server.command if part is not None and str(part) != ""]


def render_env(server: ServerConfig) -> dict[str, str]:
    """Extra environment of the server: entries that resolved to '' (unset) are left out."""
    return {str(k): str(v) for k, v in server.env.items() if v is not None and str(v) != ""}


def popen_kwargs(log_file: IO[bytes], env: dict[str, str]) -> dict[str, Any]:
    """Keyword arguments of every launched server's ``Popen``: the one place for process hooks
    (e.g. a parent-death signal). A new session makes the server the leader of its own process
    group, so Ctrl-C in the terminal does not reach it before etalon stops it, and one signal to
    the group reaches every worker it forks."""
    from etalon.runner.server import die_with_parent_kwargs

    return {"stdin": subprocess.DEVNULL, "stdout": log_file, "stderr": subprocess.STDOUT,
            "start_new_session": True, "env": {**os.environ, **env}, **die_with_parent_kwargs()}


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.exists():
        return ""
    with open(path, "rb") as f:
        tail = deque(f, maxlen=lines)
    return "".join(line.decode(errors="replace") for line in tail).rstrip()


class LaunchedServer:
    """One engine process group started from a ``ServerConfig``; ``stop`` is safe to call twice."""

    def __init__(self, server: ServerConfig, log_path: Path) -> None:
        if server.port is None:
            raise ServerStartError("server.port: no port assigned (the config was not loaded with load_config)")
        self.server = server
        self.command = render_command(server)
        self.log_path = Path(log_path)
        self.process: subprocess.Popen[bytes] | None = None
        self.started_ns: int | None = None
        self.stopped_ns: int | None = None
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def start(self) -> str:
        """Start the group, wait until ``health_path`` answers 200; return the API base URL."""
        self.spawn()
        self.wait_ready()
        return self.base_url

    def spawn(self) -> None:
        """Start the group and return at once (``wait_ready`` then waits for it). The thread that
        calls this must outlive the server: the server gets a signal when it ends."""
        self._check_launchable()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            log_file.write(f"# etalon: launching {self.server.name}: {' '.join(self.command)}\n".encode())
            log_file.flush()
            try:
                self.process = subprocess.Popen(self.command, **popen_kwargs(log_file, render_env(self.server)))
            except OSError as exc:
                raise ServerStartError(f"server {self.server.name}: cannot run {self.command[0]!r}: {exc}") from None
        self.started_ns = time.time_ns()
        atexit.register(self.stop)

    def _check_launchable(self) -> None:
        binary = self.command[0]
        if shutil.which(binary) is None and not (os.sep in binary and os.access(binary, os.X_OK)):
            raise ServerStartError(f"server.command: {binary!r} is not installed (not found on PATH); "
                                   f"it comes with {self.server.package or 'the engine package'}")
        if port_answers(self.server.host, int(self.server.port or 0)):
            raise ServerStartError(
                f"server.port: {self.server.port} on {self.server.host} already answers (another server "
                f"is running there); stop it, or leave server.port null so etalon picks a free port")

    def wait_ready(self) -> None:
        """Until ``health_path`` answers 200; a server that exits or is not ready in time is stopped."""
        url = self.server.root_url + self.server.health_path
        started = time.monotonic()
        deadline = started + self.server.startup_timeout_s
        last, pause_s = "no answer", READY_POLL_FAST_S
        while time.monotonic() < deadline:
            code = self.process.poll() if self.process is not None else None
            if code is not None:
                raise self._failure(f"server {self.server.name} exited with code {code} during start-up")
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - loopback URL
                    if answer.status == 200:
                        return
                    last = f"HTTP {answer.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"  # e.g. 503 while the model loads
            except (urllib.error.URLError, OSError) as exc:
                last = str(getattr(exc, "reason", exc))
            time.sleep(pause_s)
            if time.monotonic() - started > READY_FAST_WINDOW_S:  # a slow engine (model loading)
                pause_s = min(pause_s * 1.5, READY_POLL_SLOW_S)
        raise self._failure(f"server {self.server.name} not ready after {self.server.startup_timeout_s:g} s "
                            f"(server.startup_timeout_s; GET {url}: {last})")

    def _failure(self, message: str) -> ServerStartError:
        self.stop()
        return ServerStartError(message, detail=self.tail(), log_path=str(self.log_path))

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return log_tail(self.log_path, lines)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """``stop_signal`` to the whole group, ``stop_grace_s`` to exit, then SIGKILL to what is left."""
        with self._lock:
            process, self.process = self.process, None
        if process is None:
            return
        atexit.unregister(self.stop)
        pgid = process.pid  # the session leader's pid is its group id
        _signal_group(pgid, getattr(signal, self.server.stop_signal))
        try:
            process.wait(timeout=self.server.stop_grace_s)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + self.server.stop_grace_s
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)  # workers the leader forked may take a moment longer
        _signal_group(pgid, signal.SIGKILL)
        process.wait()
        self.stopped_ns = time.time_ns()

    def __enter__(self) -> LaunchedServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


__all__ = ["LaunchedServer", "SERVER_LOG", "log_tail", "pick_free_port", "popen_kwargs", "port_answers",
           "render_command", "render_env"]
