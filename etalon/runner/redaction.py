"""Secrets out of everything Hydra and logging write: the .hydra files, log lines, override tags."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from etalon.core.redaction import is_secret_key, redact_override, redact_text, secret_values
from etalon.runner.secrets import redact


def config_secrets(container: Any, env_names: Iterable[str | None] = ()) -> list[str]:
    """Every value under a secret-named key of ``container`` (headers included), the values of the
    named environment variables, and the values of secret-named ``key=value`` overrides."""
    found: list[str] = [os.environ.get(name, "") for name in env_names if name]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and is_secret_key(key) and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value)

    walk(container)
    return secret_values(found)


def override_secrets(overrides: Iterable[str]) -> list[str]:
    """Values given to secret-named keys on the command line (``endpoint.headers.Authorization=...``)."""
    values = []
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and is_secret_key(key.lstrip("+~").rsplit(".", 1)[-1].strip("'\"")):
            values.append(value.strip("'\""))
    return secret_values(values)


def redact_overrides(overrides: Iterable[str], secrets: Iterable[str] = ()) -> list[str]:
    secrets = list(secrets)
    return [redact_override(o, secrets) for o in overrides]


_LOG_SECRETS: list[str] = []


def install_log_filter(secrets: list[str]) -> None:
    """Scrub ``secrets`` from every log record this process creates, whichever logger or handler
    (Hydra re-configures its handlers when a launcher starts, so a handler filter would be lost)."""
    if not secrets:
        return
    first = not _LOG_SECRETS
    _LOG_SECRETS[:] = sorted(set(_LOG_SECRETS) | set(secrets), key=len, reverse=True)
    if not first:
        return
    make_record = logging.getLogRecordFactory()

    def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is logging's problem, not ours
            return record
        cleaned = redact_text(message, _LOG_SECRETS)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return record

    logging.setLogRecordFactory(redacting_factory)


def redact_hydra_files(
    output_dir: Path, secrets: list[str],
    names: tuple[str, ...] = ("config.yaml", "hydra.yaml", "overrides.yaml"),
) -> None:
    """Rewrite the config.yaml, hydra.yaml and overrides.yaml Hydra saved for the job (no secret:
    nothing to rewrite)."""
    if not secrets:
        return
    for name in names:
        path = output_dir / name
        if not path.exists():
            continue
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        if name == "overrides.yaml" and isinstance(data, list):
            data = redact_overrides([str(o) for o in data], secrets)
        else:
            data = _redact_strings(redact(data, secrets), secrets)
        OmegaConf.save(OmegaConf.create(data), path)


def _redact_strings(obj: Any, secrets: list[str]) -> Any:
    """Overrides embedded in strings (``hydra.job.override_dirname``, ``overrides.task`` items)."""
    if isinstance(obj, dict):
        return {k: _redact_strings(v, secrets) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_redact_strings(v, secrets) for v in obj]
    if isinstance(obj, str) and "=" in obj and "," not in obj:
        return redact_override(obj, secrets)
    if isinstance(obj, str):
        return redact_text(obj, secrets)
    return obj


def secrets_of_config(config: DictConfig) -> list[str]:
    """Every secret a run knows of: env key, secret-named config values and overrides."""
    env = OmegaConf.select(config, "endpoint.api_key_env", default=None)
    overrides = list(OmegaConf.select(config, "hydra.overrides.task", default=[]) or [])
    try:
        container = OmegaConf.to_container(config, resolve=True)
    except Exception:  # noqa: BLE001 - an unresolvable value: fall back to the raw config
        container = OmegaConf.to_container(config, resolve=False)
    if isinstance(container, dict):
        container.pop("hydra", None)
    return secret_values([*config_secrets(container, [env]), *override_secrets(overrides)])


class RedactionCallback(Callback):
    """Keeps secrets out of Hydra's launcher log, its job log and the files in ``.hydra/``."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        install_log_filter(secrets_of_config(config))

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        install_log_filter(secrets_of_config(config))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._redact_sweep_file(config, secrets_of_config(config))

    def _redact_sweep_file(self, config: DictConfig, secrets: list[str]) -> None:
        sweep_dir = OmegaConf.select(config, "hydra.sweep.dir", default=None)
        if sweep_dir and secrets:
            redact_hydra_files(Path(sweep_dir), secrets, ("multirun.yaml",))

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        secrets = secrets_of_config(config)
        install_log_filter(secrets)
        if str(OmegaConf.select(config, "hydra.mode", default="")) == "RunMode.MULTIRUN":
            self._redact_sweep_file(config, secrets)
        subdir = OmegaConf.select(config, "hydra.output_subdir", default=".hydra")
        out = OmegaConf.select(config, "hydra.runtime.output_dir", default=None)
        if subdir and out:
            redact_hydra_files(Path(out) / str(subdir), secrets)
