"""The benchmark stage: one load run against the endpoint, with metrics, tables and plots."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson
from hydra.utils import instantiate

from etalon.config import ConfigError, EtalonConfig
from etalon.core.accounting import accounting_notes, accounting_scalars, token_accounting
from etalon.core.records import RecordTable, RequestRecord
from etalon.stages.base import StageContext, StageError, StageResult
from etalon.stages.server_metrics import start_scraper, summarize_server

log = logging.getLogger("etalon")

RECORDS_FILE = "records.jsonl"
SUMMARY_FILE = "summary.json"
ACTORS_FILE = "load_actors.json"


@dataclass
class Measurement:
    """One load run, measured: the records, their table, the run summary and the SLO verdict."""

    records_path: Path
    table: RecordTable | None  # None: records_format=parquet, the records stay in the file
    summary: Any
    load: Any
    verdict: Any
    partial: bool
    traffic: dict[str, Any] = field(default_factory=dict)
    accounting: dict[str, Any] | None = None  # etalon.core.accounting.token_accounting
    server: Any = None  # etalon.stages.server_metrics.ServerMetrics

    @property
    def endpoint_gone(self) -> str | None:
        """The run stopped because the endpoint went away (every request failed to connect)."""
        from etalon.loadgen.run import STOP_ENDPOINT_GONE

        reason = self.load.stop_reason
        return reason if reason and reason.startswith(STOP_ENDPOINT_GONE) else None

    @property
    def interrupted(self) -> bool:
        """The user pressed Ctrl-C: report what was measured, then stop the pipeline."""
        return self.load.stop_reason == "interrupted"


def run(ctx: StageContext, *, rate_from: str | None = None, rate_rps: float | None = None,
        repeats: int = 1) -> StageResult:
    """Benchmark the endpoint with the configured workload.

    ``rate_rps`` replaces the arrival rate; ``rate_from`` takes the load from an earlier stage: its
    ``data["max_rate_rps"]`` for open-loop arrivals (a rate search), or its
    ``data["max_concurrency"]`` for a closed loop (a concurrency search). ``repeats`` > 1 runs
    the same load again with seeds workload.seed + 1, ... and reports the spread between repeats.
    """
    from etalon.stages.repeats import check_repeats, run_repeats, spread_scalars

    check_repeats(repeats)
    arrival = _arrival(ctx, rate_from, rate_rps)
    slo = resolve_slo(ctx)

    def once(seed: int | None, out_dir: Path) -> Measurement:
        return measure(ctx, arrival=arrival, lengths=instantiate(ctx.cfg.workload.lengths), out_dir=out_dir,
                       slo=slo, seed=seed, progress=ctx.cfg.client.progress, bounded=True)

    m = once(None, ctx.stage_dir)
    repeat_block = run_repeats(ctx, m, repeats, once) if repeats > 1 and not m.interrupted else None
    from etalon.report import format_summary, write_report
    from etalon.report.traffic_plots import write_traffic_plots
    from etalon.stages.analysis import steady_rates

    # With records kept only on disk (records_format=parquet) there is no table in memory: no
    # steady-window rates, intervals or time series then (summary.json says why).
    steady = steady_rates(m.table) if m.table is not None else {}
    _add_intervals(ctx, m, slo, steady, repeat_block)
    artifacts = [m.records_path, ctx.stage_dir / SUMMARY_FILE]
    artifacts += write_report(ctx.stage_dir, m.table, m.summary, plots=ctx.cfg.plots)
    if ctx.cfg.plots:
        from etalon.report.timeseries import TIMESERIES_FILE, plot_timeseries

        artifacts += write_traffic_plots(ctx.stage_dir, m.load.records, m.traffic)
        if m.table is not None:
            artifacts.append(plot_timeseries(ctx.stage_dir / TIMESERIES_FILE, m.table))
    artifacts += m.server.artifacts
    text = format_summary(m.summary, header=summary_header(ctx, arrival))
    if m.traffic:
        from etalon.stages.traffic import format_traffic

        text += "\n" + format_traffic(m.traffic)
    if m.server.scalars:
        text += "\n" + format_server_line(m.server.scalars, m.summary.scalars())
    artifacts.append(save_summary_text(ctx, text))
    if ctx.cfg.print_summary:
        print(text, flush=True)
    scalars = dict(m.summary.scalars())
    check = verify_capacity(ctx, rate_from, m) if rate_from is not None else None
    if check is not None:
        scalars["capacity_verified"] = float(check["verified"])
    if m.accounting is not None:
        scalars.update(accounting_scalars(m.accounting))
        for note in m.accounting["notes"]:
            log.warning("benchmark: %s", note)
    from etalon.stages.traffic import traffic_scalars

    scalars.update(traffic_scalars(m.traffic))
    scalars.update(steady)
    verdict = _verdict_dict(m.verdict)
    if repeat_block is not None:
        scalars.update(spread_scalars(repeat_block))
        if verdict is not None and None not in repeat_block["slo_passed"]:
            verdict["repeats_passed"] = repeat_block["slo_passed"]
            verdict["passed"] = all(repeat_block["slo_passed"])
    if verdict is not None:
        scalars["slo_passed"] = float(verdict["passed"])
    scalars.update(m.server.scalars)
    return StageResult(
        name=ctx.stage_name,
        stage_dir=ctx.stage_dir,
        scalars=scalars,
        data={
            "verdict": verdict,
            "rate_rps": getattr(arrival, "rate_rps", None),
            "concurrency": getattr(arrival, "concurrency", None),
            "interrupted": m.interrupted or bool(repeat_block and repeat_block["interrupted"]),
            "endpoint_gone": m.endpoint_gone,
            "token_accounting": m.accounting,
            "capacity_check": check,
        },
        artifacts=artifacts,
        partial=m.partial,
    )


def _add_intervals(ctx: StageContext, m: Measurement, slo: Any, steady: dict[str, float],
                   repeat_block: dict[str, Any] | None = None) -> None:
    """Bootstrap confidence intervals of the headline metrics, the steady-window rates and the
    repeats' spread, added to the summary.json that ``measure`` wrote."""
    from etalon.stages.analysis import intervals_block, run_sample

    path = ctx.stage_dir / SUMMARY_FILE
    payload = orjson.loads(path.read_bytes()) if path.exists() else summary_payload(m.summary, m.verdict)
    payload["steady"] = steady
    if repeat_block is not None:
        payload["repeats"] = repeat_block
    if m.table is None:
        payload["confidence_intervals"] = {"skipped": "records kept on disk only (records_format=parquet)"}
    elif ctx.cfg.bootstrap_replicates >= 1 and m.summary.counts.get("ok", 0) > 0:
        sample = run_sample(m.table, slo, m.summary.measurement_window_s)
        payload["confidence_intervals"] = intervals_block(
            sample, level=ctx.cfg.confidence_level, replicates=ctx.cfg.bootstrap_replicates, seed=ctx.cfg.workload.seed)
    write_summary(path, payload)


def summary_header(ctx: StageContext, arrival: Any) -> list[tuple[str, str]]:
    """What the summary table describes: endpoint, model, workload and the load it was driven at."""
    cfg = ctx.cfg
    w = cfg.workload
    size = f"{w.num_requests} requests" if w.num_requests is not None else ""
    if w.duration_s is not None:
        size = f"{size}, <= {w.duration_s:g} s" if size else f"{w.duration_s:g} s"
    if w.warmup_requests:
        size += f" (+{w.warmup_requests} warm-up)"
    lengths = str(w.lengths.get("_target_", "?")).rsplit(".", 1)[-1] if isinstance(w.lengths, dict) else "?"
    kind = type(arrival).__name__
    if getattr(arrival, "closed_loop", False):
        load = f"{kind}, concurrency {getattr(arrival, 'concurrency', '?')}"
    else:
        rate = getattr(arrival, "rate_rps", None)
        load = f"{kind}, {rate:g} req/s" if isinstance(rate, (int, float)) else kind
    return [
        ("endpoint", f"{cfg.endpoint_label} {ctx.endpoint.base_url}"),
        ("model", cfg.model.name),
        ("workload", f"{lengths}, {size}"),
        ("load", load),
        ("stage", ctx.stage_name),
    ]


SUMMARY_TEXT = "summary.txt"


def save_summary_text(ctx: StageContext, text: str) -> Path:
    """The terminal summary as text: the stage's own file, and appended to the run's summary.txt."""
    path = ctx.stage_dir / SUMMARY_TEXT
    path.write_text(text + "\n")
    with open(Path(ctx.run_dir) / SUMMARY_TEXT, "a") as run_file:
        run_file.write(text + "\n\n")
    return path


def measure(
    ctx: StageContext,
    *,
    arrival: Any,
    lengths: Any,
    out_dir: Path,
    slo: Any,
    num_requests: int | None = None,
    duration_s: float | None = None,
    warmup_requests: int | None = None,
    seed: int | None = None,
    should_stop: Callable[[list[RequestRecord]], str | None] | None = None,
    progress: bool = False,
    bounded: bool = False,
    tracker: Any = None,
    prompt_seed: int | None = None,
) -> Measurement:
    """Build the schedule and prompts, drive the endpoint, summarise. Workload values not given
    here come from the config's workload group; prompt text comes from ``prompt_seed`` (default:
    this stage's seed derived from the run, so no two stages or runs send the same prompts).
    ``bounded`` with ``client.records_format=parquet``: keep no record in memory and summarise
    from the file in chunks (``Measurement.table`` None, no traffic report or token accounting)."""
    from etalon.loadgen import run_load

    from etalon.stages.traffic import build_workload, traffic_report

    cfg = ctx.cfg
    w = cfg.workload
    seed = w.seed if seed is None else seed
    limit = max_total_tokens(cfg)
    schedule, prompts = build_workload(
        cfg,
        arrival,
        lengths,
        num_requests=w.num_requests if num_requests is None and duration_s is None else num_requests,
        duration_s=w.duration_s if num_requests is None and duration_s is None else duration_s,
        warmup_requests=w.warmup_requests if warmup_requests is None else warmup_requests,
        max_total_tokens=limit,
        seed=seed,
        prompt_seed=ctx.prompt_seed() if prompt_seed is None else prompt_seed,
    )
    if schedule.clipped_requests:
        log.warning(
            "%d of %d requests asked for more than %d tokens (prompt + output) and were shortened "
            "to fit (workload.max_total_tokens, default model.context_tokens)",
            schedule.clipped_requests, len(schedule.prompt_tokens), limit,
        )
    check_fits_server(schedule, ctx.endpoint.server)
    out_dir.mkdir(parents=True, exist_ok=True)
    records_path = out_dir / RECORDS_FILE
    settings = load_settings(cfg)
    from etalon.report import figure_pool

    figure_pool.wait()  # no figure is drawn beside a load: it would share the cores
    scraper = start_scraper(ctx)
    try:
        load = run_load(
            schedule,
            prompts,
            ctx.endpoint,
            settings,
            records_path,
            should_stop=should_stop,
            progress=progress,
            keep_records=not (bounded and settings.records_format == "parquet"),
            max_context_tokens=limit,
        )
    finally:
        scrapes = scraper.stop() if scraper is not None else []
    # Each actor's epoch on the machine's monotonic clock: record time + epoch = monotonic time,
    # which lines records up with server-side logs (the simulator's emission log).
    try:
        (out_dir / ACTORS_FILE).write_bytes(orjson.dumps(load.actors))
    except OSError as exc:
        log.warning("cannot write %s: %s", out_dir / ACTORS_FILE, exc)
    if load.stop_reason and load.stop_reason != "interrupted":
        log.warning("load stopped before the schedule ran out: %s", load.stop_reason)
    traffic: dict[str, Any] = {}  # the traffic report needs the records in memory
    if load.records_in_memory:
        table: RecordTable | None = RecordTable.from_records(load.records)
        summary, verdict = summarize_table(table, slo, partial=load.partial)
        traffic = traffic_report(schedule, load.records, limit, arrival)
    else:  # bounded memory: summarised from the Parquet file in chunks; no whole-run verdict
        from etalon.records.chunked import summarize_file

        table, verdict = None, None
        summary = summarize_file(load.records_path, slo, batch_rows=settings.records_batch_rows, partial=load.partial)
    # Server metrics beside the client's (the client's in-flight series needs the records in memory).
    server = summarize_server(scrapes, table if table is not None else RecordTable.from_records([]),
                              load.wall_start_ns, summary.scalars(), out_dir,
                              tracker if tracker is not None else ctx.tracker, plots=ctx.cfg.plots)
    summary_dict = summary.to_dict()
    if load.stop_reason:
        summary_dict["stop_reason"] = load.stop_reason
    if traffic:
        summary_dict["traffic"] = traffic
    summary_dict["slo_passed"] = None if verdict is None else bool(verdict.passed)
    summary_dict["slo"] = _verdict_dict(verdict)
    accounting = _accounting(load.records) if load.records_in_memory else None  # needs the records
    if accounting is not None:
        summary_dict["token_accounting"] = accounting
        summary_dict["scalars"].update(accounting_scalars(accounting))
    summary_dict["server"] = server.scalars
    write_summary(out_dir / SUMMARY_FILE, summary_dict)
    check_outputs(summary, cfg.endpoint.output_check, out_dir)
    return Measurement(load.records_path or records_path, table, summary, load, verdict, load.partial, traffic,
                       accounting, server)


def _accounting(records: list[RequestRecord]) -> dict[str, Any]:
    """Token accounting of the measured rows, with the notes a reader must see (see core.accounting)."""
    from etalon.core.summary import CANCELLED

    acc = token_accounting(r for r in records if not r.warmup and r.error_type != CANCELLED)
    acc["notes"] = accounting_notes(acc)
    return acc


def verify_capacity(ctx: StageContext, rate_from: str, m: Measurement) -> dict[str, Any] | None:
    """Judge the benchmark at a found capacity against the same SLO: when it fails there, the
    capacity is flagged (both figures kept and told), never silently handed on."""
    if m.verdict is None or m.interrupted:
        return None
    found = ctx.result(rate_from).data
    check = {
        "verified": bool(m.verdict.passed),
        "load": found.get("max_rate_rps", found.get("max_concurrency")),
        "search_verdict": found.get("verdict_at_max"),
        "benchmark_verdict": dict(m.verdict.values),
        "benchmark_goodput_fraction": m.summary.rates.get("goodput_fraction"),
    }
    if not m.verdict.passed:
        log.warning(
            "benchmark: FAILS the SLO at the capacity %s found (%.4g): %s = %.4g > %.4g here (goodput fraction "
            "%.3f), while its probe judged %s; the capacity is not confirmed: re-run the search with longer probes "
            "or a lower precision", rate_from, check["load"] or float("nan"), m.verdict.metric, m.verdict.value,
            m.verdict.threshold, check["benchmark_goodput_fraction"] or float("nan"), check["search_verdict"])
    return check


def summary_payload(summary: Any, verdict: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """summary.json's content: the run summary, ``slo_passed`` and the SLO's judged values (and ``extra``)."""
    payload = summary.to_dict()
    payload["slo_passed"] = None if verdict is None else bool(verdict.passed)
    payload["slo"] = _verdict_dict(verdict)
    payload.update(extra or {})
    return payload


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """``summary.json``; on a full disk the summary goes to stderr instead (it is all in memory)."""
    import sys

    from etalon.loadgen.sink import is_disk_full

    data = orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    try:
        path.write_bytes(data)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        print(f"etalon: cannot write {path} ({exc}); the summary is here instead:\n{data.decode()}",
              file=sys.stderr, flush=True)


def check_fits_server(schedule: Any, identity: Any) -> None:
    """Reject, before any request, a workload whose longest request exceeds the server's context."""
    limit = getattr(identity, "max_model_len", None)
    if limit is None or len(schedule.prompt_tokens) == 0:
        return
    totals = schedule.prompt_tokens.astype("int64") + schedule.output_tokens.astype("int64")
    i = int(totals.argmax())
    if int(totals[i]) > limit:
        raise ConfigError(
            f"workload: the longest request needs {int(totals[i])} tokens (prompt {int(schedule.prompt_tokens[i])} + "
            f"output {int(schedule.output_tokens[i])}) but the server's context limit is {limit} "
            f"({identity.context_source}); shorten the lengths or set workload.max_total_tokens<={limit}"
        )


def format_server_line(server: dict[str, float], client: dict[str, float]) -> str:
    """Client vs server medians (the gap is network + client) and the server's mean load."""
    parts = []
    for kind, label in (("ttft", "TTFT"), ("itl", "TBT/ITL"), ("e2e", "e2e")):
        key = {"ttft": "ttft", "itl": "tbt", "e2e": "e2e"}[kind]
        if f"server_{kind}_p50_s" in server and f"{key}_p50_s" in client:
            parts.append(f"{label} p50 client {client[f'{key}_p50_s'] * 1e3:.4g} ms / server "
                         f"{server[f'server_{kind}_p50_s'] * 1e3:.4g} ms")
    if "server_running_mean" in server:
        parts.append(f"running {server['server_running_mean']:.3g} (client in flight "
                     f"{server.get('client_inflight_mean', float('nan')):.3g})")
    if "server_kv_cache_usage_max" in server:
        parts.append(f"KV usage max {server['server_kv_cache_usage_max']:.1%}")
    return _wrapped("server (/metrics): ", parts)


def _wrapped(head: str, parts: list[str], width: int = 100) -> str:
    """``head`` + ``parts`` joined by "; ", broken into lines of at most ``width`` columns (the
    terminal summary's width), continuation lines indented under the first part."""
    lines, line = [], head
    for i, part in enumerate(parts):
        piece = part + (";" if i < len(parts) - 1 else "")
        if line != head and len(line) + len(piece) + 1 > width:
            lines.append(line.rstrip())
            line = " " * len(head)
        line += piece + " "
    lines.append(line.rstrip())
    return "\n".join(lines)


def check_outputs(summary: Any, mode: str, out_dir: Path) -> None:
    """``endpoint.output_check``: warn about flagged outputs, or fail (after records and summary
    are written) when any measured request came back short, long or with implausible usage."""
    checks = summary.output_checks
    if mode == "off" or not checks.get("flagged"):
        return
    named = ", ".join(f"{k}: {v}" for k, v in checks.get("flags", {}).items())
    total = summary.counts.get("total", 0)
    bad = checks.get("check_flagged", 0)
    if mode == "warn" or not bad:
        log.warning("output checks: %d of %d requests flagged (%s); see etalon.core.chunks.FLAGS",
                    checks["flagged"], total, named)
        return
    raise StageError(
        f"endpoint.output_check=fail: {bad} of {total} requests did not return "
        f"the output asked for ({named}); records and summary are in {out_dir}"
    )


def summarize_table(table: RecordTable, slo: Any, *, partial: bool) -> tuple[Any, Any]:
    """Run summary with the SLO's deadlines and per-request verdicts, and the SLO's judgement."""
    from etalon.core.summary import summarize

    summary = summarize(
        table,
        ttft_deadline_s=slo.ttft_deadlines_s(table.prompt_tokens),
        tbt_deadline_s=slo.tbt_deadline_s,
        target_miss_rate=slo.target_miss_rate,
        slo_ok=slo.request_ok(table),
        partial=partial,
    )
    measured = table.select(~table.warmup)
    verdict = slo.judge(table) if len(measured) else None
    return summary, verdict


def resolve_slo(ctx: StageContext) -> Any:
    """The configured SLO with its prefill predictor (saved file, or an earlier stage's result).

    Fails before any probe when the deadline SLO has no profile, with the one clear message."""
    from etalon.core.prefill import PrefillPredictor
    from etalon.core.slo import NO_PROFILE_MESSAGE, SloConfigError
    from etalon.stages.prefill_profile import load_profile

    slo = instantiate(ctx.cfg.slo)
    if not getattr(slo, "needs_prefill_profile", False):
        return slo
    path = getattr(slo, "prefill_profile", None)
    if path:
        return slo.with_predictor(load_profile(path))
    for result in ctx.results.values():
        if "predictor" in result.data:
            return slo.with_predictor(PrefillPredictor.from_dict(result.data["predictor"]))
    raise SloConfigError(NO_PROFILE_MESSAGE)


def load_settings(cfg: EtalonConfig) -> Any:
    """The load generator's settings: the ``client`` group's fields that loadgen knows."""
    import dataclasses

    from etalon.loadgen import LoadSettings

    names = {f.name for f in dataclasses.fields(LoadSettings)}
    return LoadSettings(**{k: v for k, v in dataclasses.asdict(cfg.client).items() if k in names})


def max_total_tokens(cfg: EtalonConfig) -> int:
    """The workload's cap on prompt + output tokens; above the model's context is a config error."""
    limit = cfg.workload.max_total_tokens
    if limit is None:
        return cfg.model.context_tokens
    if limit > cfg.model.context_tokens:
        raise ConfigError(
            f"workload.max_total_tokens: {limit} is above the model's context "
            f"(model.context_tokens={cfg.model.context_tokens})"
        )
    return limit


def _arrival(ctx: StageContext, rate_from: str | None, rate_rps: float | None) -> Any:
    """The workload's arrival process, at the load a parameter or an earlier stage asks for."""
    from etalon.core.arrivals import ClosedLoop

    arrival = instantiate(ctx.cfg.workload.arrival)
    if rate_from is None:
        return arrival if rate_rps is None else arrival.with_rate(rate_rps)
    data = ctx.result(rate_from).data
    if arrival.closed_loop:
        if data.get("max_concurrency") is None:
            raise StageError(f"stage {rate_from!r} found no concurrency that meets the SLO; nothing to benchmark at")
        return ClosedLoop(concurrency=int(data["max_concurrency"]), think_time_s=arrival.think_time_s)
    if data.get("max_rate_rps") is None:
        raise StageError(f"stage {rate_from!r} found no rate that meets the SLO; nothing to benchmark at")
    return arrival.with_rate(float(data["max_rate_rps"]))


def _verdict_dict(verdict: Any) -> dict[str, Any] | None:
    if verdict is None:
        return None
    return {"passed": verdict.passed, "metric": verdict.metric, "value": verdict.value, "threshold": verdict.threshold,
            "values": dict(verdict.values), "limits": dict(getattr(verdict, "limits", {}) or {})}
