"""The run journal: a SQLite file in ``OUT/.faceveil/`` that is the single source of truth of a run.

Each input's outcome is committed on its own, after its output file is in place, so a run killed at
any instant resumes from exactly what is finished. ``faces.jsonl`` and the COCO file are written from it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    path TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    status TEXT NOT NULL,
    kind TEXT NOT NULL,
    sha256 TEXT,
    fingerprint TEXT,
    width INTEGER,
    height INTEGER,
    method TEXT,
    written TEXT,
    faces TEXT,
    extra TEXT,
    error TEXT,
    reviewed INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL
);
"""


@dataclass
class Entry:
    """One input's row: what happened to it and what was hidden (``faces`` as contract JSON objects)."""

    path: str
    source: str
    status: str
    kind: str
    sha256: str | None = None
    fingerprint: str | None = None
    width: int | None = None
    height: int | None = None
    method: str | None = None
    written: str | None = None
    faces: list[dict[str, Any]] | None = None
    extra: dict[str, Any] | None = None
    error: str | None = None
    reviewed: bool = False


class Journal:
    """Open (or create) the journal of the output folder ``out``."""

    def __init__(self, out: Path) -> None:
        state = Path(out) / ".faceveil"
        state.mkdir(parents=True, exist_ok=True)
        self.path = state / "journal.sqlite"
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_meta(self, key: str, value: Any) -> None:
        """Store one run-level value (settings, command) as JSON."""
        self._db.execute(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value, sort_keys=True))
        )

    def get_meta(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def get(self, path: str) -> Entry | None:
        """The row for ``path`` (relative output path), if any."""
        cur = self._db.execute("SELECT * FROM items WHERE path = ?", (path,))
        row = cur.fetchone()
        return None if row is None else _entry(cur.description, row)

    def record(self, entry: Entry) -> None:
        """Commit one input's outcome (replacing an earlier one)."""
        self._db.execute(
            "INSERT OR REPLACE INTO items (path, source, status, kind, sha256, fingerprint, width, height,"
            " method, written, faces, extra, error, reviewed, updated) VALUES (" + ",".join("?" * 15) + ")",
            (
                entry.path,
                entry.source,
                entry.status,
                entry.kind,
                entry.sha256,
                entry.fingerprint,
                entry.width,
                entry.height,
                entry.method,
                entry.written,
                None if entry.faces is None else json.dumps(entry.faces),
                None if entry.extra is None else json.dumps(entry.extra),
                entry.error,
                int(entry.reviewed),
                time.time(),
            ),
        )

    def entries(self) -> Iterator[Entry]:
        """All rows sorted by path (the order of ``faces.jsonl``)."""
        cur = self._db.execute("SELECT * FROM items ORDER BY path")
        for row in cur:
            yield _entry(cur.description, row)


def _entry(description: Any, row: tuple) -> Entry:
    data = dict(zip((d[0] for d in description), row, strict=True))
    data.pop("updated")
    for key in ("faces", "extra"):
        data[key] = None if data[key] is None else json.loads(data[key])
    data["reviewed"] = bool(data["reviewed"])
    return Entry(**data)
