"""Attempts and step runs, read back: a re-run never merges into the first run, steps never collapse.

A step run is (run id, step, attempt).  The data set (``tests/read_data.record_step_runs``)
is written through the SDK: a run id run twice, an execution whose two steps share a run
id, points written before the attempt tag existed, and a Job's two pods with the
exporter's record.  Every read goes through both backends (the local store, and
InfluxDB's stand-in evaluating the Flux), and through the installed ``mlobs`` command.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from statistics import fmean
from typing import Any

import pytest

import pipeline_sdk
from pipeline_sdk import contract as c
from pipeline_sdk.cli import TRACEBACK_LINES
from pipeline_sdk.read import AmbiguousRun, ReadClient, RunNotFound
from pipeline_sdk.read.influx import InfluxBackend
from pipeline_sdk.read.query import ns_datetime
from pipeline_sdk.testing.influx_fake import InfluxServer, serve_store

from .support.read_data import LR1_LOSS, LR5_LOSS, POD_ATTEMPTS, WF_TRAIN_LOSS, StepRuns, record_step_runs
from .test_read_influx import flux_contract_problems

TOKEN = "attempts-token"
AMBIGUOUS = "run id 'wf-123' has steps prep, train: pass step="
NEWEST_FIRST = [  # every step run's latest attempt: (run id, step, attempt number)
    ("job-7", "fit", 2),
    ("wf-123", "train", 1),
    ("wf-123", "prep", 1),
    ("lr-0.5", "fit", 1),
    ("lr-0.1", "fit", 2),
    ("old-1", "s", 1),
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> StepRuns:
    return record_step_runs(tmp_path_factory.mktemp("attempts") / "home")


@pytest.fixture(scope="module")
def server(data: StepRuns) -> Iterator[InfluxServer]:
    srv = serve_store(data.home, TOKEN)
    yield srv
    srv.close()


def influx_reader(server: InfluxServer) -> ReadClient:
    return ReadClient(InfluxBackend(server.url, TOKEN, c.INFLUXDB_ORG, c.INFLUXDB_BUCKET))


@pytest.fixture(params=["local", "influx"])
def reader(request: pytest.FixtureRequest, data: StepRuns, server: InfluxServer) -> ReadClient:
    return ReadClient(home=data.home) if request.param == "local" else influx_reader(server)


def keys(data: StepRuns, step_run: str) -> list[str]:
    return data.keys[step_run]


def series(rows: Any) -> list[tuple[int, float]]:
    return [(p["step"], p["value"]) for p in rows]


# ---- trap 1: a re-run of a run id is its latest attempt, never a merge ------------------------------------


def test_a_rerun_reads_as_its_latest_attempt(reader: ReadClient, data: StepRuns) -> None:
    first, second = keys(data, "lr-0.1/fit")
    assert series(reader.list_metrics("lr-0.1", "loss")) == list(enumerate(LR1_LOSS[1]))  # 5 steps, once
    assert series(reader.list_metrics("lr-0.1", "loss", attempt=1)) == list(enumerate(LR1_LOSS[0]))
    assert series(reader.list_metrics("lr-0.1", "loss", attempt=first)) == list(enumerate(LR1_LOSS[0]))
    assert series(reader.list_metrics("lr-0.1", "loss", attempt=2)) == list(enumerate(LR1_LOSS[1]))
    assert [(m["name"], m["value"]) for m in reader.metrics("lr-0.1")] == [("accuracy", 0.9)]
    assert [(m["name"], m["value"]) for m in reader.metrics("lr-0.1", attempt=1)] == [("accuracy", 0.7)]
    assert [r["message"] for r in reader.logs("lr-0.1")] == ["fit of lr-0.1"]  # one record, not two
    assert reader.params("lr-0.1", attempt=second).to_list() == [{"name": "lr", "value": 0.1}]
    assert [(r["name"], r["last"], r["min"]) for r in reader.list_metric_names("lr-0.1", attempt=1)] == [
        ("loss", 0.6, 0.6)
    ]


def test_one_run_is_its_latest_attempt_with_every_attempt_listed(reader: ReadClient, data: StepRuns) -> None:
    first, second = keys(data, "lr-0.1/fit")
    run = reader.run("lr-0.1")
    assert (run["step"], run["attempt"], run["attempt_key"], run["status"], run["error"]) == (
        "fit",
        2,
        second,
        "succeeded",
        None,
    )
    assert run["started"] > ns_datetime(data.between_ns)  # the second attempt's own start
    [one, two] = run["attempts"]
    assert (one["attempt"], one["key"], one["status"]) == (1, first, "failed")
    assert (two["attempt"], two["key"], two["status"]) == (2, second, "succeeded")
    assert one["started"] < one["ended"] <= two["started"] < two["ended"]
    assert (run["started"], run["ended"], run["duration_ms"]) == (
        two["started"],
        two["ended"],
        two["duration_ms"],
    )
    assert two["duration_ms"] < (two["ended"] - one["started"]).total_seconds() * 1000  # not first-to-last
    assert list(one) == ["attempt", "key", "status", "reason", "started", "ended", "duration_ms", "error"]
    earlier = reader.run("lr-0.1", attempt=1)
    assert (earlier["attempt"], earlier["status"], earlier["error"]) == (
        1,
        "failed",
        "ValueError: out of patience",
    )
    assert earlier["params"] == {"lr": 0.1} and earlier["attempts"] == run["attempts"]
    assert reader.run("lr-0.1", attempt=first) == earlier


def test_compare_takes_latest_attempts_unless_told(reader: ReadClient) -> None:
    rows = reader.compare(["lr-0.1", "lr-0.5"], agg="mean", sort="loss").to_list()
    assert [(r["run_id"], r["attempt"], r["list.loss"]) for r in rows] == [
        ("lr-0.1", 2, pytest.approx(fmean(LR1_LOSS[1]))),
        ("lr-0.5", 1, pytest.approx(fmean(LR5_LOSS))),
    ]
    assert list(rows[0])[:6] == ["run_id", "pipeline", "step", "attempt", "status", "duration_ms"]
    every = reader.compare(["lr-0.1"], agg="mean", attempt="all").to_list()
    assert [(r["attempt"], r["status"], r["metric.accuracy"], r["list.loss"]) for r in every] == [
        (1, "failed", 0.7, pytest.approx(fmean(LR1_LOSS[0]))),
        (2, "succeeded", 0.9, pytest.approx(fmean(LR1_LOSS[1]))),
    ]
    firsts = reader.compare(["lr-0.1", "lr-0.5"], agg="max", attempt=1).to_list()
    assert [(r["run_id"], r["list.loss"]) for r in firsts] == [("lr-0.1", 1.0), ("lr-0.5", 0.8)]


def test_runs_list_each_step_run_once_at_its_latest_attempt(reader: ReadClient, data: StepRuns) -> None:
    runs = reader.runs().to_list()
    assert [(r["run_id"], r["step"], r["attempt"]) for r in runs] == NEWEST_FIRST
    lr = next(r for r in runs if r["run_id"] == "lr-0.1")
    assert (lr["attempt_key"], lr["status"]) == (keys(data, "lr-0.1/fit")[1], "succeeded")
    # until: each step run as it stood then (lr-0.1 had one attempt, failed)
    before = reader.runs(until=data.between_ns).to_list()
    assert [(r["run_id"], r["attempt"], r["status"]) for r in before] == [
        ("lr-0.1", 1, "failed"),
        ("old-1", 1, "succeeded"),
    ]
    assert [(r["run_id"], r["attempt"]) for r in reader.runs(since=data.between_ns, pipeline="train")] == [
        ("job-7", 2),
        ("lr-0.5", 1),
        ("lr-0.1", 2),  # numbered among all its attempts, the first one outside the range
    ]
    assert [r["run_id"] for r in reader.runs(status="failed")] == ["wf-123"]  # lr-0.1's latest succeeded


@pytest.mark.parametrize(
    ("attempt", "error", "message"),
    [
        (3, RunNotFound, "run 'lr-0.1' (step fit) has no attempt 3; its attempts: 1 (key {0}), 2 (key {1})"),
        ("nope", RunNotFound, "run 'lr-0.1' (step fit) has no attempt 'nope'; its attempts: 1 (key {0}), "),
        (0, ValueError, "attempt=0 is invalid: must be an attempt number (1 or more) or an attempt's key"),
        (True, ValueError, "attempt=True is invalid: must be an attempt number (1 or more) or an attempt's"),
        ("", ValueError, "attempt='' is invalid: must be an attempt number (1 or more) or an attempt's key"),
        (1.0, ValueError, "attempt=1.0 is invalid: must be an attempt number (1 or more) or an attempt's"),
    ],
)
def test_an_attempt_that_is_not_there_is_named(
    reader: ReadClient, data: StepRuns, attempt: Any, error: type[Exception], message: str
) -> None:
    expected = message.format(*keys(data, "lr-0.1/fit"))
    for call in (reader.run, reader.metrics, reader.logs, reader.params, reader.list_metrics):
        with pytest.raises(error) as caught:
            call("lr-0.1", attempt=attempt)
        assert str(caught.value).startswith(expected)


def test_pod_attempts_are_numbered_by_when_they_started_not_by_name(reader: ReadClient) -> None:
    run = reader.run("job-7")
    assert sorted(POD_ATTEMPTS) != list(POD_ATTEMPTS)  # the keys sort the other way round
    assert [(a["attempt"], a["key"], a["status"]) for a in run["attempts"]] == [
        (1, POD_ATTEMPTS[0], "failed"),
        (2, POD_ATTEMPTS[1], "succeeded"),
    ]
    # the exporter's record names the pod it saw last: it belongs to that attempt only
    assert (run["attempt_key"], run["reason"], run["pod"], run["pods"]) == (
        POD_ATTEMPTS[1],
        "Completed",
        POD_ATTEMPTS[1],
        2,
    )
    first = reader.run("job-7", attempt=POD_ATTEMPTS[0])
    assert (first["attempt"], first["reason"], first["error"]) == (1, None, "ValueError: bad shard")
    assert "pod" not in first


def test_old_points_without_the_attempt_tag_read_as_attempt_one(reader: ReadClient) -> None:
    run = reader.run("old-1")
    assert (run["attempt"], run["attempt_key"], run["status"], run["params"]) == (
        1,
        "1",
        "succeeded",
        {"lr": 0.2},
    )
    assert [(a["attempt"], a["key"]) for a in run["attempts"]] == [(1, c.FIRST_ATTEMPT)]
    for attempt in (None, 1, c.FIRST_ATTEMPT):
        assert series(reader.list_metrics("old-1", "loss", attempt=attempt)) == [
            (0, 0.9),
            (1, 0.8),
            (2, 0.75),
        ]
        assert [r["message"] for r in reader.logs("old-1", attempt=attempt)] == ["old"]
        assert [m["value"] for m in reader.metrics("old-1", attempt=attempt)] == [0.7]
    [row] = reader.compare(["old-1"], agg="min").to_list()
    assert (row["attempt"], row["param.lr"], row["metric.accuracy"], row["list.loss"]) == (1, 0.2, 0.7, 0.75)


# ---- trap 2: the steps of one execution share its run id --------------------------------------------------


def test_an_execution_lists_its_steps_the_failed_one_first(reader: ReadClient) -> None:
    execution = reader.run("wf-123")
    assert list(execution) == ["run_id", "pipeline", "status", "started", "ended", "duration_ms", "steps"]
    prep, train = sorted(execution["steps"], key=lambda s: s["started"])
    assert [s["step"] for s in execution["steps"]] == ["train", "prep"]  # the failed step first
    assert (execution["run_id"], execution["pipeline"], execution["status"]) == ("wf-123", "wf", "failed")
    assert (execution["started"], execution["ended"]) == (prep["started"], train["ended"])
    assert execution["duration_ms"] == (train["ended"] - prep["started"]) / timedelta(milliseconds=1)
    assert (train["status"], train["error"], prep["status"]) == (
        "failed",
        "ValueError: diverged",
        "succeeded",
    )
    assert [r["step"] for r in reader.runs(run_id="wf-123")] == ["train", "prep"]


def test_one_step_of_an_execution(reader: ReadClient) -> None:
    prep = reader.run("wf-123", step="prep")
    assert (prep["step"], prep["pipeline"], prep["status"], prep["params"]) == (
        "prep",
        "wf",
        "succeeded",
        {"rows": 100},
    )
    train = reader.run("wf-123", step="train")
    assert (train["step"], train["status"], train["params"]) == ("train", "failed", {"lr": 0.3})
    assert [(a["attempt"], a["status"]) for a in train["attempts"]] == [(1, "failed")]
    assert [(m["name"], m["value"]) for m in reader.metrics("wf-123", step="train")] == [("accuracy", 0.6)]
    assert [(m["name"], m["value"]) for m in reader.metrics("wf-123", step="prep")] == [("accuracy", 1.0)]
    assert series(reader.list_metrics("wf-123", "loss", step="train")) == list(enumerate(WF_TRAIN_LOSS))
    assert reader.list_metrics("wf-123", step="prep").to_list() == []
    assert [r["message"] for r in reader.logs("wf-123", step="prep")] == ["prep of wf-123"]
    assert reader.params("wf-123", step="train").to_list() == [{"name": "lr", "value": 0.3}]
    [row] = reader.compare(["wf-123"], step="train").to_list()
    assert (row["step"], row["param.lr"], row["list.loss"]) == ("train", 0.3, 3.0)


@pytest.mark.parametrize(
    "call",
    [
        lambda r: r.params("wf-123"),
        lambda r: r.metrics("wf-123"),
        lambda r: r.list_metrics("wf-123", "loss"),
        lambda r: r.list_metric_names("wf-123"),
        lambda r: r.logs("wf-123"),
        lambda r: r.compare(["lr-0.5", "wf-123"]),
        lambda r: r.run("wf-123", attempt=1),
    ],
    ids=["params", "metrics", "list_metrics", "list_metric_names", "logs", "compare", "run attempt"],
)
def test_a_run_id_with_several_steps_needs_one_named(
    reader: ReadClient, call: Callable[[ReadClient], Any]
) -> None:
    with pytest.raises(AmbiguousRun) as caught:
        call(reader)
    assert str(caught.value) == AMBIGUOUS
    assert (caught.value.run_id, caught.value.steps) == ("wf-123", ("prep", "train"))


def test_a_step_the_run_does_not_have_is_named(reader: ReadClient) -> None:
    with pytest.raises(RunNotFound) as caught:
        reader.metrics("wf-123", step="fit")
    assert str(caught.value) == "run 'wf-123' has no step 'fit'; its steps: prep, train"
    with pytest.raises(RunNotFound, match=r"^run 'lr-0.5' has no step 'train'; its steps: fit$"):
        reader.compare(["wf-123", "lr-0.5"], step="train")
    with pytest.raises(ValueError, match=r"^step='' is invalid: must be a step name \(a non-empty string\)$"):
        reader.run("wf-123", step="")


def test_runs_sort_by_run_id_keeps_an_executions_steps_together(reader: ReadClient) -> None:
    rows = reader.runs(sort="run_id").to_list()
    assert [(r["run_id"], r["step"]) for r in rows] == [
        ("job-7", "fit"),
        ("lr-0.1", "fit"),
        ("lr-0.5", "fit"),
        ("old-1", "s"),
        ("wf-123", "prep"),  # an execution's steps in the order they started
        ("wf-123", "train"),
    ]
    assert reader.runs(sort="run_id", limit=2).to_list() == rows[:2]
    with pytest.raises(ValueError, match=r"^sort='step' is invalid: must be one of started, run_id$"):
        reader.runs(sort="step")


# ---- both backends agree, and ask only what the contract defines -------------------------------------------

CALLS: list[tuple[str, Callable[[ReadClient, StepRuns], Any]]] = [
    ("runs", lambda r, d: r.runs().to_list()),
    ("runs by run id", lambda r, d: r.runs(sort="run_id").to_list()),
    ("runs until", lambda r, d: r.runs(until=d.between_ns).to_list()),
    ("runs since", lambda r, d: r.runs(since=d.between_ns, status="succeeded").to_list()),
    ("runs of one id", lambda r, d: r.runs(run_id="wf-123").to_list()),
    *[(f"run {run}", lambda r, d, run=run: r.run(run)) for run in ("lr-0.1", "wf-123", "job-7", "old-1")],
    ("run attempt 1", lambda r, d: r.run("lr-0.1", attempt=1)),
    ("run pod attempt", lambda r, d: r.run("job-7", attempt=POD_ATTEMPTS[0])),
    ("run step", lambda r, d: r.run("wf-123", step="train")),
    ("params step", lambda r, d: r.params("wf-123", step="prep").to_list()),
    ("metrics attempt", lambda r, d: r.metrics("lr-0.1", attempt=1).to_list()),
    ("list metrics", lambda r, d: r.list_metrics("lr-0.1").to_list()),
    ("list metrics old", lambda r, d: r.list_metrics("old-1", attempt=1).to_list()),
    ("list metric names", lambda r, d: r.list_metric_names("wf-123", step="train").to_list()),
    ("logs attempt", lambda r, d: r.logs("lr-0.1", attempt=1).to_list()),
    ("logs old", lambda r, d: r.logs("old-1", attempt="1").to_list()),
    *[
        (f"compare {agg}", lambda r, d, agg=agg: r.compare(["lr-0.1", "lr-0.5", "old-1"], agg=agg).to_list())
        for agg in ("last", "first", "min", "max", "mean")
    ],
    ("compare all attempts", lambda r, d: r.compare(["lr-0.1", "job-7"], attempt="all").to_list()),
    ("compare a step", lambda r, d: r.compare(["wf-123"], step="prep").to_list()),
]


@pytest.mark.parametrize(("name", "call"), CALLS, ids=[n for n, _ in CALLS])
def test_both_backends_agree_on_attempts_and_step_runs(
    data: StepRuns, server: InfluxServer, name: str, call: Callable[[ReadClient, StepRuns], Any]
) -> None:
    from_local = call(ReadClient(home=data.home), data)
    assert call(influx_reader(server), data) == from_local
    assert from_local not in ([], {}, None)


def test_every_query_names_only_the_contract(data: StepRuns, server: InfluxServer) -> None:
    server.fake.queries.clear()
    influx = influx_reader(server)
    for _, call in CALLS:
        call(influx, data)
    queries = server.fake.queries
    assert len(queries) >= 60
    assert {q: flux_contract_problems(q) for q in queries if flux_contract_problems(q)} == {}
    # an attempt's filter also takes points written before the tag existed
    assert any('not exists r.attempt or r.attempt == "1"' in q for q in queries)


# ---- the CLI ---------------------------------------------------------------------------------------------


def mlobs(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``mlobs`` command on the local store under ``home``, as a user runs it."""
    exe = Path(sys.executable).parent / "mlobs"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOBS_")}
    env["MLOBS_HOME"] = str(home)
    return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def json_lines(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_cli_metrics_and_compare_read_the_latest_attempt_or_the_one_asked(data: StepRuns) -> None:
    latest = json_lines(mlobs(data.home, "runs", "metrics", "lr-0.1", "--list", "loss", "--json"))
    assert [(p["step"], p["value"]) for p in latest] == list(enumerate(LR1_LOSS[1]))
    first = json_lines(
        mlobs(data.home, "runs", "metrics", "lr-0.1", "--list", "loss", "--attempt", "1", "--json")
    )
    assert [(p["step"], p["value"]) for p in first] == list(enumerate(LR1_LOSS[0]))
    compared = json_lines(mlobs(data.home, "runs", "compare", "lr-0.1", "lr-0.5", "--agg", "mean", "--json"))
    assert [(r["run_id"], r["attempt"], round(r["list.loss"], 9)) for r in compared] == [
        ("lr-0.1", 2, 0.3),
        ("lr-0.5", 1, round(fmean(LR5_LOSS), 9)),
    ]
    every = json_lines(mlobs(data.home, "runs", "compare", "lr-0.1", "--attempt", "all", "--json"))
    assert [(r["attempt"], r["status"]) for r in every] == [(1, "failed"), (2, "succeeded")]


def test_cli_show_lists_the_attempts(data: StepRuns) -> None:
    first, second = keys(data, "lr-0.1/fit")
    done = mlobs(data.home, "runs", "show", "lr-0.1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert re.search(r"^attempt +2$", done.stdout, re.MULTILINE)
    assert re.search(rf"^attempt_key +{second}$", done.stdout, re.MULTILINE)
    at = lines.index("attempts:")
    assert lines[at + 1].split() == ["attempt", "key", "status", "reason", "started", "ended", "duration_ms"]
    one, two = (line.split() for line in lines[at + 2 : at + 4])
    assert (one[:4], two[:4]) == (["1", first, "failed", "-"], ["2", second, "succeeded", "-"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", one[4])  # times say UTC
    earlier = mlobs(data.home, "runs", "show", "lr-0.1", "--attempt", "1")
    assert re.search(r"^status +failed$", earlier.stdout, re.MULTILINE)
    assert re.search(r"^error +ValueError: out of patience$", earlier.stdout, re.MULTILINE)
    missing = mlobs(data.home, "runs", "show", "lr-0.1", "--attempt", "3")
    assert missing.returncode == 1
    assert missing.stderr == (
        f"mlobs: error: run 'lr-0.1' (step fit) has no attempt 3; its attempts: 1 (key {first}), "
        f"2 (key {second})\n"
    )


def test_cli_an_execution_and_its_steps(data: StepRuns) -> None:
    done = mlobs(data.home, "runs", "show", "wf-123")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert re.search(r"^status +failed$", done.stdout, re.MULTILINE)
    at = next(i for i, line in enumerate(lines) if line.startswith("steps"))
    assert lines[at + 1].split()[:4] == ["step", "attempt", "status", "reason"]
    assert [line.split()[:3] for line in lines[at + 2 : at + 4]] == [
        ["train", "1", "failed"],
        ["prep", "1", "succeeded"],
    ]
    ambiguous = mlobs(data.home, "runs", "metrics", "wf-123")
    assert (ambiguous.returncode, ambiguous.stdout) == (1, "")
    assert ambiguous.stderr == "mlobs: error: run id 'wf-123' has steps prep, train: pass --step\n"
    train = json_lines(mlobs(data.home, "runs", "metrics", "wf-123", "--step", "train", "--json"))
    assert [(r["kind"], r["name"]) for r in train] == [("metric", "accuracy"), ("list_metric", "loss")]
    step = mlobs(data.home, "runs", "show", "wf-123", "--step", "prep")
    assert re.search(r"^step +prep$", step.stdout, re.MULTILINE) and re.search(
        r"^rows +100$", step.stdout, re.M
    )
    listed = mlobs(data.home, "runs", "list")
    assert [line.split()[:4] for line in listed.stdout.splitlines()[1:]] == [
        [run_id, _pipeline, step, str(n)]
        for (run_id, step, n), _pipeline in zip(
            NEWEST_FIRST, ["train", "wf", "wf", "train", "train", "legacy"], strict=True
        )
    ]
    one = mlobs(data.home, "runs", "list", "--run", "wf-123", "--json")
    assert [(r["step"], r["status"]) for r in json_lines(one)] == [("train", "failed"), ("prep", "succeeded")]
    by_id = mlobs(data.home, "runs", "list", "--sort", "run_id", "--limit", "6")
    assert [line.split()[0] for line in by_id.stdout.splitlines()[1:]] == [
        "job-7",
        "lr-0.1",
        "lr-0.5",
        "old-1",
        "wf-123",
        "wf-123",
    ]
    logs = mlobs(data.home, "runs", "logs", "wf-123", "--step", "prep")
    assert logs.stdout.endswith(" INFO     wf: prep of wf-123\n")


# ---- a failed run's traceback ------------------------------------------------------------------------------


MESSAGE_LINES = [f"shard {n} unreadable" for n in range(50)] + ["boom \x1b[2J at the bottom"]


def _fail_deep(depth: int) -> None:
    if depth:
        _fail_deep(depth - 1)
    raise ValueError("\n".join(MESSAGE_LINES))  # a traceback longer than `runs show` prints


def test_a_failed_runs_traceback_is_read_back_and_shown_bounded(home: Path) -> None:
    with pytest.raises(ValueError), pipeline_sdk.run(pipeline="p", step="s", run_id="deep"):
        _fail_deep(3)
    with pipeline_sdk.run(pipeline="p", step="s", run_id="fine"):
        pass
    reader = ReadClient(home=home)
    assert reader.run("fine")["traceback"] is None
    traceback = reader.run("deep")["traceback"]
    lines = traceback.splitlines()
    assert lines[-len(MESSAGE_LINES) :] == [f"ValueError: {MESSAGE_LINES[0]}", *MESSAGE_LINES[1:]]
    assert len(lines) > TRACEBACK_LINES
    assert "in _fail_deep" in traceback
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOBS_")} | {"MLOBS_HOME": str(home)}
    exe = Path(sys.executable).parent / "mlobs"
    done = subprocess.run(
        [str(exe), "runs", "show", "deep"], env=env, capture_output=True, text=True, check=False
    )
    shown = done.stdout.splitlines()
    at = shown.index("traceback:")
    assert (
        shown[at + 1] == f"    ({len(lines) - TRACEBACK_LINES} earlier lines not shown; --json has them all)"
    )
    assert shown[at + 2 :] == ["    " + line.replace("\x1b", "\\x1b") for line in lines[-TRACEBACK_LINES:]]
    assert (
        json.loads(mlobs(home, "runs", "show", "deep", "--json").stdout)["traceback"] == traceback
    )  # whole, and exact
