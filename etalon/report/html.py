"""Self-contained HTML reports (one file, every asset inlined, no network) of a run, sweep or comparison.

Figures are etalon's matplotlib figures, inlined as base64 PNG: one plotting code path serves the
files, MLflow and the report; dense figures (200k-point CDFs, token timelines) stay a few hundred
kB where SVG would be megabytes; and the page needs no JavaScript (plotly offline would add ~3.5 MB
of script per report and a second plotting implementation).
"""

from __future__ import annotations

import base64
import csv
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

REPORT_FILE = "report.html"
MAX_TABLE_ROWS = 200
SKIPPED_TABLES = ("metrics_requests.csv",)  # one row per request: in the run directory, not the page

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1200px;color:#222}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
h3{font-size:15px}pre{background:#f6f8fa;padding:10px;overflow-x:auto;font-size:12px;line-height:1.35}
table{border-collapse:collapse;font-size:12px;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee;margin:6px 0}
.pass{color:#1a7f37;font-weight:bold}.fail{color:#cf222e;font-weight:bold}.note{color:#666;font-size:12px}
"""


@dataclass
class Table:
    """A table for the page: a caption, column names, rows of cells."""

    caption: str
    columns: list[str]
    rows: list[list[Any]]


@dataclass
class Section:
    """One part of the page: a heading, preformatted text, tables, figures (PNG paths)."""

    heading: str
    text: str | None = None
    tables: list[Table] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    details: str | None = None  # collapsed preformatted text (e.g. the resolved config)


def csv_table(path: Path, caption: str | None = None) -> Table:
    with open(path, newline="") as f:
        reader = csv.reader(f)
        columns = next(reader, [])
        rows = [row for _, row in zip(range(MAX_TABLE_ROWS + 1), reader)]
    if len(rows) > MAX_TABLE_ROWS:
        rows = rows[:MAX_TABLE_ROWS]
        caption = f"{caption or path.name} (first {MAX_TABLE_ROWS} rows; all in {path.name})"
    return Table(caption or path.name, columns, rows)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.6g}"
    else:
        text = str(value)
        try:
            text = f"{float(text):.6g}" if text and "." in text and not text.startswith("0x") else text
        except ValueError:
            pass
    css = ' class="pass"' if text in ("PASS", "better") else ' class="fail"' if text in ("FAIL", "worse") else ""
    return f"<td{css}>{html.escape(text)}</td>"


def _table_html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in table.rows)
    return (f"<h3>{html.escape(table.caption)}</h3><div style=\"overflow-x:auto\"><table><tr>{head}</tr>"
            f"{body}</table></div>")


def _figure_html(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    name = html.escape(Path(path).name)
    return f'<figure><img alt="{name}" src="data:image/png;base64,{data}"><figcaption class="note">{name}</figcaption></figure>'


def _section_html(section: Section) -> str:
    parts = [f"<h2>{html.escape(section.heading)}</h2>"]
    if section.text:
        parts.append(f"<pre>{html.escape(section.text)}</pre>")
    parts += [_table_html(t) for t in section.tables]
    parts += [_figure_html(p) for p in section.figures if Path(p).exists()]
    if section.details:
        parts.append(f"<details><summary>show</summary><pre>{html.escape(section.details)}</pre></details>")
    return "\n".join(parts)


def write_page(path: Path, title: str, sections: Sequence[Section]) -> Path:
    """One HTML file holding every section; images are data: URIs, styles inline."""
    from etalon.report import figure_pool

    figure_pool.wait()  # the figures it inlines may still be being saved by workers
    body = "\n".join(_section_html(s) for s in sections)
    page = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


__all__ = ["REPORT_FILE", "Section", "Table", "csv_table", "write_page"]
