"""Load from several Ray nodes: a local multi-node cluster (two raylets on this machine), actors
placed by ``client.placement=SPREAD``, a sweep whose jobs land on different nodes, and a node lost
mid-run: its in-flight requests are counted, the other actors finish the run."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from etalon.core.records import RecordTable
from etalon.core.summary import summarize
from etalon.loadgen.loss import ACTOR_LOST
from tests.integration.etalon_cli import run_cli
from tests.integration.test_loadgen import MS, PacedServer, run, schedule

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

NODE = {"num_cpus": 1}


@pytest.fixture(scope="module")
def cluster() -> Any:
    """Head plus one worker node, 1 CPU each: two actors of 0.5 CPU fit on either, so only the
    placement strategy puts them on different nodes."""
    c = cluster_utils.Cluster(
        initialize_head=True, head_node_args={**NODE, "include_dashboard": False},
    )
    c.add_node(**NODE)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.fixture()
def server() -> Any:
    with PacedServer() as srv:
        yield srv


def _alive_nodes() -> set[str]:
    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


def test_actors_on_two_nodes_complete_records_and_combined_rates(cluster, server, tmp_path: Path) -> None:
    sched = schedule(40, gap_ms=25, out=5)  # 40 rps offered, 5 tokens each
    path = tmp_path / "r.jsonl"
    result = run(sched, server.spec(0.01, 0.004), path,
                 settings={"backend": "ray", "num_actors": 2, "start_delay_s": 0.5, "placement": "SPREAD"})
    assert not result.partial, result.stop_reason
    nodes = {a["node_id"] for a in result.actors}
    assert len(nodes) == 2 and nodes == _alive_nodes()
    recs = sorted(result.records, key=lambda r: r.request_id)
    assert [r.request_id for r in recs] == list(range(40)) and all(r.status == "ok" for r in recs)
    # each record names the node of the actor that sent it (requests alternate over the actors)
    by_actor = {a["actor"]: a["node_id"] for a in result.actors}
    assert all(r.node_id == by_actor[r.actor] == by_actor[r.request_id % 2] for r in recs)
    assert [r.request_id for r in recs if r.actor == 1] == list(range(1, 40, 2))
    assert all(len(r.token_ns) == 5 and r.output_tokens == 5 for r in recs)
    # per-request durations come from one process's clock each; rates combine both actors
    table = RecordTable.from_records(result.records)
    s = summarize(table, ttft_deadline_s=1.0, tbt_deadline_s=0.05)
    measured = [r for r in recs if not r.warmup]
    window_s = (max(r.end_ns for r in measured) - min(r.scheduled_ns for r in measured)) / 1e9
    assert s.measurement_window_s == pytest.approx(window_s)
    assert s.rates["request_rate_offered_rps"] == pytest.approx(1 / 0.025)
    assert s.rates["request_rate_achieved_rps"] == pytest.approx(len(measured) / window_s)
    assert s.rates["output_tokens_per_s"] == pytest.approx(5 * len(measured) / window_s)
    assert 0.9 * 38 * 0.025 < window_s < 38 * 0.025 + 0.5  # the 38 measured sends span ~0.95 s
    ttft_ms = np.array([r.first_token_ns - r.sent_ns for r in measured]) / MS
    assert 10 <= ttft_ms.min() and np.median(ttft_ms) < 60
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert {line["node_id"] for line in lines} == nodes and len(lines) == 40


def _wait_until_dead(node_id: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while node_id in _alive_nodes() and time.monotonic() < deadline:
        time.sleep(0.2)


def test_node_lost_mid_run_counts_its_in_flight_requests(cluster, server, tmp_path: Path) -> None:
    doomed = cluster.add_node(**NODE)  # a third node, removed while it sends
    cluster.wait_for_nodes()
    doomed_id = doomed.node_id
    nodes = _alive_nodes()
    assert len(nodes) == 3 and doomed_id in nodes
    sched = schedule(150, gap_ms=20, out=40)  # 3 s of sends; each request streams ~0.4 s

    def remove_later() -> None:
        deadline = time.monotonic() + 120
        while server.served < 20 and time.monotonic() < deadline:  # well into the run
            time.sleep(0.02)
        cluster.remove_node(doomed, allow_graceful=False)

    killer = threading.Thread(target=remove_later, daemon=True)
    killer.start()
    result = run(sched, server.spec(0.01, 0.01), tmp_path / "r.jsonl",
                 settings={"backend": "ray", "num_actors": 3, "start_delay_s": 0.5, "placement": "SPREAD"})
    killer.join()
    _wait_until_dead(doomed_id)  # later tests must not be scheduled onto it
    assert {a["node_id"] for a in result.actors} == nodes  # SPREAD: one actor on each node
    lost_actor = next(a["actor"] for a in result.actors if a["node_id"] == doomed_id)
    # the run goes on with the other actors; the loss is reported and makes the result partial
    assert result.partial and f"load actor {lost_actor} died" in result.stop_reason
    assert f"on node {doomed_id[:12]}" in result.stop_reason and ACTOR_LOST in result.stop_reason
    ids = [r.request_id for r in result.records]
    assert len(ids) == len(set(ids))  # one record per request, never two
    lost = [r for r in result.records if r.error_type == ACTOR_LOST]
    assert lost and {r.actor for r in lost} == {lost_actor} and all(r.node_id == doomed_id for r in lost)
    mine = [r for r in result.records if r.actor == lost_actor and r.error_type != ACTOR_LOST]
    assert mine and all(r.status == "ok" and r.node_id == doomed_id for r in mine)  # kept
    survivors = [r for r in result.records if r.actor != lost_actor]
    planned = {i for i in range(150) if i % 3 != lost_actor}
    assert {r.request_id for r in survivors} == planned and all(r.status == "ok" for r in survivors)
    assert {r.node_id for r in survivors} == nodes - {doomed_id}


SWEEP = (
    "+experiment=quickstart", "client=local", "client.progress=false", "tracking=none",
    "workload.num_requests=4", "workload.warmup_requests=0", "hydra/launcher=ray_cluster",
    "hydra.launcher.ray.remote.num_cpus=1", "+hydra.launcher.ray.remote.scheduling_strategy=SPREAD",
)


@pytest.mark.heavy
@pytest.mark.slow
def test_sweep_jobs_run_on_different_nodes(cluster, tmp_path: Path) -> None:
    nodes = _alive_nodes()
    run_ = run_cli(
        tmp_path, *SWEEP, "workload.arrival.rate_rps=4,8", multirun=True, timeout_s=300,
        env={"RAY_ADDRESS": cluster.address},
    )
    assert run_.returncode == 0, run_.stderr[-4000:]
    files = sorted((tmp_path / "sweep").rglob("records.jsonl"))
    assert len(files) == 2
    job_nodes = []
    for f in files:
        lines = [orjson.loads(line) for line in f.read_bytes().splitlines()]
        assert len(lines) == 4 and all(line["status"] == "ok" for line in lines)
        job_nodes.append({line["node_id"] for line in lines})
    assert all(len(n) == 1 for n in job_nodes)  # client=local: a job's load comes from its node
    assert set.union(*job_nodes) <= nodes and len(set.union(*job_nodes)) == 2
