"""What pipeline steps do: benchmark, prefill profile, capacity search."""

from etalon.stages.base import StageContext, StageError, StageResult, Tracker

__all__ = ["StageContext", "StageError", "StageResult", "Tracker"]
