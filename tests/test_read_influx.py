"""The read API's InfluxDB backend: its Flux against the contract, real annotated CSV, agreement.

InfluxDB cannot run here; ``pipeline_sdk/testing/influx_fake.py`` stands in for its query API on
127.0.0.1 (auth, org, annotated CSV streamed in chunks) and evaluates the Flux
independently of the local backend's SQL.  The same data set, written through the
SDK into a local store, is read through both backends: every call must agree.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline_sdk import contract as c
from pipeline_sdk.encoding import pack_entry
from pipeline_sdk.flux import string as flux_string
from pipeline_sdk.local_store import DB_NAME, LocalStore, Point
from pipeline_sdk.read import BackendUnavailable, ReadClient, RunNotFound
from pipeline_sdk.read.influx import NS_COLUMN, InfluxBackend, count_flux, reduce_flux, select_flux
from pipeline_sdk.read.local import LocalBackend
from pipeline_sdk.read.query import ABSENT_TAGS, Count, Reduce, Select
from pipeline_sdk.testing.influx_fake import (
    FluxUnsupported,
    InfluxFake,
    InfluxServer,
    parse,
    strings,
    unquote,
)

from .support.read_data import Dataset, record_dataset

TOKEN = "read-test-token"  # the stand-in server's own


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return record_dataset(tmp_path_factory.mktemp("influx") / "home")


@pytest.fixture(scope="module")
def points(data: Dataset) -> list[Point]:
    return list(LocalStore(data.home / DB_NAME).points())


@pytest.fixture
def server(points: list[Point]) -> Iterator[InfluxServer]:
    srv = InfluxServer(InfluxFake(lambda: points), token=TOKEN)
    yield srv
    srv.close()


@pytest.fixture
def both(data: Dataset, server: InfluxServer) -> tuple[ReadClient, ReadClient]:
    influx = ReadClient(InfluxBackend(server.url, TOKEN, c.INFLUXDB_ORG, c.INFLUXDB_BUCKET))
    return influx, ReadClient(home=data.home)


# ---- the two backends agree --------------------------------------------------------------------------

RUNS = ["etl-1", "train-live", "train-pull", "train-oom", "train-b", "train-a"]
CALLS: list[tuple[str, Callable[[ReadClient, Dataset], Any]]] = [
    ("runs", lambda r, d: r.runs().to_list()),
    ("runs failed", lambda r, d: r.runs(pipeline="train", status="failed").to_list()),
    ("runs since", lambda r, d: r.runs(since=d.middle_ns, limit=3).to_list()),
    ("runs until", lambda r, d: r.runs(until=d.middle_ns).to_list()),
    *[(f"run {run}", lambda r, d, run=run: r.run(run)) for run in RUNS],
    ("params", lambda r, d: r.params("train-a").to_list()),
    ("metrics", lambda r, d: r.metrics("train-a").to_list()),
    ("list metrics", lambda r, d: r.list_metrics("train-a").to_list()),
    ("list metric", lambda r, d: r.list_metrics("train-a", "loss").to_list()),
    ("list metric names", lambda r, d: r.list_metric_names("train-a").to_list()),
    ("logs", lambda r, d: r.logs("train-a").to_list()),
    ("system samples", lambda r, d: r.system("train-a").to_list()),
    ("artifacts", lambda r, d: r.artifacts("train-a").to_list()),
    ("an artifact by name", lambda r, d: r.artifacts("train-a", name="model").to_list()),
    ("compare by peak memory", lambda r, d: r.compare(RUNS, sort="peak_memory", descending=True).to_list()),
    ("compare with system", lambda r, d: r.compare(RUNS, system=True).to_list()),
    ("logs level limit", lambda r, d: r.logs("train-b", level="ERROR", limit=1).to_list()),
    *[
        (f"compare {agg}", lambda r, d, agg=agg: r.compare(RUNS, agg=agg, sort="loss").to_list())
        for agg in ("last", "first", "min", "max", "mean")
    ],
    # the boundaries, to the nanosecond: since is inclusive, until exclusive (pinned in test_read.py)
    ("logs since =", lambda r, d: r.logs("train-a", since=exact_ns(d, c.LOG, "train-a")[1]).to_list()),
    ("logs since +1", lambda r, d: r.logs("train-a", since=exact_ns(d, c.LOG, "train-a")[1] + 1).to_list()),
    ("logs until =", lambda r, d: r.logs("train-a", until=exact_ns(d, c.LOG, "train-a")[1]).to_list()),
    ("logs until +1", lambda r, d: r.logs("train-a", until=exact_ns(d, c.LOG, "train-a")[1] + 1).to_list()),
    (
        "runs in one ns of a record's start",
        lambda r, d: r.runs(
            since=record_start(d, "train-pull"), until=record_start(d, "train-pull") + 1
        ).to_list(),
    ),
]


def exact_ns(data: Dataset, stream: c.Stream, run_id: str) -> list[int]:
    """The stored times of a run's points of ``stream``, to the nanosecond (the API's datetimes hold µs)."""
    store = LocalStore(data.home / DB_NAME)
    try:
        return [p.time_ns for p in store.points(measurement=stream.measurement, run_id=run_id)]
    finally:
        store.close()


def record_start(data: Dataset, run_id: str) -> int:
    store = LocalStore(data.home / DB_NAME)
    try:
        [record] = store.points(measurement=c.RUN_RECORD.measurement, run_id=run_id)
        return int(record.fields[c.FIELD_START_NS])
    finally:
        store.close()


@pytest.mark.parametrize(("name", "call"), CALLS, ids=[n for n, _ in CALLS])
def test_both_backends_answer_alike(
    both: tuple[ReadClient, ReadClient], data: Dataset, name: str, call: Callable[[ReadClient, Dataset], Any]
) -> None:
    influx, local = both
    from_influx, from_local = call(influx, data), call(local, data)
    assert from_influx == from_local
    assert from_local not in ([], {}, None)  # the data set has something to compare for every call


def test_the_answers_come_from_the_fake_not_the_local_store(both: tuple[ReadClient, ReadClient]) -> None:
    influx, _ = both
    assert influx.describe().startswith("InfluxDB at http://127.0.0.1:")
    rows = influx.list_metrics("train-a", "loss").to_list()
    assert [(r["step"], r["value"]) for r in rows] == [(0, 0.9), (1, 0.5), (2, 0.6)]
    with pytest.raises(
        RunNotFound, match=r"run 'nope' not found in InfluxDB at http://127\.0\.0\.1:\d+ \(org"
    ):
        influx.run("nope")


# ---- the Flux, against the contract ------------------------------------------------------------------

FLUX_OWN = {"_time", "_value", "_field", "_measurement", "_start", "_stop", NS_COLUMN}


def flux_contract_problems(flux: str) -> list[str]:
    """What a query names that the contract does not define for its measurement."""
    measurements = re.findall(r'r\._measurement == "([^"]+)"', flux)
    streams = {s.measurement: s for s in c.STREAMS}
    if len(measurements) != 1 or measurements[0] not in streams:
        return [f"measurement {measurements} is not one stream of the contract"]
    stream = streams[measurements[0]]
    allowed = set(stream.tags) | set(stream.fields) | FLUX_OWN
    problems = [f"field {f!r}" for f in re.findall(r'r\._field == "([^"]+)"', flux) if f not in stream.fields]
    problems += [f"column r.{n}" for n in re.findall(r"\br\.(\w+)", flux) if n not in allowed]
    for listed in re.findall(r"(?:columns|rowKey|columnKey): (\[[^\]]*\])", flux):
        problems += [f"column {n!r}" for n in strings(listed) if n not in allowed]
    if f"from(bucket: {flux_string(c.INFLUXDB_BUCKET)})" not in flux:
        problems.append("not the contract's bucket")
    return problems


def test_every_query_the_client_sends_names_only_the_contract(
    both: tuple[ReadClient, ReadClient], server: InfluxServer, data: Dataset
) -> None:
    influx, _ = both
    for _, call in CALLS:
        call(influx, data)
    queries = server.fake.queries
    assert len(queries) >= 60
    assert {q.splitlines()[2]: flux_contract_problems(q) for q in queries if flux_contract_problems(q)} == {}
    measurements = {re.findall(r'r\._measurement == "([^"]+)"', q)[0] for q in queries}
    assert measurements == {s.measurement for s in c.RUN_STREAMS}


def test_the_contract_check_can_fail() -> None:
    good = select_flux(Select(c.LIST_METRIC, (c.FIELD_VALUE,), equal={c.TAG_RUN_ID: "a"}), c.INFLUXDB_BUCKET)
    assert flux_contract_problems(good) == []
    assert flux_contract_problems(good.replace('r._field == "value"', 'r._field == "valeu"')) == [
        "field 'valeu'"
    ]
    assert flux_contract_problems(good.replace("r.run_id", "r.runid")) == ["column r.runid"]
    assert flux_contract_problems(good.replace('"list_metric"', '"metrics"'))[0].startswith("measurement")
    assert flux_contract_problems(good.replace('bucket: "mlobs"', 'bucket: "other"')) == [
        "not the contract's bucket"
    ]


def test_a_query_names_only_contract_columns_or_raises() -> None:
    with pytest.raises(ValueError, match=r"measurement 'metric' has no \['loss'\]"):
        Select(c.METRIC, ("loss",))
    with pytest.raises(ValueError, match=r"has no \['level'\]"):
        Select(c.METRIC, (c.FIELD_VALUE,), equal={c.TAG_LEVEL: "INFO"})
    with pytest.raises(ValueError, match="cannot reduce 'metric' by"):
        Reduce(Select(c.METRIC, (c.FIELD_VALUE,)), (c.TAG_LEVEL,), "last")


def test_the_flux_of_each_question() -> None:
    select = Select(
        c.LOG,
        (c.FIELD_MESSAGE,),
        equal={c.TAG_RUN_ID: "r-1"},
        among={c.TAG_LEVEL: ("ERROR", "CRITICAL")},
        start_ns=5,
        stop_ns=9,
        limit=10,
    )
    assert select_flux(select, "mlobs").split("\n  |> ") == [
        'from(bucket: "mlobs")',
        "range(start: time(v: 5), stop: time(v: 9))",
        'filter(fn: (r) => r._measurement == "log")',
        'filter(fn: (r) => r.run_id == "r-1")',
        'filter(fn: (r) => contains(value: r.level, set: ["ERROR", "CRITICAL"]))',
        'filter(fn: (r) => r._field == "message")',
        'pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")',
        "map(fn: (r) => ({r with _ns: int(v: r._time)}))",
        "group()",
        'sort(columns: ["_ns"], desc: false)',
        "limit(n: 10)",
    ]
    reduce = Reduce(
        Select(c.LIST_METRIC, (c.FIELD_VALUE,), among={c.TAG_RUN_ID: ("a", "b")}), ("run_id", "name"), "mean"
    )
    assert reduce_flux(reduce, "mlobs").split("\n  |> ")[-4:] == [
        'group(columns: ["run_id", "name"])',
        'sort(columns: ["_time"])',
        "mean()",
        'keep(columns: ["run_id", "name", "_value"])',
    ]
    count = Count(
        Select(c.API_REQUEST, (c.FIELD_STATUS_CODE,), start_ns=5), (c.TAG_SERVICE,), c.FIELD_STATUS_CODE
    )
    assert count_flux(count, "mlobs").split("\n  |> ") == [
        'from(bucket: "mlobs")',
        "range(start: time(v: 5))",
        'filter(fn: (r) => r._measurement == "api_request")',
        'filter(fn: (r) => r._field == "status_code")',
        'group(columns: ["service"])',
        "count()",
        'keep(columns: ["service", "_value"])',
    ]


def test_a_count_names_what_it_cannot_count() -> None:
    select = Select(c.API_REQUEST, (c.FIELD_STATUS_CODE, c.FIELD_USER))
    assert Count(select, (c.TAG_SERVICE, c.TAG_HTTP_STATUS), c.FIELD_USER).by == ("service", "status")
    assert Count(select, (), c.FIELD_STATUS_CODE).value == c.FIELD_STATUS_CODE
    for by, value, message in [
        ((c.TAG_LEVEL,), c.FIELD_USER, "cannot count 'api_request' by ['level'] over 'user'"),
        (
            (c.TAG_SERVICE,),
            c.FIELD_DURATION_MS,
            "cannot count 'api_request' by ['service'] over 'duration_ms'",
        ),
    ]:
        with pytest.raises(ValueError) as caught:
            Count(select, by, value)
        assert str(caught.value) == message


@pytest.mark.parametrize(
    ("equal", "among", "line"),
    [
        ({c.TAG_ATTEMPT: "1"}, {}, 'filter(fn: (r) => not exists r.attempt or r.attempt == "1")'),
        ({c.TAG_ATTEMPT: "2"}, {}, 'filter(fn: (r) => r.attempt == "2")'),
        (
            {},
            {c.TAG_ATTEMPT: ("2", "1")},
            'filter(fn: (r) => not exists r.attempt or contains(value: r.attempt, set: ["2", "1"]))',
        ),
        ({}, {c.TAG_ATTEMPT: ("2", "3")}, 'filter(fn: (r) => contains(value: r.attempt, set: ["2", "3"]))'),
        ({c.TAG_STEP: "1"}, {}, 'filter(fn: (r) => r.step == "1")'),  # only the tags older points lack
    ],
)
def test_a_filter_on_the_first_attempt_takes_points_from_before_the_tag(
    equal: dict[str, str], among: dict[str, tuple[str, ...]], line: str
) -> None:
    assert dict(ABSENT_TAGS) == {c.TAG_ATTEMPT: c.FIRST_ATTEMPT}
    flux = select_flux(Select(c.METRIC, (c.FIELD_VALUE,), equal=equal, among=among), "mlobs")
    assert flux.split("\n  |> ")[3] == line


def test_both_backends_read_points_without_the_attempt_tag_as_attempt_one(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / DB_NAME)
    identity = {c.TAG_RUN_ID: "r", c.TAG_PIPELINE: "p", c.TAG_STEP: "s", c.TAG_NAME: "m"}
    for time_ns, attempt, value in ((10, None, 1.0), (20, "2", 2.0), (30, "1", 3.0), (40, "3", 4.0)):
        tags = identity if attempt is None else {**identity, c.TAG_ATTEMPT: attempt}
        store.write_entries(c.METRIC.tag, pack_entry(time_ns, {**tags, c.FIELD_VALUE: value}))
    points = list(store.points())
    store.close()
    srv = InfluxServer(InfluxFake(lambda: points), token=TOKEN)
    backends = (LocalBackend(tmp_path), InfluxBackend(srv.url, TOKEN, c.INFLUXDB_ORG, c.INFLUXDB_BUCKET))
    try:
        for backend in backends:

            def values(**filters: Any) -> list[float]:
                query = Select(c.METRIC, (c.FIELD_VALUE,), **filters)
                return [row.fields[c.FIELD_VALUE] for row in backend.select(query)]  # noqa: B023

            assert values(equal={c.TAG_ATTEMPT: "1"}) == [1.0, 3.0]
            assert values(equal={c.TAG_ATTEMPT: "2"}) == [2.0]
            assert values(among={c.TAG_ATTEMPT: ("1", "3")}) == [1.0, 3.0, 4.0]
            assert values(among={c.TAG_ATTEMPT: ("2", "3")}) == [2.0, 4.0]
            counted = Count(Select(c.METRIC, (c.FIELD_VALUE,)), (c.TAG_ATTEMPT,), c.FIELD_VALUE)
            assert sorted(backend.count(counted), key=str) == sorted(
                [({}, 1), ({c.TAG_ATTEMPT: "1"}, 1), ({c.TAG_ATTEMPT: "2"}, 1), ({c.TAG_ATTEMPT: "3"}, 1)],
                key=str,
            )
            first = Count(Select(c.METRIC, (c.FIELD_VALUE,), equal={c.TAG_ATTEMPT: "1"}), (), c.FIELD_VALUE)
            assert list(backend.count(first)) == [({}, 2)]
            nothing = Count(Select(c.METRIC, (c.FIELD_VALUE,), equal={c.TAG_RUN_ID: "x"}), (), c.FIELD_VALUE)
            assert list(backend.count(nothing)) == []  # no group, no row (not a row of 0)
    finally:
        for backend in backends:
            backend.close()
        srv.close()


@pytest.mark.parametrize("value", ['a"b', "back\\slash", "${injected}", "line\nbreak", "tab\t", "plain"])
def test_strings_are_escaped_for_flux(value: str) -> None:
    literal = flux_string(value)
    assert literal.startswith('"') and literal.endswith('"')
    assert unquote(literal[1:-1]) == value
    assert "${" not in literal.replace("\\${", "")
    plan = parse(select_flux(Select(c.RUN, (c.FIELD_HOST,), equal={c.TAG_RUN_ID: value}), "mlobs"))
    assert plan.equal == {c.TAG_RUN_ID: value}


def test_a_run_id_with_quotes_is_read_not_injected(tmp_path: Path) -> None:
    odd = 'x") or (r.run_id == "train-a'
    store = LocalStore(tmp_path / DB_NAME)
    from pipeline_sdk.encoding import pack_entry

    tags = {c.TAG_RUN_ID: "train-a", c.TAG_PIPELINE: "p", c.TAG_STEP: "s", c.TAG_STATUS: "started"}
    store.write_entries(c.RUN.tag, pack_entry(10, {**tags, c.FIELD_HOST: "h"}))
    points = list(store.points())
    srv = InfluxServer(InfluxFake(lambda: points), token=TOKEN)
    try:
        influx = ReadClient(InfluxBackend(srv.url, TOKEN, c.INFLUXDB_ORG, c.INFLUXDB_BUCKET))
        with pytest.raises(RunNotFound):
            influx.run(odd)
        assert influx.run("train-a")["run_id"] == "train-a"
    finally:
        srv.close()


# ---- errors name the URL -----------------------------------------------------------------------------


def test_a_wrong_token_org_or_address_is_named(server: InfluxServer, refused_port: int) -> None:
    wrong_token = ReadClient(InfluxBackend(server.url, "nope", c.INFLUXDB_ORG, c.INFLUXDB_BUCKET))
    with pytest.raises(BackendUnavailable) as caught:
        wrong_token.runs().to_list()
    assert str(caught.value) == (
        f"InfluxDB at {server.url} answered HTTP 401: unauthorized access; check MLOBS_INFLUXDB_TOKEN"
    )
    wrong_org = ReadClient(InfluxBackend(server.url, TOKEN, "acme", c.INFLUXDB_BUCKET))
    with pytest.raises(
        BackendUnavailable, match=r'HTTP 404: .*organization name "acme" not found; check MLOBS_'
    ):
        wrong_org.runs().to_list()
    url = f"http://127.0.0.1:{refused_port}"
    nobody = ReadClient(InfluxBackend(url, TOKEN, c.INFLUXDB_ORG, c.INFLUXDB_BUCKET, timeout_s=2))
    with pytest.raises(
        BackendUnavailable, match=rf"InfluxDB at {url} is unreachable: .*[Cc]onnection refused"
    ):
        nobody.run("train-a")


def test_a_query_influxdb_refuses_is_named(server: InfluxServer) -> None:
    backend = InfluxBackend(server.url, TOKEN, c.INFLUXDB_ORG, c.INFLUXDB_BUCKET)
    with pytest.raises(BackendUnavailable, match=r"HTTP 400: compilation failed: unsupported Flux: drop\(\)"):
        list(backend._records('from(bucket: "mlobs")\n  |> drop()'))


@pytest.mark.parametrize(
    "line",
    [
        'filter(fn: (r) => not exists r.step or r.attempt == "1")',  # one tag tested, another absent
        "filter(fn: (r) => not exists r.attempt)",
        'filter(fn: (r) => exists r.attempt or r.attempt == "1")',
    ],
)
def test_the_stand_in_refuses_a_filter_it_does_not_evaluate(line: str) -> None:
    good = select_flux(Select(c.METRIC, (c.FIELD_VALUE,), equal={c.TAG_ATTEMPT: "1"}), "mlobs")
    assert parse(good).or_absent == {c.TAG_ATTEMPT} and parse(good).equal == {c.TAG_ATTEMPT: "1"}
    bad = good.replace('filter(fn: (r) => not exists r.attempt or r.attempt == "1")', line)
    assert bad != good
    with pytest.raises(FluxUnsupported, match="unsupported Flux: "):
        parse(bad)


# ---- the CLI on InfluxDB, by the SDK's settings ------------------------------------------------------


def test_cli_reads_influxdb_from_the_environment(server: InfluxServer) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOBS_")}
    env.update(MLOBS_INFLUXDB_URL=server.url, MLOBS_INFLUXDB_TOKEN=TOKEN)
    exe = Path(sys.executable).parent / "mlobs"
    done = subprocess.run(
        [str(exe), "runs", "list", "--status", "failed"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()[1:]] == [
        "train-pull",
        "train-oom",
        "train-b",
    ]
    env["MLOBS_INFLUXDB_TOKEN"] = "wrong"
    refused = subprocess.run([str(exe), "runs", "list"], env=env, capture_output=True, text=True, check=False)
    assert refused.returncode == 1
    answer = f"InfluxDB at {server.url} answered HTTP 401: unauthorized access; check MLOBS_INFLUXDB_TOKEN"
    assert refused.stderr == f"mlobs: error: {answer}\n"


# ---- a body written out by hand, in the shape InfluxDB 2 answers -------------------------------------

# Two tables of different schemas (the second lacks ``number``), so two annotation
# blocks, then the error table InfluxDB appends when a query fails after it has
# started streaming (``error,reference``).  Written from InfluxDB's documented
# annotated CSV, not by the stand-in, so the parsing is checked on its own.
HAND_WRITTEN = (
    "#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,string,string,string,"
    "string,string,string,double,long\r\n"
    "#group,false,false,true,true,false,true,true,true,true,true,false,false,false\r\n"
    "#default,_result,,,,,,,,,,,,\r\n"
    ",result,table,_start,_stop,_time,_measurement,name,pipeline,run_id,step,value,number,_ns\r\n"
    ",,0,1970-01-01T00:00:00Z,2026-11-22T12:00:00Z,2026-11-22T09:00:00.123456789Z,param,lr,train,"
    'r1,fit,"0,5",0.5,1795338000123456789\r\n'
    "\r\n"
    "#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,string,string,string,"
    "string,string,string,long\r\n"
    "#group,false,false,true,true,false,true,true,true,true,true,false,false\r\n"
    "#default,_result,,,,,,,,,,,\r\n"
    ",result,table,_start,_stop,_time,_measurement,name,pipeline,run_id,step,value,_ns\r\n"
    ",,1,1970-01-01T00:00:00Z,2026-11-22T12:00:00Z,2026-11-22T09:00:01Z,param,optimizer,train,r1,fit,"
    '"say ""adam""",1795338001000000000\r\n'
    "\r\n"
    "#datatype,string,string\r\n"
    "#group,true,true\r\n"
    "#default,,\r\n"
    ",error,reference\r\n"
    ',"query terminated: reached maximum allowed memory limits",576\r\n'
    "\r\n"
)


@contextlib.contextmanager
def _answering(body: str) -> Iterator[InfluxBackend]:
    """An InfluxBackend whose server answers every query with ``body``, as InfluxDB sends it."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/csv; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            return

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    backend = InfluxBackend(
        f"http://127.0.0.1:{httpd.server_address[1]}", TOKEN, c.INFLUXDB_ORG, c.INFLUXDB_BUCKET
    )
    try:
        yield backend
    finally:
        backend.close()
        httpd.shutdown()
        httpd.server_close()


PARAMS_OF_R1 = Select(c.PARAM, (c.FIELD_VALUE, c.FIELD_NUMBER), equal={c.TAG_RUN_ID: "r1"})


def test_a_hand_written_body_parses_until_its_error_table() -> None:
    with _answering(HAND_WRITTEN) as backend:
        rows = backend.select(PARAMS_OF_R1)
        first, second = next(rows), next(rows)
        assert first.time_ns == 1795338000123456789  # the exact _ns, not the microsecond _time
        assert first.tags == {"pipeline": "train", "step": "fit", "run_id": "r1", "name": "lr"}
        assert first.fields == {"value": "0,5", "number": 0.5}
        assert second.tags["name"] == "optimizer"
        assert second.fields == {"value": 'say "adam"'}  # no number column in its table
        with pytest.raises(BackendUnavailable) as caught:
            next(rows)
        assert str(caught.value) == (
            f"InfluxDB at {backend.url} could not run the query: "
            "query terminated: reached maximum allowed memory limits"
        )


def test_an_answer_without_the_exact_time_is_named() -> None:
    without_ns = (
        "#datatype,string,long,dateTime:RFC3339,string,string,string,string,string,double\r\n"
        "#group,false,false,false,true,true,true,true,false,false\r\n"
        "#default,_result,,,,,,,,\r\n"
        ",result,table,_time,name,pipeline,run_id,step,value,number\r\n"
        ",,0,2026-11-22T09:00:00Z,lr,train,r1,fit,0.5,0.5\r\n"
        "\r\n"
    )
    with _answering(without_ns) as backend, pytest.raises(BackendUnavailable) as caught:
        list(backend.select(PARAMS_OF_R1))
    assert (
        str(caught.value) == f"InfluxDB at {backend.url} answered a row without the _ns column the query adds"
    )
