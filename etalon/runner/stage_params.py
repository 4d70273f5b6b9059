"""Check every stage's parameters against what its stage function accepts, before anything runs."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

from etalon.config import ConfigError, PipelineConfig, did_you_mean

# Keys Hydra's instantiate consumes itself; they are never stage parameters.
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})


def stage_function(target: str) -> Callable[..., Any]:
    """The function a stage's ``_target_`` names (a clear error when it does not exist)."""
    from hydra.utils import get_method

    try:
        return get_method(target)
    except Exception as exc:  # ImportError / AttributeError wrapped by Hydra
        raise ConfigError(f"_target_: cannot import stage function {target!r}") from exc


def stage_parameters(fn: Callable[..., Any]) -> list[str] | None:
    """The parameter names ``fn`` accepts after its context argument; None if open-ended.

    A function taking ``**params`` declares what they may be with a ``stage_params`` attribute (a
    dataclass whose fields are the extra parameters); without one, any name is accepted."""
    params = list(inspect.signature(fn).parameters.values())[1:]  # the first is the StageContext
    names = [p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    if any(p.kind == p.VAR_KEYWORD for p in params):
        extra = getattr(fn, "stage_params", None)
        if extra is None or not dataclasses.is_dataclass(extra):
            return None
        names += [f.name for f in dataclasses.fields(extra) if f.init]
    return names


def check_stage_params(pipeline: PipelineConfig) -> None:
    """Every key of every stage must be a parameter of its stage function (nearest match named)."""
    for name, stage in pipeline.stages.items():
        fn = stage_function(str(stage["_target_"]))
        valid = stage_parameters(fn)
        if valid is None:
            continue
        for key in stage:
            if key in HYDRA_KEYS or key in valid:
                continue
            raise ConfigError(
                f"pipeline.stages.{name}.{key}: not a parameter of stage {name!r}{did_you_mean(key, valid)}; "
                f"valid parameters: {', '.join(valid)}"
            )


__all__ = ["check_stage_params", "stage_function", "stage_parameters"]
