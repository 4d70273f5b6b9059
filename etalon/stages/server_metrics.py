"""The server's side of a run: scrape /metrics during the load, then store, summarise and plot it."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from etalon.core.records import RecordTable
from etalon.core.server_metrics import SERIES, Scrape, common_series, inflight_at, mean_inflight, window_quantiles
from etalon.stages.base import StageContext

METRICS_FILE = "server_metrics.parquet"
SERIES_FILE = "server_series.csv"
PLOT_FILE = "server_timeline.png"
# Client metric beside each server histogram kind (server ITL is the client's TBT).
CLIENT_OF = {"ttft": "ttft", "itl": "tbt", "e2e": "e2e"}


@dataclass
class ServerMetrics:
    """What the scraper saw during one run: scalars for the summary and the files written."""

    scalars: dict[str, float] = field(default_factory=dict)
    series: dict[str, np.ndarray] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)


def metrics_url(ctx: StageContext) -> str | None:
    """``endpoint.metrics_url``, else the launched template's metrics_path, else ``<root>/metrics``;
    None when scraping is off (``endpoint.metrics_interval_s=null`` or a template without metrics)."""
    cfg = ctx.cfg
    if getattr(cfg.endpoint, "metrics_interval_s", None) is None:
        return None
    if getattr(cfg.endpoint, "metrics_url", None):
        return str(cfg.endpoint.metrics_url)
    base = ctx.endpoint.base_url.rstrip("/")
    if cfg.launches_server and cfg.server is not None:
        root = base.removesuffix(cfg.server.api_path.rstrip("/")) if cfg.server.api_path else base
        return None if not cfg.server.metrics_path else root + cfg.server.metrics_path
    return base.removesuffix("/v1") + "/metrics"


def start_scraper(ctx: StageContext) -> Any:
    from etalon.loadgen.scrape import MetricsScraper

    url = metrics_url(ctx)
    if url is None:
        return None
    # An in-process load driver (client=local) must not share the interpreter with parsing.
    scraper = MetricsScraper(url, float(ctx.cfg.endpoint.metrics_interval_s), ctx.endpoint.request_headers(),
                             parse_live=ctx.cfg.client.backend != "local")
    return scraper.start()


def summarize_server(scrapes: list[Scrape], table: RecordTable, wall_start_ns: int, client: dict[str, float],
                     out_dir: Path, tracker: Any, plots: bool = True) -> ServerMetrics:
    """Series, window quantiles and time averages; ``server_metrics.parquet``, the series CSV,
    the timeline plot and MLflow step metrics. Nothing when fewer than two scrapes succeeded."""
    if len(scrapes) < 2:
        return ServerMetrics()
    series = common_series(scrapes)
    scalars = window_quantiles(scrapes[0].samples, scrapes[-1].samples)
    for kind, client_key in CLIENT_OF.items():
        server_p50, client_p50 = scalars.get(f"server_{kind}_p50_s"), client.get(f"{client_key}_p50_s")
        if server_p50 is not None and client_p50 is not None:
            scalars[f"client_minus_server_{kind}_p50_s"] = client_p50 - server_p50
    sent, end = _wall(table, wall_start_ns)
    series["client_inflight"] = inflight_at(sent, end, series["time_ns"]).astype(np.float64)
    series["client_tokens_per_s"] = _client_token_rate(table, wall_start_ns, series["time_ns"])
    scalars.update(_window_means(series, sent, end))
    out = ServerMetrics(scalars=scalars, series=series)
    out.artifacts = [write_samples(out_dir / METRICS_FILE, scrapes), _write_series(out_dir / SERIES_FILE, series)]
    if plots:
        from etalon.report.server_plots import plot_server_timeline

        out.artifacts.append(plot_server_timeline(out_dir / PLOT_FILE, series))
    tracker.log_metric_steps([{f"server_{k}": float(series[k][i]) for k in (*SERIES, "client_inflight")
                               if math.isfinite(series[k][i])} for i in range(len(series["time_ns"]))])
    return out


def _wall(table: RecordTable, wall_start_ns: int) -> tuple[np.ndarray, np.ndarray]:
    sent = table.sent_ns.astype(np.int64) + wall_start_ns
    end = np.where(table.end_ns > 0, table.end_ns, table.sent_ns).astype(np.int64) + wall_start_ns
    return sent, end


def _client_token_rate(table: RecordTable, wall_start_ns: int, time_ns: np.ndarray) -> np.ndarray:
    """Output tokens the client received per second over each scrape interval."""
    tokens = np.sort(table.token_ns.astype(np.int64) + wall_start_ns)
    counts = np.searchsorted(tokens, time_ns, side="right").astype(np.float64)
    rate = np.full(time_ns.size, np.nan)
    dt_s = np.diff(time_ns) / 1e9
    rate[1:] = np.where(dt_s > 0, np.diff(counts) / np.where(dt_s > 0, dt_s, 1), np.nan)
    return rate


def _window_means(series: dict[str, np.ndarray], sent: np.ndarray, end: np.ndarray) -> dict[str, float]:
    """Server gauges averaged over the scrapes inside the run's request window, and the client's
    exact time-averaged in-flight count over the same window."""
    if sent.size == 0:
        return {}
    start_ns, stop_ns = int(sent.min()), int(end.max())
    inside = (series["time_ns"] >= start_ns) & (series["time_ns"] <= stop_ns)
    out = {"client_inflight_mean": mean_inflight(sent, end, start_ns, stop_ns)}
    for key in ("running", "waiting", "kv_cache_usage", "prefix_cache_hit_rate", "generation_tokens_per_s"):
        values = series[key][inside]
        values = values[np.isfinite(values)]
        if values.size:
            out[f"server_{key}_mean"] = float(values.mean())
            out[f"server_{key}_max"] = float(values.max())
    preempt = series["preemptions"][np.isfinite(series["preemptions"])]
    if preempt.size:
        out["server_preemptions"] = float(preempt[-1] - preempt[0])
    return out


def write_samples(path: Path, scrapes: list[Scrape]) -> Path:
    """Every scraped sample as one row: time, name, labels (JSON), value."""
    import pandas as pd

    t0 = scrapes[0].time_ns
    encoded: dict[Any, str] = {}  # the same series' labels come back in every scrape: encode once

    def label_json(labels: Any) -> str:
        text = encoded.get(labels)
        if text is None:
            text = encoded[labels] = json.dumps(dict(labels), sort_keys=True)
        return text

    rows = [(s.time_ns, (s.time_ns - t0) / 1e9, name, label_json(labels), value)
            for s in scrapes for name, items in s.samples.items() for labels, value in items]
    frame = pd.DataFrame(rows, columns=["time_ns", "elapsed_s", "name", "labels", "value"])
    frame.to_parquet(path, index=False)
    return path


def _write_series(path: Path, series: dict[str, np.ndarray]) -> Path:
    import pandas as pd

    frame = pd.DataFrame(series)
    frame.insert(1, "elapsed_s", (frame["time_ns"] - frame["time_ns"].iloc[0]) / 1e9)
    frame.to_csv(path, index=False)
    return path


__all__ = ["ServerMetrics", "metrics_url", "start_scraper", "summarize_server", "write_samples"]
