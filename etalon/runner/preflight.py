"""Preflight: ask the server what it serves and its context limit, before any load is sent."""

from __future__ import annotations

import json
import logging
import sys
import urllib.error
import urllib.request
from typing import Any

from etalon.clients.base import EndpointSpec
from etalon.clients.server_info import ENGINE_INFO_PATHS, ServerIdentity, engine_info, models_info
from etalon.config import EtalonConfig

log = logging.getLogger("etalon")
INFO_TIMEOUT_S = 5.0


def _get_json(url: str, headers: dict[str, str]) -> Any:
    """The JSON body of ``GET url``, or None for any failure (these endpoints are optional)."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=INFO_TIMEOUT_S) as answer:  # noqa: S310 - the endpoint
            return json.loads(answer.read(1 << 20))
    except (urllib.error.URLError, OSError, ValueError):
        return None


def read_identity(spec: EndpointSpec, cfg: EtalonConfig, command: list[str] | None = None,
                  log_path: str | None = None) -> ServerIdentity:
    """Served models and context limit from ``/v1/models`` (vLLM's ``max_model_len``), then the
    engine's own info endpoint (SGLang ``/get_model_info``, TGI ``/info``, llama.cpp ``/props``)."""
    headers = spec.request_headers()
    models, limit = models_info(_get_json(spec.base_url.rstrip("/") + "/models", headers))
    source = "max_model_len in GET /v1/models" if limit else None
    launched = cfg.server if cfg.launches_server else None
    engine = launched.engine if launched is not None else None
    root = spec.base_url.rstrip("/").removesuffix("/v1")
    version = None
    for path in ENGINE_INFO_PATHS.get("vllm" if engine == "sim" else engine or "", ()):
        found_limit, found_version = engine_info(path, _get_json(root + path, headers))
        version = version or found_version
        if limit is None and found_limit is not None:
            limit, source = found_limit, f"GET {path}"
    return ServerIdentity(
        base_url=spec.base_url, served_models=tuple(models), max_model_len=limit, context_source=source,
        version=version, engine=engine, template=launched.name if launched is not None else None,
        command=tuple(command or ()), engine_args=dict(launched.args) if launched is not None else {},
        log_path=log_path,
    )


def report_context_mismatch(cfg: EtalonConfig, identity: ServerIdentity) -> None:
    """One warning line when ``model.context_tokens`` differs from what the server reports."""
    limit = identity.max_model_len
    if limit is None or limit == cfg.model.context_tokens:
        return
    print(f"etalon: warning: model.context_tokens={cfg.model.context_tokens} but the server reports a "
          f"context limit of {limit} ({identity.context_source}); requests are checked against {limit}",
          file=sys.stderr, flush=True)


__all__ = ["read_identity", "report_context_mismatch"]
