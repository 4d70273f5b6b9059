"""Which config keys and header names hold secrets, and scrubbing known secret values from text."""

from __future__ import annotations

import re
from typing import Iterable, Mapping

REDACTED = "***REDACTED***"
# A key is secret when its last word names a secret: api_key, x-api-key, auth_token, Authorization.
# Keys naming a variable or a count (api_key_env, max_tokens, tokenizer) are not.
_SECRET_KEY = re.compile(
    r"(^|[_\-.])(api[_-]?key|key|token|access[_-]?token|secret|password|passwd|authorization|"
    r"credentials?|cookie|bearer)$",
    re.I,
)
# Shorter values are not scrubbed from text: "abc" would blank out ordinary words.
MIN_SECRET_CHARS = 4
_AUTH_SCHEMES = ("bearer ", "basic ", "token ")


def is_secret_key(key: str) -> bool:
    """True for keys whose value is a secret (``api_key``), not for ones naming a variable (``api_key_env``)."""
    return bool(_SECRET_KEY.search(key))


def secret_values(values: Iterable[str | None]) -> list[str]:
    """The values worth scrubbing, each also without an auth scheme ("Bearer sk-1" -> "sk-1"),
    longest first so a value is replaced before any part of it."""
    found: set[str] = set()
    for value in values:
        if not value:
            continue
        found.add(value)
        lowered = value.lower()
        for scheme in _AUTH_SCHEMES:
            if lowered.startswith(scheme):
                found.add(value[len(scheme):].strip())
    return sorted((v for v in found if len(v) >= MIN_SECRET_CHARS), key=len, reverse=True)


def header_secrets(headers: Mapping[str, str]) -> list[str]:
    """Values of the secret-named headers (Authorization, x-api-key, ...)."""
    return secret_values(v for k, v in headers.items() if is_secret_key(k))


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by ``REDACTED``."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_override(override: str, secrets: Iterable[str] = ()) -> str:
    """A Hydra override ``key=value`` with the value hidden when the key names a secret."""
    key, sep, value = override.partition("=")
    if sep and value and is_secret_key(key.lstrip("+~").rsplit(".", 1)[-1].strip("'\"")):
        return f"{key}={REDACTED}"
    return redact_text(override, secrets)
