"""Report files (CSV, PNG) and the terminal summary, on the hand-built table of test_summary."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from etalon.core.records import RecordTable
from etalon.core.summary import summarize
from etalon.report import format_summary, write_report
from tests.unit.test_summary import hand_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def summary():
    return summarize(hand_table(), ttft_deadline_s=0.25, tbt_deadline_s=0.05)


def test_write_report_tables_and_plots(tmp_path, summary):
    paths = write_report(tmp_path / "run", hand_table(), summary)
    names = {p.name for p in paths}
    assert {"metrics_percentiles.csv", "metrics_requests.csv", "metrics_run.csv"} <= names
    pngs = [p for p in paths if p.suffix == ".png"]
    assert {p.stem for p in pngs} == {
        "latency_cdfs", "latency_tails", "ttft_vs_prompt_tokens", "token_timeline", "miss_rate_curve", "throughput_views"
    }
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5_000
    rows = {r["metric"]: r for r in csv.DictReader((tmp_path / "run" / "metrics_percentiles.csv").open())}
    assert float(rows["ttft"]["mean"]) == pytest.approx(0.2)
    assert float(rows["ttft"]["max"]) == pytest.approx(0.3)
    assert rows["fluidity_index"]["unit"] == ""
    requests = list(csv.DictReader((tmp_path / "run" / "metrics_requests.csv").open()))
    assert [r["request_id"] for r in requests] == ["1", "2", "3", "4", "5"]  # warm-up row excluded
    assert float(requests[2]["fluidity_index"]) == pytest.approx(0.5)
    assert requests[3]["ttft_s"] == ""  # error row: undefined, not NaN text


def test_write_report_on_empty_run(tmp_path):
    table = RecordTable.from_records([])
    s = summarize(table, ttft_deadline_s=1.0, tbt_deadline_s=0.05)
    paths = write_report(tmp_path, table, s)
    assert all(p.exists() for p in paths)


def test_format_summary_shows_numbers_and_warns_on_dispatch_lag(summary):
    text = format_summary(summary)
    # dispatch lag p99 = 29.2 ms > 10 ms: the client fell behind
    assert "coordinated omission" in text and "29.2 ms" in text
    assert "PARTIAL" not in text
    ttft_row = next(line for line in text.splitlines() if line.startswith("TTFT "))
    assert "200" in ttft_row and "300" in ttft_row  # mean and max in ms
    assert "service miss rate" in text and "0.2" in text
    assert "500: 1" in text and "rate_limited: 1" in text


def test_format_summary_quiet_when_on_schedule_and_loud_when_partial():
    table = hand_table()
    on_time = RecordTable(**{**table.__dict__, "sent_ns": table.scheduled_ns.copy()})
    quiet = format_summary(summarize(on_time, ttft_deadline_s=0.25, tbt_deadline_s=0.05))
    assert "WARNING" not in quiet
    partial = format_summary(summarize(on_time, ttft_deadline_s=0.25, tbt_deadline_s=0.05, partial=True))
    assert "PARTIAL RUN" in partial
    assert np.all(on_time.sent_ns == table.scheduled_ns)
