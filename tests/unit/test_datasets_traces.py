"""Trace readers: the real reference files, and one clear TraceFileError per kind of bad file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from etalon.core.arrivals import ReplayArrivals
from etalon.core.lengths import EmpiricalLengths
from etalon.datasets.traces import TraceFileError, read_trace, trace_arrivals, trace_lengths

TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "traces"
CONV = TRACES / "AzureLLMInferenceTrace_conv.csv"
SHAREGPT = TRACES / "sharegpt_8k_filtered_stats_llama2_tokenizer.csv"

needs_traces = pytest.mark.skipif(not CONV.is_file(), reason=f"reference traces not found at {TRACES}")


@needs_traces
def test_azure_conv_trace() -> None:
    trace = read_trace(CONV)
    assert trace.layout == "azure" and len(trace) == 19_366
    assert trace.prompt_tokens[:2].tolist() == [374, 396] and trace.output_tokens[:2].tolist() == [44, 109]
    assert trace.arrival_s[0] == 0.0 and np.all(np.diff(trace.arrival_s) >= 0)
    assert trace.arrival_s[1] == pytest.approx(4.314579, abs=1e-9)
    assert trace.arrival_s[-1] == pytest.approx(3501.721937, abs=1e-6)
    arrivals = trace_arrivals(str(CONV))
    assert isinstance(arrivals, ReplayArrivals)
    assert arrivals.rate_rps == pytest.approx(19_365 / 3501.721937)


@needs_traces
def test_time_scale_and_max_rows() -> None:
    half = trace_arrivals(str(CONV), time_scale=0.5, max_rows=100)
    full = trace_arrivals(str(CONV), max_rows=100)
    assert half.num_arrivals == 100
    np.testing.assert_array_equal(half.offsets_s(100, None, None), full.offsets_s(100, None, None) * 0.5)
    assert half.rate_rps == pytest.approx(2 * full.rate_rps)


@needs_traces
def test_etalon_length_stats_trace() -> None:
    trace = read_trace(SHAREGPT)
    assert trace.layout == "etalon" and trace.arrival_s is None and len(trace) == 30_731
    assert (trace.prompt_tokens[0], trace.output_tokens[0]) == (74, 918)
    lengths = trace_lengths(str(SHAREGPT), ordered=True, max_rows=3)
    assert isinstance(lengths, EmpiricalLengths) and len(lengths) == 3
    prompt, output = lengths.sample(4, np.random.default_rng(0))
    assert prompt.tolist() == [74, 290, prompt[2], 74] and output[:2].tolist() == [918, 905]
    with pytest.raises(TraceFileError, match="has no arrival times"):
        trace_arrivals(str(SHAREGPT))


@needs_traces
@pytest.mark.parametrize("name", ["AzureLLMInferenceTrace_code.csv",
                                  "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv",
                                  "bwb_stats_llama2_tokenizer_filtered_v2.csv"])
def test_other_reference_traces_read(name: str) -> None:
    trace = read_trace(TRACES / name)
    assert len(trace) > 8000 and trace.prompt_tokens.min() >= 1 and trace.output_tokens.min() >= 1


def test_relative_path_is_resolved_against_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "t.csv").write_text("num_prefill_tokens,num_decode_tokens\n5,6\n7,8\n")
    monkeypatch.chdir(tmp_path)
    assert trace_lengths("data/t.csv", ordered=True).sample(2, None)[0].tolist() == [5, 7]


def test_unsorted_azure_rows_are_replayed_in_time_order(tmp_path: Path) -> None:
    path = tmp_path / "azure.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                    "2023-11-16 18:00:02.5,30,3\n2023-11-16 18:00:00.0,10,1\n2023-11-16 18:00:01.0,20,0\n")
    trace = read_trace(path)
    assert trace.arrival_s.tolist() == [0.0, 1.0, 2.5]
    assert trace.prompt_tokens.tolist() == [10, 20, 30]
    assert trace.output_tokens.tolist() == [1, 1, 3]  # a 0-token output counts as 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a,b\n1,2\n", r"unknown columns \['a', 'b'\]"),
        ("num_prefill_tokens,num_decode_tokens\n5,6\nseven,8\n", "line 3: num_prefill_tokens must be a whole number"),
        ("num_prefill_tokens,num_decode_tokens\n5,-6\n", "line 2: num_decode_tokens"),
        ("num_prefill_tokens,num_decode_tokens\n5,6.5\n", "line 2: num_decode_tokens"),
        ("num_prefill_tokens,num_decode_tokens\n", "header but no rows"),
        ("", "cannot parse as CSV"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00,1,2\nyesterday,3,4\n",
         "line 3: TIMESTAMP is not a date-time, got 'yesterday'"),
        ("num_prefill_tokens,num_decode_tokens\n1,2\n3,4,5,6\n", "cannot parse as CSV"),
    ],
)
def test_bad_files_raise_one_clear_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(TraceFileError, match=message) as info:
        trace_lengths(str(path)) if "TIMESTAMP" not in content else trace_arrivals(str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file_and_bad_max_rows(tmp_path: Path) -> None:
    with pytest.raises(TraceFileError, match="no such file"):
        trace_arrivals(str(tmp_path / "nope.csv"))
    with pytest.raises(TraceFileError, match="max_rows must be an integer >= 1"):
        trace_lengths(str(tmp_path / "nope.csv"), max_rows=0)


def test_single_arrival_cannot_be_replayed(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00,1,2\n")
    with pytest.raises(TraceFileError, match="at least 2 arrival times"):
        trace_arrivals(str(path))
