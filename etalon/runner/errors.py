"""The errors a user can cause, and how each is told in one line."""

from __future__ import annotations

from hydra.errors import InstantiationException

from etalon.clients.base import EndpointError
from etalon.config import ConfigError
from etalon.core.text import for_terminal
from etalon.datasets.tokenizers import TokenizerLoadError
from etalon.datasets.traces import TraceFileError
from etalon.loadgen.ray_init import RayStartError
from etalon.runner.server import ServerStartError
from etalon.stages.base import StageError

# Exit statuses: 1 a sweep job failed, 2 a user error, 3 the SLO failed under fail_on_slo=true,
# 130 Ctrl-C. A CI job can tell "the service is too slow" (3) from "the benchmark broke" (1, 2).
SLO_FAILED_EXIT = 3
SLO_FAILED_MARKER = "slo_failed"

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


DESCRIBE_CHARS = 2000  # one error line; longer ones are cut (a server string is capped far lower)


def describe(exc: BaseException) -> str:
    """One line: the innermost user-facing cause (Hydra wraps errors raised by `_target_` classes)."""
    inner: BaseException = exc
    while isinstance(inner, InstantiationException) and inner.__cause__ is not None:
        inner = inner.__cause__
    text = str(inner).strip() or type(inner).__name__
    # Messages may quote what a server sent: never let it drive the terminal (etalon.core.text).
    text = " ".join(for_terminal(text, DESCRIBE_CHARS).split())
    detail = getattr(inner, "detail", "")
    if detail:  # a launched server's log tail: its lines stay lines (each made terminal-safe)
        where = getattr(inner, "log_path", None)
        lines = [for_terminal(line, DESCRIBE_CHARS) for line in str(detail).splitlines()]
        text += f"\n--- last lines of {where or 'the server log'} ---\n" + "\n".join(lines)
    return text
