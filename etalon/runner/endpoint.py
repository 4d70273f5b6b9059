"""Turn the endpoint config into a live endpoint: launch its server if any, read the API key."""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

from hydra.utils import instantiate

from etalon.clients.base import EndpointSpec
from etalon.config import ConfigError, EtalonConfig

SIM_LAUNCHER = "etalon.runner.server.EmbeddedSimServer"


def launches_simulator(cfg: EtalonConfig) -> bool:
    """The endpoint is an embedded simulator etalon starts (the ``sim`` template or the legacy
    ``endpoint.server`` launcher)."""
    server = cfg.endpoint.server
    if isinstance(server, dict) and server.get("_target_") == SIM_LAUNCHER:
        return True
    return cfg.launches_server and cfg.server is not None and cfg.server.engine == "sim"


def assign_port(dcfg: Any) -> None:
    """Pick a free port for a server etalon will launch whose ``server.port`` is null (in the
    process that launches it, when its config is loaded), so ``${server.port}`` in the command
    resolves to it."""
    from omegaconf import OmegaConf

    from etalon.runner.launch import pick_free_port

    endpoint = dcfg.get("endpoint")
    server = dcfg.get("server")
    if endpoint is None or server is None or OmegaConf.is_missing(server, "port"):
        return
    launching = endpoint.get("base_url") is None and endpoint.get("server") is None
    if launching and server.get("port") is None:
        from etalon.runner import server_pool

        held = server_pool.port_for(dcfg.get("sim"), server)  # a sweep's simulator, kept for this job
        server.port = held or pick_free_port(str(server.get("host") or "127.0.0.1"))


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

    Embedded simulators share the machine's cores, so every simulator on one host is one key; so
    is every engine etalon launches on one host (its port changes every run, its cores do not).
    """
    if launches_simulator(cfg):
        return f"sim@{socket.gethostname()}"
    if cfg.launches_server:
        return f"server@{socket.gethostname()}"
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


def _spec(cfg: EtalonConfig, base_url: str, api_key: str | None) -> EndpointSpec:
    return EndpointSpec(
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


def _start_server(cfg: EtalonConfig, log_dir: Path | None, stack: ExitStack) -> tuple[str | None, Any]:
    """Launch what the config declares (template or legacy launcher); it is stopped when ``stack`` closes."""
    if cfg.endpoint.server is not None:  # legacy: endpoint.server with a _target_ launcher
        legacy = instantiate(cfg.endpoint.server)
        stack.callback(legacy.stop)
        return legacy.start(), None
    if not cfg.launches_server:
        return cfg.endpoint.base_url, None
    from etalon.runner import server_pool
    from etalon.runner.launch import SERVER_LOG, LaunchedServer

    assert cfg.server is not None
    if log_dir is None:  # no run directory (library use): a fresh temporary one, never the cwd
        import tempfile

        log_dir = Path(tempfile.mkdtemp(prefix="etalon-server-"))
    server = with_port(cfg.server)
    reusable = server_pool.reusable(cfg.sim, server)
    reused = server_pool.take(server, log_dir / SERVER_LOG) if reusable else None
    launched = reused or LaunchedServer(server, log_dir / SERVER_LOG)
    # A clean end hands a sweep's simulator back for the next job; any error or interrupt stops it.
    stack.push(lambda exc_type, *_: server_pool.release(launched, keep=reusable and exc_type is None))
    if reused is not None:
        print(f"etalon: reusing {cfg.server.name} on port {launched.server.port}, reset to a fresh state "
              f"(log: {launched.log_path})", file=sys.stderr, flush=True)
        return launched.base_url, launched
    print(f"etalon: launching {cfg.server.name} on port {launched.server.port} (log: {launched.log_path})",
          file=sys.stderr, flush=True)
    return launched.start(), launched


def with_port(server: Any) -> Any:
    """``server`` with a port: a config converted without ``load_config`` (library use) still has
    ``port: null``, and its command a null where ``${server.port}`` resolved; both get a free port."""
    if server.port is not None:
        return server
    from etalon.runner.launch import pick_free_port

    port = pick_free_port(server.host)
    return dataclasses.replace(server, port=port, command=[port if part is None else part for part in server.command])


def identified(cfg: EtalonConfig, spec: EndpointSpec) -> EndpointSpec:
    """The spec with the server's observed identity (cache keys), after the tokenizer check."""
    import dataclasses

    from etalon.clients.identity import observe_server
    from etalon.runner.tokens_check import check_tokenizer

    spec = dataclasses.replace(spec, server_identity=observe_server(spec))
    check_tokenizer(cfg, spec, simulator=launches_simulator(cfg))
    return spec


@contextmanager
def live_endpoint(cfg: EtalonConfig, log_dir: Path | None = None) -> Iterator[tuple[EndpointSpec, str]]:
    """Start the endpoint's server (if it has one), yield its spec and key, stop it on exit.

    The spec's ``server`` is what preflight learned (``ServerIdentity``); a launched server logs
    to ``log_dir/server.log`` and its whole process group is stopped on success, failure,
    Ctrl-C and SIGTERM. A run that found the endpoint gone gets the log's tail in its error."""
    from etalon.runner.preflight import read_identity, report_context_mismatch
    from etalon.stages.base import EndpointGoneError

    api_key = read_api_key(cfg)
    with ExitStack() as stack:
        base_url, launched = _start_server(cfg, log_dir, stack)
        if base_url is None:
            raise ConfigError("endpoint.base_url: must be set when no server is launched")
        spec = _spec(cfg, base_url, api_key)
        check_model_served(spec)
        spec = identified(cfg, spec)
        identity = read_identity(spec, cfg, launched.command if launched else None,
                                 str(launched.log_path) if launched else None)
        report_context_mismatch(cfg, identity)
        spec = dataclasses.replace(spec, server=identity)
        try:
            yield spec, endpoint_key(cfg, base_url)
        except EndpointGoneError as exc:
            if launched is None or exc.detail:
                raise
            state = "running" if launched.alive() else "exited"
            raise EndpointGoneError(f"{exc} (launched server {state})", detail=launched.tail(),
                                    log_path=str(launched.log_path)) from None
