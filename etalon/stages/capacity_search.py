"""The capacity_search stage: the highest load that meets the SLO, one cached probe at a time."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from hydra.utils import instantiate

from etalon.core.probe_checks import check_probe
from etalon.core.records import RecordTable, RequestRecord
from etalon.core.search import ExpandBisectSearch, Probe, bracket, runaway_queue
from etalon.stages.base import StageContext, StageError, StageResult
from etalon.stages.benchmark import resolve_slo
from etalon.stages.capacity_trust import convergence, full_settings, min_requests, next_load
from etalon.stages.prefill_profile import digest, endpoint_identity
from etalon.stages.reuse import measured_against, tell_reuse

log = logging.getLogger("etalon")

PROBE_META = "probe.json"
PROBE_CACHE_VERSION = 2  # 2: fresh prompt text per probe (1 sent the same prompts every probe)
SEARCH_KINDS = ("rate", "concurrency")
STOP_SLO, STOP_QUEUE = "slo", "queue"
# Probes poll their load this often (at most): a lost SLO or runaway queue is seen within 0.1 s.
PROBE_DRAIN_S = 0.1


@dataclass
class ProbeRun:
    """One probe as measured (or re-judged from the cache) in this search."""

    probe: Probe
    scalars: dict[str, float]
    verdict_values: dict[str, float]
    stop_reason: str | None
    records_path: Path
    interrupted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchSettings:
    """The stage's parameters, validated once."""

    search: str = "rate"
    start_rate_rps: float = 1.0
    growth: float = 2.0
    precision: float = 0.05
    max_probes: int = 16
    probe_requests: int | None = 200
    probe_duration_s: float | None = None
    warmup_requests: int | None = None
    early_stop: bool = True
    interpolate: bool = True
    # With early_stop, probes before the first failure (the expansion) run this fraction of the
    # probe length; a short probe that ends up bounding the result is re-measured at full length.
    expand_fraction: float = 0.34
    # A full probe passes only with at least this many measured requests (null: from the SLO's
    # quantile, etalon.core.probe_checks.default_min_requests); full probes are lengthened to reach it.
    min_probe_requests: int | None = None
    # A pass also needs achieved >= (1 - rate_tolerance) x offered rate (rate search).
    rate_tolerance: float = 0.1
    # Re-measure both bracket ends this many more times with other seeds (workload.seed + i) and
    # report the capacity as an interval (etalon.stages.reprobe).
    reprobe: int = 0

    # Stop probing after this long (the whole search; no new probe starts past it); a grid of
    # searches shares one absolute deadline (``deadline_unix_s``, set by the parallel stage).
    time_limit_s: float | None = None
    deadline_unix_s: float | None = None

    def out_of_time(self) -> bool:
        return self.deadline_unix_s is not None and time.time() >= self.deadline_unix_s

    def __post_init__(self) -> None:
        if not isinstance(self.reprobe, int) or self.reprobe < 0:
            raise StageError(f"capacity_search.reprobe={self.reprobe!r} must be an integer >= 0")
        if self.time_limit_s is not None and self.time_limit_s <= 0:
            raise StageError(f"capacity_search.time_limit_s={self.time_limit_s} must be > 0 or null")
        if self.min_probe_requests is not None and self.min_probe_requests < 1:
            raise StageError(f"capacity_search.min_probe_requests={self.min_probe_requests} must be >= 1 or null")
        if not 0 < self.rate_tolerance < 1:
            raise StageError(f"capacity_search.rate_tolerance={self.rate_tolerance} must be within (0, 1)")
        if not 0 < self.expand_fraction <= 1:
            raise StageError(f"capacity_search.expand_fraction={self.expand_fraction} must be within (0, 1]")
        if self.search not in SEARCH_KINDS:
            raise StageError(f"capacity_search.search={self.search!r} must be one of {SEARCH_KINDS}")
        if self.probe_requests is None and self.probe_duration_s is None:
            raise StageError("capacity_search: set probe_requests and/or probe_duration_s (a probe needs an end)")

    def policy(self) -> ExpandBisectSearch:
        return ExpandBisectSearch(self.start_rate_rps, self.growth, self.precision, self.max_probes,
                                  interpolate=self.interpolate, integer=self.search == "concurrency")


def run(ctx: StageContext, *, configs: list[Any] | None = None, runner: Any = None,
        labels: list[str] | None = None, grid: dict[str, list[Any]] | None = None, **params: Any) -> StageResult:
    """Search the highest request rate (or closed-loop concurrency) meeting the SLO.

    Parameters: ``search`` ("rate" | "concurrency"), ``start_rate_rps``, ``growth``, ``precision``
    (relative bracket width to stop at), ``max_probes``, ``probe_requests``, ``probe_duration_s``,
    ``warmup_requests``, ``early_stop``, ``interpolate``, ``expand_fraction``. ``configs`` (a list of Hydra override
    lists, relative to the experiment's config) runs one search per config in parallel on Ray,
    with ``runner`` and ``labels`` (see capacity_parallel) and ends with a comparison; ``grid``
    (override key -> values, e.g. ``{"server": ["vllm", "sglang"], "server.args.max_num_seqs": [64, 128]}``)
    crosses every config with every combination. ``time_limit_s`` bounds the whole search (grid).
    """
    if configs or grid:
        from etalon.stages.capacity_parallel import run_parallel
        return run_parallel(ctx, configs=configs, runner=runner, labels=labels, grid=grid, **params)
    return capacity(ctx, SearchSettings(**params))


run.stage_params = SearchSettings  # type: ignore[attr-defined]  # what **params may hold (checked before a run)


def capacity(ctx: StageContext, settings: SearchSettings) -> StageResult:
    """One capacity search on ``ctx``'s config and endpoint: the single search code path, also
    what every parallel search task runs."""
    if settings.time_limit_s is not None and settings.deadline_unix_s is None:
        settings = dataclasses.replace(settings, deadline_unix_s=time.time() + settings.time_limit_s)
    slo = resolve_slo(ctx)
    runs = search(ctx, slo, settings)
    result = finish(ctx, slo, settings, runs, unconverged=convergence(settings.policy(), runs))
    if settings.reprobe and not result.partial:
        from etalon.stages.reprobe import reprobe_bracket

        reprobe_bracket(ctx, slo, settings, runs, result)
    return result


def search(ctx: StageContext, slo: Any, settings: SearchSettings) -> list[ProbeRun]:
    base = instantiate(ctx.cfg.workload.arrival)
    closed = bool(getattr(base, "closed_loop", False))
    if closed != (settings.search == "concurrency"):
        raise StageError(
            f"capacity_search.search={settings.search!r} does not fit workload.arrival "
            f"{type(base).__name__}: use search=concurrency for a closed loop, search=rate otherwise"
        )
    lengths = instantiate(ctx.cfg.workload.lengths)
    policy = settings.policy()
    runs: list[ProbeRun] = []
    while (load := next_load(policy, runs)) is not None:
        expanding = bracket([r.probe for r in runs])[1] is None
        # A load already probed short is being re-measured: at full length.
        short = expanding and load not in {r.probe.load for r in runs if r.probe.short}
        run_ = probe(ctx, slo, settings, base, lengths, load, len(runs), short=short)
        runs.append(run_)
        if run_.interrupted:
            log.warning("capacity_search: probe %d at %.4g interrupted: no verdict, the search stops", len(runs), load)
            break
        log.info("capacity_search: probe %d at %.4g -> %s (%s = %.4g, limit %.4g)%s%s", len(runs), load,
                 "pass" if run_.probe.passed else "fail", run_.extra.get("metric"), run_.probe.value,
                 run_.probe.threshold, " [cached]" if run_.probe.cached else "",
                 f" [stopped: {run_.stop_reason}]" if run_.probe.early_stopped else "")
        if run_.extra.get("vetoes"):
            log.info("capacity_search: probe %d at %.4g met the SLO but is not a pass: %s", len(runs), load,
                     "; ".join(run_.extra["vetoes"]))
        if run_.interrupted or run_.extra.get("endpoint_gone"):
            break
        if settings.out_of_time():
            log.warning("capacity_search: time limit reached after %d probes; the result is partial", len(runs))
            break
    return runs


def short_settings(settings: SearchSettings) -> SearchSettings:
    """The shortened probe of the expansion phase (early_stop only): a false pass cannot stand, as
    ``ExpandBisectSearch`` re-measures a short bracket end at full length before it stops."""
    if not settings.early_stop or settings.expand_fraction >= 1:
        return settings

    def scaled(value: Any, floor: float) -> Any:
        return None if value is None else type(value)(max(value * settings.expand_fraction, min(value, floor)))

    return dataclasses.replace(settings, probe_requests=scaled(settings.probe_requests, 32),
                               probe_duration_s=scaled(settings.probe_duration_s, 1.0))


def at_load(base: Any, load: float, search_kind: str) -> Any:
    if search_kind == "concurrency":
        return dataclasses.replace(base, concurrency=int(load))
    return base.with_rate(load)


def probe_identity(ctx: StageContext, arrival: Any, settings: SearchSettings) -> dict[str, Any]:
    """Everything that determines a probe's records (not the SLO: records are re-judged)."""
    workload = dataclasses.asdict(ctx.cfg.workload)
    workload.pop("arrival")
    client = dataclasses.asdict(ctx.cfg.client)
    client.pop("progress", None)
    return {
        "version": PROBE_CACHE_VERSION,
        "endpoint": endpoint_identity(ctx),
        "arrival": {"type": type(arrival).__name__, **dataclasses.asdict(arrival)},
        "workload": workload,
        "probe": [settings.probe_requests, settings.probe_duration_s, settings.warmup_requests],
        "client": client,
    }


def probe(
    ctx: StageContext, slo: Any, settings: SearchSettings, base: Any, lengths: Any, load: float, index: int,
    *, short: bool = False,
) -> ProbeRun:
    needed = min_requests(slo, settings)
    shortened = short_settings(settings) if short else settings
    is_short = shortened is not settings
    settings = shortened if is_short else full_settings(settings, load, needed, _warmup(ctx, settings))
    arrival = at_load(base, load, settings.search)
    probe_dir = ctx.cache_dir / "probes" / digest(probe_identity(ctx, arrival, settings))
    unit = "conc" if settings.search == "concurrency" else "rps"
    with ctx.tracker.child(f"probe_{index}_{load:.4g}{unit}", tags={"etalon.probe": str(index)}) as tracker:
        expected = _expected_requests(ctx, arrival, lengths, settings)
        cached = _reusable(probe_dir, slo, settings, expected)
        started = time.monotonic()
        window_ns: tuple[int, int] | None = None
        if cached is None:
            # The endpoint's measurement lock: parallel searches never load one endpoint at once.
            with ctx.endpoint_lock():
                started = time.monotonic()  # time waiting for the lock is not the probe's
                start_ns = time.time_ns()
                table, meta = _measure_probe(ctx, slo, settings, arrival, lengths, probe_dir, expected, index, tracker)
                window_ns = (start_ns, time.time_ns())
        else:
            table, meta = cached
        checks = check_probe(_served(table), min_requests=needed, open_loop=settings.search == "rate")
        result = judge_probe(slo, table, load, meta, cached=cached is not None,
                             duration_s=time.monotonic() - started, records_path=probe_dir / "records.jsonl",
                             vetoes=checks.vetoes(short=is_short, rate_tolerance=settings.rate_tolerance))
        result.extra.update(offered_rps=checks.offered_rps, achieved_rps=checks.achieved_rps,
                            measured_requests=checks.measured_requests)
        result.probe = dataclasses.replace(result.probe, short=is_short)
        if window_ns is not None:
            result.extra.update(started_ns=window_ns[0], ended_ns=window_ns[1])
        tracker.log_params({"load": load, "search": settings.search, "probe_dir": str(probe_dir),
                            "short": is_short})
        tracker.set_tags({"etalon.cached": str(result.probe.cached).lower(),
                          "etalon.interrupted": str(result.interrupted).lower()})
        verdict = {} if result.interrupted else {"slo_passed": float(result.probe.passed)}
        tracker.log_metrics({**result.scalars, **result.extra.get("server_metrics", {}), **verdict,
                             "early_stopped": float(result.probe.early_stopped),
                             "probe_duration_s": result.probe.duration_s})
    return result


def _expected_requests(ctx: StageContext, arrival: Any, lengths: Any, settings: SearchSettings) -> tuple[int, int]:
    """(measured requests in the schedule, an upper bound if a duration cuts it; most output tokens asked)."""
    from etalon.core.workload import build_schedule
    from etalon.stages.benchmark import max_total_tokens

    w = ctx.cfg.workload
    schedule = build_schedule(
        arrival, lengths, num_requests=settings.probe_requests, duration_s=settings.probe_duration_s,
        warmup_requests=_warmup(ctx, settings), max_total_tokens=max_total_tokens(ctx.cfg), seed=w.seed,
    )
    return schedule.measured_requests, int(schedule.output_tokens.max(initial=0))


def _warmup(ctx: StageContext, settings: SearchSettings) -> int:
    return ctx.cfg.workload.warmup_requests if settings.warmup_requests is None else settings.warmup_requests


def _served(table: RecordTable) -> RecordTable:
    """Rows the endpoint actually served: requests cancelled by stopping the run are not data."""
    cancelled = table.error_type == "cancelled"
    return table.select(~cancelled) if cancelled.any() else table


def _early_stop(slo: Any, expected: tuple[int, int]) -> Any:
    def should_stop(records: list[RequestRecord]) -> str | None:
        table = RecordTable.from_records(records)
        lost = slo.certainly_lost(table, *expected)
        if lost is not None:
            return f"{STOP_SLO}: {lost}"
        measured = table.select(~table.warmup & table.ok)
        queue = runaway_queue(measured.scheduled_ns, measured.first_token_ns)
        return None if queue is None else f"{STOP_QUEUE}: {queue}"

    return should_stop


def _measure_probe(
    ctx: StageContext, slo: Any, settings: SearchSettings, arrival: Any, lengths: Any,
    probe_dir: Path, expected: tuple[int, int], index: int, tracker: Any = None,
) -> tuple[RecordTable, dict[str, Any]]:
    from etalon.stages.benchmark import measure

    client = dataclasses.replace(ctx.cfg.client,
                                 drain_interval_s=min(ctx.cfg.client.drain_interval_s, PROBE_DRAIN_S))
    ctx = dataclasses.replace(ctx, cfg=dataclasses.replace(ctx.cfg, client=client))
    m = measure(
        ctx, arrival=arrival, lengths=lengths, out_dir=probe_dir, slo=slo,
        num_requests=settings.probe_requests, duration_s=settings.probe_duration_s,
        warmup_requests=_warmup(ctx, settings), seed=ctx.cfg.workload.seed,
        should_stop=_early_stop(slo, expected) if settings.early_stop else None, tracker=tracker,
        prompt_seed=ctx.prompt_seed("probe", index),  # fresh text per probe: no prefix-cache hits
    )
    reason = m.load.stop_reason
    kind = reason.split(":", 1)[0] if reason and reason.startswith((STOP_SLO, STOP_QUEUE)) else None
    meta = {"stop_reason": reason, "stop_kind": kind, "measured_s": m.load.duration_s,
            "expected_requests": expected[0], "interrupted": m.interrupted, **measured_against(ctx),
            "endpoint_gone": m.endpoint_gone, "server_metrics": m.server.scalars,
            "prompt_seed": ctx.prompt_seed("probe", index),
            "cached_prompt_tokens": (m.accounting or {}).get("cached_prompt_tokens")}
    if not m.interrupted and not (m.partial and kind is None):
        # Only finished (or deliberately stopped) probes are cached: an interrupted one re-runs.
        (probe_dir / PROBE_META).write_bytes(orjson.dumps(meta))
    return m.table, meta


def _reusable(
    probe_dir: Path, slo: Any, settings: SearchSettings, expected: tuple[int, int]
) -> tuple[RecordTable, dict[str, Any]] | None:
    meta_file = probe_dir / PROBE_META
    if not meta_file.exists():
        return None
    meta = orjson.loads(meta_file.read_bytes())
    if meta["stop_kind"] is not None and not settings.early_stop:
        return None  # the caller wants full probes
    table = load_table(probe_dir / "records.jsonl")
    if meta["stop_kind"] == STOP_SLO and slo.certainly_lost(_served(table), *expected) is None:
        return None  # stopped under another SLO that this one would not have lost yet: re-measure
    return table, meta


def load_table(path: Path) -> RecordTable:
    with open(path, "rb") as f:
        return RecordTable.from_records(RequestRecord.from_dict(orjson.loads(line)) for line in f if line.strip())


def judge_probe(
    slo: Any, table: RecordTable, load: float, meta: dict[str, Any], *, cached: bool, duration_s: float,
    records_path: Path, vetoes: list[str] | None = None,
) -> ProbeRun:
    """The SLO verdict on a probe's served rows; ``vetoes`` (etalon.core.probe_checks) are reasons
    the load was not really carried (too few requests, achieved below offered, a growing queue):
    with any, a passing verdict is still a fail."""
    from etalon.stages.benchmark import summarize_table

    served = _served(table)
    stopped, truncated = meta["stop_kind"] is not None, meta["stop_reason"] is not None or bool(meta["interrupted"])
    summary, verdict = summarize_table(served, slo, partial=truncated)
    scalars = {k: float(v) for k, v in summary.scalars().items() if v is not None}
    vetoes = list(vetoes or []) if verdict is not None and verdict.passed and not truncated else []
    passed = verdict is not None and verdict.passed and not truncated and not vetoes
    overloaded = any(not v.startswith("thin") for v in vetoes)
    value = math.nan if verdict is None else verdict.value
    p = Probe(
        load=load, passed=passed, value=value, threshold=math.nan if verdict is None else verdict.threshold,
        # A stopped probe's records are a truncated run, and a vetoed one did not carry its load:
        # its judged value is only a lower bound, so tell the search "far over".
        scale=math.inf if stopped or overloaded else (math.nan if verdict is None else verdict.scale),
        cached=cached, early_stopped=stopped, duration_s=duration_s)
    return ProbeRun(p, scalars, {} if verdict is None else dict(verdict.values), meta["stop_reason"],
                    records_path, interrupted=bool(meta["interrupted"]),
                    extra={"metric": None if verdict is None else verdict.metric,
                           "measured_s": meta.get("measured_s"), "vetoes": vetoes,
                           "measured_at": meta.get("measured_at"), "server": meta.get("server"),
                           "cached_prompt_tokens": meta.get("cached_prompt_tokens"),
                           "limits": {} if verdict is None else dict(verdict.limits),
                           "endpoint_gone": meta.get("endpoint_gone"),
                           "server_metrics": meta.get("server_metrics") or {}})


def best_run(runs: list[ProbeRun]) -> ProbeRun | None:
    """The probe the capacity rests on; an interrupted probe is no verdict and never counts."""
    judged = [r for r in runs if not r.interrupted]
    lo, _ = bracket([r.probe for r in judged])
    return None if lo is None else next(r for r in judged if r.probe is lo)


def finish(ctx: StageContext, slo: Any, settings: SearchSettings, runs: list[ProbeRun],
           unconverged: str | None = None) -> StageResult:
    """capacity.json, probes.csv, the capacity chart; the best load and its metrics as scalars.
    ``unconverged`` (see ``convergence``) marks an answer that did not meet the precision."""
    tell_reuse("probes", [r.extra for r in runs if r.probe.cached], ctx.cache_dir / "probes")
    best = best_run(runs)
    rate_key = "max_rate_rps" if settings.search == "rate" else "max_concurrency"
    tokens_key = "fluid_token_generation_rate_tokens_per_s" if slo.name == "deadline" else "output_tokens_per_s"
    at_best = dict(best.scalars) if best else {}
    data: dict[str, Any] = {
        rate_key: best.probe.load if best else None,
        "search": settings.search,
        "slo": slo.name,
        tokens_key: at_best.get("output_tokens_per_s"),
        "metrics_at_max": at_best,
        "verdict_at_max": best.verdict_values if best else None,
        # Only failures above the capacity bound it: a short expansion probe that failed at a load
        # a full-length probe then passed (or below it) is superseded, not the bracket's top.
        "lowest_failing": min((r.probe.load for r in runs if not r.probe.passed and not r.interrupted
                               and (best is None or r.probe.load > best.probe.load)), default=None),
        "probes": [probe_row(r) for r in runs],
        "new_probes": sum(not r.probe.cached for r in runs),
        # Ctrl-C: the pipeline stops after this stage's partial results are written.
        "interrupted": any(r.interrupted for r in runs),
        "converged": unconverged is None,
        "unconverged_reason": unconverged,
        "min_probe_requests": min_requests(slo, settings),
        # Prompt tokens the server said it served from its prefix cache, over the probes that told.
        "cached_prompt_tokens": _sum_known(r.extra.get("cached_prompt_tokens") for r in runs),
        "endpoint_gone": next((r.extra["endpoint_gone"] for r in runs if r.extra.get("endpoint_gone")), None),
        "time_limit_reached": settings.out_of_time(),
        "server_at_max": (best.extra.get("server_metrics") or {}) if best else {},
    }
    if settings.search == "concurrency":
        data["max_rate_rps"] = None  # a closed loop has no offered rate to hand on
    ctx.stage_dir.mkdir(parents=True, exist_ok=True)
    data["at_capacity_sample"] = save_capacity_sample(ctx.stage_dir / AT_CAPACITY_SAMPLE, best, slo)
    paths = [ctx.stage_dir / "capacity.json", ctx.stage_dir / "probes.csv"]
    paths[0].write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    write_probes_csv(paths[1], runs, settings.search)
    paths.append(plot_capacity(ctx.stage_dir / "capacity.png", runs, settings, best))
    # The metrics at capacity keep the benchmark's names, so searches and benchmarks compare in
    # MLflow; the run's role is a tag.
    scalars = dict(at_best)
    ctx.tracker.set_tags({"etalon.role": "metrics at capacity"})
    scalars.update({"num_probes": float(len(runs)), "new_probes": float(data["new_probes"]),
                    "search_time_s": float(sum(r.probe.duration_s for r in runs))})
    if best is not None:
        scalars[rate_key] = float(best.probe.load)
        if data[tokens_key] is not None:
            scalars[tokens_key] = float(data[tokens_key])
    if best is None and not data["interrupted"]:
        log.warning("capacity_search: no probed load met the SLO (lowest tried %.4g)", min(r.probe.load for r in runs))
    elif unconverged is not None and not data["interrupted"]:
        log.warning("capacity_search: NOT CONVERGED: %s; the reported %s is the highest full-length pass", unconverged,
                    rate_key)
    scalars["converged"] = float(unconverged is None)
    return StageResult(name=ctx.stage_name, stage_dir=ctx.stage_dir, scalars=scalars, data=data,
                       artifacts=paths, partial=any(r.interrupted for r in runs) or bool(data["endpoint_gone"])
                       or bool(data["time_limit_reached"]))


def _sum_known(values: Any) -> int | None:
    known = [int(v) for v in values if v is not None]
    return sum(known) if known else None


AT_CAPACITY_SAMPLE = "at_capacity_sample.npz"


def save_capacity_sample(path: Path, best: ProbeRun | None, slo: Any) -> str | None:
    """The per-request sample of the probe the capacity rests on (judged by this search's SLO), for
    A/B comparisons at capacity (``capacity_compare``); None without a passing probe."""
    from etalon.stages.analysis import run_sample, save_sample

    if best is None or not best.records_path.exists():
        return None
    table = load_table(best.records_path)
    save_sample(path, run_sample(table, slo, float(best.scalars.get("measurement_window_s", 0.0))))
    return str(path)


def probe_row(r: ProbeRun) -> dict[str, Any]:
    p = r.probe
    return {"load": p.load, "passed": p.passed, "metric": r.extra.get("metric"), "value": p.value,
            "threshold": p.threshold, "scale": p.scale, "cached": p.cached, "early_stopped": p.early_stopped,
            "short": p.short, "interrupted": r.interrupted,
            "stop_reason": r.stop_reason, "vetoes": "; ".join(r.extra.get("vetoes") or []) or None,
            "measured_requests": r.extra.get("measured_requests"), "offered_rps": r.extra.get("offered_rps"),
            "achieved_rps": r.extra.get("achieved_rps"), "cached_prompt_tokens": r.extra.get("cached_prompt_tokens"),
            "measured_at": r.extra.get("measured_at"),
            "duration_s": p.duration_s, "measured_s": r.extra.get("measured_s"),
            "output_tokens_per_s": r.scalars.get("output_tokens_per_s"), "records": str(r.records_path),
            "started_ns": r.extra.get("started_ns"), "ended_ns": r.extra.get("ended_ns"),
            "values": dict(r.verdict_values), "limits": dict(r.extra.get("limits") or {})}


def write_probes_csv(path: Path, runs: list[ProbeRun], search_kind: str) -> None:
    import csv

    rows = [probe_row(r) for r in runs]
    load_col = "rate_rps" if search_kind == "rate" else "concurrency"
    with open(path, "w", newline="") as f:
        fields = [load_col] + [k for k in (rows[0] if rows else {"load": 0}) if k != "load"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({load_col: row.pop("load"), **row})


def plot_capacity(path: Path, runs: list[ProbeRun], settings: SearchSettings, best: ProbeRun | None) -> Path:
    """One panel per judged SLO metric (each with its limit), early-stopped probes marked, the
    bracket and the capacity shown (etalon.report.capacity_chart)."""
    from etalon.report.capacity_chart import plot_capacity_chart

    lowest = min((r.probe.load for r in runs if not r.probe.passed and (best is None or r.probe.load > best.probe.load)),
                 default=None)
    return plot_capacity_chart(path, [probe_row(r) for r in runs], settings.search,
                               best.probe.load if best else None, lowest)


__all__ = ["ProbeRun", "SearchSettings", "capacity", "finish", "judge_probe", "probe", "resolve_slo", "run", "search"]
