"""Prompt seeds derived per run/stage/probe, and token accounting against the server's counts."""

from __future__ import annotations

import pytest

from etalon.core.accounting import accounting_notes, accounting_scalars, token_accounting
from etalon.core.records import RequestRecord
from etalon.core.seeds import derive_prompt_seed, run_prompt_base


def test_fixed_base_is_reproducible_and_parts_give_distinct_seeds() -> None:
    base = run_prompt_base(42)
    assert base == 42
    seeds = {derive_prompt_seed(base, "capacity_search", "probe", i) for i in range(200)}
    seeds |= {derive_prompt_seed(base, "benchmark"), derive_prompt_seed(base, "capacity_search")}
    assert len(seeds) == 202
    assert derive_prompt_seed(42, "benchmark") == derive_prompt_seed(42, "benchmark")
    assert derive_prompt_seed(42, "benchmark") != derive_prompt_seed(43, "benchmark")
    assert all(0 <= s < 2**62 for s in seeds)


def test_unset_base_is_fresh_per_run() -> None:
    assert len({run_prompt_base(None) for _ in range(20)}) == 20
    with pytest.raises(ValueError, match="prompt_seed"):
        run_prompt_base(-1)


def _rec(i: int, planned: int, server: int | None, cached: int | None, source: str = "usage") -> RequestRecord:
    return RequestRecord(request_id=i, prompt_tokens=planned, server_prompt_tokens=server, cached_tokens=cached,
                         output_tokens_source=source)


def test_accounting_hand_computed() -> None:
    recs = [_rec(0, 100, 106, 0), _rec(1, 200, 206, 96), _rec(2, 50, None, None, "tokenizer")]
    acc = token_accounting(recs)
    assert acc["prompt_tokens_planned"] == 350
    assert acc["server_counted_requests"] == 2 and acc["prompt_tokens_server"] == 312
    assert acc["server_over_planned"] == pytest.approx(312 / 300)
    assert acc["cached_prompt_tokens"] == 96 and acc["cached_fraction"] == pytest.approx(96 / 312)
    assert acc["output_tokens_source"] == {"tokenizer": 1, "usage": 2}
    assert acc["metrics_prompt_tokens"] == "planned"
    notes = accounting_notes(acc)
    assert any("1 of 3 requests were counted by the tokenizer" in n for n in notes)
    assert any("96 prompt tokens (30.8%)" in n for n in notes)
    assert not any("x the planned" in n for n in notes)  # 4% over: within 5%
    scalars = accounting_scalars(acc)
    assert scalars["cached_prompt_tokens"] == 96.0
    assert scalars["output_tokens_from_usage_fraction"] == pytest.approx(2 / 3)


def test_accounting_without_server_counts() -> None:
    acc = token_accounting([_rec(0, 64, None, None, "chunks"), _rec(1, 64, None, None, "chunks")])
    assert acc["prompt_tokens_server"] is None and acc["cached_prompt_tokens"] is None
    assert acc["server_over_planned"] is None and acc["cached_fraction"] is None
    notes = accounting_notes(acc)
    assert any("counting chunks" in n for n in notes) and any("planned counts only" in n for n in notes)
    assert "cached_prompt_tokens" not in accounting_scalars(acc)
    length = accounting_notes(token_accounting([_rec(0, 64, None, None, "finish_length"), _rec(1, 64, 70, 0)]))
    assert any("1 of 2 requests are max_tokens, from finish_reason 'length'" in n for n in length)
    over = token_accounting([_rec(0, 64, 171, 0)])
    assert any("2.67x the planned" in n for n in accounting_notes(over))
