"""Re-summarise a finished run from its records file alone, with its own or another SLO, in chunks
of bounded size (no load is sent):

    python -m etalon.summarize RUN_DIR [slo=tbt_ttft] [slo.tbt_s=0.05] [--out DIR] [--batch-rows N]

RUN_DIR is a run (or stage) directory holding one records.parquet/ or records.jsonl; the SLO is the
run's saved one (.hydra/config.yaml) with the given overrides: ``slo=NAME`` picks conf/slo/NAME.yaml,
``slo.KEY=VALUE`` sets one field. Writes summary.json, the CSV tables and the summary plots to
``--out`` (default: RUN_DIR's records directory / resummary) and prints the summary.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


class SummarizeError(ValueError):
    """A user error: one line, exit status 2."""


def _saved_slo(records: Path) -> Any:
    from omegaconf import OmegaConf

    for folder in [records.parent, *records.parents]:
        for saved in (folder / "resolved_config.yaml", folder / ".hydra" / "config.yaml"):
            if saved.is_file():
                return OmegaConf.load(saved).get("slo")
    return None


def slo_config(records: Path, overrides: list[str]) -> Any:
    """The run's saved SLO config with ``slo=NAME`` / ``slo.KEY=VALUE`` overrides applied."""
    from omegaconf import OmegaConf

    cfg = _saved_slo(records)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not (key == "slo" or key.startswith("slo.")):
            raise SummarizeError(f"override {item!r}: expected slo=NAME or slo.KEY=VALUE")
        if key == "slo":
            preset = CONF_DIR / "slo" / f"{value}.yaml"
            if not preset.is_file():
                names = sorted(p.stem for p in (CONF_DIR / "slo").glob("*.yaml"))
                raise SummarizeError(f"slo={value}: no such SLO preset (one of {', '.join(names)})")
            cfg = OmegaConf.load(preset)
        else:
            if cfg is None:
                raise SummarizeError(f"{item}: the run saved no SLO config; choose one first with slo=NAME")
            OmegaConf.update(cfg, key[4:], yaml.safe_load(value) if value else None, merge=True)
    if cfg is None:
        raise SummarizeError(f"no saved run config above {records}: name an SLO with slo=NAME")
    return cfg


def build_slo(cfg: Any) -> Any:
    from hydra.utils import instantiate

    from etalon.core.slo import NO_PROFILE_MESSAGE
    from etalon.stages.prefill_profile import load_profile

    from hydra.errors import InstantiationException

    try:
        slo = instantiate(cfg)
    except InstantiationException as exc:
        raise SummarizeError(f"bad SLO: {exc.__cause__ or exc}") from None
    if getattr(slo, "needs_prefill_profile", False):
        path = getattr(slo, "prefill_profile", None)
        if not path:
            raise SummarizeError(NO_PROFILE_MESSAGE + " (give slo.prefill_profile=PATH)")
        slo = slo.with_predictor(load_profile(path))
    return slo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m etalon.summarize", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("overrides", nargs="*", help="slo=NAME, slo.KEY=VALUE")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--batch-rows", type=int, default=8192)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (SummarizeError, FileNotFoundError, ValueError) as exc:
        print(f"etalon.summarize: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from etalon.records import find_records
    from etalon.records.chunked import summarize_file
    from etalon.report import format_summary, write_report
    from etalon.stages.benchmark import SUMMARY_FILE, write_summary

    if args.batch_rows < 1:
        raise SummarizeError(f"--batch-rows must be >= 1, got {args.batch_rows}")
    if not args.run_dir.exists():
        raise FileNotFoundError(f"{args.run_dir}: no such directory")
    records = find_records(args.run_dir)
    slo = build_slo(slo_config(records, args.overrides))
    summary = summarize_file(records, slo, batch_rows=args.batch_rows)
    out = args.out or records.parent / "resummary"
    out.mkdir(parents=True, exist_ok=True)
    write_summary(out / SUMMARY_FILE, summary.to_dict())
    write_report(out, None, summary)
    print(format_summary(summary))
    print(f"SLO {type(slo).__name__}; written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
