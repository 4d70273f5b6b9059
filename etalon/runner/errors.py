"""The errors a user can cause, and how each is told in one line."""

from __future__ import annotations

from hydra.errors import InstantiationException

from etalon.clients.base import EndpointError
from etalon.config import ConfigError
from etalon.datasets.tokenizers import TokenizerLoadError
from etalon.datasets.traces import TraceFileError
from etalon.loadgen.ray_init import RayStartError
from etalon.runner.server import ServerStartError
from etalon.stages.base import StageError

# ValueError covers bad values rejected by the classes a config instantiates (rates, lengths, SLOs).
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    EndpointError,
    TokenizerLoadError,
    TraceFileError,
    ServerStartError,
    RayStartError,
    StageError,
    InstantiationException,
    ValueError,
    FileNotFoundError,
)


def describe(exc: BaseException) -> str:
    """One line: the innermost user-facing cause (Hydra wraps errors raised by `_target_` classes)."""
    inner: BaseException = exc
    while isinstance(inner, InstantiationException) and inner.__cause__ is not None:
        inner = inner.__cause__
    text = " ".join((str(inner).strip() or type(inner).__name__).split())
    detail = getattr(inner, "detail", "")
    if detail:  # a server's log tail: its lines stay lines
        where = getattr(inner, "log_path", None)
        text += f"\n--- last lines of {where or 'the server log'} ---\n{detail}"
    return text
