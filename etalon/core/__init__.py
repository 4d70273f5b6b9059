"""Pure, synchronous building blocks: records, workloads, metrics, SLOs, search policies."""

from etalon.core.records import RecordTable, RequestRecord

__all__ = ["RecordTable", "RequestRecord"]
