"""ActiveRun.log_artifact: recorded off the caller's path, stored locally, a reference sent to Fluentd."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import threading
from pathlib import Path

import pytest

import pipeline_sdk
from pipeline_sdk import artifacts as a
from pipeline_sdk import contract as c
from pipeline_sdk.client import Client
from pipeline_sdk.local_store import DB_NAME, LocalStore, Point, split_record
from pipeline_sdk.read import ArtifactNotFound, ReadClient
from pipeline_sdk.read.influx import InfluxBackend
from pipeline_sdk.testing.influx_fake import InfluxFake, InfluxServer
from pipeline_sdk.validation import MAX_TEXT_LENGTH
from tests.conftest import ForwardServerProcess, wait_for

WEIGHTS = bytes(range(256)) * 4096  # 1 MiB


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_tree(root: Path) -> dict[str, bytes]:
    """A directory of three files in two levels, a link and a FIFO (both skipped): its files' bytes."""
    files = {"config.json": b'{"layers": 2}', "shards/0.bin": b"\x00" * 1000, "shards/1.bin": b"\x01" * 2000}
    for relative, data in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
    (root / "latest").symlink_to(root / "config.json")
    os.mkfifo(root / "pipe")
    return files


def artifact_points(home: Path, run_id: str) -> list[Point]:
    store = LocalStore(home / DB_NAME)
    try:
        return [p for p in store.points(measurement=c.IO.measurement, run_id=run_id)]
    finally:
        store.close()


def hasher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == a.THREAD_NAME]


def test_a_file_and_a_directory_round_trip_through_the_local_store(home: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.bin"
    model.write_bytes(WEIGHTS)
    files = make_tree(tmp_path / "ckpt")
    with pipeline_sdk.run(pipeline="p", step="s", run_id="made") as run:
        run.log_artifact(model)
        run.log_artifact(str(tmp_path / "ckpt"), "checkpoint")
    assert hasher_threads() == []
    with ReadClient(home=home) as reader:
        rows = reader.artifacts("made").to_list()
        assert [r["name"] for r in rows] == ["model.bin", "checkpoint"]
        one, tree = rows
        assert (one["size_bytes"], one["sha256"], one["media_type"], one["stored"], one["uri"]) == (
            len(WEIGHTS),
            sha(WEIGHTS),
            "application/octet-stream",
            True,
            model.as_uri(),
        )
        assert (one["files"], one["skipped"]) == (None, None)
        manifest = [{"path": p, "size_bytes": len(d), "sha256": sha(d)} for p, d in sorted(files.items())]
        assert tree["files"] == manifest and tree["skipped"] == ["latest", "pipe"]
        canonical = "[" + ",".join(f'["{p}",{len(files[p])},"{sha(files[p])}"]' for p in sorted(files)) + "]"
        assert (tree["size_bytes"], tree["sha256"], tree["media_type"]) == (
            3013,
            sha(canonical.encode()),
            "inode/directory",
        )
        restored = reader.restore_artifact("made", "model.bin", tmp_path / "back" / "model.bin")
        assert restored == tmp_path / "back" / "model.bin" and restored.read_bytes() == WEIGHTS
        again = reader.restore_artifact("made", "checkpoint", tmp_path / "back" / "ckpt")
        assert sorted(str(p.relative_to(again)) for p in again.rglob("*") if p.is_file()) == sorted(files)
        assert all((again / p).read_bytes() == d for p, d in files.items())
    blob = a.ArtifactStore(home).path_of(sha(WEIGHTS))
    assert blob.read_bytes() == WEIGHTS
    assert (stat.S_IMODE(blob.stat().st_mode), stat.S_IMODE(blob.parent.stat().st_mode)) == (0o600, 0o700)


def test_the_records_come_before_the_runs_end(home: Path, tmp_path: Path) -> None:
    model = tmp_path / "m.json"
    model.write_text("{}")
    with pipeline_sdk.run(pipeline="p", step="s", run_id="ordered") as run:
        run.log_artifact(model)
    [record] = artifact_points(home, "ordered")
    store = LocalStore(home / DB_NAME)
    [_, end] = store.points(measurement=c.RUN.measurement, run_id="ordered")
    store.close()
    assert record.time_ns < end.time_ns
    assert record.tags == {
        c.TAG_RUN_ID: "ordered",
        c.TAG_PIPELINE: "p",
        c.TAG_STEP: "s",
        c.TAG_ATTEMPT: "1",
        c.TAG_DIRECTION: "artifact",
        c.TAG_NAME: "m.json",
    }
    assert record.fields == {
        c.FIELD_URI: model.as_uri(),
        c.FIELD_SIZE_BYTES: 2,
        c.FIELD_SHA256: sha(b"{}"),
        c.FIELD_MEDIA_TYPE: "application/json",
        c.FIELD_STORED: 1,
    }
    assert ReadClient(home=home).run("ordered")["outputs"] == []  # an artifact is not an output


def test_a_corrupted_stored_copy_is_detected_on_restore(home: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.bin"
    model.write_bytes(WEIGHTS)
    with pipeline_sdk.run(pipeline="p", step="s", run_id="rot") as run:
        run.log_artifact(model)
    blob = a.ArtifactStore(home).path_of(sha(WEIGHTS))
    damaged = b"\xff" + WEIGHTS[1:]
    blob.write_bytes(damaged)
    with pytest.raises(a.ArtifactCorrupt) as raised:
        ReadClient(home=home).restore_artifact("rot", "model.bin", tmp_path / "back.bin")
    assert str(raised.value) == (
        f"artifact 'model.bin': the stored copy {blob} has sha256 {sha(damaged)}, but was stored with sha256 "
        f"{sha(WEIGHTS)}: it changed after it was stored"
    )
    assert not (tmp_path / "back.bin").exists() and sorted(os.listdir(tmp_path)) == [
        "mlobs-home",
        "model.bin",
    ]


def test_a_reference_is_recorded_and_restoring_it_names_its_uri(home: Path, tmp_path: Path) -> None:
    with pipeline_sdk.run(pipeline="p", step="s", run_id="ref") as run:
        run.log_artifact("s3://models/churn/v3/model.pt")
    with ReadClient(home=home) as reader:
        [row] = reader.artifacts("ref").to_list()
        assert (row["name"], row["uri"], row["size_bytes"], row["sha256"], row["stored"]) == (
            "model.pt",
            "s3://models/churn/v3/model.pt",
            None,
            None,
            False,
        )
        with pytest.raises(a.NotStored) as raised:
            reader.restore_artifact("ref", "model.pt", tmp_path / "model.pt")
        with pytest.raises(ArtifactNotFound) as missing:
            reader.restore_artifact("ref", "model.pth", tmp_path / "model.pt")
    assert str(raised.value) == (
        "artifact 'model.pt': only a reference to s3://models/churn/v3/model.pt was recorded; its bytes were "
        "never copied to the local store, so fetch them from s3://models/churn/v3/model.pt"
    )
    assert str(missing.value) == "run 'ref' has no artifact 'model.pth'; its artifacts: model.pt"
    assert not (tmp_path / "model.pt").exists() and not (home / "artifacts").exists()


def test_a_local_file_under_the_uri_it_was_uploaded_to(home: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.bin"
    model.write_bytes(WEIGHTS)
    with pipeline_sdk.run(pipeline="p", step="s", run_id="up") as run:
        run.log_artifact(model, "model", uri="gs://bucket/model.bin")
    with ReadClient(home=home) as reader:
        [row] = reader.artifacts("up").to_list()
        assert (row["uri"], row["sha256"], row["stored"]) == ("gs://bucket/model.bin", sha(WEIGHTS), True)
        assert reader.restore_artifact("up", "model", tmp_path / "copy").read_bytes() == WEIGHTS


def fluentd_run(
    server: ForwardServerProcess, home: Path, monkeypatch: pytest.MonkeyPatch, path: Path
) -> None:
    monkeypatch.setenv(c.ENV_FLUENTD_HOST, "127.0.0.1")
    monkeypatch.setenv(c.ENV_FLUENTD_PORT, str(server.port))
    with pipeline_sdk.run(pipeline="p", step="s", run_id="shipped") as run:
        run.log_artifact(path)


def test_sent_to_fluentd_only_the_reference_is_recorded(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forward_server: object
) -> None:
    server: ForwardServerProcess = forward_server()  # type: ignore[operator]
    model = tmp_path / "model.bin"
    model.write_bytes(WEIGHTS)
    fluentd_run(server, home, monkeypatch, model)
    received = []
    for message in server.received():
        for time_ns, entry in message.entries:
            measurement, tags, fields = split_record(message.tag, entry)
            received.append(Point(measurement, time_ns, tags, fields))
    [record] = [p for p in received if p.measurement == c.IO.measurement]
    assert record.fields == {
        c.FIELD_URI: model.as_uri(),
        c.FIELD_SIZE_BYTES: len(WEIGHTS),
        c.FIELD_SHA256: sha(WEIGHTS),
        c.FIELD_MEDIA_TYPE: "application/octet-stream",
        c.FIELD_STORED: 0,
    }
    assert not (home / "artifacts").exists()  # nothing was copied
    influx = InfluxServer(InfluxFake(lambda: received), token="t")  # as Fluentd would have written it
    try:
        with ReadClient(
            InfluxBackend(influx.url, "t", c.INFLUXDB_ORG, c.INFLUXDB_BUCKET), home=home
        ) as reader:
            [row] = reader.artifacts("shipped").to_list()
            assert (row["sha256"], row["stored"]) == (sha(WEIGHTS), False)
            with pytest.raises(
                a.NotStored, match=re.escape(f"only a reference to {model.as_uri()} was recorded")
            ):
                reader.restore_artifact("shipped", "model.bin", tmp_path / "back")
    finally:
        influx.close()


def thread_read_bytes() -> int:
    """Bytes this thread has read (rchar of /proc/thread-self/io): the caller's path only."""
    with open("/proc/thread-self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("rchar:"))


def test_a_1_gib_file_costs_the_caller_a_stat_and_a_late_end_records_it_unhashed(
    home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    big = tmp_path / "big.bin"
    with open(big, "wb") as out:
        out.truncate(1 << 30)  # sparse: reading it is real work, storing it is not
    with (
        caplog.at_level(logging.WARNING, logger="mlobs"),
        pipeline_sdk.run(pipeline="p", step="s", run_id="big", flush_timeout=0.2) as run,
    ):
        before = thread_read_bytes()
        run.log_artifact(big)
        read = thread_read_bytes() - before
        wait_for(lambda: hasher_threads() != [], 10, "the hasher at work")
    assert read < 4096  # the io file's own read: the artifact's bytes were not read here
    with ReadClient(home=home) as reader:
        [row] = reader.artifacts("big").to_list()
    assert (row["size_bytes"], row["sha256"], row["stored"]) == (1 << 30, None, False)  # from the stat
    assert any("1 were recorded without their sha256" in r.getMessage() for r in caplog.records)
    assert not any((home / "artifacts" / "tmp").iterdir())  # the partial copy was removed


def test_a_manifest_too_long_for_its_event_is_left_out_and_restores_from_the_store(
    home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tree = tmp_path / "many"
    tree.mkdir()
    for i in range(130):  # a name of 200 characters: an entry of about 280
        (tree / f"{i:03d}-{'x' * 192}.bin").write_bytes(i.to_bytes(2, "big"))
    record = a.describe(tree)
    assert len(record.fields()[c.FIELD_MANIFEST]) > MAX_TEXT_LENGTH  # 130 entries of about 280 characters
    with (
        caplog.at_level(logging.WARNING, logger="mlobs"),
        pipeline_sdk.run(pipeline="p", step="s", run_id="many") as run,
    ):
        run.log_artifact(tree)
    [point] = artifact_points(home, "many")
    assert c.FIELD_MANIFEST not in point.fields and point.fields[c.FIELD_SHA256] == record.sha256
    warnings = [r.getMessage() for r in caplog.records if "manifest" in r.getMessage()]
    assert warnings == [
        "mlobs: run p/s run_id=many attempt=1: the manifest of artifact 'many' (130 files) is longer than "
        "a string field holds, so its event leaves it out; its sha256 still names it, and the local store "
        "keeps it whole"
    ]
    with ReadClient(home=home) as reader:
        [row] = reader.artifacts("many").to_list()
        assert (row["files"], row["size_bytes"]) == (None, 260)
        back = reader.restore_artifact("many", "many", tmp_path / "back")
    assert sorted(p.name for p in back.iterdir()) == sorted(p.name for p in tree.iterdir())
    assert (back / f"129-{'x' * 192}.bin").read_bytes() == (129).to_bytes(2, "big")


def test_a_file_name_that_is_not_utf8_round_trips(home: Path, tmp_path: Path) -> None:
    tree = tmp_path / "odd"
    tree.mkdir()
    raw = os.fsencode(tree) + b"/caf\xe9.txt"  # Latin-1, as an old tool wrote it
    with open(raw, "wb") as out:
        out.write(b"latte")
    with pipeline_sdk.run(pipeline="p", step="s", run_id="odd") as run:
        run.log_artifact(tree)
    with ReadClient(home=home) as reader:
        [row] = reader.artifacts("odd").to_list()
        assert row["files"] == [{"path": "caf\udce9.txt", "size_bytes": 5, "sha256": sha(b"latte")}]
        back = reader.restore_artifact("odd", "odd", tmp_path / "back")
    assert os.listdir(os.fsencode(back)) == [b"caf\xe9.txt"]


def test_a_call_on_an_ended_run_raises_and_records_nothing(home: Path, tmp_path: Path) -> None:
    model = tmp_path / "m.bin"
    model.write_bytes(b"m")
    with pipeline_sdk.run(pipeline="p", step="s", run_id="late") as run:
        pass
    with pytest.raises(RuntimeError) as raised:
        run.log_artifact(model)
    assert str(raised.value) == (
        "log_artifact() on run p/s run_id=late attempt=1, which has ended: record inside the run's `with` "
        "block (or in the function that run() decorates), or start a new run with pipeline_sdk.run(...)"
    )
    assert artifact_points(home, "late") == [] and hasher_threads() == []


BAD_CALLS = [
    (
        lambda p: ({"path": p / "nope.bin"}, ValueError),
        "path='{tmp}/nope.bin' is invalid: No such file or directory",
    ),
    (lambda p: ({"path": 42}, TypeError), "path must be a str or a path, got int 42"),
    (
        lambda p: ({"path": p / "fifo"}, ValueError),
        "path='{tmp}/fifo' is invalid: neither a regular file nor a directory",
    ),
    (
        lambda p: ({"path": "http://host/model.bin"}, ValueError),
        "path='http://host/model.bin' is invalid: expected a local path",
    ),
    (
        lambda p: ({"path": "s3://"}, ValueError),
        "path='s3://' is invalid: expected a local path, or an s3:// or gs:// URI with a bucket",
    ),
    (
        lambda p: ({"path": p / "m.bin", "name": "my model"}, ValueError),
        "name='my model' is invalid: use letters, digits",
    ),
    (
        lambda p: ({"path": p / "m.bin", "uri": "ftp://host/m.bin"}, ValueError),
        "uri='ftp://host/m.bin' is invalid",
    ),
]


@pytest.mark.parametrize(("call", "message"), BAD_CALLS, ids=[m.split(" ")[0] for _, m in BAD_CALLS])
def test_bad_arguments_are_named(home: Path, tmp_path: Path, call: object, message: str) -> None:
    (tmp_path / "m.bin").write_bytes(b"m")
    os.mkfifo(tmp_path / "fifo")
    kwargs, error = call(tmp_path)  # type: ignore[operator]
    with pipeline_sdk.run(pipeline="p", step="s", run_id="bad") as run:
        with pytest.raises(error) as raised:
            run.log_artifact(**kwargs)
        assert str(raised.value).startswith(message.format(tmp=tmp_path))
    with pipeline_sdk.run(pipeline="p", step="s", run_id="dropped", on_invalid="drop") as run:
        run.log_artifact(**kwargs)  # dropped and counted, never raised
        assert run.client.stats().dropped_invalid == 1
    assert artifact_points(home, "bad") == [] == artifact_points(home, "dropped")


def test_a_recorder_of_ones_own_delivers_its_artifacts_when_the_client_closes(
    home: Path, tmp_path: Path
) -> None:
    model = tmp_path / "m.bin"
    model.write_bytes(b"m")
    client = Client()
    rec = client.recorder("p", "s", "own")
    rec.log_artifact(model)
    assert client.close(10)
    assert [p.tags[c.TAG_NAME] for p in artifact_points(home, "own")] == ["m.bin"]
    with pytest.raises(RuntimeError, match=r"^log_artifact\(\) on run p/s run_id=own attempt=1"):
        rec.log_artifact(model)


def test_a_hashing_failure_of_any_kind_still_records_the_artifact(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> a.Artifact:
        raise RuntimeError("no room to hash")

    model = tmp_path / "m.bin"
    model.write_bytes(b"m" * 10)
    monkeypatch.setattr(a, "hash_pending", broken)
    with caplog.at_level(logging.WARNING), pipeline_sdk.run(pipeline="p", step="s", run_id="odd-fail") as run:
        run.log_artifact(model)
        run.log_artifact(model, "again")  # the worker goes on after the first failure
    rows = ReadClient(home=home).artifacts("odd-fail").to_list()
    assert [(r["name"], r["size_bytes"], r["sha256"]) for r in rows] == [
        ("m.bin", 10, None),
        ("again", 10, None),
    ]
    failures = [r.getMessage() for r in caplog.records if "was not hashed" in r.getMessage()]
    assert failures == [
        f"mlobs: artifact 'm.bin' ({model.as_uri()}) was not hashed: RuntimeError: no room to hash; recorded "
        "without its sha256 (later ones are counted only)"
    ]
