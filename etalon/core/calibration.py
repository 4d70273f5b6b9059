"""Fit the simulator's engine latency model to measurements (pure least squares).

Prefill: TTFT of lone requests against prompt tokens P is ``a + b * P``; in the engine's model
``b = per_prefill_token + per_context_token`` (a prefill step reads the prompt's own KV).
Decode: the median gap between tokens of B concurrent decoding requests with summed context C is
``step_overhead + per_decode_seq * B + per_context_token * C``; two prompt lengths per B
separate the last two terms. Per-request cost (``per_new_seq_s``): what the step model does not
explain of a saturated closed loop's time per request, or of a lone request's TTFT, whichever is
less (``fit_per_new_seq``). The gap is read over windows of ``DECODE_WINDOW`` tokens
(``decode_step_s``): a server that sometimes sends two tokens in one chunk has zero gaps followed
by double ones, whose median is biased; a window's mean is not, and the median over windows still
ignores the few steps that carried another request's prefill.
"""

from __future__ import annotations

import numpy as np

DECODE_WINDOW = 4


def decode_step_s(token_ns: np.ndarray, offsets: np.ndarray, window: int = DECODE_WINDOW) -> float | None:
    """Median over every request's ``window``-token windows of (t[i + window] - t[i]) / window (s);
    None when no request has more than ``window`` tokens or the median is not positive."""
    steps = []
    for start, end in zip(offsets[:-1], offsets[1:]):
        times = np.asarray(token_ns[start:end], dtype=np.int64)
        if times.size > window:
            steps.append((times[window:] - times[:-window]) / window)
    if not steps:
        return None
    median = float(np.median(np.concatenate(steps))) / 1e9
    return median if median > 0 else None


def usable_points(points: list[tuple]) -> tuple[list[tuple], list[tuple]]:
    """(points whose measured duration, the last element, is finite and > 0; the ones dropped)."""
    kept = [p for p in points if np.isfinite(p[-1]) and p[-1] > 0]
    return kept, [p for p in points if p not in kept]


def fit_prefill_linear(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares ``ttft = a + b * P``: intercept (s) and slope (s per prompt token), both >= 0."""
    tokens = np.array([p for p, _ in points], dtype=float)
    ttft = np.array([t for _, t in points], dtype=float)
    design = np.column_stack([np.ones_like(tokens), tokens])
    (a, b), *_ = np.linalg.lstsq(design, ttft, rcond=None)
    return max(float(a), 0.0), max(float(b), 0.0)


def fit_decode(points: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """Least squares ``tbt = overhead + c_seq * B + c_ctx * context`` from (B, context, tbt), each >= 0."""
    design = np.array([[1.0, b, ctx] for b, ctx, _ in points])
    tbt = np.array([t for _, _, t in points])
    coef, *_ = np.linalg.lstsq(design, tbt, rcond=None)
    overhead, per_seq, per_ctx = (max(float(c), 0.0) for c in coef)
    return overhead, per_seq, per_ctx


def modelled_request_s(latency: dict[str, float], batch: int, prompt: int, output: int) -> float:
    """Engine seconds one request of ``prompt`` + ``output`` tokens costs in a full batch of ``batch``
    (closed loop, chunked prefill), without ``per_new_seq_s``: its share of the step overheads
    (``output / batch`` steps: every step yields about ``batch`` tokens), ``output - 1`` decode
    slots, its prefill tokens and the context it reads (``prompt`` + half its output, each step)."""
    return (latency["step_overhead_s"] * output / batch + latency["per_decode_seq_s"] * (output - 1)
            + latency["per_prefill_token_s"] * prompt + latency["per_context_token_s"] * output * (prompt + output / 2))


def fit_per_new_seq(latency: dict[str, float], batch: int, prompt: int, output: int, throughput_rps: float,
                    prefill_intercept_s: float) -> float:
    """``per_new_seq_s``: the lower of two upper bounds, never below 0.

    - Saturation: a busy engine spends 1 / throughput seconds per request of a closed loop at
      ``batch``; the step model explains ``modelled_request_s`` of it. The rest also holds the
      loop's own losses (a finished request's slot idles until its successor arrives), so it is
      an upper bound.
    - A lone request: its TTFT at zero prompt tokens (``prefill_intercept_s``) is one step's overhead
      plus the per-request cost plus the network, so intercept - overhead is an upper bound, and
      all of it when request handling runs in parallel with the engine rather than blocking it.
    """
    if not throughput_rps > 0:
        raise ValueError(f"throughput must be > 0, got {throughput_rps}")
    saturated = 1.0 / throughput_rps - modelled_request_s(latency, batch, prompt, output)
    lone = prefill_intercept_s - latency["step_overhead_s"]
    return max(min(saturated, lone), 0.0)


def engine_latency(prefill: list[tuple[int, float]], decode: list[tuple[float, float, float]]) -> dict[str, float]:
    """The sim's ``latency`` block from both profiles."""
    _, slope_s = fit_prefill_linear(prefill)
    overhead_s, per_seq_s, per_ctx_s = fit_decode(decode)
    return {"step_overhead_s": overhead_s, "per_prefill_token_s": max(slope_s - per_ctx_s, 0.0),
            "per_decode_seq_s": per_seq_s, "per_context_token_s": per_ctx_s}


__all__ = ["DECODE_WINDOW", "decode_step_s", "engine_latency", "fit_decode", "fit_per_new_seq", "fit_prefill_linear",
           "modelled_request_s", "usable_points"]
