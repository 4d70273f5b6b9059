"""How a pipeline run ends: its HTML report and verdict block (printed last, on success and on
failure), both logged to the run's MLflow run; and the run's MLflow name."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from etalon.runner.errors import SLO_FAILED_EXIT, describe

SWEEP_KEYS_FILE = "sweep_keys"


@dataclass
class Outcome:
    slo_failed: bool = False


@contextmanager
def closing_verdict(cfg: Any, run_dir: Path, endpoint_url: list[str], tracker: Any,
                    secrets: list[str] | None = None) -> Iterator[Outcome]:
    """Runs the pipeline body; then writes report.html and prints the verdict, whatever happened
    (an error's text with every known secret redacted)."""
    from etalon.core.redaction import redact_text

    outcome = Outcome()
    try:
        yield outcome
    except KeyboardInterrupt:
        _close(cfg, run_dir, endpoint_url, tracker, outcome, "interrupted (Ctrl-C); results so far are kept")
        raise
    except BaseException as exc:
        _close(cfg, run_dir, endpoint_url, tracker, outcome, redact_text(describe(exc), secrets or []))
        raise
    _close(cfg, run_dir, endpoint_url, tracker, outcome, None)


def _close(cfg: Any, run_dir: Path, endpoint_url: list[str], tracker: Any, outcome: Outcome,
           error: str | None) -> None:
    from etalon.report.run_page import write_run_report
    from etalon.report.verdict import build_verdict

    url = endpoint_url[0] if endpoint_url else None
    verdict = build_verdict(cfg, run_dir, url, error)
    outcome.slo_failed = verdict.slo_failed
    title = f"etalon: {cfg.pipeline.name} ({cfg.experiment_name})"
    try:
        report = write_run_report(run_dir, verdict, title)
    except Exception as exc:  # a report that cannot be written must not hide the verdict
        verdict.answers.append(f"(report not written: {type(exc).__name__}: {exc})")
        report = None
    verdict = build_verdict(cfg, run_dir, url, error)  # now lists the report path
    if verdict.slo_failed and cfg.fail_on_slo:
        verdict.answers.append(f"fail_on_slo=true: exit status {SLO_FAILED_EXIT}")
    text = verdict.text()
    (run_dir / "verdict.txt").write_text(text + "\n")
    tracker.log_artifacts([p for p in (report, run_dir / "verdict.txt") if p is not None])
    tracker.set_tags({"etalon.verdict": "slo_failed" if verdict.slo_failed else ("error" if error else "ok")})
    print(text, flush=True)


def run_name(cfg: Any, hydra_cfg: Any) -> str:
    """``quickstart`` or, in a sweep, ``quickstart rate_rps=4``: the experiment and the swept values."""
    base = cfg.experiment_name if cfg.experiment_name != "default" else cfg.pipeline.name
    swept = swept_values(hydra_cfg)
    return " ".join([base, *(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in swept)])


def swept_values(hydra_cfg: Any) -> list[tuple[str, str]]:
    """(key, value) of this job's swept overrides (the keys the sweep's callback recorded)."""
    if str(hydra_cfg.mode) != "RunMode.MULTIRUN":
        return []
    marker = Path(hydra_cfg.sweep.dir) / SWEEP_KEYS_FILE
    keys = marker.read_text().split() if marker.exists() else []
    values = dict(o.split("=", 1) for o in hydra_cfg.overrides.task if "=" in o)
    return [(k, values[k]) for k in keys if k in values]


def sweep_keys(overrides: list[str]) -> list[str]:
    """The keys a multirun sweeps: overrides whose value is a comma list or a sweep function."""
    keys = []
    for o in overrides:
        if "=" not in o:
            continue
        key, value = o.split("=", 1)
        if value.startswith(("[", "{")):
            continue
        if "," in value or value.startswith(("range(", "choice(", "interval(", "glob(")):
            keys.append(key.lstrip("+~"))
    return keys


__all__ = ["closing_verdict", "run_name", "swept_values", "sweep_keys"]
