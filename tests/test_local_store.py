"""The local store round-trips every event type the SDK writes, split into tags and fields by the contract."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import pipeline_sdk
from pipeline_sdk import contract as c
from pipeline_sdk.local_store import DB_NAME, LocalStore, Point
from pipeline_sdk.validation import unescape_text


def points(home: Path, run_id: str) -> list[Point]:
    return list(LocalStore(home / DB_NAME).points(run_id=run_id))


def by_measurement(pts: list[Point], measurement: str) -> list[Point]:
    return [p for p in pts if p.measurement == measurement]


def test_every_event_type_round_trips(home: Path) -> None:
    log = logging.getLogger("train.fit")
    with pipeline_sdk.run(
        pipeline="train", step="fit", run_id="run-rt", params={"lr": 0.001, "optimizer": "adam", "layers": 3}
    ) as run:
        run.log_param("seed", 42)
        for epoch in range(3):
            run.log_metric("loss", 1.0 / (epoch + 1), step=epoch)
        run.log_metrics({"accuracy": 0.93, "f1": 0.9})
        run.log_input("dataset", {"rows": 1000, "path": "s3://bucket/train.csv"}, source="s3://bucket")
        run.log_output("model", "model.pkl", destination="/models/v1")
        log.warning("multi\nline \\ message", extra={"epoch": 2, "phase": "eval"})
        try:
            raise ValueError("inner")
        except ValueError:
            log.exception("it failed")
    pts = points(home, "run-rt")
    identity = {c.TAG_RUN_ID: "run-rt", c.TAG_PIPELINE: "train", c.TAG_STEP: "fit", c.TAG_ATTEMPT: "1"}
    for p in pts:
        assert {k: p.tags[k] for k in identity} == identity
        stream = next(s for s in c.STREAMS if s.measurement == p.measurement)
        assert set(p.tags) <= set(stream.tags), "every tag is a contract tag of its stream"
        assert set(p.fields) <= set(stream.fields), "every field is a contract field of its stream"
        for key, value in p.fields.items():  # and has the contract's type
            expected = {c.FieldType.FLOAT: float, c.FieldType.INTEGER: int, c.FieldType.STRING: str}
            assert type(value) is expected[stream.fields[key]], (p.measurement, key, value)

    runs = by_measurement(pts, c.RUN.measurement)
    assert [p.tags[c.TAG_STATUS] for p in runs] == ["started", "succeeded"]
    assert runs[0].fields[c.FIELD_SDK_VERSION] == pipeline_sdk.__version__
    assert runs[1].fields[c.FIELD_DURATION_MS] > 0

    params = {p.tags[c.TAG_NAME]: p.fields for p in by_measurement(pts, c.PARAM.measurement)}
    assert params == {
        "lr": {"value": "0.001", "number": 0.001},
        "optimizer": {"value": "adam"},
        "layers": {"value": "3", "number": 3.0},
        "seed": {"value": "42", "number": 42.0},
    }
    series = [
        (p.fields[c.FIELD_INDEX], p.fields[c.FIELD_VALUE])
        for p in by_measurement(pts, c.LIST_METRIC.measurement)
    ]
    assert series == [(0, 1.0), (1, 0.5), (2, 1 / 3)]
    simple = {p.tags[c.TAG_NAME]: p.fields[c.FIELD_VALUE] for p in by_measurement(pts, c.METRIC.measurement)}
    assert simple == {"accuracy": 0.93, "f1": 0.9}

    io = {
        (p.tags[c.TAG_DIRECTION], p.tags[c.TAG_NAME]): p.fields for p in by_measurement(pts, c.IO.measurement)
    }
    assert json.loads(io["input", "dataset"][c.FIELD_VALUE]) == {
        "rows": 1000,
        "path": "s3://bucket/train.csv",
    }
    assert io["input", "dataset"][c.FIELD_SOURCE] == "s3://bucket"
    assert json.loads(io["output", "model"][c.FIELD_VALUE]) == "model.pkl"
    assert io["output", "model"][c.FIELD_DESTINATION] == "/models/v1"

    logs = by_measurement(pts, c.LOG.measurement)
    assert [p.tags[c.TAG_LEVEL] for p in logs] == ["WARNING", "ERROR"]
    assert unescape_text(logs[0].fields[c.FIELD_MESSAGE]) == "multi\nline \\ message"
    assert "\n" not in logs[0].fields[c.FIELD_MESSAGE]
    assert json.loads(logs[0].fields[c.FIELD_EXTRA]) == {"epoch": 2, "phase": "eval"}
    assert logs[0].fields[c.FIELD_LOGGER] == "train.fit"
    traceback_text = unescape_text(logs[1].fields[c.FIELD_MESSAGE])
    assert traceback_text.startswith("it failed\nTraceback") and "ValueError: inner" in traceback_text

    times = [p.time_ns for p in pts]
    assert len(set(times)) == len(times), "every event of a run has its own timestamp"


def test_writing_the_same_point_twice_is_harmless(home: Path) -> None:
    client = pipeline_sdk.Client()
    rec = client.recorder("p", "s", "run-dup")
    rec.log_metric("loss", 0.5, step=1)
    assert client.flush(10)
    store = LocalStore(home / DB_NAME)
    [entry_point] = list(store.points(run_id="run-dup"))
    # deliver the spool's frame again, as a resend after a lost ack would
    spool_dir = client.shipper.spool_path
    client.close()
    assert not spool_dir.exists()
    entry = pipeline_sdk.encoding.MetricEncoder(
        c.LIST_METRIC,
        {c.TAG_RUN_ID: "run-dup", c.TAG_PIPELINE: "p", c.TAG_STEP: "s", c.TAG_ATTEMPT: "1"},
        "loss",
    ).entry(entry_point.time_ns, 0.5, 1)
    store.write_entries(c.LIST_METRIC.tag, entry)
    assert list(store.points(run_id="run-dup")) == [entry_point]


def test_local_store_is_the_default_without_fluentd(home: Path) -> None:
    client = pipeline_sdk.Client()
    assert isinstance(client.transport, pipeline_sdk.LocalTransport)
    assert client.describe() == f"the local store {home / DB_NAME}"
    client.close()


def test_fluentd_is_used_when_its_host_is_set(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(c.ENV_FLUENTD_HOST, "fluentd.mlobs.svc")
    monkeypatch.setenv(c.ENV_FLUENTD_PORT, "24225")
    client = pipeline_sdk.Client()
    assert client.describe() == "Fluentd at fluentd.mlobs.svc:24225"
    client.close(timeout=0)
