"""Real-traffic workloads for the load stages: build schedule + prompts from the workload group,
and report what sessions, prefix reuse and ramp stages did."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from hydra.utils import instantiate

from etalon.config import ConfigError
from etalon.core.records import STATUS_OK, RequestRecord
from etalon.core.sessions import END_COMPLETED, END_CONTEXT, END_FAILED, END_UNFINISHED, turn_fits
from etalon.core.sources import PromptSource, SharedPrefixPrompts, SyntheticPrompts

log = logging.getLogger("etalon")
DEFAULT_BLOCK_SIZE_TOKENS = 16  # vLLM's default KV block size, for the expected hit fraction


def prompt_source(cfg: Any) -> PromptSource:
    """The workload's prompt source (synthetic when ``workload.prompts`` is null)."""
    node = cfg.workload.prompts
    try:
        return SyntheticPrompts() if node is None else instantiate(node)
    except Exception as exc:  # instantiate wraps the source's own ValueError
        raise ConfigError(f"workload.prompts: {_root_cause(exc)}") from None


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc)


def build_workload(cfg: Any, arrival: Any, lengths: Any, *, num_requests: int | None,
                   duration_s: float | None, warmup_requests: int, max_total_tokens: int,
                   seed: int, prompt_seed: int | None = None) -> tuple[Any, list[Any]]:
    """The schedule and one prompt per request (a session turn's prompt is its new user message).
    The schedule follows ``seed``; prompt content follows ``prompt_seed`` (None: ``seed``)."""
    from etalon.core.workload import build_schedule
    from etalon.datasets.tokenizers import load_tokenizer
    from etalon.loadgen.plan import gc_paused

    with gc_paused():
        return _build_workload(cfg, arrival, lengths, num_requests=num_requests, duration_s=duration_s,
                               warmup_requests=warmup_requests, max_total_tokens=max_total_tokens, seed=seed,
                               build_schedule=build_schedule, tokenizer=load_tokenizer(cfg.model.tokenizer),
                               prompt_seed=seed if prompt_seed is None else prompt_seed)


def _build_workload(cfg: Any, arrival: Any, lengths: Any, *, num_requests: int | None,
                    duration_s: float | None, warmup_requests: int, max_total_tokens: int, seed: int,
                    build_schedule: Any, tokenizer: Any, prompt_seed: int) -> tuple[Any, list[Any]]:
    from dataclasses import replace

    source = prompt_source(cfg)
    sessions = None
    if cfg.workload.sessions is not None:
        try:
            sessions = instantiate(cfg.workload.sessions)
        except Exception as exc:
            raise ConfigError(f"workload.sessions: {_root_cause(exc)}") from None
    session_turns = None
    if sessions is not None and sessions.from_dataset:
        if not getattr(source, "conversations", False):
            raise ConfigError("workload.sessions.from_dataset needs workload.prompts to be a dataset with "
                              "conversations: true")
        session_turns = lambda count: source.session_turns(count, seed, sessions.turns_max)  # noqa: E731
    schedule = build_schedule(
        arrival, lengths, num_requests=num_requests, duration_s=duration_s,
        warmup_requests=warmup_requests, max_total_tokens=max_total_tokens, seed=seed,
        sessions=sessions, session_turns=session_turns)
    plan = source.build(schedule, tokenizer, prompt_seed, max_total_tokens)
    if sessions is not None and any(not isinstance(p, str) for p in plan.prompts):
        raise ConfigError("workload.sessions: the prompt source must give one text per turn "
                          f"({type(source).__name__} gives chat message lists)")
    schedule = replace(schedule, prompt_tokens=plan.prompt_tokens, output_tokens=plan.output_tokens)
    if isinstance(source, SharedPrefixPrompts):
        block = _block_size(cfg)
        expected = source.expected_hit_fraction(plan.prompt_tokens, prompt_seed, block)
        log.info("shared prefixes: expected prefix-cache hit fraction %.3f (%d groups of %d tokens, "
                 "%d-token blocks, unbounded cache)", expected, source.num_groups, source.prefix_tokens, block)
        print(f"expected prefix-cache hit fraction: {expected:.3f}", flush=True)
    return schedule, plan.prompts


def _block_size(cfg: Any) -> int:
    sim = getattr(cfg, "sim", None)
    size = sim.get("block_size_tokens") if hasattr(sim, "get") else None
    return int(size) if size else DEFAULT_BLOCK_SIZE_TOKENS


def traffic_report(schedule: Any, records: list[RequestRecord], limit_tokens: int | None,
                   arrival: Any = None) -> dict[str, Any]:
    """Prefix-cache, session and ramp-stage figures of a run ({} for plain independent requests)."""
    out: dict[str, Any] = {}
    measured = [r for r in records if not r.warmup]
    cache = prefix_cache_figures(measured)
    if cache:
        out["prefix_cache"] = cache
    if schedule.session_id is not None:
        out["sessions"] = session_figures(schedule, records, limit_tokens)
        out["turns"] = turn_figures(measured)
    if schedule.stage_names:
        out["stages"] = stage_figures(records, schedule, getattr(arrival, "stages", None))
    return out


def prefix_cache_figures(records: list[RequestRecord]) -> dict[str, float]:
    """Server-reported cached share of prompt tokens, over requests that reported both counts."""
    pairs = [(r.cached_tokens, r.server_prompt_tokens) for r in records
             if r.cached_tokens is not None and r.server_prompt_tokens]
    if not pairs:
        return {}
    cached = sum(c for c, _ in pairs)
    prompt = sum(p for _, p in pairs)
    return {"hit_fraction": cached / prompt, "cached_tokens": float(cached),
            "prompt_tokens": float(prompt), "requests": float(len(pairs))}


def session_outcomes(schedule: Any, records: list[RequestRecord], limit_tokens: int | None) -> dict[int, str]:
    """How each session ended: completed, failed_turn, context_limit or unfinished (run over)."""
    by_session: dict[int, list[RequestRecord]] = {}
    for record in records:
        if record.session_id is not None:
            by_session.setdefault(record.session_id, []).append(record)
    session_id, prompt, output = schedule.session_id, schedule.prompt_tokens, schedule.output_tokens
    starts = np.flatnonzero(np.r_[True, session_id[1:] != session_id[:-1]]) if session_id.size else []
    ends = list(starts[1:]) + [session_id.size]
    outcomes: dict[int, str] = {}
    for first, end in zip(starts, ends):
        sid = int(session_id[first])
        sent = sorted(by_session.get(sid, []), key=lambda r: r.turn or 0)
        if len(sent) == end - first:
            outcomes[sid] = END_FAILED if sent[-1].status != STATUS_OK else END_COMPLETED
        elif sent and sent[-1].status != STATUS_OK:
            outcomes[sid] = END_FAILED
        elif sent and not turn_fits(sent[-1].prompt_tokens + sent[-1].output_tokens,
                                    int(prompt[first + len(sent)]), int(output[first + len(sent)]), limit_tokens):
            outcomes[sid] = END_CONTEXT
        elif not sent and not turn_fits(0, int(prompt[first]), int(output[first]), limit_tokens):
            outcomes[sid] = END_CONTEXT
        else:
            outcomes[sid] = END_UNFINISHED
    return outcomes


def session_figures(schedule: Any, records: list[RequestRecord], limit_tokens: int | None) -> dict[str, Any]:
    outcomes = session_outcomes(schedule, records, limit_tokens)
    counts = {name: sum(1 for o in outcomes.values() if o == name)
              for name in (END_COMPLETED, END_FAILED, END_CONTEXT, END_UNFINISHED)}
    sent = sum(1 for r in records if r.session_id is not None)
    e2e = _session_e2e_s(records, outcomes)
    return {"sessions": len(outcomes), **counts, "turns_planned": len(schedule),
            "turns_sent": sent, "turns_not_sent": len(schedule) - sent,
            "session_e2e_mean_s": float(np.mean(e2e)) if e2e else None,
            "session_e2e_p99_s": float(np.quantile(e2e, 0.99)) if e2e else None}


def _session_e2e_s(records: list[RequestRecord], outcomes: dict[int, str]) -> list[float]:
    """First send to last token of each completed (measured) session."""
    spans: dict[int, list[int]] = {}
    for r in records:
        if r.session_id is not None and outcomes.get(r.session_id) == END_COMPLETED and not r.warmup:
            span = spans.setdefault(r.session_id, [r.sent_ns, r.end_ns])
            span[0], span[1] = min(span[0], r.sent_ns), max(span[1], r.end_ns)
    return [(end - start) / 1e9 for start, end in spans.values()]


def turn_figures(records: list[RequestRecord]) -> list[dict[str, float]]:
    """Per turn: requests, mean/p99 TTFT, mean prompt and cached tokens."""
    rows = []
    turns = sorted({r.turn for r in records if r.turn is not None})
    for turn in turns:
        ok = [r for r in records if r.turn == turn and r.status == STATUS_OK and r.first_token_ns is not None]
        ttft = [(r.first_token_ns - r.sent_ns) / 1e9 for r in ok]  # type: ignore[operator]
        cached = [r.cached_tokens for r in ok if r.cached_tokens is not None]
        rows.append({"turn": float(turn), "requests": float(len(ok)),
                     "ttft_mean_s": float(np.mean(ttft)) if ttft else float("nan"),
                     "ttft_p99_s": float(np.quantile(ttft, 0.99)) if ttft else float("nan"),
                     "prompt_tokens_mean": float(np.mean([r.prompt_tokens for r in ok])) if ok else float("nan"),
                     "cached_tokens_mean": float(np.mean(cached)) if cached else float("nan")})
    return rows


def stage_figures(records: list[RequestRecord], schedule: Any, stages: Any = None) -> list[dict[str, Any]]:
    """Per ramp stage: TTFT of the requests planned in it; the nominal rate (the stage's mean
    configured rate), the planned rate (scheduled sends in its time span over its duration) and
    the achieved rate (actual sends in that span over its duration)."""
    rows = []
    start_s = 0.0
    planned_counts = np.bincount(schedule.load_stage, minlength=len(schedule.stage_names))
    for i, name in enumerate(schedule.stage_names):
        rs = [r for r in records if r.load_stage == name and not r.warmup]
        ok = [r for r in rs if r.status == STATUS_OK and r.first_token_ns is not None]
        ttft = [(r.first_token_ns - r.sent_ns) / 1e9 for r in ok]  # type: ignore[operator]
        row: dict[str, Any] = {"stage": name, "requests": len(rs), "errors": len(rs) - len(ok),
                               "ttft_mean_s": float(np.mean(ttft)) if ttft else None,
                               "ttft_p99_s": float(np.quantile(ttft, 0.99)) if ttft else None}
        if stages is not None:
            stage = stages[i]
            end_s = start_s + stage.duration_s
            sent = sum(1 for r in records if start_s * 1e9 <= r.sent_ns < end_s * 1e9)
            row.update(start_s=start_s, duration_s=stage.duration_s,
                       nominal_rate_rps=stage.expected_requests / stage.duration_s,
                       planned_rate_rps=int(planned_counts[i]) / stage.duration_s,
                       achieved_rate_rps=sent / stage.duration_s)
            start_s = end_s
        rows.append(row)
    return rows


def traffic_scalars(traffic: dict[str, Any]) -> dict[str, float]:
    """Flat MLflow metrics of a traffic report."""
    out: dict[str, float] = {}
    if "prefix_cache" in traffic:
        out["prefix_cache_hit_fraction"] = traffic["prefix_cache"]["hit_fraction"]
    sessions = traffic.get("sessions")
    if sessions:
        for key in ("sessions", END_COMPLETED, END_FAILED, END_CONTEXT, END_UNFINISHED, "turns_not_sent"):
            out[f"sessions_{key}" if key != "sessions" else "sessions_total"] = float(sessions[key])
        if sessions["session_e2e_mean_s"] is not None:
            out["session_e2e_mean_s"] = sessions["session_e2e_mean_s"]
    return out


def format_traffic(traffic: dict[str, Any]) -> str:
    """Terminal lines for the prefix cache, sessions and ramp stages of a run."""
    lines = []
    cache = traffic.get("prefix_cache")
    if cache:
        lines.append(f"prefix cache hit fraction (server-reported)   {cache['hit_fraction']:.3f}")
    sessions = traffic.get("sessions")
    if sessions:
        lines.append(f"sessions: {sessions['sessions']} ({sessions[END_COMPLETED]} completed, "
                     f"{sessions[END_FAILED]} ended by a failed turn, {sessions[END_CONTEXT]} by the context "
                     f"limit, {sessions[END_UNFINISHED]} unfinished); turns sent {sessions['turns_sent']} "
                     f"of {sessions['turns_planned']}")
        for row in traffic.get("turns", []):
            lines.append(f"  turn {int(row['turn'])}: {int(row['requests'])} ok, TTFT mean "
                         f"{row['ttft_mean_s'] * 1e3:.1f} ms, cached tokens mean {row['cached_tokens_mean']:.0f}")
    for row in traffic.get("stages", []):
        rates = ""
        if "achieved_rate_rps" in row:
            rates = f", rate planned {row['planned_rate_rps']:.2f} / achieved {row['achieved_rate_rps']:.2f} rps"
        ttft = "n/a" if row["ttft_mean_s"] is None else f"{row['ttft_mean_s'] * 1e3:.1f} ms"
        lines.append(f"stage {row['stage']}: {row['requests']} requests{rates}, TTFT mean {ttft}")
    return "\n".join(lines)
