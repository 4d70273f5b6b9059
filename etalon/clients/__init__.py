"""Streaming clients for OpenAI-compatible endpoints: each request becomes a RequestRecord."""

from __future__ import annotations

from etalon.clients.base import (
    Client,
    EndpointError,
    EndpointProtocolError,
    EndpointSpec,
    EndpointStatusError,
    EndpointUnreachableError,
    PlannedRequest,
    make_client,
)

__all__ = [
    "Client",
    "EndpointError",
    "EndpointProtocolError",
    "EndpointSpec",
    "EndpointStatusError",
    "EndpointUnreachableError",
    "PlannedRequest",
    "make_client",
]
