"""The simulator's prefix cache: chained block hashes, LRU eviction, hits that skip prefill."""

from __future__ import annotations

import pytest

from etalon.sim.config import SimConfig, SimConfigError
from etalon.sim.engine import EngineCore
from etalon.sim.kv_cache import ROOT_HASH, BlockPool, extend_block_hashes


def test_block_hashes_chain_over_the_whole_prefix() -> None:
    ids = list(range(10))
    hashes = extend_block_hashes([], ids, 4, 99)
    assert len(hashes) == 2  # the partial third block is never hashed
    assert hashes[0] == hash((ROOT_HASH, (0, 1, 2, 3)))
    assert hashes[1] == hash((hashes[0], (4, 5, 6, 7)))
    other = extend_block_hashes([], [9, 9, 9, 9, 4, 5, 6, 7], 4, 99)
    assert other[1] != hashes[1]  # same block tokens, different prefix: a different block


def test_pool_evicts_least_recently_freed_and_tail_first() -> None:
    pool = BlockPool(4, caching=True)
    a = pool.allocate(2)
    for block, block_hash in zip(a, (11, 12)):
        pool.register(block, block_hash)
    pool.release(a)  # tail first: block of hash 12 is evicted before hash 11
    assert pool.lookup([11, 12]) == a and pool.num_free == 4
    pool.allocate(2)  # the two never-used blocks come first
    assert pool.lookup([11, 12]) == a
    pool.allocate(1)
    assert pool.lookup([11, 12]) == [a[0]]  # hash 12's block was reused: the chain stops there
    pool.allocate(1)
    assert pool.lookup([11]) == [] and pool.num_cached == 0


def test_pool_shares_referenced_blocks_and_refuses_overdraw() -> None:
    pool = BlockPool(3, caching=True)
    first = pool.allocate(1)
    pool.register(first[0], 7)
    hits = pool.lookup([7])
    assert pool.free_among(hits) == 0  # held by a running sequence: sharing costs no free block
    pool.acquire(hits)
    pool.release(first)
    assert pool.num_free == 2  # still referenced by the second user
    pool.release(hits)
    assert pool.num_free == 3 and pool.lookup([7]) == first
    with pytest.raises(ValueError, match="cannot allocate 4 KV blocks, 3 free"):
        pool.allocate(4)


def test_caching_off_keeps_no_hashes() -> None:
    pool = BlockPool(2, caching=False)
    block = pool.allocate(1)[0]
    pool.register(block, 5)
    assert pool.lookup([5]) == [] and pool.num_cached == 0


def _run_to_completion(core: EngineCore) -> list[tuple[int, int]]:
    """(prefill tokens, context tokens) of every step until the engine is idle."""
    steps = []
    while core.has_work():
        plan = core.schedule()
        steps.append((plan.prefill_tokens, plan.context_tokens))
        core.commit(plan)
    return steps


def test_a_repeated_prefix_skips_its_cached_blocks() -> None:
    core = EngineCore("chunked", 4, 1000, 16 * 100, 16, prefix_caching=True)
    shared = list(range(1000, 1040))  # 40 tokens: two full blocks shared
    first = core.add(0, 45, 2, shared + [1, 2, 3, 4, 5] + [-1, -2])
    _run_to_completion(core)
    assert first.cached_tokens == 0
    second = core.add(1, 43, 2, shared + [7, 8, 9] + [-3, -4])
    steps = _run_to_completion(core)
    assert second.cached_tokens == 32  # 2 blocks of 16; the third block differs
    assert steps[0] == (43 - 32, 43)  # prefill computes 11 tokens, attention reads all 43
    assert (core.prefix_cache_queries_tokens, core.prefix_cache_hits_tokens) == (45 + 43, 32)


def test_a_fully_cached_prompt_still_computes_its_last_token() -> None:
    core = EngineCore("chunked", 4, 1000, 16 * 100, 16, prefix_caching=True)
    ids = list(range(32))
    core.add(0, 32, 1, ids + [99])
    _run_to_completion(core)
    again = core.add(1, 32, 1, ids + [98])
    steps = _run_to_completion(core)
    assert again.cached_tokens == 16  # hits are capped at prompt - 1 tokens, block aligned
    assert steps == [(16, 32)]


def test_generated_tokens_are_cached_for_the_next_turn() -> None:
    core = EngineCore("chunked", 4, 1000, 16 * 100, 16, prefix_caching=True)
    turn1_prompt = list(range(20))
    turn1_output = list(range(100, 120))  # 20 tokens; the last one's KV is never computed
    core.add(0, 20, 20, turn1_prompt + turn1_output)
    _run_to_completion(core)
    turn2 = turn1_prompt + turn1_output + list(range(200, 210))
    seq = core.add(1, 50, 1, turn2 + [0])
    _run_to_completion(core)
    assert seq.cached_tokens == 32  # 39 computed tokens -> 2 full blocks cached


def test_eviction_under_kv_capacity_loses_old_prefixes() -> None:
    core = EngineCore("chunked", 1, 1000, 16 * 4, 16, prefix_caching=True)  # 4 blocks, no watermark
    old = list(range(32))
    core.add(0, 32, 1, old + [1])
    _run_to_completion(core)
    core.add(1, 47, 1, list(range(500, 547)) + [2])  # needs 3 blocks: 2 free + 1 evicted
    _run_to_completion(core)
    again = core.add(2, 33, 1, old + [5, 6])
    _run_to_completion(core)
    assert again.cached_tokens == 16  # the prefix's tail block was evicted first, its head kept


def test_caching_off_or_without_ids_changes_nothing() -> None:
    for caching, ids in ((False, list(range(40))), (True, None)):
        core = EngineCore("chunked", 4, 1000, 1600, 16, prefix_caching=caching)
        core.add(0, 38, 2, ids)
        _run_to_completion(core)
        seq = core.add(1, 38, 2, ids)
        assert _run_to_completion(core)[0] == (38, 38)
        assert seq.cached_tokens == 0 and core.prefix_cache_hits_tokens == 0
        assert core.prefix_cache_queries_tokens == (76 if caching else 0)  # a miss is a query


def test_prefix_caching_default_follows_the_scheduler() -> None:
    assert SimConfig(scheduler="chunked").prefix_caching_enabled
    assert not SimConfig(scheduler="independent").prefix_caching_enabled
    assert not SimConfig(scheduler="chunked", prefix_caching=False).prefix_caching_enabled
    with pytest.raises(SimConfigError, match="sim.prefix_caching=true needs an engine scheduler"):
        SimConfig(scheduler="independent", prefix_caching=True)
    with pytest.raises(SimConfigError, match="sim.chat_role_tokens=-1 must be >= 0"):
        SimConfig(chat_role_tokens=-1)
