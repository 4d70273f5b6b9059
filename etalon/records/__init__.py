"""Record files at scale: streamed to Parquet (or JSONL) in bounded batches, read back in chunks."""

from __future__ import annotations

from etalon.records.files import (
    RECORD_FORMATS,
    JsonlSink,
    ParquetSink,
    find_records,
    iter_tables,
    open_sink,
)

__all__ = ["RECORD_FORMATS", "JsonlSink", "ParquetSink", "find_records", "iter_tables", "open_sink"]
