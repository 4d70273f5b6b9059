"""The records file: whole JSONL lines only, and a full disk stops the file, never the run."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("etalon")

# Out of space, over quota, over the file-size limit, read-only: the run goes on in memory.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


class RecordsFile:
    """Appends batches of JSONL lines unbuffered; after a failed write the file is cut back to
    its last whole line and writing stops (``error`` says why; records stay in memory)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = 0
        self.error: str | None = None
        self._file: BinaryIO | None = open(path, "wb", buffering=0)  # noqa: SIM115
        self._good_bytes = 0

    def write(self, data: bytes, lines: int) -> None:
        if self._file is None:
            return
        try:
            view = memoryview(data)
            while view:
                written = self._file.write(view)
                view = view[written or 0:]
        except OSError as exc:
            self._give_up(exc)
            return
        self._good_bytes += len(data)
        self.lines += lines

    def _give_up(self, exc: OSError) -> None:
        assert self._file is not None
        try:
            os.ftruncate(self._file.fileno(), self._good_bytes)  # shrinking needs no space
        except OSError:
            pass
        self._file.close()
        self._file = None
        self.error = f"{type(exc).__name__}: {exc}"
        log.warning("cannot write %s (%s): it holds the first %d records, whole lines only; "
                    "the run goes on and its summary covers every record", self.path, self.error,
                    self.lines)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> RecordsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS
