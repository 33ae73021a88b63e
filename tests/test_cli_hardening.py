"""The read path against hostile input (terminal escapes, odd store paths, credentials in URLs), and
the CLI's papercuts: help, version, option spellings, UTC times, run ids by a start of theirs.

Everything goes through what a user runs: the installed ``mlobs`` executable in a
subprocess (bytes asserted exactly), :class:`ReadClient` on a real local store, and
the InfluxDB backend against the stand-in server of ``pipeline_sdk/testing/influx_fake.py``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import pipeline_sdk
from pipeline_sdk import contract as c
from pipeline_sdk.config import SettingError
from pipeline_sdk.encoding import pack_entry
from pipeline_sdk.local_store import DB_NAME, LocalStore
from pipeline_sdk.read import BackendUnavailable, ReadClient, RunNotFound
from pipeline_sdk.read.influx import InfluxBackend
from pipeline_sdk.read.local import LocalBackend
from pipeline_sdk.testing.influx_fake import InfluxFake, InfluxServer

EXE = Path(sys.executable).parent / "mlobs"  # the console script the package installs

# What a log message, a param value, an io value, a logger name or a metric name can hold once
# it is read back: SGR colours, a carriage return that overwrites the line, a bell, an OSC that
# retitles the window, the 8-bit CSI (U+009B), DEL.
MESSAGE = "\x1b[31mred\x1b[0m\rover\x07bell\x9b2Jcsi\x7fdel"
MESSAGE_SHOWN = r"\x1b[31mred\x1b[0m\rover\x07bell\x9b2Jcsi\x7fdel"
LOGGER = "evil\x1b]0;title\x07"
LOGGER_SHOWN = r"evil\x1b]0;title\x07"
PARAM = "\x1b[2Jcleared"
PARAM_SHOWN = r"\x1b[2Jcleared"
IO_VALUE = "\x9b6nask"  # CSI 6 n: the terminal would answer on the reader's stdin
IO_SOURCE = "s3://b/\x1b[1m"
ERROR = "\x1b[31mboom\x9b"
METRIC = "acc\x1b[8m"  # another writer's name: the SDK itself refuses this one
METRIC_SHOWN = r"acc\x1b[8m"
RUN = "evil"


def mlobs(
    home: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[int, bytes, bytes]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MLOBS_")}
    environ["MLOBS_HOME"] = str(home)
    environ.update(env or {})
    done = subprocess.run(
        [str(EXE), *args], env=environ, capture_output=True, timeout=60, check=False, cwd=cwd
    )
    return done.returncode, done.stdout, done.stderr


def raw_controls(out: bytes) -> list[str]:
    """The C0 (but the line feed), DEL and C1 characters in ``out``: what a terminal would act on."""
    return [ch for ch in out.decode("utf-8") if ch != "\n" and (ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F)]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding run ``evil``: control characters in every place a reader shows text from."""
    home = tmp_path_factory.mktemp("hostile") / "home"
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("MLOBS_")}
    os.environ["MLOBS_HOME"] = str(home)
    try:
        with pipeline_sdk.run(pipeline="train", step="fit", run_id=RUN, params={"cmd": PARAM}) as run:
            attempt = run.attempt
            run.log_input("data", IO_VALUE, source=IO_SOURCE)
            run.log_metric("loss", 0.5)
            logging.getLogger(LOGGER).warning(MESSAGE)
            raise ValueError(ERROR)
    except ValueError:
        pass
    finally:
        os.environ.pop("MLOBS_HOME", None)
        os.environ.update(saved)
    store = LocalStore(home / DB_NAME)
    identity = {c.TAG_RUN_ID: RUN, c.TAG_PIPELINE: "train", c.TAG_STEP: "fit", c.TAG_ATTEMPT: attempt}
    point = {**identity, c.TAG_NAME: METRIC, c.FIELD_VALUE: 1.0}
    store.write_entries(c.METRIC.tag, pack_entry(time.time_ns(), point))
    store.close()
    return home


def stamp_of_log(home: Path) -> str:
    with ReadClient(home=home) as reader:
        [row] = reader.logs(RUN).to_list()
    assert row["message"] == MESSAGE and row["logger"] == LOGGER  # stored and read back as they were
    stamp: str = row["time"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return stamp


# ---- terminal escapes ------------------------------------------------------------------------------------


def test_a_log_line_shows_its_control_characters_escaped(hostile: Path) -> None:
    code, out, err = mlobs(hostile, "runs", "logs", RUN)
    assert (code, err) == (0, b"")
    line = f"{stamp_of_log(hostile)} WARNING  {LOGGER_SHOWN}: {MESSAGE_SHOWN}\n"
    assert out == line.encode("utf-8")
    assert raw_controls(out) == []


def test_a_multi_line_message_continues_indented_so_it_cannot_pose_as_a_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    forged = "ok\n2026-01-01T00:00:00.000000Z CRITICAL root: forged"
    for var in list(os.environ):
        if var.startswith("MLOBS_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("MLOBS_HOME", str(home))
    with pipeline_sdk.run(pipeline="p", step="s", run_id="r1"):
        logging.getLogger("app").error(forged)
    [row] = ReadClient(home=home).logs("r1").to_list()
    stamp = row["time"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    code, out, _ = mlobs(home, "runs", "logs", "r1")
    assert code == 0
    assert out.decode() == (
        f"{stamp} ERROR    app: ok\n    2026-01-01T00:00:00.000000Z CRITICAL root: forged\n"
    )


def test_show_escapes_the_error_params_and_io(hostile: Path) -> None:
    code, out, err = mlobs(hostile, "runs", "show", RUN)
    assert (code, err) == (0, b"")
    assert raw_controls(out) == []
    lines = out.decode("utf-8").splitlines()
    width = len("duration_ms")  # the longest key of the summary
    assert f"{'error'.ljust(width)}  ValueError: \\x1b[31mboom\\x9b" in lines
    params = lines.index("params:")
    assert lines[params + 1 : params + 3] == ["name  value", f"cmd   {PARAM_SHOWN}"]
    inputs = lines.index("inputs:")
    [io] = ReadClient(home=hostile).run(RUN)["inputs"]
    when = io["time"].strftime("%Y-%m-%dT%H:%M:%SZ")  # tables say their times are UTC
    assert lines[inputs + 2] == f"data  \\x9b6nask  s3://b/\\x1b[1m  {when}"


def test_tables_escape_names_in_cells_and_headers(hostile: Path) -> None:
    code, out, _ = mlobs(hostile, "runs", "metrics", RUN)
    assert code == 0 and raw_controls(out) == []
    rows = {r["name"]: r for r in ReadClient(home=hostile).metrics(RUN)}
    when = {name: row["time"].strftime("%Y-%m-%dT%H:%M:%SZ") for name, row in rows.items()}
    assert out.decode().splitlines()[:4] == [
        "metrics:",
        f"{'name'.ljust(len(METRIC_SHOWN))}  value  time",
        f"{METRIC_SHOWN}  1      {when[METRIC]}",
        f"{'loss'.ljust(len(METRIC_SHOWN))}  0.5    {when['loss']}",
    ]
    code, out, _ = mlobs(hostile, "runs", "compare", RUN)
    assert code == 0 and raw_controls(out) == []
    assert out.decode().splitlines()[0].split() == [
        "run_id",
        "pipeline",
        "step",
        "status",
        "duration_ms",
        "param.cmd",
        f"metric.{METRIC_SHOWN}",
        "metric.loss",
    ]
    code, out, _ = mlobs(hostile, "runs", "list")
    assert code == 0 and raw_controls(out) == []
    assert out.decode().splitlines()[1].endswith("  ValueError: \\x1b[31mboom\\x9b")


def test_an_error_message_is_escaped_too(hostile: Path) -> None:
    code, out, err = mlobs(hostile, "runs", "compare", RUN, "--sort", "nope")
    assert (code, out) == (1, b"")
    assert (
        err
        == (
            "mlobs: error: sort='nope' is not a column of this comparison; columns: run_id, pipeline, step, "
            f"attempt, status, duration_ms, param.cmd, metric.{METRIC_SHOWN}, metric.loss\n"
        ).encode()
    )


def test_json_stays_exact_with_c1_and_del_escaped_as_json_does_c0(hostile: Path) -> None:
    code, out, _ = mlobs(hostile, "runs", "logs", RUN, "--json")
    assert code == 0 and raw_controls(out) == []
    assert b'"message": "\\u001b[31mred\\u001b[0m\\rover\\u0007bell\\u009b2Jcsi\\u007fdel"' in out
    [row] = [json.loads(line) for line in out.splitlines()]
    assert (row["message"], row["logger"]) == (MESSAGE, LOGGER)
    code, out, _ = mlobs(hostile, "runs", "show", RUN, "--json")
    assert code == 0 and raw_controls(out) == []
    run = json.loads(out)
    assert run["params"] == {"cmd": PARAM} and run["error"] == f"ValueError: {ERROR}"
    assert [(i["value"], i["source"]) for i in run["inputs"]] == [(IO_VALUE, IO_SOURCE)]
    code, out, _ = mlobs(hostile, "runs", "compare", RUN, "--json")
    assert code == 0 and raw_controls(out) == []
    assert f"metric.{METRIC}" in json.loads(out)


# ---- a store path with URI characters -------------------------------------------------------------------


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_home_with_uri_characters_is_read_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "we#ird?ho%20me dir"
    home = tmp_path / name
    for var in list(os.environ):
        if var.startswith("MLOBS_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("MLOBS_HOME", str(home))
    with pipeline_sdk.run(pipeline="p", step="s", run_id="r1") as run:
        run.log_metric("m", 1.0)
    monkeypatch.delenv("MLOBS_HOME")
    before = listing(tmp_path)
    assert before == [name, f"{name}/mlobs.db", f"{name}/spool", f"{name}/spool/local"]
    with ReadClient(home=home) as reader:
        assert [r["run_id"] for r in reader.runs()] == ["r1"]
        assert [(m["name"], m["value"]) for m in reader.metrics("r1")] == [("m", 1.0)]
    code, out, err = mlobs(home, "runs", "list", "--json")
    assert (code, err) == (0, b"") and [json.loads(line)["run_id"] for line in out.splitlines()] == ["r1"]
    code, out, err = mlobs(tmp_path / "elsewhere", "--home", name, "runs", "list", "--json", cwd=tmp_path)
    assert (code, err) == (0, b"") and [json.loads(line)["run_id"] for line in out.splitlines()] == ["r1"]
    assert listing(tmp_path) == before, "reading created or removed a file"
    backend = LocalBackend(home)
    assert backend.uri() == f"{home.as_uri()}/mlobs.db?mode=rw"
    assert backend.uri().startswith("file:///") and "we%23ird%3Fho%2520me%20dir/mlobs.db?" in backend.uri()
    db = backend._connection()
    assert db is not None
    with pytest.raises(sqlite3.OperationalError, match="attempt to write a readonly database"):
        db.execute("DELETE FROM points")
    backend.close()
    assert listing(tmp_path) == before, "the reader's close removed the WAL files it made"


# ---- credentials in URLs never reach a message -----------------------------------------------------------

SECRET = "pa55-Wd-7f3c"
QUERY_SECRET = "qs-9e1d-token"
TOKEN = "read-test-token"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("https://user:pass@influx.example:8086", "https://***@influx.example:8086"),
        ("http://tokenonly@10.0.0.1:8086/", "http://***@10.0.0.1:8086/"),
        ("https://u:p@ss@host:1/x", "https://***@host:1/x"),  # the last @ before the path ends userinfo
        ("https://host:8086/?token=abc&org=ml", "https://host:8086/?token=***&org=ml"),
        (
            "https://h/?org=ml&Password=x;secret=y&api_key=z",
            "https://h/?org=ml&Password=***;secret=***&api_key=***",
        ),
        ("url: /?access_token=ab/c==/api/v2/query?org=m", "url: /?access_token=***"),  # a base64 token
        ("https://u:p/ss@host:1/x", "https://***@host:1/x"),  # a raw "/" in the password
        ("'admin:hunter2@influx:8086': must be", "'***@influx:8086': must be"),
        ("see http://user:pw@a:1 and https://b:2/?token=t", "see http://***@a:1 and https://b:2/?token=***"),
        # no credentials: left exactly as it was
        ("http://localhost:8086", "http://localhost:8086"),
        ("http://[::1]:8086/api/v2/query?org=mlobs", "http://[::1]:8086/api/v2/query?org=mlobs"),
        ("mail alice@example.com at 10:00", "mail alice@example.com at 10:00"),
        ("the local store /home/a/.mlobs/mlobs.db", "the local store /home/a/.mlobs/mlobs.db"),
    ],
)
def test_redact_hides_userinfo_and_secret_query_values(text: str, shown: str) -> None:
    from pipeline_sdk.redact import redact

    assert redact(text) == shown


def assert_hidden(message: str, host: str) -> None:
    assert SECRET not in message and QUERY_SECRET not in message, message
    assert host in message, message


def test_a_refused_connection_names_the_host_not_the_credentials(refused_port: int) -> None:
    host = f"127.0.0.1:{refused_port}"
    url = f"http://admin:{SECRET}@{host}/?token={QUERY_SECRET}"
    client = ReadClient(InfluxBackend(url, TOKEN, c.INFLUXDB_ORG, c.INFLUXDB_BUCKET, timeout_s=2))
    with pytest.raises(BackendUnavailable) as caught:
        client.runs().to_list()
    assert str(caught.value).startswith(f"InfluxDB at http://***@{host}/?token=*** is unreachable: ")
    assert_hidden(str(caught.value), host)
    assert (
        repr(client)
        == f"<ReadClient of InfluxDB at http://***@{host}/?token=*** (org 'mlobs', bucket 'mlobs')>"
    )
    assert_hidden(client.describe(), host)


@pytest.fixture
def server() -> Iterator[InfluxServer]:
    srv = InfluxServer(InfluxFake(list), token=TOKEN, echo_auth=True)
    yield srv
    srv.close()


def test_a_401_names_the_host_not_the_credentials_nor_the_token(server: InfluxServer, tmp_path: Path) -> None:
    host = server.url.removeprefix("http://")
    url = f"http://admin:{SECRET}@{host}"
    wrong = f"wrong-{SECRET}"
    with pytest.raises(BackendUnavailable) as caught:
        ReadClient(InfluxBackend(url, wrong, c.INFLUXDB_ORG, c.INFLUXDB_BUCKET)).runs().to_list()
    # the stand-in echoes the Authorization header it was sent, as some proxies do
    assert str(caught.value) == (
        f"InfluxDB at http://***@{host} answered HTTP 401: unauthorized access (Token ***); "
        "check MLOBS_INFLUXDB_TOKEN"
    )
    code, out, err = mlobs(
        tmp_path, "runs", "list", env={"MLOBS_INFLUXDB_URL": url, "MLOBS_INFLUXDB_TOKEN": wrong}
    )
    assert (code, out) == (1, b"")
    assert err.decode() == f"mlobs: error: {caught.value}\n"


def test_the_cli_on_a_refused_url_never_echoes_it(refused_port: int, tmp_path: Path) -> None:
    host = f"127.0.0.1:{refused_port}"
    env = {
        "MLOBS_INFLUXDB_URL": f"http://admin:{SECRET}@{host}/?password={QUERY_SECRET}",
        "MLOBS_INFLUXDB_TOKEN": "t",
    }
    code, out, err = mlobs(tmp_path, "runs", "show", "r1", env=env)
    assert (code, out) == (1, b"")
    assert err.decode().startswith(
        f"mlobs: error: InfluxDB at http://***@{host}/?password=*** is unreachable: "
    )
    assert_hidden(err.decode(), host)


@pytest.mark.parametrize(
    "url",
    [
        f"admin:{SECRET}@influx.example:8086",  # the scheme forgotten
        f"ftp://admin:{SECRET}@influx.example:8086",
        f"influx.example:8086/?token={QUERY_SECRET}",
    ],
)
def test_a_bad_url_setting_names_the_host_not_the_credentials(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in list(os.environ):
        if var.startswith("MLOBS_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("MLOBS_INFLUXDB_URL", url)
    monkeypatch.setenv("MLOBS_INFLUXDB_TOKEN", "t")
    with pytest.raises(SettingError) as caught:
        ReadClient()
    message = str(caught.value)
    assert re.fullmatch(
        r"environment variable MLOBS_INFLUXDB_URL='.*': must be an http:// or https:// URL.*", message
    )
    assert_hidden(message, "influx.example:8086")
    code, out, err = mlobs(
        tmp_path, "runs", "list", env={"MLOBS_INFLUXDB_URL": url, "MLOBS_INFLUXDB_TOKEN": "t"}
    )
    assert (code, out) == (1, b"")
    assert err.decode() == f"mlobs: error: {message}\n"


@pytest.mark.parametrize("url", [f"ftp://admin:{SECRET}@influx.example:8086", f"x?token={QUERY_SECRET}"])
def test_settings_themselves_never_echo_credentials(url: str) -> None:
    """ReadSettings.from_env is public: its errors and its repr hide what the reader masks."""
    from pipeline_sdk.config import ReadSettings

    with pytest.raises(SettingError) as caught:
        ReadSettings.from_env({"MLOBS_INFLUXDB_URL": url, "MLOBS_INFLUXDB_TOKEN": "t"})
    assert SECRET not in str(caught.value) and QUERY_SECRET not in str(caught.value)
    good = ReadSettings.from_env(
        {"MLOBS_INFLUXDB_URL": f"https://admin:{SECRET}@influx.example:8086", "MLOBS_INFLUXDB_TOKEN": SECRET}
    )
    assert SECRET not in repr(good)
    with pytest.raises(SettingError) as blank:
        ReadSettings.from_env({"MLOBS_INFLUXDB_URL": "http://h", "MLOBS_INFLUXDB_TOKEN": "   "})
    assert (
        str(blank.value)
        == "environment variable MLOBS_INFLUXDB_TOKEN=(hidden, 3 characters): must not be blank"
    )


# ---- papercuts: help, version, option spellings, UTC times, run ids by prefix ------------------------------

BASE_NS = 1_795_341_600 * 10**9  # 2026-11-22T10:00:00Z
PREFIXED = [
    "sweep-a1",
    "sweep-b2",
    "other",
    "other-1",
    *(f"many-{n:02d}" for n in range(12)),
]  # in start order


@pytest.fixture(scope="module")
def prefixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs one second apart from BASE_NS: ids that begin alike, and one id the start of another."""
    home = tmp_path_factory.mktemp("prefixed") / "home"
    client = pipeline_sdk.Client(home=home)
    for i, run_id in enumerate(PREFIXED):
        recorder = client.recorder("p", "s", run_id)
        recorder.log_status(c.RunStatus.STARTED, {c.FIELD_HOST: "h"}, time_ns=BASE_NS + i * 10**9)
        recorder.log_metric("loss", 1.0 / (i + 1))
        recorder.log_status(
            c.RunStatus.SUCCEEDED, {c.FIELD_DURATION_MS: 5.0}, time_ns=BASE_NS + i * 10**9 + 5
        )
    assert client.close(10)
    return home


def test_mlobs_alone_prints_its_help(tmp_path: Path) -> None:
    code, out, err = mlobs(tmp_path)
    assert (code, err) == (0, b"")
    assert out.startswith(b"usage: mlobs [-h] [--version] [--home HOME] {runs,services,drift}")
    assert b"list, show, compare runs" in out and b"model APIs" in out
    code, out, err = mlobs(tmp_path, "runs")
    assert (code, err) == (0, b"") and out.startswith(b"usage: mlobs runs [-h] COMMAND")
    assert all(f"    {name} ".encode() in out for name in ("list", "show", "compare", "logs", "metrics"))
    code, out, err = mlobs(tmp_path, "services")
    assert (code, err) == (0, b"") and out.startswith(b"usage: mlobs services [-h] COMMAND")
    assert not (tmp_path / DB_NAME).exists()  # help reads nothing


def test_mlobs_version(tmp_path: Path) -> None:
    assert mlobs(tmp_path, "--version") == (0, f"mlobs {pipeline_sdk.__version__}\n".encode(), b"")


def test_compare_takes_descending_as_the_api_spells_it_and_desc_still(prefixed: Path) -> None:
    ascending = mlobs(prefixed, "runs", "compare", "sweep-a1", "sweep-b2", "--sort", "loss")
    descending = mlobs(prefixed, "runs", "compare", "sweep-a1", "sweep-b2", "--sort", "loss", "--descending")
    assert [line.split()[0] for line in ascending[1].decode().splitlines()[1:3]] == ["sweep-b2", "sweep-a1"]
    assert [line.split()[0] for line in descending[1].decode().splitlines()[1:3]] == ["sweep-a1", "sweep-b2"]
    assert (
        mlobs(prefixed, "runs", "compare", "sweep-a1", "sweep-b2", "--sort", "loss", "--desc") == descending
    )
    assert descending[1].decode().splitlines()[0].split() == [
        "run_id",
        "pipeline",
        "step",
        "status",
        "duration_ms",
        "metric.loss",
    ]  # first attempts only: no attempt column, as before attempts existed


def test_table_times_say_utc_and_paste_back(prefixed: Path) -> None:
    code, out, _ = mlobs(prefixed, "runs", "list", "--limit", "2")
    assert code == 0
    assert [line.split()[6] for line in out.decode().splitlines()[1:]] == [
        "2026-11-22T10:00:15Z",
        "2026-11-22T10:00:14Z",
    ]
    code, out, _ = mlobs(prefixed, "runs", "show", "sweep-a1")
    assert code == 0
    assert re.search(r"^started +2026-11-22T10:00:00Z$", out.decode(), re.MULTILINE)
    code, out, _ = mlobs(prefixed, "runs", "list", "--since", "2026-11-22T10:00:15Z", "--json")
    assert code == 0
    assert [json.loads(line)["run_id"] for line in out.splitlines()] == ["many-11"]


def test_a_run_is_named_by_its_id_a_unique_start_of_it_or_latest(prefixed: Path) -> None:
    def shown(run: str) -> str:
        code, out, err = mlobs(prefixed, "runs", "show", run, "--json")
        assert (code, err) == (0, b""), err
        return str(json.loads(out)["run_id"])

    assert [shown(r) for r in ("sweep-a1", "sweep-a", "sweep-b", "other", "other-", "latest")] == [
        "sweep-a1",
        "sweep-a1",
        "sweep-b2",
        "other",  # an id that is also the start of another is itself
        "other-1",
        "many-11",
    ]
    code, out, _ = mlobs(prefixed, "runs", "compare", "sweep-a", "sweep-b", "--json")
    assert code == 0
    assert [json.loads(line)["run_id"] for line in out.splitlines()] == ["sweep-a1", "sweep-b2"]
    for run, message in [
        ("sweep", "run id 'sweep' is the start of 2 run ids: sweep-a1, sweep-b2; give more of one"),
        ("oth", "run id 'oth' is the start of 2 run ids: other, other-1; give more of one"),
        (
            "many-",
            "run id 'many-' is the start of 12 run ids: many-00, many-01, many-02, many-03, many-04, "
            "many-05, many-06, many-07, many-08, many-09 and 2 more; give more of one",
        ),
        ("swept", f"run 'swept' not found in the local store {prefixed / DB_NAME}"),
    ]:
        for command in ("show", "logs", "metrics") if run == "sweep" else ("show",):
            assert mlobs(prefixed, "runs", command, run) == (1, b"", f"mlobs: error: {message}\n".encode())
    with ReadClient(home=prefixed) as reader:
        assert [reader.resolve_run_id(r) for r in ("many-11", "many-09", "sweep-b")] == [
            "many-11",
            "many-09",
            "sweep-b2",
        ]
        with pytest.raises(
            RunNotFound, match=r"^run id 'many-1' is the start of 2 run ids: many-10, many-11;"
        ):
            reader.resolve_run_id("many-1")


def test_latest_in_an_empty_store_is_named(tmp_path: Path) -> None:
    with ReadClient(home=tmp_path) as reader, pytest.raises(RunNotFound) as caught:
        reader.resolve_run_id("latest")
    assert str(caught.value) == f"no runs in the local store {tmp_path / DB_NAME} (no file yet)"
