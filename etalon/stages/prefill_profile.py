"""The prefill_profile stage: TTFT of lone requests per prompt length, fitted to a predictor."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import orjson

from etalon.core.prefill import PrefillPredictor, fit_prefill, robust_prefill_s
from etalon.stages.base import StageContext, StageError, StageResult

log = logging.getLogger("etalon")

PROFILE_FILE = "prefill_profile.json"
MEASUREMENTS_FILE = "measurements.json"
PLOT_FILE = "prefill_profile.png"


@dataclass(frozen=True)
class ProfileLengths:
    """Length sampler that cycles through the profiled prompt lengths in order (no randomness).

    Interleaving the lengths (256, 512, ..., 256, 512, ...) spreads any drift of the endpoint
    over all lengths instead of biasing the last one.
    """

    prompt_tokens: tuple[int, ...]
    output_tokens: int
    warmup_requests: int = 0  # these come first and use the shortest length

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        cycle = np.resize(np.asarray(self.prompt_tokens, dtype=np.int64), max(n - self.warmup_requests, 0))
        warmup = np.full(min(self.warmup_requests, n), min(self.prompt_tokens), dtype=np.int64)
        return np.concatenate([warmup, cycle]), np.full(n, self.output_tokens, dtype=np.int64)


def profile_lengths(
    min_prompt_tokens: int, max_prompt_tokens: int, context_tokens: int, output_tokens: int
) -> list[int]:
    """Powers of two from min to max, kept where prompt + output fits the model's context."""
    if min_prompt_tokens < 1 or max_prompt_tokens < min_prompt_tokens:
        raise StageError(
            f"prefill_profile: need 1 <= min_prompt_tokens <= max_prompt_tokens, "
            f"got {min_prompt_tokens}, {max_prompt_tokens}"
        )
    limit = min(max_prompt_tokens, context_tokens - output_tokens)
    lengths, p = [], 1 << max(int(min_prompt_tokens - 1).bit_length(), 0)
    while p <= limit:
        lengths.append(p)
        p *= 2
    return lengths


def digest(identity: Any) -> str:
    """A short stable hash of a JSON-able identity (sorted keys)."""
    data = orjson.dumps(identity, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY, default=str)
    return hashlib.sha256(data).hexdigest()[:16]


def endpoint_identity(ctx: StageContext) -> dict[str, Any]:
    """What is being measured: endpoint key and config (incl. a launched server), model, client.

    The base URL of a launched simulator changes every run (OS-chosen port), so it is left out;
    the simulator's own config is in ``endpoint.server`` and ``sim`` instead.
    """
    endpoint = dataclasses.asdict(ctx.cfg.endpoint)
    if endpoint.get("server") is not None:
        endpoint.pop("base_url", None)
    return {
        "endpoint_key": ctx.endpoint_key,
        "endpoint": endpoint,
        "sim": ctx.cfg.sim,
        "model": dataclasses.asdict(ctx.cfg.model),
        # What the server said it is (models, max_model_len, version, *_info metrics): a server
        # restarted with other settings behind the same URL is another endpoint.
        "server": getattr(ctx.endpoint, "server_identity", None),
    }


def run(
    ctx: StageContext,
    *,
    prompt_tokens: list[int] | None = None,
    min_prompt_tokens: int = 256,
    max_prompt_tokens: int = 16384,
    repetitions: int = 3,
    output_tokens: int = 16,
    statistic: str = "min",
    model_factory: Callable[[dict[str, Any]], Any] | None = None,
) -> StageResult:
    """Send lone requests (closed loop, concurrency 1) per prompt length, fit, save the predictor.

    ``model_factory`` turns the predictor dict into an MLflow pyfunc model (the pipeline passes
    ``etalon.runner.models.prefill_pyfunc``; stages may not import mlflow themselves).
    """
    if repetitions < 1 or output_tokens < 1:
        raise StageError(
            f"prefill_profile: repetitions and output_tokens must be >= 1, got {repetitions}, {output_tokens}"
        )
    context = ctx.cfg.model.context_tokens
    lengths = sorted(set(prompt_tokens)) if prompt_tokens else profile_lengths(
        min_prompt_tokens, max_prompt_tokens, context, output_tokens)
    too_long = [p for p in lengths if p + output_tokens > context]
    if too_long or len(lengths) < 2:
        raise StageError(
            f"prefill_profile: need >= 2 prompt lengths that fit model.context_tokens={context} with "
            f"{output_tokens} output tokens, got {lengths}"
        )
    key = digest({"endpoint": endpoint_identity(ctx), "lengths": lengths,
                  "repetitions": repetitions, "output_tokens": output_tokens})
    cache_file = ctx.cache_dir / "prefill" / key / MEASUREMENTS_FILE
    cached = cache_file.exists()
    if cached:
        from etalon.stages.reuse import tell_reuse

        log.info("prefill_profile: reusing measurements from %s", cache_file)
        measured = orjson.loads(cache_file.read_bytes())
        tell_reuse("prefill profile measurements", [measured], cache_file.parent)
    else:
        from etalon.stages.reuse import measured_against

        measured = {**_measure(ctx, lengths, repetitions, output_tokens), **measured_against(ctx)}
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_bytes(orjson.dumps(measured))
    return _finish(ctx, measured, statistic, model_factory, cached)


def _measure(ctx: StageContext, lengths: list[int], repetitions: int, output_tokens: int) -> dict[str, Any]:
    from etalon.core.arrivals import ClosedLoop
    from etalon.core.slo import TbtTtftSlo
    from etalon.stages.benchmark import measure

    log.info("prefill_profile: %d lengths x %d repetitions: %s", len(lengths), repetitions, lengths)
    # A lone warm-up request of the shortest length opens the connection and warms the server.
    m = measure(
        ctx,
        arrival=ClosedLoop(concurrency=1, think_time_s=0.0),
        lengths=ProfileLengths(tuple(lengths), output_tokens, warmup_requests=1),
        num_requests=len(lengths) * repetitions,
        duration_s=None,
        warmup_requests=1,
        out_dir=ctx.stage_dir / "requests",
        slo=TbtTtftSlo(ttft_s=1e9, tbt_s=1e9),  # only the records are used here
    )
    if m.interrupted:
        # Ctrl-C: the records are written; the pipeline stops here (nothing to fit, no later stage).
        raise KeyboardInterrupt
    t = m.table
    keep = t.ok & ~t.warmup & (t.first_token_ns >= 0)
    if not keep.any():
        raise StageError(f"prefill_profile: no usable request (stop reason: {m.load.stop_reason})")
    ttft = (t.first_token_ns[keep] - t.sent_ns[keep]) / 1e9
    return {"prompt_tokens": t.prompt_tokens[keep].tolist(), "ttft_s": ttft.tolist(),
            "errors": int(np.count_nonzero(~t.ok & ~t.warmup))}


def _finish(
    ctx: StageContext, measured: dict[str, Any], statistic: str,
    model_factory: Callable[[dict[str, Any]], Any] | None, cached: bool,
) -> StageResult:
    p = np.asarray(measured["prompt_tokens"], dtype=np.int64)
    y = np.asarray(measured["ttft_s"], dtype=np.float64)
    lengths, values = robust_prefill_s(p, y, statistic)
    predictor = fit_prefill(lengths, values)
    ctx.stage_dir.mkdir(parents=True, exist_ok=True)
    profile_path = ctx.stage_dir / PROFILE_FILE
    payload = {**predictor.to_dict(), "statistic": statistic,
               "points": {"prompt_tokens": lengths.tolist(), "prefill_s": values.tolist()}}
    profile_path.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
    (ctx.stage_dir / MEASUREMENTS_FILE).write_bytes(orjson.dumps(measured))
    plot_path = plot_profile(ctx.stage_dir / PLOT_FILE, p, y, lengths, values, predictor)
    rel_error = np.abs(predictor.predict_s(lengths) / values - 1.0)
    if model_factory is not None:
        import pandas as pd

        ctx.tracker.log_model(model_factory(predictor.to_dict()), name="prefill_predictor",
                              input_example=pd.DataFrame({"prompt_tokens": lengths[:2]}))
    scalars = {
        "prefill_a_s": predictor.a_s,
        "prefill_b_s_per_token": predictor.b_s_per_token,
        "prefill_c_s_per_token2": predictor.c_s_per_token2,
        "prefill_fit_r2": predictor.r2,
        "prefill_fit_rmse_s": predictor.rmse_s,
        "prefill_fit_max_rel_error": float(rel_error.max()),
        "prefill_errors": float(measured.get("errors", 0)),
    }
    return StageResult(
        name=ctx.stage_name,
        stage_dir=ctx.stage_dir,
        scalars=scalars,
        data={"profile_path": str(profile_path), "predictor": predictor.to_dict()},
        artifacts=[profile_path, plot_path, ctx.stage_dir / MEASUREMENTS_FILE],
        cached=cached,
    )


def plot_profile(
    path: Path, p: np.ndarray, y: np.ndarray, lengths: np.ndarray, values: np.ndarray,
    predictor: PrefillPredictor,
) -> Path:
    """Measured TTFTs, the per-length statistic, the fit and its extrapolation to 2x."""
    from etalon.report.figures import new_figure, save_figure

    top = int(lengths.max())
    inside = np.linspace(0, top, 200)
    beyond = np.linspace(top, 2 * top, 100)
    fig = new_figure((7, 4.5))
    ax = fig.subplots()
    ax.scatter(p, y * 1e3, s=10, alpha=0.35, color="tab:gray", label="measured TTFT")
    ax.scatter(lengths, values * 1e3, s=30, color="tab:blue", label="per-length statistic", zorder=3)
    ax.plot(inside, predictor.predict_s(inside) * 1e3, color="tab:orange", label="fit")
    ax.plot(beyond, predictor.predict_s(beyond) * 1e3, color="tab:orange", linestyle="--", label="extrapolation")
    ax.set_xlabel("prompt length (tokens)")
    ax.set_ylabel("prefill time / TTFT (ms)")
    ax.set_title(
        f"prefill = {predictor.a_s * 1e3:.3g} ms + {predictor.b_s_per_token * 1e6:.3g} us*P "
        f"+ {predictor.c_s_per_token2 * 1e9:.3g} ns*P^2   (R^2 {predictor.r2:.4f})", fontsize=9
    )
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def load_profile(path: str | Path) -> PrefillPredictor:
    """A predictor from a saved ``prefill_profile.json`` (for ``slo.prefill_profile=<path>``)."""
    path = Path(path)
    if not path.is_file():
        raise StageError(
            f"slo.prefill_profile={str(path)!r}: no such file (expected a prefill_profile.json "
            "written by a prefill_profile stage)"
        )
    return PrefillPredictor.from_dict(orjson.loads(path.read_bytes()))
