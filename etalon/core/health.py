"""Is the endpoint still there? A pure judgement on the latest finished requests."""

from __future__ import annotations

from typing import Sequence

from etalon.core.records import RequestRecord

# A request that could not connect at all: nothing answered at the address (the server is gone).
CONNECT_ERRORS = frozenset({"connection_error"})
GONE_WINDOW_REQUESTS = 5
# Records arrive in drain order, close to finishing order: looking this far back finds the latest.
_LOOKBACK = 256


def endpoint_gone(records: Sequence[RequestRecord], window: int = GONE_WINDOW_REQUESTS) -> str | None:
    """A reason when each of the ``window`` requests that finished last failed to connect, else None.

    A server that errors, times out or drops streams is data; one that refuses every connection
    has died, and measuring on only produces a table of errors."""
    recent = sorted(records[-_LOOKBACK:], key=lambda r: r.end_ns or 0)[-window:]
    if len(recent) < window or any(r.error_type not in CONNECT_ERRORS for r in recent):
        return None
    return f"the last {window} requests could not connect ({recent[-1].error_message or 'connection error'})"


__all__ = ["CONNECT_ERRORS", "GONE_WINDOW_REQUESTS", "endpoint_gone"]
