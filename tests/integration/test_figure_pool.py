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
