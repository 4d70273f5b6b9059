"""Engine core scheduling maths with hand-computed expectations (no event loop)."""

from __future__ import annotations

import pytest

from etalon.sim.config import LatencyConfig, SimConfig, SimConfigError
from etalon.sim.engine import EngineCore, StepPlan, step_time_s


def _summary(plan: StepPlan) -> tuple[list[tuple[int, int]], int, int, int]:
    items = [(seq.seq_id, num) for seq, num in plan.items]
    return items, plan.prefill_tokens, plan.decode_seqs, plan.context_tokens


def test_prefill_first_whole_prompts_then_decodes_wait() -> None:
    core = EngineCore("prefill_first", 4, 100, 10_000, 16)
    core.add(0, 60, 3)
    core.add(1, 30, 3)
    core.add(2, 50, 3)
    plan = core.schedule()
    assert _summary(plan) == ([(0, 60), (1, 30)], 90, 0, 90)  # 50 more would exceed 100
    assert [(e.seq_id, e.token_index) for e in core.commit(plan)] == [(0, 1), (1, 1)]
    plan = core.schedule()  # a waiting prompt runs alone; the two decodes wait
    assert _summary(plan) == ([(2, 50)], 50, 0, 50)
    core.commit(plan)
    plan = core.schedule()
    assert _summary(plan) == ([(0, 1), (1, 1), (2, 1)], 0, 3, 61 + 31 + 51)


def test_chunked_prefill_shares_budget_with_decodes() -> None:
    core = EngineCore("chunked", 4, 64, 10_000, 16)
    core.add(0, 100, 2)
    core.add(1, 10, 2)
    plan = core.schedule()
    assert _summary(plan) == ([(0, 64)], 64, 0, 64)
    assert core.commit(plan) == []  # a partial prefill produces no token
    plan = core.schedule()
    assert _summary(plan) == ([(0, 36), (1, 10)], 46, 0, 100 + 10)
    assert [e.seq_id for e in core.commit(plan)] == [0, 1]
    core.add(2, 200, 1)
    plan = core.schedule()  # decodes first (2 tokens), then a 62-token chunk of the new prompt
    assert _summary(plan) == ([(0, 1), (1, 1), (2, 62)], 62, 2, 101 + 11 + 62)
    events = core.commit(plan)
    assert [(e.seq_id, e.token_index, e.finished) for e in events] == [(0, 2, True), (1, 2, True)]
    assert core.free_blocks == core.total_blocks - 13  # seq 2 holds ceil(200 / 16) blocks


def test_max_num_seqs_limits_admission() -> None:
    core = EngineCore("prefill_first", 2, 1000, 10_000, 16)
    for seq_id in range(3):
        core.add(seq_id, 10, 5)
    plan = core.schedule()
    assert [seq.seq_id for seq, _ in plan.items] == [0, 1]
    assert len(core.waiting) == 1


def test_kv_admission_needs_the_whole_prompt() -> None:
    core = EngineCore("prefill_first", 8, 1000, 160, 16)  # 10 blocks, watermark 0
    core.add(0, 64, 5)
    core.add(1, 64, 5)
    core.add(2, 48, 5)  # needs 3 blocks, only 2 left
    plan = core.schedule()
    assert [seq.seq_id for seq, _ in plan.items] == [0, 1]
    assert core.free_blocks == 2
    assert core.kv_usage() == pytest.approx(0.8)


def test_decode_out_of_blocks_preempts_newest_and_recomputes() -> None:
    core = EngineCore("prefill_first", 8, 1000, 160, 16)
    core.add(0, 64, 40)
    core.add(1, 64, 40)
    core.commit(core.schedule())  # prefill: 4 + 4 blocks, total 65 tokens each
    # totals 65..80 fit 5 blocks (one more each): 16 decode steps without preemption
    for _ in range(16):
        plan = core.schedule()
        assert plan.preempted_ids == [] and plan.decode_seqs == 2
        core.commit(plan)
    plan = core.schedule()  # token 81 needs a 6th block each: the newest (1) is preempted
    assert plan.preempted_ids == [1]
    assert [seq.seq_id for seq, _ in plan.items] == [0]
    assert core.num_preemptions == 1
    victim = core.waiting[0]
    assert (victim.seq_id, victim.computed_tokens, victim.generated_tokens) == (1, 0, 17)
    assert victim.pending_tokens == 81  # recompute prompt plus the 17 tokens already emitted
    assert core.free_blocks == 10 - 6


def test_preempted_sequence_resumes_token_count() -> None:
    core = EngineCore("prefill_first", 8, 1000, 160, 16)
    core.add(0, 64, 40)
    core.add(1, 64, 40)
    emitted: dict[int, list[int]] = {0: [], 1: []}
    while core.has_work():
        for event in core.commit(core.schedule()):
            emitted[event.seq_id].append(event.token_index)
    assert emitted[0] == list(range(1, 41))
    assert emitted[1] == list(range(1, 41))  # no token lost or repeated by recompute
    assert core.free_blocks == 10


def test_step_time_is_the_linear_latency_model() -> None:
    latency = LatencyConfig(step_overhead_s=0.01, per_prefill_token_s=1e-4,
                            per_decode_seq_s=1e-3, per_context_token_s=1e-6)
    plan = StepPlan(prefill_tokens=100, decode_seqs=4, context_tokens=1000)
    plan.items.append((None, 0))  # type: ignore[arg-type]
    assert step_time_s(plan, latency) == pytest.approx(0.01 + 0.01 + 0.004 + 0.001)
    assert step_time_s(StepPlan(), latency) == 0.0
    started = StepPlan(prefill_tokens=100, decode_seqs=4, context_tokens=1000, new_seqs=2)
    started.items.append((None, 0))  # type: ignore[arg-type]
    assert step_time_s(started, LatencyConfig(per_new_seq_s=0.003)) == pytest.approx(0.006)


def test_a_sequence_counts_as_new_only_in_its_first_prefill_chunk() -> None:
    core = EngineCore("chunked", 4, 64, 10_000, 16)
    core.add(0, 100, 2)
    core.add(1, 10, 2)
    counts = []
    for _ in range(4):
        plan = core.schedule()
        counts.append(plan.new_seqs)
        core.commit(plan)
    # step 1: seq 0's first chunk; step 2: seq 0's second chunk and seq 1's only one; then decodes
    assert counts == [1, 1, 0, 0]


def test_sequence_that_never_fits_is_rejected() -> None:
    core = EngineCore("chunked", 8, 64, 160, 16)
    with pytest.raises(ValueError, match="never fit"):
        core.add(0, 150, 20)


def test_config_rejects_unknown_scheduler_and_small_budget() -> None:
    with pytest.raises(SimConfigError, match="sim.scheduler='fifo'"):
        SimConfig(scheduler="fifo")
    with pytest.raises(SimConfigError, match="max_num_batched_tokens"):
        SimConfig(max_num_seqs=64, max_num_batched_tokens=32)
