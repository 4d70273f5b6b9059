"""Turn the endpoint config into a live endpoint: launch its server if any, read the API key."""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from typing import Any, Iterator

from hydra.utils import instantiate

from etalon.clients.base import EndpointSpec
from etalon.config import ConfigError, EtalonConfig

SIM_LAUNCHER = "etalon.runner.server.EmbeddedSimServer"


def launches_simulator(cfg: EtalonConfig) -> bool:
    server = cfg.endpoint.server
    return isinstance(server, dict) and server.get("_target_") == SIM_LAUNCHER


def read_api_key(cfg: EtalonConfig) -> str | None:
    """The API key from the environment variable the config names; a clear error if it is unset."""
    name = cfg.endpoint.api_key_env
    if not name:
        return None
    value = os.environ.get(name)
    if not value:
        raise ConfigError(
            f"endpoint.api_key_env: environment variable {name} is not set (export {name}=<your key>)"
        )
    return value


def endpoint_key(cfg: EtalonConfig, base_url: str) -> str:
    """Identity of what is being measured: jobs with the same key must not load it at the same time.

    Embedded simulators share the machine's cores, so every simulator on one host is one key.
    """
    if launches_simulator(cfg):
        return f"sim@{socket.gethostname()}"
    return base_url.rstrip("/")


def check_model_served(spec: EndpointSpec) -> None:
    """Fail fast, before any load: the endpoint must answer and know the configured model."""
    from etalon.loadgen import preflight

    from etalon.core.text import for_terminal

    served = preflight(spec)
    if served and spec.model not in served:
        names = for_terminal(", ".join(for_terminal(name, 100) for name in served[:20]), 600)
        more = f" and {len(served) - 20} more" if len(served) > 20 else ""
        raise ConfigError(f"model.name: {spec.model!r} is not served by {spec.base_url} (it serves: {names}{more})")


def identified(cfg: EtalonConfig, spec: EndpointSpec) -> EndpointSpec:
    """The spec with the server's observed identity (cache keys), after the tokenizer check."""
    import dataclasses

    from etalon.clients.identity import observe_server
    from etalon.runner.tokens_check import check_tokenizer

    spec = dataclasses.replace(spec, server_identity=observe_server(spec))
    check_tokenizer(cfg, spec, simulator=launches_simulator(cfg))
    return spec


@contextmanager
def live_endpoint(cfg: EtalonConfig) -> Iterator[tuple[EndpointSpec, str]]:
    """Start the endpoint's server (if it has one), yield its spec and key, stop it on exit."""
    api_key = read_api_key(cfg)
    server: Any = instantiate(cfg.endpoint.server) if cfg.endpoint.server is not None else None
    try:
        base_url = server.start() if server is not None else cfg.endpoint.base_url
        if base_url is None:
            raise ConfigError("endpoint.base_url: must be set when endpoint.server is null")
        spec = EndpointSpec(
            client_target=cfg.endpoint.client["_target_"],
            base_url=base_url,
            model=cfg.model.name,
            api_key=api_key,
            headers=dict(cfg.endpoint.headers),
            extra_body=dict(cfg.endpoint.extra_body),
            ignore_eos=cfg.endpoint.ignore_eos,
            timeout_s=cfg.endpoint.timeout_s,
            connect_timeout_s=cfg.endpoint.connect_timeout_s,
            tokenizer=cfg.model.tokenizer,
            continuous_usage_stats=cfg.endpoint.continuous_usage_stats,
            request_id_header=cfg.endpoint.request_id_header,
        )
        check_model_served(spec)
        spec = identified(cfg, spec)
        yield spec, endpoint_key(cfg, base_url)
    finally:
        if server is not None:
            server.stop()
