"""OmegaConf resolvers the server templates use: ``${etalon.python:}``, ``${etalon.json:...}``,
``${etalon.flag:...}`` and ``${etalon.opt:...}``."""

from __future__ import annotations

import json
import sys
from typing import Any

from omegaconf import Container, OmegaConf


def _python() -> str:
    """This interpreter, so a launched ``python -m ...`` sees the same environment."""
    return sys.executable


def _json(node: Any) -> str:
    """A config node as one JSON argument (the simulator's config on its command line)."""
    value = OmegaConf.to_container(node, resolve=True) if isinstance(node, Container) else node
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _flag(on: str, off: str, value: Any) -> str:
    """A boolean engine arg: ``on`` when true, ``off`` when false ('' drops it), '' when null."""
    if value is None:
        return ""
    return on if _truthy(value) else off


def _opt(flag: str, value: Any) -> str:
    """An optional valued engine arg as one element ``--flag=value``; '' (dropped) when null."""
    return "" if value is None else f"{flag}={value}"


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def register_resolvers() -> None:
    """Idempotent: Hydra's app, compose() in tests and Ray workers all call it."""
    for name, fn in (("etalon.python", _python), ("etalon.json", _json), ("etalon.flag", _flag),
                     ("etalon.opt", _opt)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


__all__ = ["register_resolvers"]
