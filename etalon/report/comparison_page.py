"""The comparison of runs: a table, a figure of relative deltas with their intervals, an HTML page."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from etalon.core.comparison import BETTER, WORSE, MetricDelta
from etalon.report.html import Section, Table, write_page

COLUMNS = ("metric", "A", "B", "delta", "delta %", "CI low", "CI high", "verdict")


def _fmt(v: float, pct: bool = False) -> str:
    if not math.isfinite(v):
        return "n/a"
    return f"{v * 100:+.2f}%" if pct else f"{v:.5g}"


def table_rows(deltas: Sequence[MetricDelta]) -> list[list[str]]:
    return [[d.key, _fmt(d.a), _fmt(d.b), _fmt(d.delta), _fmt(d.relative, pct=True), _fmt(d.low), _fmt(d.high),
             d.verdict] for d in deltas]


def format_table(title: str, deltas: Sequence[MetricDelta]) -> str:
    rows = [list(COLUMNS), *table_rows(deltas)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = [title] + ["  ".join(c.ljust(w) if i in (0, 7) else c.rjust(w) for i, (c, w) in
                                 enumerate(zip(r, widths))) for r in rows]
    lines.insert(2, "-" * len(lines[1]))
    return "\n".join(lines)


def write_deltas(out_dir: Path, stem: str, comparisons: dict[str, Sequence[MetricDelta]], text: str) -> list[Path]:
    """``<stem>.json`` (every delta), ``<stem>.txt`` (``text``) and ``<stem>.png`` (``plot_deltas``)."""
    import orjson

    out_dir.mkdir(parents=True, exist_ok=True)
    table, txt = out_dir / f"{stem}.json", out_dir / f"{stem}.txt"
    table.write_bytes(orjson.dumps({k: [d.as_dict() for d in v] for k, v in comparisons.items()},
                                   option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    txt.write_text(text + "\n")
    return [table, txt, plot_deltas(out_dir / f"{stem}.png", comparisons)]


def plot_deltas(path: Path, comparisons: dict[str, Sequence[MetricDelta]]) -> Path:
    """``deltas_figure`` saved at ``path`` (by a figure worker when the pool runs)."""
    from etalon.report.figure_pool import draw

    return draw(f"{__name__}:deltas_figure", (comparisons,), path)


def deltas_figure(comparisons: dict[str, Sequence[MetricDelta]]) -> Any:
    """One panel per compared run: relative delta (%) of every metric with its interval, coloured by verdict."""
    from etalon.report.figures import grid_figure, text_width_in

    # Fixed margins (a constrained layout costs ~0.3 s here): room on the left and between panels
    # for the metric names that label the y ticks.
    names = max(0.75, text_width_in([d.key for v in comparisons.values() for d in v], 8) + 0.2)
    panels = len(comparisons)
    width = names + panels * 4.5 + (panels - 1) * (names + 0.2) + 0.3  # each panel's axes 4.5 in wide
    fig, grid = grid_figure((width, 0.38 * max(len(v) for v in comparisons.values()) + 1.6), 1, panels,
                            left=names, gap_w=names + 0.2, top=0.6, right=0.3)
    axes = grid[0]
    for ax, (title, deltas) in zip(axes, comparisons.items()):
        keys = [d.key for d in deltas][::-1]
        rows = list(deltas)[::-1]
        for i, d in enumerate(rows):
            base = d.a if d.a else math.nan
            mid, lo, hi = (100 * d.relative, 100 * d.low / base, 100 * d.high / base)
            color = {WORSE: "tab:red", BETTER: "tab:green"}.get(d.verdict, "tab:gray")
            if math.isfinite(mid):
                ax.errorbar([mid], [i], xerr=[[max(mid - lo, 0)], [max(hi - mid, 0)]], fmt="o", color=color, capsize=3)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(keys)), keys, fontsize=8)
        ax.set_xlabel("B vs A (%); bars: simultaneous interval", fontsize=9)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("red: worse · green: better · gray: no detectable difference", fontsize=9)
    return fig


def write_comparison_page(path: Path, title: str, text: str, comparisons: dict[str, Sequence[MetricDelta]],
                          figure: Path | None, notes: str = "") -> Path:
    sections = [Section("verdict", text=text + ("\n\n" + notes if notes else ""))]
    sections += [Section(name, tables=[Table(name, list(COLUMNS), table_rows(d))]) for name, d in comparisons.items()]
    if figure is not None:
        sections.append(Section("figure", figures=[figure]))
    return write_page(path, title, sections)


__all__ = ["deltas_figure", "format_table", "plot_deltas", "table_rows", "write_comparison_page"]
