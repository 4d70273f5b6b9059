"""Per-chunk token counts, output flags, chunk/reasoning metrics and the multi-token TBT rule (pure)."""

from __future__ import annotations

import numpy as np
import pytest

from etalon.clients.chunks import StreamChunks, finish_record, share
from etalon.core import chunks as core_chunks
from etalon.core.metrics import deadline_miss_rate
from etalon.core.records import RecordTable, RequestRecord
from etalon.core.summary import summarize
from etalon.core.text import for_terminal

MS = 1_000_000


def record(requested: int = 8, status: str = "ok") -> RequestRecord:
    return RequestRecord(request_id=1, sent_ns=0, requested_output_tokens=requested, status=status)


def stream(times, texts, usage=None, cumulative=None, reasoning=None, finish="length", outside=0):
    n = len(times)
    return StreamChunks(list(times), list(texts), list(reasoning or [False] * n),
                        list(cumulative or [None] * n), usage, finish, outside)


def test_continuous_usage_gives_exact_chunk_tokens_and_eos_rides_with_the_last() -> None:
    rec = record(requested=8)
    # cumulative 2, 3, 6; final usage 8: 2 tokens counted after the last chunk (stop/EOS).
    finish_record(rec, stream([10, 20, 30], ["ab", "c", "def"], {"completion_tokens": 8}, [2, 3, 6]), None)
    assert rec.chunk_tokens == [2, 1, 5] and rec.chunk_tokens_source == "continuous_usage"
    assert rec.output_tokens == 8 and rec.output_tokens_source == "usage" and rec.flags == []
    assert rec.token_ns == [10, 10, 20, 30, 30, 30, 30, 30]


def test_final_usage_below_the_streamed_per_chunk_counts_is_flagged_and_chunks_win() -> None:
    rec = record(requested=6)
    finish_record(rec, stream([10, 20], ["ab", "cd"], {"completion_tokens": 3}, [2, 6]), None)
    assert rec.output_tokens == 6 and rec.output_tokens_source == "continuous_usage"
    assert rec.server_output_tokens == 3 and rec.flags == ["usage_below_chunks"]


def test_decreasing_per_chunk_usage_is_ignored_and_flagged() -> None:
    rec = record(requested=4)
    finish_record(rec, stream([10, 20], ["a", "bcdefgh"], {"completion_tokens": 4}, [3, 1]), None)
    assert "chunk_usage_invalid" in rec.flags and rec.chunk_tokens_source == "spread"
    assert rec.chunk_tokens == [1, 3]  # spread: 1 each, the 2 extra by text length 1:7 -> 0.25, 1.75


def test_tokenizer_per_chunk_when_there_are_more_tokens_than_chunks() -> None:
    rec = record(requested=5)
    count = len  # one token per character
    finish_record(rec, stream([10, 20], ["abc", "de"], {"completion_tokens": 5}), count)
    assert rec.chunk_tokens == [3, 2] and rec.chunk_tokens_source == "tokenizer"


def test_spread_rule_and_fewer_tokens_than_chunks() -> None:
    assert share(6, np.array([2.0, 6.0])) == [2, 4]
    rec = record(requested=2)
    finish_record(rec, stream([10, 20, 30], ["a", "b", "c"], {"completion_tokens": 2}), None)
    assert rec.chunk_tokens == [1, 1, 0] and rec.token_ns == [10, 20]
    assert rec.flags == ["usage_below_chunks"]


def test_huge_usage_is_flagged_and_the_streamed_count_used() -> None:
    # The hostile server of the issue: 2,000,000 tokens claimed for 33 requested and 33 chunks.
    rec = record(requested=33)
    finish_record(rec, stream(range(33), [" tok"] * 33, {"completion_tokens": 2_000_000}), None)
    assert rec.server_output_tokens == 2_000_000
    assert rec.output_tokens == 33 and rec.output_tokens_source == "chunks"
    assert rec.flags == ["usage_implausible"] and len(rec.token_ns) == 33


def test_usage_above_the_text_streamed_is_implausible_even_below_max_tokens() -> None:
    rec = record(requested=1000)
    finish_record(rec, stream([1, 2], ["a", "b"], {"completion_tokens": 500}), len)
    assert rec.flags[0] == "usage_implausible" and rec.output_tokens == 2
    assert rec.output_tokens_source == "tokenizer"


def test_hidden_reasoning_tokens_in_usage_are_plausible() -> None:
    rec = record(requested=100)
    usage = {"completion_tokens": 60, "completion_tokens_details": {"reasoning_tokens": 58}}
    finish_record(rec, stream([1, 2], ["a", "b"], usage, finish="stop"), None)
    assert rec.flags == ["output_short"] and rec.output_tokens == 60 and rec.reasoning_tokens == 58


@pytest.mark.parametrize("bad", ["12", -3, 1.5, True, None, [4]])
def test_non_integer_or_negative_usage_is_flagged(bad) -> None:
    rec = record(requested=2)
    finish_record(rec, stream([1, 2], ["a", "b"], {"completion_tokens": bad}), None)
    assert rec.output_tokens == 2 and rec.output_tokens_source == "chunks"
    assert rec.flags == ["usage_invalid"] and rec.server_output_tokens is None


def test_finish_length_below_max_tokens_and_short_output() -> None:
    rec = record(requested=8)
    finish_record(rec, stream([1, 2], ["a", "b"], {"completion_tokens": 2}, finish="length"), None)
    assert rec.flags == ["output_short", "finish_length_short"] and rec.finish_reason == "length"
    long = record(requested=1)
    finish_record(long, stream([1, 2], ["a", "b"], {"completion_tokens": 2}, finish="length"), None)
    assert long.flags == ["usage_implausible", "output_long"] and long.output_tokens == 2


def test_reasoning_only_stream_is_flagged_and_counted() -> None:
    rec = record(requested=3)
    finish_record(rec, stream([1, 2, 3], ["a", "b", "c"], {"completion_tokens": 3}, reasoning=[True] * 3), None)
    assert rec.flags == ["reasoning_only"] and rec.reasoning_tokens == 3


def test_reasoning_tokens_come_from_usage_details_when_sent() -> None:
    rec = record(requested=4)
    usage = {"completion_tokens": 4, "completion_tokens_details": {"reasoning_tokens": 3}}
    finish_record(rec, stream([1, 2, 3], ["a", "b", "cd"], usage, [1, 2, 4], [True, True, False]), None)
    assert rec.reasoning_tokens == 3 and rec.chunk_tokens == [1, 1, 2] and rec.flags == []


def test_non_string_chunk_text_is_counted_not_fatal() -> None:
    rec = record(requested=3)
    finish_record(rec, stream([1, 2], [7, "ab"], {"completion_tokens": 3}), None)
    assert rec.output_tokens == 3 and rec.chunk_tokens == [1, 2]


def test_error_records_get_no_output_flags_and_text_outside_choices_is_flagged() -> None:
    rec = record(requested=8, status="error")
    finish_record(rec, stream([1], ["a"], None, outside=2), None)
    assert rec.flags == ["text_outside_choices"]


def _table(chunk_ns, chunk_tokens, reasoning, sent_ns=0, requested=None) -> RecordTable:
    rec = RequestRecord(request_id=0, sent_ns=sent_ns, end_ns=chunk_ns[-1] + 1,
                        requested_output_tokens=requested or sum(chunk_tokens))
    finish_record(rec, stream(chunk_ns, ["x"] * len(chunk_ns), {"completion_tokens": sum(chunk_tokens)},
                              np.cumsum(chunk_tokens).tolist(), reasoning), None)
    return RecordTable.from_records([rec])


def test_chunk_metrics_by_hand() -> None:
    # chunks at 100, 130, 150, 190 ms carrying 1, 3, 2, 1 tokens; the first two are reasoning.
    t = _table([100 * MS, 130 * MS, 150 * MS, 190 * MS], [1, 3, 2, 1], [True, True, False, False])
    v = core_chunks.chunk_values(t).values
    assert v["inter_chunk_latency"].tolist() == pytest.approx([0.03, 0.02, 0.04])
    assert v["tokens_per_chunk"].tolist() == [1, 3, 2, 1]
    assert v["ttft_answer"].tolist() == pytest.approx([0.15])
    # tokens: 100(r) 130(r) 130(r) 130(r) 150(a) 150(a) 190(a)
    assert v["tbt_reasoning"].tolist() == pytest.approx([0.03, 0.0, 0.0])
    assert v["tbt_answer"].tolist() == pytest.approx([0.0, 0.04])
    assert v["reasoning_tokens"].tolist() == [4] and v["answer_tokens"].tolist() == [3]


def test_deadline_metrics_follow_the_multi_token_rule_by_hand() -> None:
    # TTFT 100 ms (deadline 120 ms), then chunks of 3 and 2 tokens at 160 and 250 ms; Dd = 50 ms.
    t = _table([100 * MS, 160 * MS, 250 * MS], [1, 3, 2], [False] * 3)
    s = summarize(t, ttft_deadline_s=0.12, tbt_deadline_s=0.05)
    # gaps x = [0.10, 0.06, 0, 0, 0.09, 0]: slack 0.02 after TTFT; 0.06 <= 0.05+0.02 -> slack 0.01;
    # two zeros bank 0.05 each -> 0.11; 0.09 <= 0.05 + 0.11 -> slack 0.07; 0 -> 0.12. No miss.
    assert s.requests.missed.tolist() == [0] and s.requests.total.tolist() == [6]
    assert deadline_miss_rate([0.10, 0.06, 0, 0, 0.09, 0], 0.12, 0.05) == (0.0, 0, 6)
    # With Dd = 20 ms: 0.06 > 0.02 + 0.02 -> k = floor(0.06 - 0.02) / 0.02 = 2 missed, slack 0;
    # zeros bank 0.04; 0.09 > 0.06 -> k = floor((0.09 - 0.04) / 0.02) = 2; total 1+2+2+2+1 = 8.
    s20 = summarize(t, ttft_deadline_s=0.12, tbt_deadline_s=0.02)
    assert s20.requests.missed.tolist() == [4] and s20.requests.total.tolist() == [8]
    # TBT pooled: the chunk gap goes to its first token, the others get 0; mean TBT == TPOT.
    tbt = s.distributions[("tbt", "s")]
    assert tbt["max"] == pytest.approx(0.09) and tbt["mean"] == pytest.approx(0.15 / 5)
    assert s.requests.tpot_s.tolist() == pytest.approx([0.15 / 5])
    assert s.distributions[("inter_chunk_latency", "s")]["mean"] == pytest.approx(0.075)
    assert s.distributions[("tokens_per_chunk", "tokens")]["mean"] == pytest.approx(2.0)


def test_summary_counts_flags_and_finish_reasons() -> None:
    recs = []
    for i, n in enumerate([4, 2, 4]):
        rec = RequestRecord(request_id=i, requested_output_tokens=4, end_ns=10)
        finish_record(rec, stream(list(range(1, n + 1)), ["a"] * n, {"completion_tokens": n}), None)
        recs.append(rec)
    s = summarize(RecordTable.from_records(recs), ttft_deadline_s=1.0, tbt_deadline_s=1.0)
    assert s.output_checks["flags"] == {"finish_length_short": 1, "output_short": 1}
    assert s.output_checks["flagged"] == 1 and s.output_checks["check_flagged"] == 1
    assert s.output_checks["finish_reasons"] == {"length": 3}
    assert s.scalars()["flag_output_short"] == 1.0 and s.scalars()["requests_flagged"] == 1.0
    sub = RecordTable.from_records(recs).select(np.array([False, True, True]))
    assert sub.chunk_offsets.tolist() == [0, 2, 6] and sub.flags.tolist()[0] == ("output_short", "finish_length_short")


def test_for_terminal_strips_escapes_and_controls_and_caps() -> None:
    hostile = "\x1b[2J\x1b[H\x1b]0;pwned\x07bad\r\nFAKE: ok\x00\x9b31m!"
    assert for_terminal(hostile) == "bad  FAKE: ok !"
    assert for_terminal("x" * 1000, 10) == "x" * 10 + "... [1000 chars]"
    assert "\u202e" not in for_terminal("abc\u202edef")


def test_bad_output_check_and_sim_mode_values_name_their_key() -> None:
    from etalon.config import ConfigError, EndpointConfig
    from etalon.sim.config import SimConfigError, sim_config_from_dict

    with pytest.raises(ConfigError, match="endpoint.output_check: must be one of warn, fail, off"):
        EndpointConfig(name="x", base_url="http://127.0.0.1:1/v1", output_check="maybe")
    with pytest.raises(SimConfigError, match="sim.modes.acceptance_rate=2"):
        sim_config_from_dict({"tokenizer": None, "modes": {"acceptance_rate": 2}})
    with pytest.raises(SimConfigError, match="sim.modes.speculative_tokens=-1"):
        sim_config_from_dict({"tokenizer": None, "modes": {"speculative_tokens": -1}})


def test_without_usage_a_length_stop_counts_max_tokens_not_the_retokenized_text() -> None:
    # llama.cpp's server: no usage, one token per chunk, text that does not round-trip through the
    # tokenizer (here "counted" as 3 tokens per chunk): finish_reason "length" says max_tokens came.
    rec = record(requested=4)
    finish_record(rec, stream([1, 2, 3, 4], ["ab", "c", "d", "e"], None, finish="length"), lambda s: 3 * len(s))
    assert rec.output_tokens == 4 and rec.output_tokens_source == "finish_length" and rec.flags == []
    assert rec.chunk_tokens == [1, 1, 1, 1]


def test_a_length_stop_that_is_impossible_falls_back_to_counting() -> None:
    # More chunks than max_tokens: finish_reason cannot be right; the tokenizer's count is used and flagged.
    rec = record(requested=2)
    finish_record(rec, stream([1, 2, 3], ["a", "b", "c"], None, finish="length"), len)
    assert rec.output_tokens == 3 and rec.output_tokens_source == "tokenizer" and rec.flags == ["output_long"]
    stop = record(requested=4)
    finish_record(stop, stream([1, 2], ["a", "b"], None, finish="stop"), len)
    assert stop.output_tokens == 2 and stop.output_tokens_source == "tokenizer" and stop.flags == ["output_short"]
