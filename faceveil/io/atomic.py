"""Atomic file writes: an output is either complete or absent, never half written."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

_MAX_NAME_BYTES = 100


def _temp_name(dest: Path) -> str:
    """A hidden, unique name next to ``dest`` that keeps its suffix (encoders pick the format from it)."""
    stem = dest.name.encode("utf-8", "surrogateescape")[:_MAX_NAME_BYTES].decode("utf-8", "ignore")
    return f".{stem}.{secrets.token_hex(6)}.tmp{dest.suffix}"


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX, best effort: the file is already in place)."""
    if os.name != "posix":
        return
    with suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dest`` to write to; on success it is fsynced and replaces ``dest``.

    The temp file is named ``.<name>.<random>.tmp<suffix>``. On an exception it is deleted and the
    exception re-raised, so ``dest`` is left as it was. Missing parent folders are created.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = dest.with_name(_temp_name(dest))
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        break
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDWR)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)


def atomic_write_bytes(dest: Path, data: bytes) -> None:
    """Write ``data`` to ``dest`` atomically (see :func:`atomic_path`)."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
