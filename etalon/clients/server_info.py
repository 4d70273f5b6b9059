"""What a server says about itself (served models, context limit, version) and how each engine says it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Per engine: (path under the server root, parser) tried after /v1/models for the context limit.
ENGINE_INFO_PATHS = {
    "vllm": ("/version",),
    "sglang": ("/get_model_info", "/get_server_info"),
    "tgi": ("/info",),
    "llamacpp": ("/props",),
}


@dataclass(frozen=True)
class ServerIdentity:
    """The server under test as preflight observed it: one small typed object for reports and
    cache keys. ``max_model_len`` is the context limit the server reports (``context_source``
    says where it was read); ``template``/``command``/``engine_args`` are set when etalon launched it."""

    base_url: str
    served_models: tuple[str, ...] = ()
    max_model_len: int | None = None
    context_source: str | None = None
    version: str | None = None
    engine: str | None = None
    template: str | None = None
    command: tuple[str, ...] = ()
    engine_args: dict[str, Any] = field(default_factory=dict)
    log_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def cache_key(self) -> dict[str, Any]:
        """The parts that define what is measured (not the URL: launched ports change every run)."""
        return {"served_models": list(self.served_models), "max_model_len": self.max_model_len,
                "version": self.version, "engine": self.engine, "template": self.template,
                "engine_args": self.engine_args}


def _positive_int(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def models_info(body: Any) -> tuple[list[str], int | None]:
    """``GET /v1/models`` -> (model ids, ``max_model_len`` of the first model that reports one)."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return [], None
    ids = [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]
    limits = [_positive_int(m.get("max_model_len")) for m in data if isinstance(m, dict)]
    return ids, next((n for n in limits if n is not None), None)


def engine_info(path: str, body: Any) -> tuple[int | None, str | None]:
    """(context limit, version) from an engine's own info endpoint (``path``), None where absent.

    SGLang: ``/get_model_info`` or ``/get_server_info`` (``context_length``, ``max_total_num_tokens``
    is the KV pool, not the context); TGI: ``/info`` (``max_total_tokens``, older
    ``max_total_tokens`` alongside ``max_input_length``); llama.cpp: ``/props``
    (``default_generation_settings.n_ctx``); vLLM: ``/version``."""
    if not isinstance(body, dict):
        return None, None
    version = body.get("version")
    version = str(version) if version is not None else None
    if path in ("/get_model_info", "/get_server_info"):
        return _positive_int(body.get("context_length") or body.get("max_context_length")), version
    if path == "/info":
        return _positive_int(body.get("max_total_tokens")), version
    if path == "/props":
        settings = body.get("default_generation_settings")
        n_ctx = settings.get("n_ctx") if isinstance(settings, dict) else body.get("n_ctx")
        build = body.get("build_info")
        return _positive_int(n_ctx), str(build) if build is not None else version
    return None, version


__all__ = ["ENGINE_INFO_PATHS", "ServerIdentity", "engine_info", "models_info"]
