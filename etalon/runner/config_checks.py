"""Checks on the composed config that the schema's own types cannot make: no keys it does not know."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from etalon.config import ConfigError, did_you_mean


def check_schema_keys(node: Any, prefix: str = "") -> None:
    """A key that a schema-backed group does not define (e.g. added with ``+workload.arival=...``)
    is an error naming the nearest field, not a value silently dropped."""
    if not isinstance(node, DictConfig):
        return
    schema = OmegaConf.get_type(node)
    keys = [str(k) for k in node.keys()]
    if schema is not None and dataclasses.is_dataclass(schema):
        fields = [f.name for f in dataclasses.fields(schema)]
        for key in keys:
            if key not in fields:
                where = f"{prefix}{key}"
                hint = did_you_mean(key, fields)
                if hint:
                    hint = f" (did you mean {prefix + hint.split(chr(39))[1]!r}?)"
                raise ConfigError(f"{where}: no such key in the {prefix.rstrip('.') or 'top-level'} schema{hint}; "
                                  f"keys there: {', '.join(fields)}")
    for key in keys:
        if OmegaConf.is_missing(node, key):
            continue
        check_schema_keys(node._get_node(key), f"{prefix}{key}.")



def check_writable(path: str | Path, key: str) -> None:
    """``path`` (a directory) exists or can be made, and this process can write into it."""
    target = Path(path).expanduser()
    try:
        target.mkdir(parents=True, exist_ok=True)
        probe = target / f".etalon-write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot write to {target}: {exc.strerror or exc}") from None


def check_output_dirs(cfg: Any) -> None:
    """The cache and a local sqlite MLflow store must be writable before the run starts."""
    check_writable(cfg.cache_dir, "cache_dir")
    uri = cfg.tracking.tracking_uri if cfg.tracking.enabled else ""
    if uri.startswith("sqlite:///"):
        check_writable(Path(uri[len("sqlite:///") :]).parent, "tracking.tracking_uri")


# Files a run writes about itself before measuring anything; a run dir holding only these is empty.
BOOKKEEPING = {"resolved_config.yaml", "error.txt", "config.yaml", "hydra.yaml", "overrides.yaml"}


def remove_unstarted_run_dir(run_dir: Path) -> bool:
    """Delete ``run_dir`` if it holds nothing but bookkeeping (no record, no result); True if gone.

    Only known file names are removed, so a directory a user pointed hydra.run.dir at keeps its
    own files."""
    if not run_dir.is_dir():
        return False
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    if any(p.name not in BOOKKEEPING and p.suffix != ".log" for p in files):
        return False
    for p in files:
        p.unlink()
    for d in sorted((p for p in run_dir.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        d.rmdir()
    run_dir.rmdir()
    try:
        run_dir.parent.rmdir()  # the day's directory (outputs/runs/<date>) if this was its only run
    except OSError:
        pass
    return True


__all__ = ["check_output_dirs", "check_schema_keys", "check_writable", "remove_unstarted_run_dir"]
