"""Client interface: what a request looks like, where it goes, and how a client is chosen."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import aiohttp

    from etalon.core.records import RequestRecord


@dataclass(slots=True)  # not frozen: a run builds millions, and frozen init costs twice as much
class PlannedRequest:
    """One request as the load driver hands it to a client.

    ``scheduled_ns`` is the planned send time in ns since the run's planned start. ``prompt`` is a
    text (sent as one user message) or a list of chat messages (``{"role", "content"}`` dicts; a
    completions client sends their contents concatenated).
    """

    request_id: int
    prompt: str | list[dict[str, str]]
    prompt_tokens: int
    max_tokens: int
    scheduled_ns: int
    warmup: bool = False
    session_id: int | None = None
    turn: int | None = None
    load_stage: str | None = None


@dataclass(frozen=True)
class EndpointSpec:
    """Where requests go and how they are shaped; built by the runner, handed to loadgen.

    ``base_url`` includes the API prefix (``http://127.0.0.1:8000/v1``). ``api_key`` is a
    secret: it is kept out of ``repr`` and is only ever sent to ``base_url``.
    ``tokenizer`` names a tokenizer for ``etalon.datasets.tokenizers.load_tokenizer``, used to
    count output tokens when the server sends no ``usage`` (and per chunk, when a chunk carries
    several tokens). ``continuous_usage_stats`` asks for ``usage`` in every chunk (vLLM's
    ``stream_options.continuous_usage_stats``): exact tokens per chunk.
    """

    base_url: str
    model: str
    client_target: str = "etalon.clients.openai.OpenAIChatClient"
    api_key: str | None = field(default=None, repr=False)
    headers: dict[str, str] = field(default_factory=dict)
    extra_body: dict[str, Any] = field(default_factory=dict)
    ignore_eos: bool = False
    timeout_s: float = 600.0
    connect_timeout_s: float = 10.0
    tokenizer: str | None = None
    continuous_usage_stats: bool = False
    # Header carrying a fresh UUID string per request (None: send none).
    request_id_header: str | None = "X-Request-Id"
    # What the server said it is before the run (etalon.clients.identity.observe_server).
    server_identity: dict[str, Any] | None = field(default=None, compare=False)
    # What preflight learned about the server (etalon.clients.server_info.ServerIdentity), or None.
    server: Any = None

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"endpoint base_url must start with http:// or https://, got {self.base_url!r}")
        if self.timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ValueError(
                f"endpoint timeouts must be > 0, got timeout_s={self.timeout_s}, "
                f"connect_timeout_s={self.connect_timeout_s}"
            )

    def request_headers(self) -> dict[str, str]:
        """Headers sent with every request (auth included; never log the result)."""
        headers = {"Content-Type": "application/json", **self.headers}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def secret_values(self) -> list[str]:
        """What must never appear in a record or message: the API key and secret-named headers."""
        from etalon.core.redaction import header_secrets, secret_values

        return secret_values([self.api_key, *header_secrets(self.headers)])


class Client(Protocol):
    """Sends one request and returns what happened as a record; never raises on a failed request."""

    spec: EndpointSpec

    async def send(
        self, session: aiohttp.ClientSession, request: PlannedRequest, epoch_ns: int
    ) -> RequestRecord: ...


class EndpointError(Exception):
    """The endpoint cannot be used for a run (found before any request is sent)."""


class EndpointUnreachableError(EndpointError):
    """Connection refused, DNS failure or timeout while reaching the endpoint."""


class EndpointProtocolError(EndpointError):
    """The endpoint answered, but not as an OpenAI-compatible server (e.g. an HTML page)."""


class EndpointStatusError(EndpointError):
    """The endpoint answered the pre-flight check with an HTTP error status (401, 403, 5xx)."""

    def __init__(self, url: str, status: int, message: str) -> None:
        from etalon.core.text import for_terminal

        # The server's body is shown stripped of control characters and capped; kept raw apart.
        super().__init__(f"{url} answered HTTP {status}: {for_terminal(message)}")
        self.url = url
        self.status = status
        self.server_message = message


def make_client(spec: EndpointSpec) -> Client:
    """Instantiate the client class named by ``spec.client_target`` ("package.module.Class")."""
    module_name, _, class_name = spec.client_target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(
            f"endpoint client_target {spec.client_target!r} is not an importable class: {exc}"
        ) from exc
    return cls(spec)
