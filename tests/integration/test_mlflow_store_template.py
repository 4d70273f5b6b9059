"""A new sqlite store is seeded from the user cache's migrated template: same schema, its own
Default experiment, and a broken template is replaced, never used."""

from __future__ import annotations

from pathlib import Path

import pytest

from etalon.config import TrackingConfig
from etalon.runner import store_template, tracking


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ETALON_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "cache"


def _connect(db: Path):
    connected = tracking._connect(TrackingConfig(tracking_uri=f"sqlite:///{db}"))
    assert connected is not None
    return connected


def test_first_store_saves_the_template_the_next_is_a_copy(cache: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    client, experiment_id = _connect(tmp_path / "a.db")
    template = store_template.template_path()
    assert template.parent == cache / store_template.TEMPLATE_DIR and template.is_file()
    saved = template.stat().st_mtime_ns
    client.log_param(client.create_run(experiment_id).info.run_id, "rate", "4")

    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")
    client_b, experiment_b = _connect(tmp_path / "b.db")
    assert template.stat().st_mtime_ns == saved  # seeded, not re-created
    assert client_b.search_runs([experiment_b]) == []  # nothing of store a came along
    assert client_b.get_experiment_by_name("etalon").experiment_id == experiment_b
    default = client_b.get_experiment("0")
    assert default.artifact_location == str(tmp_path / "other" / "mlruns" / "0")
    run = client_b.create_run(experiment_b)
    client_b.log_metric(run.info.run_id, "goodput_rps", 3.5)
    assert client_b.get_run(run.info.run_id).data.metrics == {"goodput_rps": 3.5}


def test_a_broken_template_is_not_used_and_is_replaced(cache: Path, tmp_path: Path) -> None:
    template = store_template.template_path()
    template.parent.mkdir(parents=True)
    template.write_bytes(b"not a database")
    client, experiment_id = _connect(tmp_path / "a.db")
    assert client.get_experiment(experiment_id).name == "etalon"
    assert template.read_bytes()[:16] == b"SQLite format 3\x00"
    assert not list(tmp_path.glob(".a.db.*.part"))
