"""Fixed-width terminal table of a run summary, with loud warnings when the numbers are suspect."""

from __future__ import annotations

import math
import textwrap

from etalon.core.chunks import FLAGS
from etalon.core.summary import RunSummary
from etalon.core.text import for_terminal

DISPATCH_LAG_WARN_S = 0.010  # p99 above this: the client fell behind its schedule
_STATS = ("mean", "min", "p50", "p90", "p99", "p999", "max")
_ROWS = (  # (label, metric, unit, scale, shown unit)
    ("TTFT", "ttft", "s", 1e3, "ms"),
    ("TTFT from planned send", "ttft_from_scheduled", "s", 1e3, "ms"),
    ("TBT (pooled)", "tbt", "s", 1e3, "ms"),
    ("TPOT", "tpot", "s", 1e3, "ms"),
    ("end-to-end", "e2e", "s", 1.0, "s"),
    ("end-to-end from planned", "e2e_from_scheduled", "s", 1.0, "s"),
    ("normalized end-to-end", "normalized_e2e", "s", 1e3, "ms/tok"),
    ("output throughput/request", "output_throughput", "tokens_per_s", 1.0, "tok/s"),
    ("fluidity-index", "fluidity_index", "", 1.0, ""),
    ("min TBT deadline", "min_tbt_deadline", "s", 1e3, "ms"),
    ("dispatch lag", "dispatch_lag", "s", 1e3, "ms"),
)
_CHUNK_ROWS = (  # shown only when the run has them (etalon.core.chunks)
    ("inter-chunk latency", "inter_chunk_latency", "s", 1e3, "ms"),
    ("tokens per chunk", "tokens_per_chunk", "tokens", 1.0, "tok"),
    ("time to first answer token", "ttft_answer", "s", 1e3, "ms"),
    ("TBT reasoning", "tbt_reasoning", "s", 1e3, "ms"),
    ("TBT answer", "tbt_answer", "s", 1e3, "ms"),
    ("reasoning tokens/request", "reasoning_tokens", "tokens", 1.0, "tok"),
)


WIDTH = 100  # the whole table fits a 100-column terminal


def _num(value: float | None, width: int = 9) -> str:
    """A right-aligned number with digits that suit its size, always led by at least one space."""
    if value is None or not math.isfinite(value):
        return "-".rjust(width)
    size = abs(value)
    if size >= 1e7:
        text = f"{value:.3g}"
    elif size >= 1000:
        text = f"{value:,.0f}"
    elif size >= 100:
        text = f"{value:.1f}"
    elif size >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"  # below a thousandth of the unit this reads 0.000, never 1e-06
    if text.lstrip("-") in ("0.000", "0"):
        text = "0"
    return " " + text.rjust(width - 1)


def format_header(items: list[tuple[str, str]]) -> list[str]:
    """``label: value`` pairs packed into lines of at most ``WIDTH`` columns, separated by ``|``."""
    lines: list[str] = []
    current = ""
    for label, value in items:
        cell = f"{label}: {value}"
        if len(cell) > WIDTH:
            cell = cell[: WIDTH - 3] + "..."
        if current and len(current) + 3 + len(cell) > WIDTH:
            lines.append(current)
            current = cell
        else:
            current = f"{current} | {cell}" if current else cell
    if current:
        lines.append(current)
    return [*lines, "=" * WIDTH] if lines else []


def _warnings(summary: RunSummary) -> list[str]:
    out = []
    lag_p99 = summary.distributions.get(("dispatch_lag", "s"), {}).get("p99")
    if lag_p99 is not None and lag_p99 > DISPATCH_LAG_WARN_S:
        out.append(
            f"!!! WARNING: dispatch lag p99 = {lag_p99 * 1e3:.1f} ms > {DISPATCH_LAG_WARN_S * 1e3:.0f} ms: "
            "the client fell behind (coordinated omission);\n"
            "    latencies from the actual send time understate what users saw: read the *_from_scheduled rows."
        )
    out += output_check_warnings(summary)
    if summary.partial:
        out.append("!!! WARNING: PARTIAL RUN: the run stopped early; numbers cover completed requests only.")
    return out


def output_check_warnings(summary: RunSummary) -> list[str]:
    """One line per output-check flag that any request got (etalon.core.chunks.FLAGS)."""
    flags = summary.output_checks.get("flags", {})
    total = summary.counts.get("total", 0)
    out = []
    for name, count in flags.items():
        what = FLAGS.get(name, name)
        hint = " (set endpoint.ignore_eos=true, or the server ignores it)" if name == "output_short" else ""
        out.append(f"!!! WARNING: {count} of {total} requests flagged {name}: {what}{hint}")
    return out


def _distribution_lines(summary: RunSummary) -> list[str]:
    head = f"{'metric':<27}{'unit':<7}" + "".join(s.rjust(9) for s in _STATS)
    lines = [head, "-" * len(head)]
    shown_rows = [*_ROWS, *(row for row in _CHUNK_ROWS if summary.distributions.get((row[1], row[2])))]
    if not summary.distributions.get(("tbt_reasoning", "s")):  # no reasoning: the answer rows say nothing new
        shown_rows = [r for r in shown_rows if r[1] not in ("ttft_answer", "tbt_answer", "reasoning_tokens")]
    for label, metric, unit, scale, shown in shown_rows:
        stats = summary.distributions.get((metric, unit), {})
        cells = "".join(_num(None if s not in stats else stats[s] * scale) for s in _STATS)
        lines.append(f"{label:<27}{shown:<7}{cells}")
    return lines


def _rate_lines(summary: RunSummary) -> list[str]:
    r = summary.rates
    settings = summary.settings
    pairs = [
        ("request rate offered / achieved (rps)", f"{_num(r.get('request_rate_offered_rps')).strip()} / "
         f"{_num(r.get('request_rate_achieved_rps')).strip()}"),
        ("goodput (rps, fraction meeting SLO)", f"{_num(r.get('goodput_rps')).strip()} "
         f"({_num(r.get('goodput_fraction')).strip()})"),
        ("tokens/s input / output / total", " / ".join(
            _num(r.get(k)).strip() for k in ("input_tokens_per_s", "output_tokens_per_s", "total_tokens_per_s"))),
        ("decode tokens/s: 1/mean TPOT, 1/p99 TBT, deadline", " / ".join(_num(r.get(k)).strip() for k in (
            "throughput_tpot_tokens_per_s", "throughput_tbt_tokens_per_s", "throughput_deadline_tokens_per_s"))),
        (f"service miss rate (TBT deadline {settings.get('tbt_deadline_s')} s)",
         _num(r.get("service_miss_rate")).strip()),
        ("error rate", _num(r.get("error_rate")).strip()),
    ]
    return [f"{label:<52}{value}" for label, value in pairs]


def _count_lines(summary: RunSummary) -> list[str]:
    c = summary.counts
    lines = [
        f"requests: {c['total']} measured ({c['ok']} ok, {c['error']} error), {c['warmup']} warm-up excluded; "
        f"window {summary.measurement_window_s:.3f} s"
    ]
    if c.get("cancelled"):
        lines.append(f"{c['cancelled']} requests cancelled by the client when the run stopped (not measured)")
    if summary.errors_by_http_status or summary.errors_by_type:
        codes = ", ".join(f"{k}: {v}" for k, v in summary.errors_by_http_status.items())
        types = ", ".join(f"{k}: {v}" for k, v in summary.errors_by_type.items())
        lines.append(f"errors by HTTP status: {codes or '-'}; by type: {types or '-'}")
    reasons = summary.output_checks.get("finish_reasons", {})
    if reasons:  # server-provided strings: sanitised for the terminal
        lines.append("finish_reason: " + ", ".join(f"{for_terminal(k, 40)}: {v}" for k, v in reasons.items()))
    return lines


def format_summary(summary: RunSummary, header: list[tuple[str, str]] | None = None) -> str:
    """A readable fixed-width table (at most 100 columns): a header naming what was measured
    (``header``: endpoint, model, workload, load), latency percentiles, throughput, fluidity,
    errors, warnings."""
    warnings = _warnings(summary)
    parts = [*format_header(header or []), *warnings, *_count_lines(summary), "",
             *_distribution_lines(summary), "", *_rate_lines(summary)]
    if warnings:
        parts += ["", *warnings]  # repeated at the bottom: the last thing on screen
    return "\n".join(line for part in parts for piece in part.split("\n") for line in _wrap(piece))


def _wrap(line: str) -> list[str]:
    if len(line) <= WIDTH:
        return [line]
    return textwrap.wrap(line, WIDTH, subsequent_indent="    ", break_on_hyphens=False)
