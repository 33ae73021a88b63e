"""A stand-in for InfluxDB 2's query API, for the read API's tests and benchmark.

InfluxDB cannot run here.  This server speaks its wire format: ``POST
/api/v2/query?org=`` with a JSON body (the Flux and the dialect), a token in
``Authorization: Token``, errors as JSON ``{"code", "message"}``, and answers in
annotated CSV (``#datatype``, ``#group``, ``#default`` rows, then a header and the
rows of each table, tables of one schema in one block), streamed in chunks.

It evaluates only the query shapes ``pipeline_sdk.read.influx`` builds, and it
refuses any line it does not know, so a change in the generated Flux shows up here.
The evaluation is written from Flux's documented semantics, independently of the
local backend's SQL: that is what makes "both backends agree" a real check.

Over 400 lines as one piece: the stand-in's query parser, its evaluator over the local store and
its HTTP server answer one API together.
"""

from __future__ import annotations

import argparse
import http.server
import json
import re
import statistics
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline_sdk import contract as c
from pipeline_sdk.local_store import LocalStore, Point

_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_UNESCAPE = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t", "$": "$"}


def unquote(literal: str) -> str:
    return re.sub(r"\\(x[0-9a-fA-F]{2}|.)", _unescape, literal)


def _unescape(match: re.Match[str]) -> str:
    escape = match.group(1)
    return chr(int(escape[1:], 16)) if escape.startswith("x") else _UNESCAPE[escape]


def strings(text: str) -> list[str]:
    return [unquote(s) for s in _STRING.findall(text)]


class FluxUnsupported(ValueError):
    """A line of Flux this stand-in does not evaluate (so the test notices a changed query)."""


@dataclass
class Plan:
    """What a query asks, parsed from its lines."""

    bucket: str = ""
    start: int = 0
    stop: int | None = None
    measurement: str = ""
    equal: dict[str, str] = field(default_factory=dict)
    among: dict[str, list[str]] = field(default_factory=dict)
    or_absent: set[str] = field(default_factory=set)  # tags whose filter also takes rows without them
    fields: list[str] = field(default_factory=list)
    pivot: bool = False
    ns_column: bool = False
    group_by: list[str] | None = None
    sort: list[str] = field(default_factory=list)
    desc: bool = False
    limit: int | None = None
    agg: str | None = None
    keep: list[str] | None = None


def _tag_of(match: re.Match[str], plan: Plan) -> str:
    """The tag a filter tests; ``not exists r.t or ...`` (the same t) also takes rows without it."""
    tag = match.group(3)
    if match.group(1):
        if match.group(2) != tag:
            raise FluxUnsupported(f"unsupported Flux: a filter of {match.group(2)} and {tag}")
        plan.or_absent.add(tag)
    return tag


def parse(flux: str) -> Plan:
    plan = Plan()
    lines = [line.strip() for line in flux.split("\n  |> ")]
    head = lines.pop(0)
    match = re.fullmatch(r'from\(bucket: ("(?:[^"\\]|\\.)*")\)', head)
    if not match:
        raise FluxUnsupported(f"unsupported source: {head}")
    plan.bucket = strings(match.group(1))[0]
    for line in lines:
        if m := re.fullmatch(r"range\(start: time\(v: (-?\d+)\)(?:, stop: time\(v: (-?\d+)\))?\)", line):
            plan.start, plan.stop = int(m.group(1)), (int(m.group(2)) if m.group(2) else None)
        elif m := re.fullmatch(r'filter\(fn: \(r\) => r\._measurement == ("(?:[^"\\]|\\.)*")\)', line):
            plan.measurement = strings(m.group(1))[0]
        elif line.startswith("filter(fn: (r) => r._field == "):
            if not re.fullmatch(
                r'filter\(fn: \(r\) => r\._field == "[^"]+"(?: or r\._field == "[^"]+")*\)', line
            ):
                raise FluxUnsupported(line)
            plan.fields = strings(line)
        elif m := re.fullmatch(
            r'filter\(fn: \(r\) => (not exists r\.(\w+) or )?r\.(\w+) == ("(?:[^"\\]|\\.)*")\)', line
        ):
            plan.equal[_tag_of(m, plan)] = strings(m.group(4))[0]
        elif m := re.fullmatch(
            r"filter\(fn: \(r\) => (not exists r\.(\w+) or )?contains\(value: r\.(\w+), set: (\[.*\])\)\)",
            line,
        ):
            plan.among[_tag_of(m, plan)] = strings(m.group(4))
        elif line == 'pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")':
            plan.pivot = True
        elif line == "map(fn: (r) => ({r with _ns: int(v: r._time)}))":
            plan.ns_column = True
        elif line == "group()":
            plan.group_by = []
        elif m := re.fullmatch(r"group\(columns: (\[.*\])\)", line):
            plan.group_by = strings(m.group(1))
        elif m := re.fullmatch(r"sort\(columns: (\[.*\])(?:, desc: (true|false))?\)", line):
            plan.sort, plan.desc = strings(m.group(1)), m.group(2) == "true"
        elif m := re.fullmatch(r"limit\(n: (\d+)\)", line):
            plan.limit = int(m.group(1))
        elif line in ("last()", "first()", "min()", "max()", "mean()", "count()"):
            plan.agg = line[:-2]
        elif m := re.fullmatch(r"keep\(columns: (\[.*\])\)", line):
            plan.keep = strings(m.group(1))
        else:
            raise FluxUnsupported(f"unsupported Flux: {line}")
    return plan


# ---- evaluation ------------------------------------------------------------------------------------------


def _matches(plan: Plan, point: Point) -> bool:
    if point.measurement != plan.measurement or point.time_ns < plan.start:
        return False
    if plan.stop is not None and point.time_ns >= plan.stop:
        return False

    def absent(tag: str) -> bool:
        return tag in plan.or_absent and tag not in point.tags

    if any(point.tags.get(k) != v and not absent(k) for k, v in plan.equal.items()):
        return False
    return all(point.tags.get(k) in values or absent(k) for k, values in plan.among.items())


def _rows_of_select(plan: Plan, points: Iterable[Point], presorted: bool) -> Iterator[dict[str, Any]]:
    def rows() -> Iterator[dict[str, Any]]:
        for p in points:
            if not _matches(plan, p):
                continue
            values = {f: p.fields[f] for f in plan.fields if f in p.fields}
            if values:  # a pivot makes a row of the point's selected fields
                yield {
                    "_time": p.time_ns,
                    "_measurement": p.measurement,
                    **p.tags,
                    **values,
                    "_ns": p.time_ns,
                }

    out: Iterable[dict[str, Any]] = rows()
    if not (presorted and plan.sort == ["_ns"] and not plan.desc):

        def key(row: dict[str, Any]) -> tuple[Any, ...]:
            return tuple((row.get(col) is None, row.get(col) or 0) for col in plan.sort)

        out = sorted(out, key=key, reverse=plan.desc)
    for n, row in enumerate(out):
        if plan.limit is not None and n >= plan.limit:
            return
        yield row


def _reduce(plan: Plan, points: Iterable[Point]) -> list[dict[str, Any]]:
    assert plan.group_by is not None and plan.agg is not None and len(plan.fields) == 1
    [name] = plan.fields
    groups: dict[tuple[str | None, ...], list[tuple[int, Any]]] = {}
    for p in points:
        if _matches(plan, p) and name in p.fields:
            key = tuple(p.tags.get(col) for col in plan.group_by)
            groups.setdefault(key, []).append((p.time_ns, p.fields[name]))
    reducers: dict[str, Callable[[list[tuple[int, Any]]], Any]] = {
        "last": lambda vs: max(vs, key=lambda v: v[0])[1],
        "first": lambda vs: min(vs, key=lambda v: v[0])[1],
        "min": lambda vs: min(v for _, v in vs),
        "max": lambda vs: max(v for _, v in vs),
        "mean": lambda vs: statistics.fmean(float(v) for _, v in vs),
        "count": len,
    }
    out = []
    for key in sorted(groups, key=lambda k: tuple(x or "" for x in k)):
        row = {col: value for col, value in zip(plan.group_by, key, strict=True) if value is not None}
        row["_value"] = reducers[plan.agg](groups[key])
        out.append({k: v for k, v in row.items() if plan.keep is None or k in plan.keep})
    return out


# ---- annotated CSV ---------------------------------------------------------------------------------------


def rfc3339(ns: int) -> str:
    seconds, nanos = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z".replace(".000000000Z", "Z")


def _datatype(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    return "string"


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if any(ch in text for ch in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def annotated_csv(
    columns: Sequence[str], types: Mapping[str, str], group: set[str], rows: Iterable[Mapping[str, Any]]
) -> Iterator[str]:
    """One block of annotated CSV: the three annotation rows, the header, then the rows, as chunks."""
    yield "#datatype,string,long," + ",".join(types[c_] for c_ in columns) + "\r\n"
    yield "#group,false,false," + ",".join("true" if c_ in group else "false" for c_ in columns) + "\r\n"
    yield "#default,_result,," + "," * (len(columns) - 1) + "\r\n"
    yield ",result,table," + ",".join(columns) + "\r\n"
    chunk: list[str] = []
    for row in rows:
        table = row.get("table", 0)
        chunk.append(",," + str(table) + "," + ",".join(_csv_cell(row.get(c_)) for c_ in columns) + "\r\n")
        if len(chunk) >= 2000:
            yield "".join(chunk)
            chunk = []
    if chunk:
        yield "".join(chunk)
    yield "\r\n"


class InfluxFake:
    """Answers queries over ``points`` (an iterable re-read per query, or a callable making one)."""

    def __init__(self, points: Callable[[], Iterable[Point]], *, presorted: bool = False) -> None:
        self.points = points
        self.presorted = presorted
        self.queries: list[str] = []

    def answer(self, flux: str) -> Iterator[str]:
        self.queries.append(flux)
        plan = parse(flux)
        if plan.measurement not in {s.measurement for s in c.STREAMS}:
            raise FluxUnsupported(f"measurement {plan.measurement!r} is not in the contract")
        if plan.agg is not None:
            rows = _reduce(plan, self.points())
            if not rows:
                return iter(())
            for n, row in enumerate(rows):
                row["table"] = n
            columns = [col for col in (plan.keep or []) if col != "_value"] + ["_value"]
            types = {col: "string" for col in columns} | {"_value": _datatype(rows[0]["_value"])}
            return annotated_csv(columns, types, set(columns) - {"_value"}, rows)
        if not (plan.pivot and plan.ns_column and plan.group_by == []):
            raise FluxUnsupported("a select must pivot, add _ns and group()")
        return self._select_csv(plan)

    def _select_csv(self, plan: Plan) -> Iterator[str]:
        rows = _rows_of_select(plan, self.points(), self.presorted)
        first = next(rows, None)
        if first is None:
            return
        stream = next(s for s in c.STREAMS if s.measurement == plan.measurement)
        # the pivoted table's columns: _start, _stop, _time, _measurement, the tags, the fields, _ns
        columns = ["_start", "_stop", "_time", "_measurement", *stream.tags, *plan.fields, "_ns"]
        types = {col: "string" for col in columns} | {
            "_start": "dateTime:RFC3339",
            "_stop": "dateTime:RFC3339",
            "_time": "dateTime:RFC3339",
            "_ns": "long",
        }
        for f in plan.fields:
            types[f] = {c.FieldType.FLOAT: "double", c.FieldType.INTEGER: "long"}.get(
                stream.fields[f], "string"
            )
        stop = plan.stop if plan.stop is not None else 4102444800 * 10**9

        def render(row: dict[str, Any]) -> dict[str, Any]:
            return {
                **row,
                "_start": rfc3339(plan.start),
                "_stop": rfc3339(stop),
                "_time": rfc3339(row["_time"]),
            }

        def all_rows() -> Iterator[dict[str, Any]]:
            yield render(first)
            for row in rows:
                yield render(row)

        yield from annotated_csv(columns, types, {"_start", "_stop"}, all_rows())


# ---- the HTTP server -------------------------------------------------------------------------------------


class InfluxServer:
    """``InfluxFake`` behind HTTP on 127.0.0.1, with InfluxDB's auth and org checks."""

    def __init__(
        self,
        fake: InfluxFake,
        *,
        token: str,
        org: str = c.INFLUXDB_ORG,
        port: int = 0,
        echo_auth: bool = False,
    ) -> None:
        """``echo_auth``: a 401 quotes the Authorization header it got, as some proxies' errors do."""
        self.fake, self.token, self.org = fake, token, org
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _json(self, status: int, code: str, message: str) -> None:
                body = json.dumps({"code": code, "message": message}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                url = urllib.parse.urlsplit(self.path)
                if url.path != "/api/v2/query":
                    return self._json(404, "not found", "path not found")
                auth = self.headers.get("Authorization")
                if auth != f"Token {server.token}":
                    echoed = f" ({auth})" if echo_auth else ""
                    return self._json(401, "unauthorized", f"unauthorized access{echoed}")
                org = urllib.parse.parse_qs(url.query).get("org", [""])[0]
                if org != server.org:
                    return self._json(
                        404,
                        "not found",
                        f'failed to decode request body: organization name "{org}" not found',
                    )
                request = json.loads(body)
                dialect = request.get("dialect", {})
                assert dialect.get("annotations") == ["datatype", "group", "default"], dialect
                try:
                    chunks = server.fake.answer(request["query"])
                    first = next(chunks, None)
                except FluxUnsupported as exc:
                    return self._json(400, "invalid", f"compilation failed: {exc}")
                self.send_response(200)
                self.send_header("Content-Type", "text/csv; charset=utf-8")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    if first is not None:
                        self._chunk(first)
                    for chunk in chunks:
                        self._chunk(chunk)
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):  # the client read what it needed
                    self.close_connection = True
                return None

            def _chunk(self, text: str) -> None:
                data = text.encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

            def log_message(self, *args: Any) -> None:
                return

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def serve_store(home: Path, token: str) -> InfluxServer:
    """The stand-in serving the points of the local store under ``home`` (read once); close() it."""
    store = LocalStore(home / "mlobs.db")
    try:
        points = list(store.points())
    finally:
        store.close()
    return InfluxServer(InfluxFake(lambda: points), token=token)


def synthetic_list_metric(
    points: int, run_id: str = "bench-run", start_ns: int = 1_795_000_000 * 10**9
) -> Iterator[Point]:
    """The run's started event, then ``points`` values of its list metric, in time order."""
    identity = {c.TAG_RUN_ID: run_id, c.TAG_PIPELINE: "bench", c.TAG_STEP: "fit", c.TAG_ATTEMPT: "1"}
    yield Point(
        c.RUN.measurement, start_ns - 1, {**identity, c.TAG_STATUS: "started"}, {c.FIELD_HOST: "bench"}
    )
    tags = {**identity, c.TAG_NAME: "loss"}
    for i in range(points):
        fields = {c.FIELD_VALUE: 1.0 / (i + 1), c.FIELD_INDEX: i}
        yield Point(c.LIST_METRIC.measurement, start_ns + i * 1000, tags, fields)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="serve InfluxDB's query API over a local store or synthetic data"
    )
    parser.add_argument("--store", type=Path, help="an MLOBS_HOME whose mlobs.db holds the points")
    parser.add_argument("--synthetic", type=int, help="serve this many points of one list metric instead")
    parser.add_argument("--token", required=True)
    args = parser.parse_args(argv)
    if args.synthetic:
        fake = InfluxFake(lambda: synthetic_list_metric(args.synthetic), presorted=True)
    else:
        store = LocalStore(args.store / "mlobs.db")
        fake = InfluxFake(store.points, presorted=False)
    server = InfluxServer(fake, token=args.token)
    print(f"LISTENING {server.url}", flush=True)
    server.thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
