"""Pure, synchronous building blocks: records, workloads, metrics, SLOs, search policies."""

from etalon.core.arrivals import (
    Arrivals,
    ClosedLoop,
    ConstantArrivals,
    GammaArrivals,
    OpenLoopArrivals,
    PoissonArrivals,
    ReplayArrivals,
)
from etalon.core.lengths import (
    EmpiricalLengths,
    FixedLengths,
    LengthSampler,
    LogNormalLengths,
    UniformLengths,
    ZipfLengths,
    clip_lengths,
)
from etalon.core.prompts import PromptBuildError, Tokenizer, build_prompts
from etalon.core.records import RecordTable, RequestRecord
from etalon.core.workload import Schedule, build_schedule

__all__ = [
    "Arrivals",
    "ClosedLoop",
    "ConstantArrivals",
    "EmpiricalLengths",
    "FixedLengths",
    "GammaArrivals",
    "LengthSampler",
    "LogNormalLengths",
    "OpenLoopArrivals",
    "PoissonArrivals",
    "PromptBuildError",
    "RecordTable",
    "ReplayArrivals",
    "RequestRecord",
    "Schedule",
    "Tokenizer",
    "UniformLengths",
    "ZipfLengths",
    "build_prompts",
    "build_schedule",
    "clip_lengths",
]
