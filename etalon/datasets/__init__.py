"""Data that feeds workloads: tokenizers (shipped and loaded by name) and trace-file readers."""

from __future__ import annotations

from etalon.datasets.tokenizers import (
    BUILTIN_TOKENIZERS,
    FastTokenizer,
    TokenizerLoadError,
    TransformersTokenizer,
    load_tokenizer,
)

__all__ = [
    "BUILTIN_TOKENIZERS",
    "FastTokenizer",
    "TokenizerLoadError",
    "TransformersTokenizer",
    "load_tokenizer",
]
