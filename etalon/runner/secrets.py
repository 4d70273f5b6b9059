"""Redaction of secrets before anything is logged, printed or written."""

from __future__ import annotations

import os
from typing import Any, Iterable

from etalon.core.redaction import REDACTED, is_secret_key

__all__ = ["REDACTED", "is_secret_key", "known_secret_values", "redact"]


def known_secret_values(env_names: Iterable[str | None]) -> list[str]:
    """Values of the named environment variables that hold secrets (skipping unset and trivial ones)."""
    values = [os.environ.get(name, "") for name in env_names if name]
    return [v for v in values if len(v) >= 4]


def redact(obj: Any, secrets: Iterable[str] = ()) -> Any:
    """Copy of ``obj`` with secret-named keys and any occurrence of a known secret value replaced."""
    secret_values = [s for s in secrets if s]
    return _redact(obj, secret_values)


def _redact(obj: Any, secrets: list[str]) -> Any:
    if isinstance(obj, dict):
        return {
            k: (REDACTED if isinstance(k, str) and is_secret_key(k) and obj[k] not in (None, "") else _redact(v, secrets))
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return type(obj)(_redact(v, secrets) for v in obj)
    if isinstance(obj, str):
        for secret in secrets:
            if secret in obj:
                obj = obj.replace(secret, REDACTED)
        return obj
    return obj
