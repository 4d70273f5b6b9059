"""The self-contained HTML report renders in headless Chromium with its figures (skipped without chromium)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from etalon.report.figures import new_figure, save_figure
from etalon.report.html import Section, Table, write_page

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_page_renders_its_inlined_figure_offline(tmp_path: Path) -> None:
    from PIL import Image

    fig = new_figure((6, 3))
    ax = fig.subplots()
    ax.fill_between([0, 1], [0, 0], [1, 1], color="#ff0000")  # a solid red figure: easy to find on the page
    ax.set_axis_off()
    figure = save_figure(fig, tmp_path / "red.png")
    page = write_page(tmp_path / "report.html", "screenshot test",
                      [Section("verdict", text="SLO PASS"), Section("t", tables=[Table("t", ["a"], [["1"]])]),
                       Section("figure", figures=[figure])])
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,900",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=False)
    assert shot.exists(), "chromium wrote no screenshot"
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)
    assert red.sum() > 20_000  # the inlined PNG is drawn (no network: a data: URI)
