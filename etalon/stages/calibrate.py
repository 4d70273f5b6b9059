"""Calibrate the simulator into a twin of the server under test, and compare their capacities.

``run``: profile prefill (lone requests at several prompt lengths), decode (B concurrent
requests at several batch sizes and two prompt lengths) and the throughput of a saturated closed
loop at the batch limit (the per-request cost), fit the engine latency model
(etalon.core.calibration), write a ``conf/sim``-style preset. ``twin_capacity``: the same capacity
search on a simulator launched with that preset, and the ratio twin / real.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson

from etalon.core.arrivals import ClosedLoop
from etalon.core.calibration import (DECODE_WINDOW, decode_step_s, engine_latency, fit_per_new_seq, fit_prefill_linear,
                                     usable_points)
from etalon.core.lengths import FixedLengths
from etalon.core.probe_checks import fitted_rate_rps
from etalon.stages.base import StageContext, StageError, StageResult
from etalon.stages.benchmark import measure, resolve_slo

log = logging.getLogger("etalon")

PRESET_FILE = "twin_sim.yaml"
RESULT_FILE = "twin_vs_real.json"
DEFAULT_MAX_NUM_SEQS = 256
SATURATION_WAVES = 4  # at least this many waves of max_num_seqs requests measure the throughput


def run(ctx: StageContext, *, prompt_tokens: list[int] = (64, 128, 256, 512), repetitions: int = 3,  # type: ignore[assignment]
        batch_sizes: list[int] = (1, 2, 4, 8), decode_prompt_tokens: list[int] = (64, 512),  # type: ignore[assignment]
        decode_output_tokens: int = 32, max_num_seqs: int | None = None, max_num_batched_tokens: int = 2048,
        kv_cache_tokens: int = 1_000_000, preset_path: str | None = None) -> StageResult:
    """Profile the endpoint, fit the twin's latency model, write its preset. Every measurement
    draws its own prompt text: with one seed, a 128-token prompt would start with the 64-token one
    of the step before, and a prefix-caching server would prefill only the difference.

    ``max_num_seqs``: the server's batch limit; null takes the launched template's
    ``server.args.max_num_seqs`` (or the simulator's own), else 256. Batch sizes above it are
    not profiled (a capped batch would bias the fit)."""
    if repetitions < 1 or decode_output_tokens < 2 * DECODE_WINDOW or not (prompt_tokens and batch_sizes
                                                                            and decode_prompt_tokens):
        raise StageError(f"calibrate: needs repetitions >= 1, decode_output_tokens >= {2 * DECODE_WINDOW} (steps are "
                         f"read over {DECODE_WINDOW}-token windows), prompt_tokens, batch_sizes and "
                         "decode_prompt_tokens")
    seqs = max_num_seqs or declared_max_num_seqs(ctx) or DEFAULT_MAX_NUM_SEQS
    batches = sorted({int(b) for b in batch_sizes if 1 <= int(b) <= seqs})
    slo = resolve_slo(ctx)
    prefill = [(p, t) for p in prompt_tokens for t in _prefill_ttfts(ctx, slo, int(p), repetitions)]
    decode = [_decode_point(ctx, slo, b, int(p), decode_output_tokens, repetitions)
              for b in batches for p in decode_prompt_tokens]
    prefill, dropped_prefill = usable_points(prefill)
    decode, dropped_decode = usable_points(decode)
    for name, dropped in (("prefill", dropped_prefill), ("decode", dropped_decode)):
        if dropped:
            log.warning("calibrate: dropped %d %s point(s) with no measurable duration: %s", len(dropped), name,
                        dropped)
    if len({p for p, _ in prefill}) < 2 or len(decode) < 3:
        raise StageError(f"calibrate: too few usable points to fit ({len(prefill)} prefill, {len(decode)} decode); "
                         "the server streamed no timed tokens (see the stage's records)")
    latency = engine_latency(prefill, decode)
    full = (int(seqs), int(decode_prompt_tokens[0]), decode_output_tokens)  # batch, prompt, output
    saturation = _saturation_point(ctx, slo, *full, max(repetitions, SATURATION_WAVES))
    latency["per_new_seq_s"] = fit_per_new_seq(latency, *full, saturation["throughput_rps"],
                                               fit_prefill_linear(prefill)[0])
    sim = {"scheduler": "chunked", "max_num_seqs": int(seqs), "kv_cache_tokens": int(kv_cache_tokens),
           "max_num_batched_tokens": int(max(max_num_batched_tokens, seqs)), "latency": latency}
    ctx.stage_dir.mkdir(parents=True, exist_ok=True)
    paths = [write_preset(ctx.stage_dir / PRESET_FILE, sim, ctx.endpoint.base_url)]
    if preset_path:
        paths.append(write_preset(Path(preset_path), sim, ctx.endpoint.base_url))
        log.info("calibrate: twin preset written to %s (use sim=%s)", preset_path, Path(preset_path).stem)
    data = {"sim": sim, "overrides": twin_overrides(sim), "prefill_points": prefill, "decode_points": decode,
            "saturation": saturation}
    (ctx.stage_dir / "calibration.json").write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    paths.append(ctx.stage_dir / "calibration.json")
    scalars = {f"twin_{k}": float(v) for k, v in latency.items()}
    scalars["twin_max_num_seqs"] = float(seqs)
    scalars["calibration_saturation_rps"] = float(saturation["throughput_rps"])
    return StageResult(name=ctx.stage_name, stage_dir=ctx.stage_dir, scalars=scalars, data=data, artifacts=paths)


def declared_max_num_seqs(ctx: StageContext) -> int | None:
    cfg = ctx.cfg
    if cfg.launches_server and cfg.server is not None:
        if cfg.server.engine == "sim" and isinstance(cfg.sim, dict):
            return int(cfg.sim["max_num_seqs"]) if cfg.sim.get("max_num_seqs") else None
        value = cfg.server.args.get("max_num_seqs")
        return int(value) if value else None
    return None


def _prefill_ttfts(ctx: StageContext, slo: Any, prompt: int, repetitions: int) -> list[float]:
    m = measure(ctx, arrival=ClosedLoop(concurrency=1), lengths=FixedLengths(prompt, 1),
                out_dir=ctx.stage_dir / f"prefill_{prompt}", slo=slo, num_requests=repetitions, warmup_requests=1,
                prompt_seed=ctx.prompt_seed("prefill", prompt))
    t = m.table.select(~m.table.warmup & m.table.ok)
    return [float(x) for x in (t.first_token_ns - t.sent_ns) / 1e9]


def _decode_point(ctx: StageContext, slo: Any, batch: int, prompt: int, output: int,
                  waves: int) -> tuple[float, float, float]:
    """(B, summed context at the median step, median decode step in s; NaN if none) of ``waves``
    waves of B concurrent requests, after one warm-up wave (a server's first batch of a new size
    is slow: kernels, allocations)."""
    m = measure(ctx, arrival=ClosedLoop(concurrency=batch), lengths=FixedLengths(prompt, output),
                out_dir=ctx.stage_dir / f"decode_b{batch}_p{prompt}", slo=slo, num_requests=batch * waves,
                warmup_requests=batch, prompt_seed=ctx.prompt_seed("decode", batch, prompt))
    t = m.table.select(~m.table.warmup & m.table.ok)
    step = decode_step_s(t.token_ns, t.token_offsets) if len(t) else None
    # the median step attends to each prompt plus about half of its output
    return float(batch), float(batch * (prompt + output / 2)), float("nan") if step is None else step


def _saturation_point(ctx: StageContext, slo: Any, seqs: int, prompt: int, output: int,
                      waves: int) -> dict[str, float]:
    """Completed requests per second of a closed loop of ``seqs`` users (the batch limit: the engine
    never idles), after one warm-up wave."""
    m = measure(ctx, arrival=ClosedLoop(concurrency=seqs), lengths=FixedLengths(prompt, output),
                out_dir=ctx.stage_dir / f"saturation_b{seqs}_p{prompt}", slo=slo, num_requests=seqs * waves,
                warmup_requests=seqs, prompt_seed=ctx.prompt_seed("saturation", seqs, prompt))
    t = m.table.select(~m.table.warmup & m.table.ok)
    rate = fitted_rate_rps(t.end_ns) if len(t) else float("nan")
    if not rate > 0:
        raise StageError(f"calibrate: the saturation run ({seqs} users) completed too few requests to measure a rate")
    return {"batch": seqs, "prompt_tokens": prompt, "output_tokens": output, "throughput_rps": rate}


def twin_overrides(sim: dict[str, Any]) -> list[str]:
    """Overrides that turn any experiment into the same experiment on the twin."""
    out = ["server=sim", "endpoint.base_url=null", f"++sim.scheduler={sim['scheduler']}"]
    for key in ("max_num_seqs", "max_num_batched_tokens", "kv_cache_tokens"):
        out.append(f"++sim.{key}={sim[key]}")
    out += [f"++sim.latency.{k}={v:.9g}" for k, v in sim["latency"].items()]
    return out


def write_preset(path: Path, sim: dict[str, Any], source: str) -> Path:
    lines = [f"# A twin of {source}, fitted by pipeline=calibrate (prefill and decode profiles).",
             "served_model_name: ${model.name}", "context_tokens: ${model.context_tokens}",
             "tokenizer: ${model.tokenizer}", f"scheduler: {sim['scheduler']}",
             f"max_num_seqs: {sim['max_num_seqs']}", f"max_num_batched_tokens: {sim['max_num_batched_tokens']}",
             f"kv_cache_tokens: {sim['kv_cache_tokens']}", "block_size_tokens: 16", "latency:"]
    lines += [f"  {k}: {v:.9g}" for k, v in sim["latency"].items()]
    lines += ["output_lengths:", "  kind: fixed", "  median_tokens: 128", "seed: 0", "emission_log_path: null"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def twin_capacity(ctx: StageContext, *, twin_from: str = "calibrate", real_from: str = "capacity_search",
                  runner: Any = None, **params: Any) -> StageResult:
    """The real server's capacity (stage ``real_from``) against the same search on the twin."""
    from hydra.utils import instantiate

    from etalon.stages.capacity_parallel import DEFAULT_RUNNER, SearchConfig
    from etalon.stages.capacity_search import SearchSettings

    SearchSettings(**params)
    real = ctx.result(real_from).data
    overrides = tuple(ctx.result(twin_from).data["overrides"])
    active = runner if runner is not None else instantiate(DEFAULT_RUNNER)
    outcome = active.run_searches(ctx, [SearchConfig("twin", overrides)], dict(params))[0]
    if outcome.error:
        raise StageError(f"twin_capacity: the search on the twin failed: {outcome.error}")
    key = "max_rate_rps" if params.get("search", "rate") == "rate" else "max_concurrency"
    twin_cap, real_cap = outcome.data.get(key), real.get(key)
    ratio = twin_cap / real_cap if twin_cap and real_cap else None
    data = {"real": real_cap, "twin": twin_cap, "twin_over_real": ratio, "load": key, "overrides": list(overrides)}
    ctx.stage_dir.mkdir(parents=True, exist_ok=True)
    (ctx.stage_dir / RESULT_FILE).write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    print(f"etalon: capacity real {real_cap} / twin {twin_cap} ({key}); twin/real = "
          f"{'n/a' if ratio is None else f'{ratio:.3f}'}", flush=True)
    scalars = {f"real_{key}": real_cap, f"twin_{key}": twin_cap, "twin_capacity_ratio": ratio}
    return StageResult(name=ctx.stage_name, stage_dir=ctx.stage_dir, artifacts=[ctx.stage_dir / RESULT_FILE],
                       scalars={k: float(v) for k, v in scalars.items() if v is not None}, data=data)


__all__ = ["declared_max_num_seqs", "run", "twin_capacity", "twin_overrides", "write_preset"]
