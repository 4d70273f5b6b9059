"""What the server under test says it is (served models, context limit, version, engine info
metrics) and how it counts tokens (/tokenize): read once before a run, never trusted blindly."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson

from etalon.clients.base import EndpointSpec

MAX_BODY_BYTES = 1 << 20
MAX_INFO_LINES = 64
MAX_FIELD_CHARS = 500
# /v1/models fields that describe the model (not ids that change per start, such as "created").
MODEL_FIELDS = ("id", "root", "parent", "owned_by", "max_model_len")


def root_url(spec: EndpointSpec) -> str:
    """The server root: the base URL without its /v1 API prefix."""
    return spec.base_url.rstrip("/").removesuffix("/v1")


async def _get(session: aiohttp.ClientSession, url: str, spec: EndpointSpec) -> bytes | None:
    timeout = aiohttp.ClientTimeout(total=spec.connect_timeout_s)
    try:
        async with session.get(url, headers=spec.request_headers(), timeout=timeout) as resp:
            return await resp.content.read(MAX_BODY_BYTES) if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return None


def _json(body: bytes | None) -> Any:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


def _clip(value: Any) -> Any:
    return value[:MAX_FIELD_CHARS] if isinstance(value, str) else value if isinstance(value, (int, float)) else None


def models_identity(payload: Any) -> list[dict[str, Any]] | None:
    """The served models as /v1/models lists them, stable fields only."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        return None
    models = [{k: _clip(m.get(k)) for k in MODEL_FIELDS if m.get(k) is not None} for m in data if isinstance(m, dict)]
    return sorted(models, key=lambda m: str(m.get("id")))


def info_metrics(text: str) -> list[str]:
    """Prometheus ``*_info`` samples (engine/cache config as labels, e.g. vllm:cache_config_info)."""
    lines = [line[:MAX_FIELD_CHARS] for line in text.splitlines() if "_info{" in line and not line.startswith("#")]
    return sorted(lines)[:MAX_INFO_LINES]


async def _observe(spec: EndpointSpec) -> dict[str, Any]:
    root = root_url(spec)
    async with aiohttp.ClientSession() as session:
        models, version, metrics = await asyncio.gather(
            _get(session, spec.base_url.rstrip("/") + "/models", spec), _get(session, root + "/version", spec),
            _get(session, root + "/metrics", spec))
    version_json = _json(version)
    return {
        "models": models_identity(_json(models)),
        "version": {k: _clip(v) for k, v in version_json.items()} if isinstance(version_json, dict) else None,
        "info_metrics": info_metrics(metrics.decode(errors="replace")) if metrics else [],
    }


def observe_server(spec: EndpointSpec) -> dict[str, Any]:
    """The server's identity as observed now: what probe and profile caches are keyed by."""
    return asyncio.run(_observe(spec))


def describe_server(identity: dict[str, Any] | None, base_url: str) -> str:
    """One human line naming the observed server."""
    if not identity:
        return base_url
    parts = []
    for m in identity.get("models") or []:
        parts.append(str(m.get("id")) + (f" (max_model_len {m['max_model_len']})" if m.get("max_model_len") else ""))
    version = (identity.get("version") or {}).get("version")
    if version:
        parts.append(f"version {version}")
    return f"{', '.join(parts) or 'a server'} at {base_url}"


async def _count(session: aiohttp.ClientSession, url: str, body: dict[str, Any], spec: EndpointSpec) -> int | None:
    timeout = aiohttp.ClientTimeout(total=spec.connect_timeout_s)
    try:
        async with session.post(url, data=orjson.dumps(body), headers=spec.request_headers(), timeout=timeout) as resp:
            if resp.status != 200:
                return None
            payload = _json(await resp.content.read(MAX_BODY_BYTES))
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return None
    if not isinstance(payload, dict):
        return None
    count = payload.get("count")
    if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
        return count
    tokens = payload.get("tokens")
    return len(tokens) if isinstance(tokens, list) else None


async def _server_token_count(spec: EndpointSpec, text: str) -> tuple[int, str] | None:
    root = root_url(spec)
    attempts = [  # vLLM / SGLang, llama-cpp-python's server, llama.cpp's own server
        (root + "/tokenize", {"model": spec.model, "prompt": text, "add_special_tokens": False}),
        (root + "/extras/tokenize/count", {"input": text}),
        (root + "/tokenize", {"content": text}),
    ]
    async with aiohttp.ClientSession() as session:
        for url, body in attempts:
            count = await _count(session, url, body, spec)
            if count is not None:
                return count, url
    return None


def server_token_count(spec: EndpointSpec, text: str) -> tuple[int, str] | None:
    """(tokens the server counts in ``text`` without special tokens, the URL that said so), or None
    when the server offers no tokenize endpoint."""
    return asyncio.run(_server_token_count(spec, text))


__all__ = ["describe_server", "info_metrics", "models_identity", "observe_server", "root_url", "server_token_count"]
