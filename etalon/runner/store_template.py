"""A new sqlite MLflow store starts as a copy of an empty, migrated one from the user cache:
MLflow creates and migrates its schema (~50 revisions) on the first use of a store, ~1-2 s for
every fresh ``outputs/``, sweep and test store; the copy takes milliseconds. One template per
MLflow version (its schema), written atomically by the first store of that version."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import time
from importlib.metadata import version
from pathlib import Path

from etalon.user_cache import user_cache_dir

log = logging.getLogger(__name__)

TEMPLATE_DIR = "mlflow-store-templates"


def fresh_sqlite_db(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI that does not exist yet (else None)."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///") :])
    return None if db.exists() else db


def template_path() -> Path:
    return user_cache_dir() / TEMPLATE_DIR / f"mlflow-{version('mlflow')}.db"


def seed_store(db: Path) -> bool:
    """Copy the template to ``db`` (absent); False when there is no usable template (MLflow then
    creates the schema itself). Its Default experiment gets the artifact root and times that
    MLflow would have given it here (``./mlruns/0``, now)."""
    template = template_path()
    if not template.is_file():
        return False
    part = db.with_name(f".{db.name}.{os.getpid()}.part")
    try:
        shutil.copyfile(template, part)
        now_ms = int(time.time() * 1000)
        with sqlite3.connect(part) as con:
            if con.execute("PRAGMA quick_check").fetchone() != ("ok",):
                raise sqlite3.DatabaseError("template fails its integrity check")
            con.execute("UPDATE experiments SET artifact_location = ?, creation_time = ?, last_update_time = ? "
                        "WHERE experiment_id = 0", (str(Path.cwd() / "mlruns" / "0"), now_ms, now_ms))
        con.close()
        os.replace(part, db)
        return True
    except (OSError, sqlite3.Error) as exc:
        log.info("MLflow store template %s not used (%s): MLflow creates the schema", template, exc)
        part.unlink(missing_ok=True)
        return False


def save_template(db: Path) -> None:
    """Keep ``db`` (just created and migrated by MLflow, nothing logged to it yet) as the template
    of its MLflow version; a cache that cannot be written costs only the time saved."""
    template = template_path()
    part = template.with_name(f".{template.name}.{os.getpid()}.part")
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(db) as source, sqlite3.connect(part) as target:
            source.backup(target)  # a consistent snapshot, whatever MLflow's pool holds open
        source.close()
        target.close()
        os.replace(part, template)
    except (OSError, sqlite3.Error) as exc:
        log.info("MLflow store template not saved to %s: %s", template, exc)
        part.unlink(missing_ok=True)
