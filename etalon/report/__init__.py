"""Run reports: percentile and per-request CSV tables, PNG plots, and the terminal summary."""

from __future__ import annotations

from etalon.report.files import write_report
from etalon.report.terminal import format_summary

__all__ = ["format_summary", "write_report"]
