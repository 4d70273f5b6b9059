"""Launch and stop the server under test: the embedded simulator or an external engine command."""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from typing import Any

LISTENING_PREFIX = "etalon-sim listening on "
STOP_GRACE_S = 5.0
STDERR_TAIL_LINES = 40


class ServerStartError(RuntimeError):
    """The server process did not come up. ``detail`` is the tail of its log (shown under the
    one-line message), ``log_path`` where the whole log is."""

    def __init__(self, message: str, detail: str = "", log_path: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail
        self.log_path = log_path


def wait_for_health(url: str, timeout_s: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 200; fail after ``timeout_s`` or when ``process`` exits."""
    deadline = time.monotonic() + timeout_s
    last_error = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerStartError(f"server exited with code {process.returncode} before {url} "
                                   f"was healthy")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - loopback URL
                if answer.status == 200:
                    return
                last_error = f"HTTP {answer.status}"
        except (urllib.error.URLError, OSError) as exc:
            last_error = str(exc)
        time.sleep(0.05)
    raise ServerStartError(f"{url} not healthy after {timeout_s:g} s (last: {last_error})")


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent_kwargs() -> dict[str, Any]:
    """``subprocess.Popen`` keyword arguments that make the child die with this process.

    On Linux the child asks the kernel (``prctl(PR_SET_PDEATHSIG, SIGTERM)``) for SIGTERM when its
    parent dies, even by ``kill -9``; it also exits at once if the parent died before the call.
    The signal follows the death of the *thread* that started the child, so start servers from a
    thread that lives as long as the run (the job's main thread). Elsewhere: no arguments (the
    atexit hook and the SIGTERM handling still stop the child on an ordinary exit).
    """
    if not sys.platform.startswith("linux"):
        return {}
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: the child must not load libraries
    parent_pid = os.getpid()

    def set_parent_death_signal() -> None:
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGTERM)

    return {"preexec_fn": set_parent_death_signal}


class _ManagedProcess:
    """A child process with a stderr tail, SIGTERM-then-kill stop and an atexit safety net."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self._stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._stderr_thread: threading.Thread | None = None

    def spawn(self, command: list[str], stdout: int | None) -> subprocess.Popen[bytes]:
        # A new session keeps Ctrl-C in the terminal from reaching the child before we stop it.
        self.process = subprocess.Popen(command, stdout=stdout, stderr=subprocess.PIPE,
                                        stdin=subprocess.DEVNULL, start_new_session=True,
                                        **die_with_parent_kwargs())
        self._stderr_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr_thread.start()
        atexit.register(self.stop)
        return self.process

    def _drain_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr_tail.append(line.decode(errors="replace").rstrip())

    def stderr_tail(self) -> str:
        if self._stderr_thread is not None and self.process is not None and self.process.poll() is not None:
            self._stderr_thread.join(timeout=1)
        return "\n".join(self._stderr_tail)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        atexit.unregister(self.stop)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def fail(self, message: str) -> ServerStartError:
        tail = self.stderr_tail()
        self.stop()
        return ServerStartError(f"{message}\n--- server stderr (tail) ---\n{tail}" if tail else message)


class EmbeddedSimServer:
    """The simulated server as a child process: ``python -m etalon.sim serve --config <tmp>``."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = dict(config)
        self.base_url: str | None = None
        self._child = _ManagedProcess()
        self._config_path: Path | None = None

    def start(self, timeout_s: float = 30) -> str:
        """Start the child, wait for /health, return ``http://127.0.0.1:PORT/v1``."""
        if self.base_url is not None:
            return self.base_url
        from omegaconf import OmegaConf

        handle, path = tempfile.mkstemp(prefix="etalon-sim-", suffix=".yaml")
        os.close(handle)
        self._config_path = Path(path)
        OmegaConf.save(OmegaConf.create(self.config), self._config_path)
        command = [sys.executable, "-m", "etalon.sim", "serve", "--config", path,
                   "--host", "127.0.0.1", "--port", "0"]
        process = self._child.spawn(command, stdout=subprocess.PIPE)
        root_url = self._read_listening_line(process, timeout_s)
        try:
            wait_for_health(f"{root_url}/health", timeout_s, process)
        except ServerStartError as exc:
            raise self._child.fail(str(exc)) from None
        self.base_url = f"{root_url}/v1"
        return self.base_url

    def _read_listening_line(self, process: subprocess.Popen[bytes], timeout_s: float) -> str:
        stdout = process.stdout
        assert stdout is not None
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(stdout.readline().decode()),
                                  daemon=True)
        reader.start()
        reader.join(timeout_s)
        line = lines[0].strip() if lines else ""
        if not line.startswith(LISTENING_PREFIX):
            code = process.poll()
            why = f"exited with code {code}" if code is not None else f"silent for {timeout_s:g} s"
            raise self._child.fail(f"embedded sim server did not start: {why} "
                                   f"(first stdout line: {line!r})")
        return line[len(LISTENING_PREFIX):]

    def stop(self) -> None:
        """SIGTERM, then kill after a grace period; safe to call twice."""
        self._child.stop()
        self.base_url = None
        if self._config_path is not None:
            self._config_path.unlink(missing_ok=True)
            self._config_path = None

    def __enter__(self) -> EmbeddedSimServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
