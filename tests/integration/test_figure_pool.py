"""Figures saved by the sweep's worker processes are the figures inline saving writes; a worker
that dies costs nothing but time (the figure is saved by the parent)."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

from etalon.report import figure_pool
from etalon.report.figures import grid_figure, save_figure


def _figure(seed: int):
    fig, grid = grid_figure((6, 3), 1, 2)
    values = np.sort(np.random.default_rng(seed).lognormal(size=500))
    for ax in grid[0]:
        ax.plot(values, np.linspace(0, 1, values.size))
        ax.set_title(f"seed {seed}")
    return fig


@pytest.fixture()
def pool():
    figure_pool.start(workers=2)
    yield
    figure_pool.shutdown()


def test_pool_saves_the_same_png_as_inline(tmp_path: Path, pool) -> None:
    paths = [save_figure(_figure(seed), tmp_path / f"pool_{seed}.png") for seed in range(4)]
    figure_pool.wait()
    figure_pool.shutdown()
    for seed, path in enumerate(paths):
        inline = save_figure(_figure(seed), tmp_path / f"inline_{seed}.png")
        assert path.read_bytes() == inline.read_bytes() and path.stat().st_size > 5000


def test_unpicklable_figure_is_saved_inline(tmp_path: Path, pool) -> None:
    fig = _figure(1)
    fig.etalon_lock = threading.Lock()  # cannot be pickled
    path = save_figure(fig, tmp_path / "inline.png")
    assert path.exists()  # already, before any wait


def test_dead_workers_cost_only_time(tmp_path: Path, pool) -> None:
    figure_pool.wait()  # workers are up
    for pid in list(figure_pool._pool._processes):  # type: ignore[union-attr]
        os.kill(pid, signal.SIGKILL)
    path = save_figure(_figure(2), tmp_path / "after_kill.png")
    figure_pool.wait()
    assert path.exists() and path.stat().st_size > 5000


def test_without_a_pool_figures_are_saved_at_once(tmp_path: Path) -> None:
    assert figure_pool._pool is None
    assert save_figure(_figure(3), tmp_path / "now.png").exists()


def _series(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    time_ns = np.arange(40, dtype=np.int64) * 500_000_000
    return {"time_ns": time_ns, "running": rng.integers(0, 9, 40).astype(float),
            "generation_tokens_per_s": rng.uniform(100, 900, 40), "kv_cache_usage": rng.uniform(0, 1, 40)}


_BUILDER = "etalon.report.server_plots:server_timeline_figure"


def test_draw_in_a_worker_writes_the_png_of_drawing_here(tmp_path: Path, pool) -> None:
    drawn = [figure_pool.draw(_BUILDER, (_series(seed),), tmp_path / f"pool_{seed}.png") for seed in range(3)]
    assert all(entry[1] is figure_pool._draw_pickled for entry in figure_pool._pending[-3:])  # built there
    figure_pool.shutdown()
    for seed, path in enumerate(drawn):
        here = figure_pool.draw(_BUILDER, (_series(seed),), tmp_path / f"here_{seed}.png")  # no pool now
        assert here.exists() and path.read_bytes() == here.read_bytes() and path.stat().st_size > 5000


def test_draw_with_a_large_input_builds_here_and_sends_the_figure(tmp_path: Path, pool, monkeypatch) -> None:
    monkeypatch.setattr(figure_pool, "MAX_DRAW_INPUT_BYTES", 100)
    path = figure_pool.draw(_BUILDER, (_series(1),), tmp_path / "large.png")
    assert figure_pool._pending[-1][1] is figure_pool._save_pickled  # the built figure went to a worker
    figure_pool.wait()
    assert path.stat().st_size > 5000


def test_draw_after_the_workers_died_is_done_here(tmp_path: Path, pool) -> None:
    figure_pool.wait()
    for pid in list(figure_pool._pool._processes):  # type: ignore[union-attr]
        os.kill(pid, signal.SIGKILL)
    path = figure_pool.draw(_BUILDER, (_series(2),), tmp_path / "after_kill.png")
    figure_pool.wait()
    assert path.stat().st_size > 5000


def test_a_builder_that_fails_fails_the_wait(tmp_path: Path, pool) -> None:
    figure_pool.draw(_BUILDER, ({"no": "time_ns"},), tmp_path / "bad.png")  # the builder raises KeyError
    with pytest.raises(KeyError, match="time_ns"):
        figure_pool.wait()
    assert not (tmp_path / "bad.png").exists()


_CHILD = """
import sys
sys.path.insert(0, {bench!r})
from pathlib import Path
from metrics_bench import synthetic_table
from etalon.core.summary import summarize
from etalon.report import figure_pool, write_report
figure_pool.start(workers=2)
table = synthetic_table(60, 40, 1)
summary = summarize(table, ttft_deadline_s=1.0, tbt_deadline_s=0.05, target_miss_rate=0.1)
written = write_report(Path({out!r}), table, summary)
figure_pool.wait()
print("matplotlib here:", "matplotlib" in sys.modules, "pngs:", sum(p.suffix == ".png" and p.stat().st_size > 5000 for p in written))
figure_pool.shutdown()
"""


def test_a_report_drawn_by_workers_never_imports_matplotlib_here(tmp_path: Path) -> None:
    import subprocess
    import sys

    bench = Path(__file__).resolve().parents[2] / "bench"
    out = subprocess.run([sys.executable, "-c", _CHILD.format(bench=str(bench), out=str(tmp_path))],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "matplotlib here: False pngs: 6"
