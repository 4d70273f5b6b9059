"""Record files: JSONL (one record per line) or a Parquet directory of part files, written as records
arrive and read back as bounded RecordTable chunks.

Parquet layout: ``records.parquet/part-00000.parquet, part-00001.parquet, ...``, each a complete file
of up to ``batch_rows`` records (token times as a ``list<int64>`` column). A part is closed as soon
as it is full (or ``flush_interval_s`` after its first record), so a crash loses at most the open
batch, like the last unflushed JSONL lines; the directory reads as one table (pyarrow.dataset).
The schema follows RequestRecord's annotations, so fields added to the record are stored too.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import orjson

from etalon.core.records import STATUS_OK, RecordTable, RequestRecord

RECORD_FORMATS = ("jsonl", "parquet")
JSONL_NAME = "records.jsonl"
PARQUET_NAME = "records.parquet"
FLUSH_INTERVAL_S = 10.0


class JsonlSink:
    """Appends record dicts to a JSONL file, flushed per write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "wb")

    def write(self, batch: list[dict[str, Any]]) -> None:
        self._file.write(b"".join(orjson.dumps(d) + b"\n" for d in batch))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _arrow_type(annotation: str) -> Any:
    import pyarrow as pa

    base = annotation.replace(" | None", "").replace("None | ", "").strip()
    scalar = {"int": pa.int64(), "str": pa.string(), "bool": pa.bool_(), "float": pa.float64()}
    if base.startswith("list[") and base[5:-1] in scalar:
        return pa.list_(scalar[base[5:-1]])
    return scalar.get(base, pa.string())


def _known(annotation: str) -> bool:
    base = annotation.replace(" | None", "").replace("None | ", "").strip()
    return base in ("int", "str", "bool", "float") or base in ("list[int]", "list[str]", "list[bool]", "list[float]")


def record_schema() -> Any:
    """Arrow schema of RequestRecord (from its field annotations; unknown types stored as JSON text)."""
    import pyarrow as pa

    return pa.schema([pa.field(f.name, _arrow_type(str(f.type))) for f in dataclasses.fields(RequestRecord)])


class ParquetSink:
    """Buffers record dicts and writes each full batch as one Parquet part file."""

    def __init__(self, path: Path, batch_rows: int = 8192, flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        for old in path.glob("part-*.parquet"):  # a re-run into the same directory starts clean
            old.unlink()
        self._batch_rows = batch_rows
        self._flush_interval_s = flush_interval_s
        self._schema = record_schema()
        self._json_fields = {f.name for f in dataclasses.fields(RequestRecord) if not _known(str(f.type))}
        self._buffer: list[dict[str, Any]] = []
        self._opened_at = 0.0
        self._parts = 0

    def write(self, batch: list[dict[str, Any]]) -> None:
        if not self._buffer:
            self._opened_at = time.monotonic()
        self._buffer.extend(batch)
        while len(self._buffer) >= self._batch_rows:
            self._write_part(self._buffer[: self._batch_rows])
            del self._buffer[: self._batch_rows]
        if self._buffer and time.monotonic() - self._opened_at >= self._flush_interval_s:
            self._write_part(self._buffer)
            self._buffer = []

    def _write_part(self, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        names = self._schema.names
        columns = {name: [row.get(name) for row in rows] for name in names}
        for name in self._json_fields:  # a field of a type Parquet is not told about: JSON text
            columns[name] = [None if v is None else orjson.dumps(v).decode() for v in columns[name]]
        table = pa.Table.from_pydict(columns, schema=self._schema)
        tmp = self.path / f".part-{self._parts:05d}.tmp"
        pq.write_table(table, tmp, compression="zstd")
        tmp.rename(self.path / f"part-{self._parts:05d}.parquet")  # readers never see half a part
        self._parts += 1

    def close(self) -> None:
        if self._buffer:
            self._write_part(self._buffer)
            self._buffer = []


def open_sink(out_dir: Path, fmt: str, batch_rows: int) -> JsonlSink | ParquetSink:
    """The records sink for ``client.records_format`` in ``out_dir``."""
    if fmt not in RECORD_FORMATS:
        raise ValueError(f"client.records_format must be one of {RECORD_FORMATS}, got {fmt!r}")
    if fmt == "parquet":
        return ParquetSink(out_dir / PARQUET_NAME, batch_rows)
    return JsonlSink(out_dir / JSONL_NAME)


def find_records(path: Path) -> Path:
    """The records file of a run or stage directory (Parquet preferred), or ``path`` itself."""
    path = Path(path)
    if path.is_file() or path.name == PARQUET_NAME:
        return path
    for name in (PARQUET_NAME, JSONL_NAME):
        hits = sorted(path.rglob(name))
        if len(hits) > 1:
            listed = ", ".join(str(h.relative_to(path)) for h in hits[:5])
            raise FileNotFoundError(f"{path} holds several record files ({listed}); name the stage directory")
        if hits:
            return hits[0]
    raise FileNotFoundError(f"no {PARQUET_NAME} or {JSONL_NAME} under {path}")


def iter_tables(path: Path, batch_rows: int = 8192) -> Iterator[RecordTable]:
    """The records of ``path`` (JSONL file or Parquet directory/file) as RecordTables of at most
    ``batch_rows`` rows, in file order."""
    path = Path(path)
    if path.suffix == ".jsonl":
        yield from _jsonl_tables(path, batch_rows)
        return
    import pyarrow.dataset as ds

    dataset = ds.dataset(path, format="parquet", exclude_invalid_files=True)
    columns = [c for c in _TABLE_COLUMNS if c in dataset.schema.names]
    # no read-ahead beyond one batch: memory stays at one chunk, whatever the file's size
    batches = dataset.to_batches(columns=columns, batch_size=batch_rows, batch_readahead=1, fragment_readahead=1)
    for batch in batches:
        if batch.num_rows:
            yield _table_from_arrow(batch)


def _jsonl_tables(path: Path, batch_rows: int) -> Iterator[RecordTable]:
    chunk: list[RequestRecord] = []
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                chunk.append(RequestRecord.from_dict(orjson.loads(line)))
            if len(chunk) >= batch_rows:
                yield RecordTable.from_records(chunk)
                chunk = []
    if chunk:
        yield RecordTable.from_records(chunk)


_TABLE_COLUMNS = (
    "request_id", "actor", "scheduled_ns", "sent_ns", "first_token_ns", "end_ns", "prompt_tokens",
    "output_tokens", "requested_output_tokens", "status", "warmup", "http_status", "error_type", "token_ns",
)


def _int_column(batch: Any, name: str, default: int) -> np.ndarray:
    return batch.column(name).fill_null(default).to_numpy().astype(np.int64, copy=False)


def _table_from_arrow(batch: Any) -> RecordTable:
    """One Arrow record batch -> RecordTable, token list column straight to ragged arrays."""
    tokens = batch.column("token_ns")
    offsets = tokens.offsets.to_numpy().astype(np.int64)
    token_ns = tokens.values.to_numpy().astype(np.int64, copy=False)[offsets[0] : offsets[-1]]
    errors = batch.column("error_type").fill_null("").to_numpy(zero_copy_only=False).astype(object)
    return RecordTable(
        request_id=_int_column(batch, "request_id", 0),
        actor=_int_column(batch, "actor", 0),
        scheduled_ns=_int_column(batch, "scheduled_ns", 0),
        sent_ns=_int_column(batch, "sent_ns", 0),
        first_token_ns=_int_column(batch, "first_token_ns", -1),
        end_ns=_int_column(batch, "end_ns", 0),
        prompt_tokens=_int_column(batch, "prompt_tokens", 0),
        output_tokens=_int_column(batch, "output_tokens", 0),
        requested_output_tokens=_int_column(batch, "requested_output_tokens", 0),
        ok=batch.column("status").to_numpy(zero_copy_only=False) == STATUS_OK,
        warmup=batch.column("warmup").fill_null(False).to_numpy(zero_copy_only=False).astype(bool),
        http_status=_int_column(batch, "http_status", 0),
        error_type=errors,
        token_ns=token_ns,
        token_offsets=offsets - offsets[0],
    )
