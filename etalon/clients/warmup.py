"""Connection warm-up: open the keep-alive connections a run's first requests need before it starts.

What this changes in what is measured (``client.warm_connections``, default true):
- With warm-up, the first requests of a run reuse pooled connections, like a long-running
  application with a connection pool. aiohttp connects after ``sent_ns`` is stamped, so a cold
  request's TTFT includes the TCP (and TLS) handshake, and a burst of connects can overflow the
  server's listen queue and add a 1 s SYN retransmit. bench/client_overhead.py, 256 users, simulated
  TTFT 100 ms: first-round TTFT 118-119 ms warm vs 132-143 ms cold (one cold run: max 1.1 s).
- The first burst of sends also costs less CPU (~42 vs ~52 us per send before the loop yields),
  so its dispatch lag p99 drops (256 users: 10-11 ms vs 15-27 ms); what remains is one event loop
  sending 256 requests planned at the same instant (more actors split it).
- ``warm_connections=false`` restores cold-start behaviour: each of the first concurrent requests
  opens its own connection, and that cost shows in its TTFT and dispatch lag.
- Requests beyond the warmed count still open connections on demand (counted as usual).
- A connection stays warm only while neither side closes it: the client's pool keeps idle
  connections ``keepalive_timeout`` (60 s); servers have their own idle limit (uvicorn, used by
  vLLM, closes after 5 s by default), so a start delay longer than that loses the warm-up.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from etalon.clients.base import EndpointSpec, EndpointStatusError, EndpointUnreachableError
from etalon.core.redaction import redact_text

WARM_PATH = "/models"
MESSAGE_CHARS = 300


async def warm_connections(connector: aiohttp.BaseConnector, spec: EndpointSpec, count: int) -> int:
    """Put ``count`` idle keep-alive connections in ``connector``'s pool; return how many were opened.

    Sends ``count`` concurrent ``GET {base_url}/models`` (with the endpoint's headers and auth) and
    reads each answer to the end, which is what returns its connection to the pool. Each request is
    bounded by ``spec.connect_timeout_s``. An unreachable endpoint raises EndpointUnreachableError,
    401/403/5xx raise EndpointStatusError; the first failure cancels the other requests.
    """
    opened = 0

    async def on_created(*_: Any) -> None:
        nonlocal opened
        opened += 1

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_created)
    # A session of its own over the shared connector: the trace hook costs a few us per request, so
    # it must not sit on the run's session; the connections it opens live in the connector's pool.
    async with aiohttp.ClientSession(
        connector=connector, connector_owner=False, trace_configs=[trace]
    ) as session:
        tasks = [asyncio.ensure_future(_open_one(session, spec)) for _ in range(count)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
    return opened


async def timed_warm_up(
    connector: aiohttp.BaseConnector, spec: EndpointSpec, count: int
) -> tuple[int, float]:
    """``warm_connections`` plus its wall duration in seconds."""
    t0_ns = time.monotonic_ns()
    opened = await warm_connections(connector, spec, count)
    return opened, (time.monotonic_ns() - t0_ns) / 1e9


async def _open_one(session: aiohttp.ClientSession, spec: EndpointSpec) -> None:
    url = spec.base_url.rstrip("/") + WARM_PATH
    timeout = aiohttp.ClientTimeout(total=spec.connect_timeout_s)
    try:
        async with session.get(
            url, headers=spec.request_headers(), timeout=timeout, allow_redirects=False
        ) as resp:
            body = await resp.read()  # a body not read to its end makes aiohttp drop the connection
    except (aiohttp.ClientConnectionError, TimeoutError, OSError) as exc:
        raise EndpointUnreachableError(
            f"connection warm-up (client.warm_connections): cannot reach {url}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    # 404 is fine (some servers list no models): the connection is open and reusable all the same.
    if resp.status in (401, 403) or resp.status >= 500 or 300 <= resp.status < 400:
        text = body[:MESSAGE_CHARS].decode(errors="replace").strip() or resp.reason or ""
        text = redact_text(text, spec.secret_values())
        raise EndpointStatusError(url, resp.status, f"{text} (during connection warm-up)")
