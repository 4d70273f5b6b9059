"""The verdict block printed last by every pipeline: what ran, the answer, and where the files are.

Built from the stage results the pipeline left in the run directory (``<stage>/stage_result.json``),
so it can be printed after a failure too, with whatever finished.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

RESULT_FILE = "stage_result.json"
WIDTH = 100


@dataclass
class Verdict:
    """The answer of one pipeline run, as lines for the terminal and fields for the report."""

    ran: list[str]
    answers: list[str]
    paths: list[tuple[str, str]]
    slo_failed: bool = False
    error: str | None = None
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        rule = "=" * WIDTH
        out = [rule, "etalon verdict", *self.ran, *self.answers]
        if self.error:
            out.append(f"FAILED: {self.error}")
        out += [f"{label + ':':<9}{path}" for label, path in self.paths]
        return [*out, rule]

    def text(self) -> str:
        return "\n".join(self.lines())


def stage_names(pipeline: Any) -> list[str]:
    """Stage names in order, from a list of stages or a mapping name -> stage."""
    stages = pipeline.stages
    if isinstance(stages, dict):
        return list(getattr(pipeline, "order", None) or stages)
    return [getattr(s, "name", None) or s["name"] for s in stages]


def load_stage_results(run_dir: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """The finished stages' results (``stage_result.json``) in pipeline order; missing ones skipped."""
    out = {}
    for name in names:
        path = Path(run_dir) / name / RESULT_FILE
        if path.exists():
            out[name] = orjson.loads(path.read_bytes())
    return out


def _num(value: Any, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    v = float(value)
    if unit == "s":
        return f"{v * 1e3:.4g} ms" if abs(v) < 1 else f"{v:.4g} s"
    return f"{v:.4g}{(' ' + unit) if unit else ''}"


def _unit(key: str) -> str:
    return "s" if key.endswith("_s") and not key.endswith("_per_s") else ""


def slo_lines(verdict: dict[str, Any] | None) -> tuple[list[str], bool]:
    """``SLO PASS|FAIL`` with every judged value against its limit; (lines, failed)."""
    if not verdict:
        return ["SLO: not judged (no measured request)"], False
    values = verdict.get("values") or {verdict["metric"]: verdict["value"]}
    limits = verdict.get("limits") or {verdict["metric"]: verdict["threshold"]}
    parts = []
    for key, value in values.items():
        if key in limits:
            ok = value is not None and math.isfinite(value) and value <= limits[key]
            parts.append(f"{key} = {_num(value, _unit(key))} {'<=' if ok else '>'} {_num(limits[key], _unit(key))}")
    word = "PASS" if verdict["passed"] else "FAIL"
    if verdict.get("repeats_passed"):
        runs = verdict["repeats_passed"]
        word += f" ({sum(runs)}/{len(runs)} repeats passed; first shown)"
    return [f"SLO {word}: " + "; ".join(parts) + (f"  (deciding: {verdict['metric']})" if not verdict["passed"] else "")], \
        not verdict["passed"]


def _deciding(probes: list[dict[str, Any]], hi: float | None) -> str | None:
    """What failed the probe at the bracket's top: its metric, or the veto when the SLO itself held."""
    failed = [p for p in probes if not p.get("passed") and not p.get("interrupted")]
    top = [p for p in failed if hi is not None and p.get("load") == hi] or failed
    if not top:
        return None
    p = top[-1]
    veto = p.get("vetoes")
    if isinstance(veto, str) and veto and p.get("value") is not None and p.get("threshold") is not None \
            and p["value"] <= p["threshold"]:
        return f"{p.get('metric')} met; vetoed: {veto}"
    return p.get("metric")


def capacity_lines(data: dict[str, Any], precision: float | None, max_probes: int | None) -> tuple[list[str], bool]:
    """The capacity, its bracket, the precision reached or why the search stopped, the deciding metric."""
    kind = data.get("search", "rate")
    unit = "requests/s" if kind == "rate" else "concurrent requests"
    cap = data.get("max_rate_rps") if kind == "rate" else data.get("max_concurrency")
    hi = data.get("lowest_failing")
    probes = data.get("probes", [])
    deciding = data.get("deciding_metric") or _deciding(probes, data.get("lowest_failing"))
    if cap is None:
        lowest = min((p["load"] for p in probes), default=None)
        return [f"capacity: NONE: no probed load met the SLO (lowest tried {_num(lowest)} {unit})"
                + (f"; deciding metric {deciding}" if deciding else "")], True
    lines = [f"capacity: {_num(cap)} {unit}"
             + (f"  (bracket {_num(cap)} .. {_num(hi)})" if hi is not None else "  (no failing probe above it)")]
    reached = (hi - cap) / hi if hi else None
    if data.get("capacity_interval"):
        lo_i, hi_i = data["capacity_interval"]
        rp = data.get("reprobes", {})
        lines.append(f"          re-probed with {len(rp.get('seeds', []))} seeds: capacity within "
                     f"[{_num(lo_i) if lo_i is not None else 'below all probed'}, {_num(hi_i)}] {unit} "
                     f"({sum(rp.get('low_passed', []))}/{len(rp.get('low_passed', []))} passed at {_num(rp.get('low_load'))}, "
                     f"{len(rp.get('high_passed', [])) - sum(rp.get('high_passed', []))}/{len(rp.get('high_passed', []))} "
                     f"failed at {_num(rp.get('high_load'))})")
    if data.get("converged") is False and data.get("unconverged_reason"):
        lines.append(f"          NOT CONVERGED: {data['unconverged_reason']} ({len(probes)} probes)")
    elif reached is not None and precision is not None and reached <= precision + 1e-12:
        lines.append(f"          precision {reached:.1%} (asked {precision:.0%}): reached; {len(probes)} probes")
    elif reached is not None:
        why = "out of probes" if max_probes is not None and len(probes) >= max_probes else "stopped early"
        lines.append(f"          stopped: {why} ({len(probes)} probes) at precision {reached:.1%}"
                     + (f" (asked {precision:.0%})" if precision is not None else ""))
    else:
        why = "out of probes" if max_probes is not None and len(probes) >= max_probes else "stopped"
        lines.append(f"          stopped: {why} ({len(probes)} probes) before any probe failed: a lower bound")
    if deciding:
        lines.append(f"          deciding metric: {deciding}")
    tokens = data.get("fluid_token_generation_rate_tokens_per_s")
    if tokens is not None:
        lines.append(f"          fluid token generation rate: {_num(tokens, 'tokens/s')}")
    return lines, False


def prefill_lines(scalars: dict[str, float]) -> list[str]:
    a, b, c = (scalars.get(k) for k in ("prefill_a_s", "prefill_b_s_per_token", "prefill_c_s_per_token2"))
    if a is None:
        return ["prefill profile: no fit"]
    return [f"prefill profile: prefill_s = {a:.4g} + {b:.4g}*P + {c:.4g}*P^2, R^2 = {scalars.get('prefill_fit_r2', math.nan):.4f},"
            f" max rel. error {scalars.get('prefill_fit_max_rel_error', math.nan):.1%}"]


def comparison_lines(data: dict[str, Any]) -> list[str]:
    rows = data.get("comparison", [])
    key = "max_rate_rps" if data.get("search", "rate") == "rate" else "max_concurrency"
    return [f"capacity [{r['config']}]: {_num(r.get(key))}" + (f"  ERROR {r['error']}" if r.get("error") else "")
            for r in rows] + list(data.get("ab") or [])


def _stage_params(cfg: Any, name: str) -> dict[str, Any]:
    stages = cfg.pipeline.stages
    items = stages.items() if isinstance(stages, dict) else [(getattr(s, "name", None), s) for s in stages]
    for stage_name, stage in items:
        if stage_name == name:
            run = getattr(stage, "run", None) if not isinstance(stage, dict) else stage.get("run", stage)
            return dict(run) if isinstance(run, dict) else {}
    return {}


def _describe_load(cfg: Any) -> str:
    w = cfg.workload
    arrival = w.arrival if isinstance(w.arrival, dict) else {}
    lengths = w.lengths if isinstance(w.lengths, dict) else {}
    kind = str(arrival.get("_target_", "?")).rsplit(".", 1)[-1]
    load = ", ".join(f"{k}={v}" for k, v in arrival.items() if k != "_target_")
    size = f"{w.num_requests} requests" if w.num_requests is not None else f"{w.duration_s} s"
    return f"{kind}({load}), {str(lengths.get('_target_', '?')).rsplit('.', 1)[-1]}, {size}"


def stage_answer(cfg: Any, name: str, result: dict[str, Any]) -> tuple[list[str], bool]:
    """The answer lines of one finished stage and whether it failed its SLO."""
    data, scalars = result.get("data", {}), result.get("scalars", {})
    prefix = f"[{name}] "
    if "comparison" in data:
        return [prefix + line for line in comparison_lines(data)], False
    if "probes" in data:
        params = _stage_params(cfg, name)
        lines, failed = capacity_lines(data, params.get("precision", 0.05), params.get("max_probes", 16))
    elif "predictor" in data:
        lines, failed = prefill_lines(scalars), False
    elif "verdict" in data:
        lines, failed = slo_lines(data.get("verdict"))
        rate = data.get("rate_rps")
        if rate is not None:
            lines[0] += f"  at {_num(rate)} requests/s offered"
    else:
        return [], False
    if result.get("partial"):
        lines.append("          PARTIAL: the stage stopped early; numbers cover completed requests only")
    return [prefix + lines[0], *(" " * len(prefix) + line.strip() if line.startswith(" ") else line
                                 for line in lines[1:])], failed


def build_verdict(cfg: Any, run_dir: Path, endpoint_url: str | None = None, error: str | None = None) -> Verdict:
    """The verdict of the pipeline run in ``run_dir`` from its finished stages' results."""
    names = stage_names(cfg.pipeline)
    results = load_stage_results(run_dir, names)
    ran = [f"ran:     {cfg.pipeline.name} ({cfg.experiment_name}) · endpoint {cfg.endpoint_label}"
           + (f" {endpoint_url}" if endpoint_url else "") + f" · model {cfg.model.name}",
           f"load:    {_describe_load(cfg)}"]
    answers: list[str] = []
    slo_failed = False
    for name, result in results.items():
        lines, failed = stage_answer(cfg, name, result)
        answers += lines
        slo_failed = slo_failed or failed
    missing = [n for n in names if n not in results]
    if missing and error is None:
        answers.append(f"not finished: {', '.join(missing)}")
    paths = [("run dir", str(run_dir))]
    for name in results:
        for file in ("summary.json", "capacity.json", "prefill_profile.json", "capacity_comparison.json"):
            if (Path(run_dir) / name / file).exists():
                paths.append(("summary" if file == "summary.json" else "result", str(Path(run_dir) / name / file)))
    report = Path(run_dir) / "report.html"
    if report.exists():
        paths.append(("report", str(report)))
    return Verdict(ran, answers, paths, slo_failed=slo_failed, error=error, stages=results)


__all__ = ["Verdict", "build_verdict", "capacity_lines", "load_stage_results", "slo_lines", "stage_names"]
