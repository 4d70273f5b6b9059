"""Data that feeds workloads: tokenizers (shipped and loaded by name) and trace-file readers."""

from __future__ import annotations

from etalon.datasets.tokenizers import (
    BUILTIN_TOKENIZERS,
    FastTokenizer,
    TokenizerLoadError,
    TransformersTokenizer,
    load_tokenizer,
)
from etalon.datasets.traces import (
    Trace,
    TraceFileError,
    fitted_lengths,
    read_trace,
    trace_arrivals,
    trace_lengths,
)

__all__ = [
    "BUILTIN_TOKENIZERS",
    "FastTokenizer",
    "TokenizerLoadError",
    "Trace",
    "TraceFileError",
    "fitted_lengths",
    "TransformersTokenizer",
    "load_tokenizer",
    "read_trace",
    "trace_arrivals",
    "trace_lengths",
]
