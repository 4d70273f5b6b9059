"""What a stage receives and returns, and the tracker/cache interfaces the runner provides."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from etalon.core.seeds import derive_prompt_seed, run_prompt_base

if TYPE_CHECKING:
    from etalon.clients.base import EndpointSpec
    from etalon.config import EtalonConfig


class StageError(RuntimeError):
    """A stage cannot do its work (missing input, unusable result); the message says why."""


class EndpointGoneError(StageError):
    """Every request in a window failed to connect: the server died. What was measured is kept
    (the summary is partial); ``detail`` carries the launched server's log tail."""

    def __init__(self, message: str, detail: str = "", log_path: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail
        self.log_path = log_path


class Tracker(Protocol):
    """Experiment tracking as stages see it (MLflow behind it, or nothing)."""

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...

    def log_metric_steps(self, steps: list[dict[str, float]]) -> None:
        """``steps[i]`` logged at step i (a time series), in as few calls as the store allows."""
        ...

    def set_tags(self, tags: dict[str, str]) -> None: ...

    def log_artifacts(self, paths: list[Path], artifact_path: str | None = None) -> None: ...

    def log_model(self, python_model: Any, name: str, input_example: Any = None) -> None: ...

    def child(self, name: str, tags: dict[str, str] | None = None) -> Any:
        """Context manager yielding a Tracker for a nested run."""
        ...

    @property
    def run_id(self) -> str | None: ...


class NullTracker:
    """A tracker that records nothing (tracking=none)."""

    run_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None:
        return None

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        return None

    def log_metric_steps(self, steps: list[dict[str, float]]) -> None:
        return None

    def set_tags(self, tags: dict[str, str]) -> None:
        return None

    def log_artifacts(self, paths: list[Path], artifact_path: str | None = None) -> None:
        return None

    def log_model(self, python_model: Any, name: str, input_example: Any = None) -> None:
        return None

    def child(self, name: str, tags: dict[str, str] | None = None) -> Any:
        from contextlib import nullcontext

        return nullcontext(self)


@dataclass
class StageResult:
    """What a finished stage leaves for later stages and for the report.

    ``scalars`` are metrics (logged to MLflow); ``data`` is any JSON-serialisable output later
    stages read (e.g. ``{"max_rate_rps": 7.5}``); ``artifacts`` are files in ``stage_dir``.
    """

    name: str
    stage_dir: Path
    scalars: dict[str, float] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)
    partial: bool = False
    cached: bool = False


@dataclass
class StageContext:
    """Everything a stage function gets: typed config, resolved endpoint, earlier results."""

    cfg: EtalonConfig
    run_dir: Path
    stage_name: str
    stage_dir: Path
    endpoint: EndpointSpec
    endpoint_key: str
    results: dict[str, StageResult]
    tracker: Tracker
    cache_dir: Path
    # Runs a callable while holding the exclusive measurement lock of the endpoint, so two jobs
    # never load the same endpoint at once (identity when no cluster-wide lock is needed).
    endpoint_lock: Callable[[], Any] = field(default=lambda: _no_lock())
    # The run's prompt-text base (etalon.core.seeds): fresh per run unless workload.prompt_seed is set.
    prompt_base: int = field(default_factory=lambda: run_prompt_base(None))

    def prompt_seed(self, *parts: str | int) -> int:
        """The prompt seed of this stage (no ``parts``) or of one of its probes (e.g. its index)."""
        return derive_prompt_seed(self.prompt_base, self.stage_name, *parts)

    def result(self, name: str) -> StageResult:
        if name not in self.results:
            raise StageError(
                f"stage {self.stage_name!r} needs the result of stage {name!r}, "
                f"which has not run in this pipeline (ran: {sorted(self.results)})"
            )
        return self.results[name]


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _no_lock() -> _NoLock:
    return _NoLock()


StageFunction = Callable[[StageContext], StageResult]

