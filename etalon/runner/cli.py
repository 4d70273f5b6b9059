"""The `etalon` command around Hydra: where configs live, and one-line errors for bad overrides."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Callable

from etalon.config import ConfigError, did_you_mean

PACKAGE_DIR = Path(__file__).resolve().parents[1]
EXIT_USER_ERROR = 2


def config_dir() -> Path:
    """conf/ as shipped inside the installed package (etalon/_conf), else the clone's conf/."""
    packaged = PACKAGE_DIR / "_conf"
    return packaged if (packaged / "config.yaml").is_file() else PACKAGE_DIR.parent / "conf"


def install_error_reporting() -> None:
    """Route Hydra's error reporting through ``user_message``: a user's mistake is one line and
    exit status 2; anything else keeps Hydra's own report."""
    import hydra._internal.utils as hydra_utils

    original: Callable[[Any], Any] = getattr(hydra_utils, "_etalon_original_run_and_report", hydra_utils.run_and_report)
    hydra_utils._etalon_original_run_and_report = original  # type: ignore[attr-defined]

    def run_and_report(func: Callable[[], Any]) -> Any:
        try:
            return func()
        except Exception as exc:
            message = user_message(exc)
            if message is None:
                return original(lambda: _raise(exc))
            print(f"etalon: error: {message}", file=sys.stderr, flush=True)
            sys.exit(EXIT_USER_ERROR)

    hydra_utils.run_and_report = run_and_report


def _raise(exc: BaseException) -> Any:
    raise exc


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return out


def user_message(exc: BaseException) -> str | None:
    """The one line for an error a user caused while composing or starting a run; None otherwise."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    chain = _chain(exc)
    for inner in chain:
        if isinstance(inner, ConfigError):
            return " ".join(str(inner).split())
    if isinstance(exc, MissingConfigException):
        return _missing_preset(exc)
    if isinstance(exc, OverrideParseException):
        return " ".join(str(exc).split())
    if isinstance(exc, ConfigCompositionException):
        return _composition(exc)
    for inner in chain:
        if isinstance(inner, OSError) and inner.filename is not None:
            return (f"cannot write {inner.filename}: {inner.strerror}; choose a writable place "
                    "(hydra.run.dir=..., hydra.sweep.dir=..., cache_dir=..., tracking.tracking_uri=...)")
    return None


def _missing_preset(exc: Any) -> str:
    missing = str(exc.missing_cfg_file or "")
    group, _, name = missing.rpartition("/")
    options = list(exc.options or [])
    if not group:
        return " ".join(str(exc).splitlines()[0].split())
    hint = did_you_mean(name, options)
    return f"{group}={name}: no such preset{hint}; presets of {group!r}: {', '.join(options) or '(none)'}"


OVERRIDE_KEY = re.compile(r"Could not (?:override|delete from config\.) '([^']+)'")


def _composition(exc: BaseException) -> str:
    text = str(exc)
    m = OVERRIDE_KEY.search(text)
    if m is None:
        first = _first_line(exc)
        detail = _first_line(exc.__cause__)
        return f"{first.removeprefix('Error merging override ')}: {detail}" if detail else first
    return unknown_key_message(m.group(1), exc.__cause__)


def unknown_key_message(key: str, cause: BaseException | None = None) -> str:
    """``key`` is not in the config: the nearest existing key, or the stage's valid parameters."""
    cfg = _composed_without(key)
    if cfg is None:
        return f"{key}: no such key in the config"
    return describe_unknown_key(cfg, key, cause)


STRUCT_KEY = re.compile(r"Key '([^']+)' is not in struct")


def describe_unknown_key(cfg: Any, key: str, cause: BaseException | None = None) -> str:
    """Walk ``cfg`` along ``key``; at the first missing segment name the nearest existing one."""
    from omegaconf import DictConfig

    parts = key.split(".")
    node = cfg
    for i, part in enumerate(parts):
        if isinstance(node, DictConfig) and part in node:
            node = node[part]
            continue
        prefix = ".".join(parts[:i])
        where = f"under {prefix!r}" if prefix else "at the top level"
        if parts[:2] == ["pipeline", "stages"] and i == 3:
            return _stage_param_message(cfg, parts[2], part)
        choices = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
        match = did_you_mean(part, choices)
        if match:
            suggestion = ".".join([*parts[:i], match.split("'")[1], *parts[i + 1 :]])
            return f"{key}: no such key {where} (did you mean {suggestion!r}?)"
        known = f"; keys there: {', '.join(choices)}" if choices else ""
        return f"{key}: no such key {where}{known}"
    m = STRUCT_KEY.search(str(cause or ""))
    if m:  # key={...}: Hydra merges the mapping into the existing one, which has no such key
        return (f"{key}: a {{...}} value is merged into the existing {key}, which has no key {m.group(1)!r}; "
                f"set its keys one by one ({key}.KEY=VALUE) or pick a preset of the group")
    detail = _first_line(cause)
    return f"{key}: cannot be set this way{': ' + detail if detail else ''}"


def _first_line(exc: BaseException | None) -> str:
    """An exception's first line with its whitespace collapsed ('' for None)."""
    return " ".join(str(exc).split("\n")[0].split()) if exc is not None else ""


def _stage_param_message(cfg: Any, stage: str, param: str) -> str:
    from etalon.runner.stage_params import stage_function, stage_parameters

    node = cfg.pipeline.stages[stage]
    valid = stage_parameters(stage_function(str(node["_target_"]))) or [str(k) for k in node if not str(k).startswith("_")]
    if param in valid:
        return (f"pipeline.stages.{stage}.{param}: a parameter of stage {stage!r} that this pipeline does not "
                f"set; add it with +pipeline.stages.{stage}.{param}=VALUE")
    return (f"pipeline.stages.{stage}.{param}: not a parameter of stage {stage!r}{did_you_mean(param, valid)}; "
            f"valid parameters: {', '.join(valid)}")


def _composed_without(key: str) -> Any:
    """The config the command line composes, minus the overrides that name ``key``."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    if not GlobalHydra.instance().is_initialized():
        return None
    args, _ = get_args_parser().parse_known_args(sys.argv[1:])
    keep = [o for o in args.overrides if o.lstrip("+~").split("=", 1)[0] != key]
    for overrides in (keep, [o for o in keep if "." not in o.split("=", 1)[0]]):
        try:
            return GlobalHydra.instance().hydra.compose_config(  # type: ignore[union-attr]
                "config", overrides, run_mode=RunMode.MULTIRUN, with_log_configuration=False,
                validate_sweep_overrides=False)
        except Exception:
            continue
    return None


__all__ = ["config_dir", "describe_unknown_key", "install_error_reporting", "user_message"]
