"""The local store as a read backend: SQL over the SQLite file the SDK writes.

It opens the file with every write refused (``query_only``), so reading never
creates or changes anything (see :meth:`LocalBackend.uri`), and it streams:
SQLite hands rows over one at a time from its cursor.  A missing file reads as
an empty store (nothing was recorded there yet).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import contract as c
from ..local_store import DB_NAME
from .query import ABSENT_TAGS, BackendUnavailable, Count, Reduce, Row, Select

_SQL_AGG = {"min": "MIN", "max": "MAX", "mean": "AVG"}


def _json_path(key: str) -> str:
    return '$."' + key.replace('"', '""') + '"'


def _takes_absent(tag: str, values: tuple[str, ...]) -> bool:
    """Whether a filter on ``tag`` for ``values`` also takes points without the tag (ABSENT_TAGS)."""
    return tag in ABSENT_TAGS and ABSENT_TAGS[tag] in values


def _or_absent(tag: str, values: tuple[str, ...], clause: str) -> str:
    return f"({clause} OR json_extract(tags, ?) IS NULL)" if _takes_absent(tag, values) else clause


def _absent_args(tag: str, values: tuple[str, ...]) -> list[str]:
    return [_json_path(tag)] if _takes_absent(tag, values) else []


class LocalBackend:
    """Answers :class:`Select`, :class:`Reduce` and :class:`Count` from ``home/mlobs.db``."""

    def __init__(self, home: Path | str) -> None:
        self.path = Path(home).expanduser() / DB_NAME
        self._db: sqlite3.Connection | None = None

    def uri(self) -> str:
        """The SQLite URI of the store: percent-encoded, so "#", "?", "%" or a space stay the path's.

        ``mode=rw`` opens the file without ever creating it, and ``query_only`` refuses
        any write.  Not ``mode=ro``: a read-only connection to a WAL store creates its
        ``-wal`` and ``-shm`` files and cannot remove them, so each read would leave two
        files behind; this connection's close removes them when no writer is open.
        """
        return f"{self.path.absolute().as_uri()}?mode=rw"

    def describe(self) -> str:
        return f"the local store {self.path}" + ("" if self.path.exists() else " (no file yet)")

    def _connection(self) -> sqlite3.Connection | None:
        if self._db is None:
            if not self.path.exists():
                return None
            try:
                self._db = sqlite3.connect(self.uri(), uri=True, timeout=30.0)
                self._db.execute("PRAGMA query_only=ON")
                self._db.execute("SELECT 1 FROM points LIMIT 1").fetchall()
            except sqlite3.Error as exc:
                self._db = None
                raise BackendUnavailable(f"cannot read the local store {self.path}: {exc}") from None
        return self._db

    def _where(self, query: Select) -> tuple[str, list[Any]]:
        clauses: list[str] = ["measurement = ?"]
        args: list[Any] = [query.stream.measurement]
        for tag, value in query.equal.items():
            if tag == c.TAG_RUN_ID:  # a column of its own, indexed with measurement and time
                clauses.append("run_id = ?")
                args.append(value)
            else:
                clauses.append(_or_absent(tag, (value,), "json_extract(tags, ?) = ?"))
                args += [_json_path(tag), value, *_absent_args(tag, (value,))]
        for tag, values in query.among.items():
            marks = ",".join("?" * len(values))
            if tag == c.TAG_RUN_ID:
                clauses.append(f"run_id IN ({marks})")
                args += list(values)
            else:
                clauses.append(_or_absent(tag, values, f"json_extract(tags, ?) IN ({marks})"))
                args += [_json_path(tag), *values, *_absent_args(tag, values)]
        if query.start_ns is not None:
            clauses.append("time_ns >= ?")
            args.append(query.start_ns)
        if query.stop_ns is not None:
            clauses.append("time_ns < ?")
            args.append(query.stop_ns)
        present = " OR ".join("json_extract(fields, ?) IS NOT NULL" for _ in query.fields)
        clauses.append(f"({present})")
        args += [_json_path(f) for f in query.fields]
        return " AND ".join(clauses), args

    def _execute(self, sql: str, args: list[Any]) -> Iterator[Any]:
        db = self._connection()
        if db is None:
            return iter(())
        try:
            return iter(db.execute(sql, args))
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"cannot read the local store {self.path}: {exc}") from None

    def select(self, query: Select) -> Iterator[Row]:
        where, args = self._where(query)
        direction = "DESC" if query.desc else "ASC"
        if query.order_by is not None:
            order = f"json_extract(fields, ?) {direction}, time_ns {direction}, series {direction}"
            order_args = [_json_path(query.order_by)]
        else:
            order, order_args = f"time_ns {direction}, series {direction}", []
        sql = f"SELECT time_ns, tags, fields FROM points WHERE {where} ORDER BY {order}"  # noqa: S608 - no values
        if query.limit is not None:
            sql += f" LIMIT {int(query.limit)}"
        wanted = query.fields
        for time_ns, tags, fields in self._execute(sql, [*args, *order_args]):
            values = json.loads(fields)
            yield Row(time_ns, json.loads(tags), {f: values[f] for f in wanted if f in values})

    def reduce(self, query: Reduce) -> Iterator[tuple[dict[str, str], Any]]:
        where, args = self._where(query.select)
        groups = ", ".join("json_extract(tags, ?)" for _ in query.by)
        group_args = [_json_path(t) for t in query.by]
        value = "json_extract(fields, ?)"
        if query.agg in _SQL_AGG:
            picked = f"{_SQL_AGG[query.agg]}({value})"
        else:  # SQLite takes the bare column from the row where MAX/MIN(time_ns) is found
            picked = f"{value}, {'MAX' if query.agg == 'last' else 'MIN'}(time_ns)"
        sql = (
            f"SELECT {groups}, {picked} FROM points WHERE {where} AND {value} IS NOT NULL "  # noqa: S608
            f"GROUP BY {groups}"
        )
        value_arg = _json_path(query.value)
        for row in self._execute(sql, [*group_args, value_arg, *args, value_arg, *group_args]):
            tags = {t: v for t, v in zip(query.by, row, strict=False) if v is not None}
            yield tags, row[len(query.by)]

    def count(self, query: Count) -> Iterator[tuple[dict[str, str], int]]:
        where, args = self._where(query.select)
        groups = ", ".join(["json_extract(tags, ?)" for _ in query.by] + ["COUNT(*)"])
        group_args = [_json_path(t) for t in query.by]
        sql = f"SELECT {groups} FROM points WHERE {where} AND json_extract(fields, ?) IS NOT NULL"  # noqa: S608
        if query.by:
            sql += " GROUP BY " + ", ".join("json_extract(tags, ?)" for _ in query.by)
        value_arg = _json_path(query.value)
        for row in self._execute(sql, [*group_args, *args, value_arg, *group_args]):
            if row[len(query.by)]:  # no GROUP BY: one row, 0 when nothing matched
                yield {t: v for t, v in zip(query.by, row, strict=False) if v is not None}, row[len(query.by)]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
