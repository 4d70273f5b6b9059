"""Trace CSV readers (Azure arrival+length traces, etalon length stats) and their workload factories."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from etalon.core.arrivals import ReplayArrivals
from etalon.core.lengths import EmpiricalLengths, LogNormalLengths

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
ETALON_COLUMNS = ("num_prefill_tokens", "num_decode_tokens")


class TraceFileError(ValueError):
    """A trace file is missing, unreadable or not in a known layout; the message names path and problem."""


@dataclass(frozen=True, eq=False)
class Trace:
    """A trace's rows, sorted by arrival time when it has one.

    ``arrival_s`` is seconds since the first arrival (None for length-only traces).
    """

    path: Path
    layout: str  # "azure" or "etalon"
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    arrival_s: np.ndarray | None

    def __len__(self) -> int:
        return int(self.prompt_tokens.size)


def _check_max_rows(path: str | Path, max_rows: int | None) -> None:
    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1):
        raise TraceFileError(f"trace {path}: max_rows must be an integer >= 1 or null, got {max_rows!r}")


def read_trace(path: str | Path, max_rows: int | None = None) -> Trace:
    """Read an Azure (TIMESTAMP, ContextTokens, GeneratedTokens) or etalon (num_prefill_tokens,
    num_decode_tokens, ...) CSV. Relative paths are resolved against the current directory; a
    bare file name is looked up by ``etalon.datasets.trace_store.resolve_trace``."""
    from etalon.datasets.trace_store import TraceNotFoundError, resolve_trace

    _check_max_rows(path, max_rows)
    try:
        resolved = resolve_trace(path)
    except TraceNotFoundError as exc:
        raise TraceFileError(str(exc)) from None
    if not resolved.is_file():
        raise TraceFileError(f"trace {path}: no such file ({resolved})")
    return _read_trace_cached(resolved, resolved.stat().st_mtime_ns, max_rows)


@lru_cache(maxsize=8)
def _read_trace_cached(path: Path, mtime_ns: int, max_rows: int | None) -> Trace:
    # mtime_ns is part of the key so that an edited file is read again.
    import pandas as pd

    try:
        frame = pd.read_csv(path, nrows=max_rows, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise TraceFileError(f"trace {path}: cannot parse as CSV: {str(exc).strip().splitlines()[0]}") from exc
    columns = [str(c).strip() for c in frame.columns]
    frame.columns = columns
    if all(c in columns for c in AZURE_COLUMNS):
        prompt = _token_column(frame, "ContextTokens", path)
        output = _token_column(frame, "GeneratedTokens", path)
        arrival_s = _arrival_column(frame, path)
        order = np.argsort(arrival_s, kind="stable")  # replay needs time order; lengths follow their rows
        return Trace(path, "azure", prompt[order], output[order], arrival_s[order] - arrival_s[order][0])
    if all(c in columns for c in ETALON_COLUMNS):
        prompt = _token_column(frame, "num_prefill_tokens", path)
        return Trace(path, "etalon", prompt, _token_column(frame, "num_decode_tokens", path), None)
    raise TraceFileError(
        f"trace {path}: unknown columns {columns}; expected {', '.join(AZURE_COLUMNS)} (Azure) "
        f"or {', '.join(ETALON_COLUMNS)} (etalon length stats)"
    )


def _first_bad_row(mask: np.ndarray) -> int:
    """CSV line number (header is line 1) of the first True in ``mask``."""
    return int(np.flatnonzero(mask)[0]) + 2


def _token_column(frame, name: str, path: Path) -> np.ndarray:
    import pandas as pd

    if len(frame) == 0:
        raise TraceFileError(f"trace {path}: has a header but no rows")
    values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values < 0) | (values != np.floor(values))
    if bad.any():
        line = _first_bad_row(bad)
        raise TraceFileError(
            f"trace {path}: line {line}: {name} must be a whole number >= 0, got {frame[name].iloc[line - 2]!r}"
        )
    # A zero-token prompt or output cannot be sent; count it as one token.
    return np.maximum(values.astype(np.int64), 1)


def _arrival_column(frame, path: Path) -> np.ndarray:
    import pandas as pd

    stamps = pd.to_datetime(frame["TIMESTAMP"], format="ISO8601", errors="coerce")
    bad = stamps.isna().to_numpy()
    if bad.any():
        line = _first_bad_row(bad)
        raise TraceFileError(
            f"trace {path}: line {line}: TIMESTAMP is not a date-time, got {frame['TIMESTAMP'].iloc[line - 2]!r}"
        )
    nanos = stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return (nanos - nanos.min()).astype(np.float64) / 1e9


def window_rows(trace: Trace, start_s: float | None, end_s: float | None) -> np.ndarray:
    """Indices of the rows arriving in [start_s, end_s) seconds after the trace's first row."""
    if start_s is None and end_s is None:
        return np.arange(len(trace))
    if trace.arrival_s is None:
        raise TraceFileError(f"trace {trace.path}: has no arrival times, so start_s/end_s cannot cut a window")
    keep = np.ones(len(trace), dtype=bool)
    if start_s is not None:
        keep &= trace.arrival_s >= start_s
    if end_s is not None:
        keep &= trace.arrival_s < end_s
    if not keep.any():
        raise TraceFileError(f"trace {trace.path}: no row in the window start_s={start_s}, end_s={end_s}")
    return np.flatnonzero(keep)


def trace_arrivals(path: str, time_scale: float = 1.0, max_rows: int | None = None,
                   start_s: float | None = None, end_s: float | None = None) -> ReplayArrivals:
    """Replay a trace's arrival times (``time_scale`` < 1 replays faster) within an optional
    window [start_s, end_s) of the trace's own time. For ``_target_`` use."""
    trace = read_trace(path, max_rows)
    rows = window_rows(trace, start_s, end_s)
    if trace.arrival_s is None:
        raise TraceFileError(
            f"trace {path}: has no arrival times (columns {', '.join(ETALON_COLUMNS)}); "
            "use it for lengths only (trace_lengths) with a synthetic arrival process"
        )
    try:
        return ReplayArrivals(trace.arrival_s[rows], time_scale=time_scale)
    except ValueError as exc:
        raise TraceFileError(f"trace {path}: {exc}") from exc


def trace_lengths(path: str, ordered: bool = False, max_rows: int | None = None,
                  start_s: float | None = None, end_s: float | None = None,
                  length_scale: float = 1.0) -> EmpiricalLengths:
    """Prompt/output lengths from a trace's rows (in order, or drawn with replacement), within an
    optional arrival window, each multiplied by ``length_scale`` (rounded, at least 1). For
    ``_target_`` use."""
    if not isinstance(length_scale, (int, float)) or isinstance(length_scale, bool) or not length_scale > 0:
        raise TraceFileError(f"trace {path}: length_scale must be a number > 0, got {length_scale!r}")
    trace = read_trace(path, max_rows)
    rows = window_rows(trace, start_s, end_s)

    def scaled(values: np.ndarray) -> np.ndarray:
        return np.maximum(np.rint(values[rows] * length_scale).astype(np.int64), 1)

    return EmpiricalLengths(scaled(trace.prompt_tokens), scaled(trace.output_tokens), ordered=ordered)


def fitted_lengths(path: str, max_rows: int | None = None) -> LogNormalLengths:
    """Fit a ``LogNormalLengths`` to a trace's prompt/output lengths. For ``_target_`` use.

    Medians are the trace's medians; sigmas are the standard deviations of the log lengths and
    ``correlation`` the Pearson correlation of the log lengths (the maximum-likelihood log-normal
    fit, with the median in place of the geometric mean so the typical request matches the trace
    exactly). The bounds are the trace's own minimum and maxima: a synthetic request is never
    shorter or longer than any the trace holds, so clipped tails sit where the trace's tails end.
    """
    trace = read_trace(path, max_rows)
    log_prompt = np.log(trace.prompt_tokens.astype(np.float64))
    log_output = np.log(trace.output_tokens.astype(np.float64))
    return LogNormalLengths(
        prompt_median_tokens=float(np.median(trace.prompt_tokens)),
        prompt_sigma=float(log_prompt.std()),
        output_median_tokens=float(np.median(trace.output_tokens)),
        output_sigma=float(log_output.std()),
        correlation=_log_correlation(log_prompt, log_output),
        min_tokens=int(min(trace.prompt_tokens.min(), trace.output_tokens.min())),
        max_prompt_tokens=int(trace.prompt_tokens.max()),
        max_output_tokens=int(trace.output_tokens.max()),
    )


def _log_correlation(log_prompt: np.ndarray, log_output: np.ndarray) -> float:
    # A constant column (or a single row) has no defined correlation; independent is the honest fit.
    if log_prompt.size < 2 or log_prompt.std() == 0.0 or log_output.std() == 0.0:
        return 0.0
    return float(np.clip(np.corrcoef(log_prompt, log_output)[0, 1], -1.0, 1.0))
