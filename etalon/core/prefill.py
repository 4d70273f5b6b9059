"""Prefill-time predictor: a non-negative quadratic fit of TTFT against prompt length."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


class PrefillFitError(ValueError):
    """The measurements cannot give a prefill fit (too few points, bad values)."""


@dataclass(frozen=True)
class PrefillPredictor:
    """``prefill_s = a_s + b_s_per_token * P + c_s_per_token2 * P**2`` with a, b, c >= 0.

    Non-negative coefficients make the curve monotone in P and convex, so it extrapolates past
    the longest profiled prompt without turning down. ``r2`` and ``rmse_s`` are the fit quality
    on the points it was fitted to; ``lengths`` are the profiled prompt lengths (tokens).
    """

    a_s: float
    b_s_per_token: float
    c_s_per_token2: float
    r2: float = float("nan")
    rmse_s: float = float("nan")
    lengths: tuple[int, ...] = ()

    def predict_s(self, prompt_tokens: np.ndarray | float | int) -> np.ndarray:
        """Predicted prefill time (s) for each prompt length (tokens)."""
        p = np.asarray(prompt_tokens, dtype=np.float64)
        return self.a_s + self.b_s_per_token * p + self.c_s_per_token2 * p * p

    def to_dict(self) -> dict[str, Any]:
        return {
            "a_s": self.a_s,
            "b_s_per_token": self.b_s_per_token,
            "c_s_per_token2": self.c_s_per_token2,
            "r2": self.r2,
            "rmse_s": self.rmse_s,
            "lengths": [int(x) for x in self.lengths],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrefillPredictor:
        missing = [k for k in ("a_s", "b_s_per_token", "c_s_per_token2") if k not in data]
        if missing:
            raise PrefillFitError(f"prefill profile lacks {', '.join(missing)} (keys: {sorted(data)})")
        return cls(
            a_s=float(data["a_s"]),
            b_s_per_token=float(data["b_s_per_token"]),
            c_s_per_token2=float(data["c_s_per_token2"]),
            r2=float(data.get("r2", float("nan"))),
            rmse_s=float(data.get("rmse_s", float("nan"))),
            lengths=tuple(int(x) for x in data.get("lengths", ())),
        )


def fit_prefill(prompt_tokens: np.ndarray, ttft_s: np.ndarray) -> PrefillPredictor:
    """Fit a, b, c >= 0 by least squares on relative error.

    Features are scaled to [0, 1] (P / P_max) so the three columns are of similar size; the
    residuals are weighted by 1 / ttft so a 256-token point counts as much as a 16k one (the
    deadline SLO needs every length right to within a few percent, not just the long ones).
    """
    from sklearn.linear_model import LinearRegression

    p = np.asarray(prompt_tokens, dtype=np.float64)
    y = np.asarray(ttft_s, dtype=np.float64)
    if p.shape != y.shape or p.ndim != 1:
        raise PrefillFitError(f"prompt_tokens and ttft_s must be 1-D of one length, got {p.shape}, {y.shape}")
    if np.unique(p).size < 2:
        raise PrefillFitError(f"need at least 2 distinct prompt lengths, got {sorted(set(p.tolist()))}")
    if not (np.all(np.isfinite(y)) and np.all(y > 0) and np.all(p > 0)):
        raise PrefillFitError("prompt lengths and TTFTs must be finite and > 0")
    scale = float(p.max())
    x = p / scale
    features = np.column_stack([np.ones_like(x), x, x * x])
    # Intercept as a column (fit_intercept=False) so positive=True constrains it too.
    model = LinearRegression(positive=True, fit_intercept=False)
    model.fit(features, y, sample_weight=1.0 / (y * y))
    a, b, c = (float(v) for v in model.coef_)
    b, c = b / scale, c / (scale * scale)
    residual = y - (a + b * p + c * p * p)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual**2)) / ss_tot if ss_tot > 0 else float("nan")
    return PrefillPredictor(
        a_s=a,
        b_s_per_token=b,
        c_s_per_token2=c,
        r2=r2,
        rmse_s=float(np.sqrt(np.mean(residual**2))),
        lengths=tuple(int(v) for v in np.unique(p)),
    )


def robust_prefill_s(
    prompt_tokens: np.ndarray, ttft_s: np.ndarray, statistic: str = "min"
) -> tuple[np.ndarray, np.ndarray]:
    """One value per distinct length: ``min`` or ``pNN`` (a low percentile) of its TTFTs.

    A low statistic drops the repetitions that queued behind something else (GC pause,
    scheduler hiccup): the prefill cost itself is the floor.
    """
    p = np.asarray(prompt_tokens, dtype=np.int64)
    y = np.asarray(ttft_s, dtype=np.float64)
    if statistic == "min":
        q = 0.0
    elif statistic.startswith("p") and statistic[1:].replace(".", "", 1).isdigit():
        q = float(statistic[1:]) / 100.0
    else:
        raise PrefillFitError(f"prefill_profile.statistic={statistic!r}: use 'min' or 'pNN' (e.g. p10)")
    if not 0.0 <= q <= 1.0:
        raise PrefillFitError(f"prefill_profile.statistic={statistic!r}: percentile must be within 0..100")
    lengths = np.unique(p)
    values = np.array([np.quantile(y[p == n], q) for n in lengths])
    return lengths, values
