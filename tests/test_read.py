"""The read API and the ``mlobs`` CLI on the local store, end to end.

Runs are written through the SDK (and run records as the exporter sends them), then
read back through :class:`ReadClient` and through the installed ``mlobs`` command.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import pipeline_sdk
from pipeline_sdk import contract as c
from pipeline_sdk.local_store import DB_NAME, LocalStore
from pipeline_sdk.read import BackendUnavailable, ReadClient, RunNotFound
from pipeline_sdk.read.query import Select, format_ns, ns_datetime, time_arg, time_range

from .support.read_data import Dataset, record_dataset

ALL_RUNS = ["etl-1", "train-live", "train-pull", "train-oom", "train-b", "train-a"]  # newest first


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return record_dataset(tmp_path_factory.mktemp("read") / "home")


@pytest.fixture
def client(data: Dataset) -> ReadClient:
    return ReadClient(home=data.home)


def ids(rows: Any) -> list[str]:
    return [r["run_id"] for r in rows]


# ---- runs ------------------------------------------------------------------------------------------------


def test_runs_newest_first_with_their_final_status(client: ReadClient) -> None:
    runs = client.runs().to_list()
    assert ids(runs) == ALL_RUNS
    status = {r["run_id"]: (r["status"], r["reason"]) for r in runs}
    assert status == {
        "etl-1": ("succeeded", None),
        "train-live": ("running", None),
        "train-pull": ("failed", "ImagePullBackOff"),  # only the exporter saw it
        "train-oom": ("failed", "OOMKilled"),  # the exporter's record wins over the SDK's end
        "train-b": ("failed", None),
        "train-a": ("succeeded", None),
    }
    by_id = {r["run_id"]: r for r in runs}
    assert by_id["train-b"]["error"] == "ValueError: loss is NaN at epoch 2"
    assert by_id["train-pull"]["duration_ms"] == 1000.0 and by_id["train-pull"]["started"] is not None
    assert by_id["train-live"]["ended"] is None and by_id["train-live"]["host"] == "node-1"
    assert all(isinstance(r["started"], datetime) and r["started"].tzinfo is UTC for r in runs)


def test_runs_filters(client: ReadClient, data: Dataset) -> None:
    assert ids(client.runs(pipeline="etl")) == ["etl-1"]
    assert ids(client.runs(pipeline="train", status="failed")) == ["train-pull", "train-oom", "train-b"]
    assert ids(client.runs(status="running")) == ["train-live"]
    assert ids(client.runs(step="load")) == ["etl-1"]
    assert ids(client.runs(limit=2)) == ["etl-1", "train-live"]
    assert ids(client.runs(status="succeeded", limit=1)) == ["etl-1"]
    assert ids(client.runs(since=data.middle_ns)) == ALL_RUNS[:4]
    assert ids(client.runs(until=data.middle_ns)) == ["train-b", "train-a"]
    assert ids(client.runs(since=datetime.fromtimestamp(data.last_ns / 1e9, UTC))) == []
    assert ids(client.runs(since="1h")) == ALL_RUNS


def test_one_run_with_params_inputs_and_outputs(client: ReadClient) -> None:
    run = client.run("train-a")
    assert (run["pipeline"], run["step"], run["status"]) == ("train", "fit", "succeeded")
    assert run["params"] == {"lr": 0.1, "epochs": 3, "batch": "32", "shuffle": "True"}
    assert type(run["params"]["epochs"]) is int
    [dataset] = run["inputs"]
    assert (
        dataset["value"] == {"rows": 1000, "path": "s3://bucket/a.csv"}
        and dataset["source"] == "s3://bucket/a.csv"
    )
    [model] = run["outputs"]
    assert model["value"] == {"weights": [1.5, -2.0]} and model["destination"] == "models/a.json"
    assert run["started"] < run["ended"] and run["duration_ms"] > 0


def test_the_exporters_record_adds_the_kubernetes_side(client: ReadClient) -> None:
    run = client.run("train-oom")
    assert (run["status"], run["reason"], run["exit_code"]) == ("failed", "OOMKilled", 137)
    assert (run["namespace"], run["pod"], run["pods"]) == ("ml", "train-oom-x7k2p", 1)
    assert run["params"] == {"lr": 0.05}
    pulled = client.run("train-pull")
    assert (pulled["status"], pulled["reason"], pulled["exit_code"], pulled["params"]) == (
        "failed",
        "ImagePullBackOff",
        None,
        {},
    )


def test_an_unknown_run_is_named(client: ReadClient, data: Dataset) -> None:
    message = f"run 'nope' not found in the local store {data.home / 'mlobs.db'}"
    for call in (client.run, client.metrics, client.list_metrics, client.logs, client.params):
        with pytest.raises(RunNotFound) as caught:
            call("nope")
        assert str(caught.value) == message
    with pytest.raises(RunNotFound, match=r"runs \['nope'\] not found"):
        client.compare(["train-a", "nope"])


# ---- metrics, list metrics, logs ---------------------------------------------------------------------------


def test_simple_metrics_keep_the_last_value(client: ReadClient) -> None:
    metrics = client.metrics("train-a").to_list()
    assert [(m["name"], m["value"]) for m in metrics] == [("accuracy", 0.8)]


def test_list_metrics_are_series_per_step(client: ReadClient) -> None:
    loss = client.list_metrics("train-a", "loss").to_list()
    assert [(p["step"], p["value"]) for p in loss] == [(0, 0.9), (1, 0.5), (2, 0.6)]
    assert {p["name"] for p in client.list_metrics("train-a")} == {"loss", "accuracy"}
    assert client.list_metric_names("train-a").to_list() == [
        {"name": "accuracy", "last": 0.8, "min": 0.5, "max": 0.8, "mean": pytest.approx(2.0 / 3)},
        {"name": "loss", "last": 0.6, "min": 0.5, "max": 0.9, "mean": pytest.approx(2.0 / 3)},
    ]
    assert client.list_metrics("train-a", "nothing").to_list() == []


def test_logs_by_level_time_and_limit(client: ReadClient, data: Dataset) -> None:
    logs = client.logs("train-a").to_list()
    assert [r["level"] for r in logs] == ["INFO", "INFO", "INFO", "WARNING"]
    assert logs[0]["extra"] == {"epoch": 0} and logs[0]["logger"] == "train"
    assert logs[-1]["message"] == "loss went up at epoch 2\nsee the curve"  # stored escaped, read back
    assert [r["message"] for r in client.logs("train-a", level="warning")] == [logs[-1]["message"]]
    assert len(client.logs("train-a", limit=2).to_list()) == 2
    assert client.logs("train-a", since=logs[1]["time"], until=logs[3]["time"]).to_list() == logs[1:3]
    assert [r["extra"] for r in client.logs("train-b", level="ERROR")] == [{"lr": 0.5}]


def test_a_level_takes_in_logging_aliases_above_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("MLOBS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MLOBS_HOME", str(tmp_path))
    with pipeline_sdk.run(pipeline="p", step="s", run_id="aliases") as run:
        for level in ("DEBUG", "INFO", "WARN", "WARNING", "FATAL", "NOTICE"):  # NOTICE: no number known
            run.log_record(level, f"at {level}")
    reader = ReadClient(home=tmp_path)
    assert [r["level"] for r in reader.logs("aliases", level="WARNING")] == ["WARN", "WARNING", "FATAL"]
    assert [r["level"] for r in reader.logs("aliases", level=50)] == ["FATAL"]
    assert len(reader.logs("aliases").to_list()) == 6  # no level: every record, whatever its name


# ---- compare ---------------------------------------------------------------------------------------------


def test_compare_reduces_list_metrics_and_sorts(client: ReadClient) -> None:
    rows = client.compare(["train-a", "train-b", "train-oom"], agg="min", sort="loss").to_list()
    assert ids(rows) == ["train-oom", "train-a", "train-b"]  # min loss 0.4, 0.5, 1.2
    assert [r["list.loss"] for r in rows] == [0.4, 0.5, 1.2]
    first = rows[1]
    assert first["param.lr"] == 0.1 and first["metric.accuracy"] == 0.8 and first["list.accuracy"] == 0.5
    assert rows[0]["status"] == "failed" and rows[0]["list.accuracy"] is None
    assert list(rows[0])[:6] == ["run_id", "pipeline", "step", "attempt", "status", "duration_ms"]

    last = client.compare(["train-a", "train-b"], agg="last", sort="list.loss", descending=True).to_list()
    assert [(r["run_id"], r["list.loss"]) for r in last] == [("train-b", 1.2), ("train-a", 0.6)]
    means = {r["run_id"]: r["list.loss"] for r in client.compare(["train-a", "train-b"], agg="mean")}
    assert means == {"train-a": pytest.approx(2.0 / 3), "train-b": pytest.approx(1.6)}
    by_param = client.compare(["train-a", "train-b", "train-oom"], sort="lr", descending=True)
    assert ids(by_param) == ["train-b", "train-a", "train-oom"]
    by_accuracy = client.compare(["train-b", "train-a"], sort="accuracy")  # runs without it come last
    assert ids(by_accuracy) == ["train-a", "train-b"]


def test_compare_rejects_a_bad_sort_or_aggregation(client: ReadClient) -> None:
    with pytest.raises(ValueError, match=r"sort='f1' is not a column of this comparison; columns: run_id, "):
        client.compare(["train-a"], sort="f1")
    with pytest.raises(
        ValueError, match=r"agg='median' is invalid: must be one of last, first, min, max, mean"
    ):
        client.compare(["train-a"], agg="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="run_ids is empty"):
        client.compare([])


# ---- results ---------------------------------------------------------------------------------------------


def test_rows_come_in_batches_and_as_frames(client: ReadClient, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = client.list_metrics("train-a")
    assert [len(b) for b in rows.batches(4)] == [4, 2]
    frame = rows.collect()
    assert list(frame.columns) == ["name", "step", "value", "time"] and len(frame) == 6
    assert sum(len(f) for f in rows.frames(5)) == 6
    runs = client.runs().to_pandas()
    assert list(runs["run_id"]) == ALL_RUNS
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    assert rows.collect() == rows.to_list()
    with pytest.raises(ImportError, match=r"pip install 'mlobs\[pandas\]'"):
        rows.to_pandas()
    with pytest.raises(ValueError, match="size=0 is invalid"):
        next(rows.batches(0))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.runs(status="done"), "status='done' is invalid: must be one of running, succeeded"),
        (lambda c: c.runs(limit=0), "limit=0 is invalid"),
        (lambda c: c.runs(since="yesterday"), "since='yesterday' is invalid: must be an ISO 8601 time"),
        (lambda c: c.runs(since="2h", until="3h"), r"bad time range: since \(.*\) is not before until"),
        (
            lambda c: c.runs(since="2300-01-01"),
            r"since='2300-01-01' is invalid: nanoseconds must be within the int64",
        ),
        (
            lambda c: c.logs("train-a", until="1600-01-01"),
            r"until='1600-01-01' is invalid: nanoseconds must be",
        ),
        (lambda c: c.logs("train-a", level="LOUD"), "level='LOUD' is invalid: must be one of DEBUG, INFO"),
        (lambda c: c.logs("train-a", limit=-1), "limit=-1 is invalid"),
        (lambda c: c.run(""), "run_id='' is invalid: must be a run id"),
    ],
)
def test_bad_arguments_name_themselves(client: ReadClient, call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(client)  # raised at the call, before anything is read


def test_time_arguments() -> None:
    now = 1_795_000_000_000_000_000
    assert time_arg("since", "30m", now) == now - 30 * 60 * 10**9
    assert time_arg("since", " 2h ", now) == now - 2 * 3600 * 10**9
    assert time_arg("since", "0s", now) == now
    assert time_arg("since", "8.2s", now) == now - 8_200_000_000  # exact: no float rounding
    assert time_arg("since", "0.7d", now) == now - 60_480 * 10**9
    assert time_arg("since", "0.000000001s", now) == now - 1
    assert time_arg("since", "1w", now) == now - 7 * 86400 * 10**9
    assert time_arg("since", "2026-11-22T10:00:00Z") == 1_795_341_600 * 10**9
    assert time_arg("since", "2026-11-22T11:00:00+01:00") == 1_795_341_600 * 10**9
    assert time_arg("since", "2026-11-22T10:00:00.123456Z") == 1_795_341_600_123_456_000
    assert time_arg("since", datetime(2026, 11, 22, 10, tzinfo=UTC)) == 1_795_341_600 * 10**9
    assert time_arg("since", datetime(2026, 11, 22, 10, 0, 0, 1, tzinfo=UTC)) == 1_795_341_600 * 10**9 + 1000
    assert time_arg("since", datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)) == -1000
    assert time_arg("since", None) is None
    assert time_arg("since", 2**63 - 1) == 2**63 - 1
    assert time_arg("since", -(2**63)) == -(2**63)


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "America/St_Johns"])
def test_a_time_written_without_a_zone_is_utc_as_the_cli_prints_times(
    zone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        assert time_arg("since", "2026-11-22T10:00:00") == 1_795_341_600 * 10**9
        assert time_arg("since", "2026-11-22 10:00:00") == 1_795_341_600 * 10**9  # a table's time, pasted
        assert time_arg("until", "2026-11-22") == 1_795_305_600 * 10**9  # midnight UTC
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (
            datetime(2026, 11, 22, 10),
            ValueError,
            "since=datetime.datetime(2026, 11, 22, 10, 0) is invalid: a datetime without a time zone is "
            "ambiguous; give it one, e.g. datetime(..., tzinfo=datetime.UTC)",
        ),
        (2**63, ValueError, f"since={2**63} is invalid: nanoseconds must be within the int64 range"),
        (
            -(2**63) - 1,
            ValueError,
            f"since={-(2**63) - 1} is invalid: nanoseconds must be within the int64 range",
        ),
        (
            "2H",
            ValueError,
            "since='2H' is invalid: must be an ISO 8601 time (2026-11-22T10:00:00Z), a duration",
        ),
        ("-5m", ValueError, "since='-5m' is invalid: must be an ISO 8601 time"),
        (True, TypeError, "since must be a datetime, a string or nanoseconds, got bool"),
        (1.5, TypeError, "since must be a datetime, a string or nanoseconds, got float"),
    ],
)
def test_a_time_argument_that_cannot_be_read_is_refused(
    value: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        time_arg("since", value, 0)
    assert str(caught.value).startswith(message)


def test_a_time_range_must_hold_at_least_one_nanosecond() -> None:
    assert time_range(10, 11) == (10, 11)
    with pytest.raises(ValueError) as caught:
        time_range(10, 10)
    assert str(caught.value) == (
        "bad time range: since (1970-01-01T00:00:00.000000010Z) is not before "
        "until (1970-01-01T00:00:00.000000010Z)"
    )
    assert format_ns(-1) == "1969-12-31T23:59:59.999999999Z"
    assert ns_datetime(1_999) == datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC)  # floored to the microsecond
    assert ns_datetime(-1) == datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)


@pytest.mark.parametrize("limit", [0, -1, True, 1.0, "3"])
def test_a_limit_is_a_whole_number_one_or_more(limit: Any) -> None:
    with pytest.raises(ValueError) as caught:
        Select(c.LOG, (c.FIELD_MESSAGE,), limit=limit)
    assert str(caught.value) == f"limit={limit!r} is invalid: must be a whole number, 1 or more"


def test_limits_at_the_boundary(client: ReadClient) -> None:
    assert [len(client.logs("train-a", limit=n).to_list()) for n in (1, 3, 4, 5)] == [1, 3, 4, 4]
    assert [len(client.runs(limit=n).to_list()) for n in (1, 5, 6, 7)] == [1, 5, 6, 6]


def exact_times(data: Dataset, stream: c.Stream, run_id: str) -> list[int]:
    store = LocalStore(data.home / DB_NAME)
    try:
        return [p.time_ns for p in store.points(measurement=stream.measurement, run_id=run_id)]
    finally:
        store.close()


def test_since_is_inclusive_and_until_exclusive_to_the_nanosecond(client: ReadClient, data: Dataset) -> None:
    t = exact_times(data, c.LOG, "train-a")
    assert len(t) == 4
    messages = [r["message"] for r in client.logs("train-a")]
    assert [r["message"] for r in client.logs("train-a", since=t[1])] == messages[1:]
    assert [r["message"] for r in client.logs("train-a", since=t[1] + 1)] == messages[2:]
    assert [r["message"] for r in client.logs("train-a", until=t[1])] == messages[:1]
    assert [r["message"] for r in client.logs("train-a", until=t[1] + 1)] == messages[:2]
    assert [r["message"] for r in client.logs("train-a", since=t[1], until=t[1] + 1)] == [messages[1]]
    # an ISO 8601 time with nanoseconds, as InfluxDB and format_ns print them, is exact too
    assert [r["message"] for r in client.logs("train-a", since=format_ns(t[1]))] == messages[1:]
    assert [r["message"] for r in client.logs("train-a", since=format_ns(t[1] + 1))] == messages[2:]
    assert [r["message"] for r in client.logs("train-a", until=format_ns(t[1] + 1))] == messages[:2]
    # runs by their start: the SDK's started event, or the exporter's start_ns when only it saw the run
    [started] = [p.time_ns for p in _points(data, c.RUN, "train-a") if p.tags[c.TAG_STATUS] == "started"]
    assert "train-a" in ids(client.runs(since=started))
    assert "train-a" not in ids(client.runs(since=started + 1))
    assert "train-a" not in ids(client.runs(until=started))
    assert "train-a" in ids(client.runs(until=started + 1))
    [record] = _points(data, c.RUN_RECORD, "train-pull")
    begun = int(record.fields[c.FIELD_START_NS])
    assert ids(client.runs(since=begun, until=begun + 1)) == ["train-pull"]
    assert "train-pull" not in ids(client.runs(since=begun + 1))
    assert "train-pull" not in ids(client.runs(until=begun))


def _points(data: Dataset, stream: c.Stream, run_id: str) -> list[Any]:
    store = LocalStore(data.home / DB_NAME)
    try:
        return list(store.points(measurement=stream.measurement, run_id=run_id))
    finally:
        store.close()


def test_an_empty_home_reads_as_no_runs(tmp_path: Path) -> None:
    client = ReadClient(home=tmp_path / "nothing")
    assert client.runs().to_list() == []
    assert client.describe() == f"the local store {tmp_path / 'nothing' / 'mlobs.db'} (no file yet)"
    with pytest.raises(RunNotFound, match=r"\(no file yet\)"):
        client.run("a")
    assert not (tmp_path / "nothing").exists()  # reading never creates the store


def test_a_file_that_is_not_a_store_is_named(tmp_path: Path) -> None:
    (tmp_path / "mlobs.db").write_text("not sqlite")
    with pytest.raises(BackendUnavailable, match=f"cannot read the local store {tmp_path / 'mlobs.db'}"):
        ReadClient(home=tmp_path).runs().to_list()


# ---- the CLI ----------------------------------------------------------------------------------------------


def mlobs(data: Dataset, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "mlobs"  # the console script the package installs
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MLOBS_")}
    environ["MLOBS_HOME"] = str(data.home)
    environ.update(env or {})
    return subprocess.run(
        [str(exe), *args], env=environ, capture_output=True, text=True, timeout=60, check=False
    )


def test_cli_runs_list_as_a_table_and_as_json(data: Dataset) -> None:
    table = mlobs(data, "runs", "list")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "run_id",
        "pipeline",
        "step",
        "attempt",
        "status",
        "reason",
        "started",
        "duration_ms",
        "error",
    ]
    assert [line.split()[0] for line in lines[1:]] == ALL_RUNS
    assert "ValueError: loss is NaN at epoch 2" in table.stdout
    as_json = mlobs(data, "runs", "list", "--status", "failed", "--json")
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [r["run_id"] for r in rows] == ["train-pull", "train-oom", "train-b"]
    assert rows[1]["reason"] == "OOMKilled" and rows[1]["started"].endswith("Z")


def test_cli_show_compare_logs_metrics(data: Dataset) -> None:
    show = mlobs(data, "runs", "show", "train-a")
    assert show.returncode == 0, show.stderr
    assert re.search(r"^status +succeeded$", show.stdout, re.MULTILINE)
    assert re.search(r"^epochs +3$", show.stdout, re.MULTILINE)
    assert "dataset" in show.stdout and "models/a.json" in show.stdout
    assert json.loads(mlobs(data, "runs", "show", "train-oom", "--json").stdout)["exit_code"] == 137

    compare = mlobs(data, "runs", "compare", "train-a", "train-b", "--sort", "loss", "--agg", "max", "--desc")
    lines = compare.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:3]] == ["train-b", "train-a"]
    assert "list.loss" in lines[0] and lines[-1] == "(list metrics: max value of each run)"

    logs = mlobs(data, "runs", "logs", "train-a", "--level", "warning")
    assert logs.stdout.split(" WARNING  train: ")[1] == "loss went up at epoch 2\n    see the curve\n"
    assert len(mlobs(data, "runs", "logs", "train-a", "--limit", "2", "--json").stdout.splitlines()) == 2

    metrics = mlobs(data, "runs", "metrics", "train-a").stdout
    assert re.search(r"^accuracy +0\.8 ", metrics, re.MULTILINE)
    assert re.search(r"^loss +0\.6 +0\.5 +0\.9 +0\.666667$", metrics, re.MULTILINE)
    series = mlobs(data, "runs", "metrics", "train-a", "--list", "loss", "--json").stdout.splitlines()
    assert [(p["step"], p["value"]) for p in map(json.loads, series)] == [(0, 0.9), (1, 0.5), (2, 0.6)]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["runs", "show", "nope"], {}, "mlobs: error: run 'nope' not found in the local store "),
        (
            ["runs", "logs", "train-a", "--since", "yesterday"],
            {},
            "mlobs: error: since='yesterday' is invalid",
        ),
        (["runs", "compare", "train-a", "--sort", "f1"], {}, "mlobs: error: sort='f1' is not a column"),
        (
            ["runs", "metrics", "train-a", "--list", "los"],
            {},
            "mlobs: error: run train-a has no list metric 'los'; its list metrics: ",
        ),
        (
            ["runs", "list"],
            {"MLOBS_INFLUXDB_URL": "http://127.0.0.1:9"},
            "mlobs: error: environment variable MLOBS_INFLUXDB_URL is set but MLOBS_INFLUXDB_TOKEN is not",
        ),
        (
            ["runs", "list"],
            {"MLOBS_INFLUXDB_URL": "localhost:8086", "MLOBS_INFLUXDB_TOKEN": "t"},
            "mlobs: error: environment variable MLOBS_INFLUXDB_URL='localhost:8086': must be an http://",
        ),
    ],
)
def test_cli_errors_are_one_line(data: Dataset, args: list[str], env: dict[str, str], message: str) -> None:
    done = mlobs(data, *args, env=env)
    assert done.returncode == 1
    assert done.stderr.startswith(message)
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1


def test_cli_home_option_and_usage_errors(data: Dataset, tmp_path: Path) -> None:
    empty = mlobs(data, "--home", str(tmp_path), "runs", "list")
    assert empty.returncode == 0 and "(no runs in the local store" in empty.stdout
    usage = mlobs(data, "runs", "list", "--limit", "0")
    assert usage.returncode == 2 and "argument --limit: 0 is invalid: must be 1 or more" in usage.stderr
