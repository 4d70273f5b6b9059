"""Runs left RUNNING by a process that died (kill -9, power loss) are marked FAILED by the next run."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

log = logging.getLogger("etalon")

HOST_TAG = "etalon.host"
PID_TAG = "etalon.pid"
PID_START_TAG = "etalon.pid_start"
MAX_CHECKED_RUNS = 1000


def process_start(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, from /proc), or "" if unknown/gone.
    With the pid it names one process: a pid reused by a later process has another start time."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return ""
    return fields[19].decode() if len(fields) > 19 else ""


def process_tags() -> dict[str, str]:
    """Tags naming the process that owns a run, so a later run can tell whether it still lives."""
    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), PID_START_TAG: process_start(pid)}


def owner_alive(tags: dict[str, str]) -> bool:
    """Whether the process named by a run's tags still runs (on this host)."""
    try:
        pid = int(tags.get(PID_TAG, ""))
    except ValueError:
        return True  # not ours to judge
    started = tags.get(PID_START_TAG, "")
    if started:
        return process_start(pid) == started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_dead_runs(client: Any, experiment_id: str) -> int:
    """Mark FAILED every RUNNING run of this host whose process is gone; return how many."""
    host = socket.gethostname().replace("'", "")
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'",
        max_results=MAX_CHECKED_RUNS,
    )
    failed = 0
    for run in runs:
        if owner_alive(run.data.tags):
            continue
        pid = run.data.tags.get(PID_TAG)
        client.set_tag(run.info.run_id, "etalon.error",
                       f"the etalon process (pid {pid}) died without ending this run")
        client.set_terminated(run.info.run_id, status="FAILED")
        failed += 1
    if failed:
        log.warning("marked %d MLflow run(s) FAILED: their etalon process died while they ran", failed)
    return failed
