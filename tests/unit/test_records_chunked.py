"""Records streamed to Parquet (or JSONL) and summarised from the file in small chunks give the
in-memory summary's numbers (pooled TBT mean to float rounding), with a new SLO too."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from etalon.core.records import RecordTable, RequestRecord
from etalon.core.slo import TbtTtftSlo, TtftTpotSlo
from etalon.records import find_records, iter_tables, open_sink
from etalon.records.chunked import lerp, percentile_positions, summarize_file
from etalon.stages.benchmark import summarize_table

_BENCH = Path(__file__).resolve().parents[2] / "bench" / "metrics_bench.py"


def _records(n: int = 900, k: int = 40) -> list[RequestRecord]:
    spec = importlib.util.spec_from_file_location("metrics_bench", _BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    t = bench.synthetic_table(n, k, seed=11)
    rng = np.random.default_rng(4)
    out = []
    for i in range(n):
        tokens = t.token_ns[t.token_offsets[i] : t.token_offsets[i + 1]].tolist()
        short = int(rng.integers(0, 3)) if i % 17 == 0 else len(tokens)  # some 0-2 token rows
        ok = bool(t.ok[i])
        out.append(RequestRecord(
            request_id=i, actor=i % 3, scheduled_ns=int(t.scheduled_ns[i]), sent_ns=int(t.sent_ns[i]),
            first_token_ns=tokens[0] if short else None, token_ns=tokens[:short], end_ns=int(t.end_ns[i]),
            prompt_tokens=int(t.prompt_tokens[i]), output_tokens=short, requested_output_tokens=k,
            status="ok" if ok else "error", http_status=200 if ok else 500,
            error_type=None if ok else ("cancelled" if i % 2 else "http_error"), warmup=i < 20,
            node_id=f"node-{i % 2}",
        ))
    return out


def _write(tmp_path: Path, records: list[RequestRecord], fmt: str, batch_rows: int = 64) -> Path:
    sink = open_sink(tmp_path, fmt, batch_rows)
    dicts = [r.to_dict() for r in records]
    for i in range(0, len(dicts), 50):  # drains of 50 records
        sink.write(dicts[i : i + 50])
    sink.close()
    return sink.path


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
@pytest.mark.parametrize("slo", [TbtTtftSlo(ttft_s=0.5, tbt_s=0.03), TtftTpotSlo(ttft_s=1.0, tpot_s=0.02)])
def test_file_summary_equals_in_memory_summary(tmp_path, fmt, slo):
    records = _records()
    path = _write(tmp_path, records, fmt)
    expected, _ = summarize_table(RecordTable.from_records(records), slo, partial=False)
    got = summarize_file(path, slo, batch_rows=37)  # chunks that do not align with the parts
    want, have = expected.to_dict(), got.to_dict()
    assert have["scalars"].pop("tbt_mean_s") == pytest.approx(want["scalars"].pop("tbt_mean_s"), rel=1e-12)
    assert have == want
    assert got.curve_p99_miss_rate and got.counts["cancelled"] > 0 and got.counts["warmup"] == 20
    for name, values in expected.requests.columns().items():
        assert np.array_equal(values, got.requests.columns()[name], equal_nan=True), name


def test_parquet_parts_are_bounded_and_keep_every_field(tmp_path):
    records = _records(300, 10)
    path = _write(tmp_path, records, "parquet", batch_rows=64)
    parts = sorted(path.glob("part-*.parquet"))
    assert len(parts) == 5  # 4 full parts of 64 and the rest at close
    assert find_records(tmp_path) == path
    tables = list(iter_tables(path, batch_rows=100))
    assert sum(len(t) for t in tables) == 300 and max(len(t) for t in tables) <= 100
    import pyarrow.dataset as ds

    back = ds.dataset(path).to_table().to_pylist()
    assert [RequestRecord.from_dict(d) for d in back] == records  # lossless, token lists included


@pytest.mark.parametrize("n", [1, 2, 3, 10, 101, 1000])
def test_percentile_replica_matches_numpy(n):
    values = np.sort(np.random.default_rng(n).lognormal(0, 2, n))
    for q in (0.0, 1.0, 50.0, 90.0, 95.0, 99.0, 99.9, 100.0):
        lo, hi, g = percentile_positions(n, q)
        assert lerp(values[lo], values[hi], g) == float(np.percentile(values, q))
