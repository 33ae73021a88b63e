"""The embedded local store: an SQLite file that holds InfluxDB points.

It is where events go when no Fluentd is configured, so the SDK works in a
notebook with nothing running.  A row is an InfluxDB point: measurement, tag
set, field set and timestamp, split by the contract exactly as fluent.conf
splits the same record for InfluxDB.  A point's identity is (measurement, tag
set, time), as in InfluxDB, so writing a point twice is harmless.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import contract as c
from .encoding import decode_entries
from .files import make_private_dirs, open_private

DB_NAME = "mlobs.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    measurement TEXT NOT NULL,
    series      TEXT NOT NULL,     -- canonical tag set, InfluxDB's series key
    time_ns     INTEGER NOT NULL,
    run_id      TEXT,
    tags        TEXT NOT NULL,     -- JSON object of tag key -> value
    fields      TEXT NOT NULL,     -- JSON object of field key -> value
    PRIMARY KEY (measurement, series, time_ns)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS points_by_run ON points (run_id, measurement, time_ns);
"""

# A second write of a point merges its fields into the first, as InfluxDB does.
_UPSERT = """
INSERT INTO points (measurement, series, time_ns, run_id, tags, fields)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (measurement, series, time_ns) DO UPDATE SET fields = json_patch(points.fields, excluded.fields)
"""


@dataclass(frozen=True)
class Point:
    """One stored point, as InfluxDB would hold it."""

    measurement: str
    time_ns: int
    tags: dict[str, str]
    fields: dict[str, Any]


def split_record(tag: str, record: dict[str, Any]) -> tuple[str, dict[str, str], dict[str, Any]]:
    """Measurement, tags and fields of a record, by the contract's stream for ``tag``."""
    stream = c.STREAMS_BY_TAG.get(tag)
    if stream is None:  # not ours (a newer SDK?): keep it rather than lose it
        measurement = tag[len(c.TAG_PREFIX) :] if tag.startswith(c.TAG_PREFIX) else tag
        tag_keys: tuple[str, ...] = c.IDENTITY_TAGS
    else:
        measurement, tag_keys = stream.measurement, stream.tags
    tags = {k: str(v) for k, v in record.items() if k in tag_keys and v not in (None, "")}
    fields = {k: v for k, v in record.items() if k not in tag_keys and v is not None}
    return measurement, tags, fields


def series_key(measurement: str, tags: dict[str, str]) -> str:
    return ",".join([measurement, *(f"{k}={tags[k]}" for k in sorted(tags))])


class LocalStore:
    """Reads and writes the points of one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        make_private_dirs(self.path.parent)
        # SQLite gives its -wal and -shm files the mode of the database file: 0600 for all three.
        os.close(open_private(self.path))
        self._local = threading.local()
        with self._connection() as db:
            db.executescript(_SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def write_entries(self, tag: str, entries: bytes) -> int:
        """Store the events of one PackedForward ``entries`` blob, in one transaction."""
        rows = []
        for time_ns, record in decode_entries(entries):
            measurement, tags, fields = split_record(tag, record)
            rows.append(
                (
                    measurement,
                    series_key(measurement, tags),
                    time_ns,
                    tags.get(c.TAG_RUN_ID),
                    json.dumps(tags, sort_keys=True),
                    json.dumps(fields, sort_keys=True),
                )
            )
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(_UPSERT, rows)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return len(rows)

    def points(self, measurement: str | None = None, run_id: str | None = None) -> Iterator[Point]:
        """Stored points in time order, optionally of one measurement and one run."""
        where, args = [], []
        if measurement is not None:
            where.append("measurement = ?")
            args.append(measurement)
        if run_id is not None:
            where.append("run_id = ?")
            args.append(run_id)
        sql = "SELECT measurement, time_ns, tags, fields FROM points"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY time_ns, measurement, series"
        for m, t, tags, fields in self._connection().execute(sql, args):
            yield Point(m, t, json.loads(tags), json.loads(fields))

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
