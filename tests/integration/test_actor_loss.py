"""kill -9 of one of two Ray load actors: the survivor's records are drained, the dead one's
in-flight requests are counted as lost, and the run ends with a partial result."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from etalon.core.records import RequestRecord
from tests.integration.test_loadgen import PacedServer, read_jsonl, run, schedule
from tests.integration.test_process_faults import _cmdline, descendants


@pytest.fixture()
def server() -> Any:
    with PacedServer() as srv:
        yield srv


def _load_actor_pids() -> list[int]:
    """This test's load actors (other Ray sessions may run on the machine)."""
    return sorted(p for p in descendants(os.getpid()) if _cmdline(p).startswith("ray::LoadActor"))


def test_one_dead_actor_loses_only_its_inflight_requests(server: PacedServer, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    killed: list[int] = []

    def kill_one(records: list[RequestRecord]) -> None:
        if not killed and len(records) >= 20:
            pid = _load_actor_pids()[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        return None

    try:
        # 200 requests over 2 s, each streaming 30 tokens 10 ms apart: ~30 in flight at any time.
        result = run(schedule(200, gap_ms=10, out=30), server.spec(0.0, 0.01), tmp_path / "r.jsonl",
                     should_stop=kill_one,
                     settings={"backend": "ray", "num_actors": 2, "start_delay_s": 0.5})
    finally:
        ray.shutdown()
    assert killed
    dead = next(a["actor"] for a in result.actors if a["pid"] == killed[0])
    by_actor = {i: [r for r in result.records if r.actor == i] for i in (0, 1)}
    survivor = by_actor[1 - dead]
    assert len(survivor) == 100 and all(r.status == "ok" for r in survivor)  # drained to the end
    lost = [r for r in by_actor[dead] if r.error_type == "actor_lost"]
    assert 1 <= len(lost) <= 40 and all(r.status == "error" for r in lost)
    assert all(r.status == "ok" for r in by_actor[dead] if r.error_type != "actor_lost")
    ids = [r.request_id for r in result.records]
    assert len(ids) == len(set(ids)) and len(by_actor[dead]) < 100  # its tail was never sent
    assert result.partial and f"load actor {dead} died" in (result.stop_reason or "")
    assert len(read_jsonl(tmp_path / "r.jsonl")) == len(ids)


def test_an_actor_that_dies_while_starting_is_one_line_and_no_request(server: PacedServer, tmp_path: Path) -> None:
    # An actor whose creation fails (here its client class does not import in the actor process,
    # as with another etalon version on a remote node) used to end the run in Ray's traceback.
    import dataclasses

    from etalon.loadgen.ray_init import RayStartError

    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    spec = dataclasses.replace(server.spec(0.0, 0.01), client_target="etalon.clients.not_a_module.Client")
    try:
        with pytest.raises(RayStartError) as info:
            run(schedule(10, gap_ms=10, out=3), spec, tmp_path / "r.jsonl",
                settings={"backend": "ray", "num_actors": 2, "start_delay_s": 0.2})
    finally:
        ray.shutdown()
    message = str(info.value)
    assert "\n" not in message and "before any request was sent" in message
    assert "ValueError: endpoint client_target 'etalon.clients.not_a_module.Client' is not an importable class" in message
    assert server.served == 0 and server.max_inflight == 0
