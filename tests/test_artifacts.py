"""Artifact records, the local content-addressed store and the background hasher, on real files."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import stat
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest

from pipeline_sdk import artifacts as a
from tests.conftest import wait_for

GIB = 1 << 30


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def store(tmp_path: Path) -> a.ArtifactStore:
    return a.ArtifactStore(tmp_path / "home")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A directory with nested files, an empty file, a link to a file, a link to a directory, a FIFO."""
    root = tmp_path / "model"
    (root / "weights" / "layer1").mkdir(parents=True)
    (root / "config.json").write_bytes(b'{"layers": 2}')
    (root / "weights" / "layer1" / "w.bin").write_bytes(b"\x00\x01" * 5000)
    (root / "weights" / "empty").write_bytes(b"")
    (root / "latest").symlink_to(root / "config.json")
    (root / "outside").symlink_to(tmp_path)
    os.mkfifo(root / "pipe")
    return root


# ---------------------------------------------------------------- records


def test_a_local_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_bytes(b'{"auc": 0.91}')
    record = a.describe(path)
    assert record == a.Artifact(
        name="metrics.json",
        uri=path.as_uri(),
        size_bytes=13,
        sha256=_sha(b'{"auc": 0.91}'),
        media_type="application/json",
    )
    assert record.uri.startswith("file:///")
    assert a.describe(path, name="scores").name == "scores"


def test_a_local_file_recorded_under_the_uri_it_was_uploaded_to(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"weights")
    record = a.describe(path, uri="s3://bucket/models/model.pt")
    assert (record.uri, record.size_bytes, record.sha256) == (
        "s3://bucket/models/model.pt",
        7,
        _sha(b"weights"),
    )


@pytest.mark.parametrize(
    ("uri", "name", "media_type"),
    [
        ("s3://bucket/models/model.onnx", "model.onnx", "application/octet-stream"),
        ("gs://bucket/reports/report.csv", "report.csv", "text/csv"),
        ("s3://bucket", "bucket", "application/octet-stream"),
    ],
)
def test_a_reference_is_not_read(uri: str, name: str, media_type: str) -> None:
    record = a.describe(uri)
    assert record == a.Artifact(name=name, uri=uri, size_bytes=None, sha256=None, media_type=media_type)


@pytest.mark.parametrize(
    ("filename", "media_type"),
    [
        ("table.csv", "text/csv"),
        ("plot.png", "image/png"),
        ("notes.txt", "text/plain"),
        ("weights.safetensors", "application/octet-stream"),  # not in Python's table
        ("table.csv.gz", "application/octet-stream"),  # gzip data, not text
        ("README", "application/octet-stream"),
    ],
)
def test_media_types(tmp_path: Path, filename: str, media_type: str) -> None:
    (tmp_path / filename).write_bytes(b"x")
    assert a.describe(tmp_path / filename).media_type == media_type


def test_a_file_uri_is_a_local_path(tmp_path: Path) -> None:
    path = tmp_path / "a b.txt"
    path.write_bytes(b"x")
    assert a.describe(path.as_uri(), name="ab").sha256 == _sha(b"x")


def test_a_directory_is_a_manifest_of_its_regular_files(tree: Path) -> None:
    record = a.describe(tree)
    files = (
        a.ManifestEntry("config.json", 13, _sha(b'{"layers": 2}')),
        a.ManifestEntry("weights/empty", 0, _sha(b"")),
        a.ManifestEntry("weights/layer1/w.bin", 10000, _sha(b"\x00\x01" * 5000)),
    )
    assert record.files == files
    assert record.skipped == ("latest", "outside", "pipe")  # links are not followed; a FIFO is no file
    assert record.size_bytes == 10013
    assert record.media_type == a.DIRECTORY_MEDIA_TYPE
    manifest = record.manifest_json()
    assert manifest is not None and json.loads(manifest) == [[e.path, e.size_bytes, e.sha256] for e in files]
    assert record.sha256 == _sha(manifest.encode())


def test_equal_trees_have_equal_hashes_and_a_changed_byte_changes_it(tree: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "weights" / "layer1").mkdir(parents=True)
    (copy / "config.json").write_bytes(b'{"layers": 2}')
    (copy / "weights" / "layer1" / "w.bin").write_bytes(b"\x00\x01" * 5000)
    (copy / "weights" / "empty").write_bytes(b"")
    assert a.describe(copy).sha256 == a.describe(tree).sha256
    (copy / "weights" / "empty").write_bytes(b"!")
    assert a.describe(copy).sha256 != a.describe(tree).sha256


def test_a_named_link_is_followed(tree: Path) -> None:
    record = a.describe(tree / "latest")
    assert (record.name, record.sha256) == ("latest", _sha(b'{"layers": 2}'))


def test_fields_round_trip(tree: Path, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_bytes(b"abc")
    for record in (a.describe(tree), a.describe(tmp_path / "f.txt"), a.describe("s3://b/k.bin")):
        fields = record.fields()
        assert set(fields) <= {
            a.FIELD_URI,
            a.FIELD_SIZE_BYTES,
            a.FIELD_SHA256,
            a.FIELD_MEDIA_TYPE,
            a.FIELD_MANIFEST,
            a.FIELD_STORED,
        }
        assert a.Artifact.from_fields(record.name, json.loads(json.dumps(fields))) == record
    assert a.describe("s3://b/k.bin").fields() == {
        a.FIELD_URI: "s3://b/k.bin",
        a.FIELD_MEDIA_TYPE: "application/octet-stream",
        a.FIELD_STORED: 0,
    }


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda p: a.pending(p / "missing.bin"),
            r"^path='.*missing\.bin' is invalid: No such file or directory$",
        ),
        (
            lambda p: a.pending("ftp://host/x"),
            r"^path='ftp://host/x' is invalid: expected a local path, or an s3://",
        ),
        (lambda p: a.pending("s3:///key"), r"^path='s3:///key' is invalid: expected .* with a bucket"),
        (lambda p: a.pending(p / "f.txt", uri="https://x/y"), r"^uri='https://x/y' is invalid: expected"),
        (
            lambda p: a.pending("s3://b/k", uri="s3://b/j"),
            r"^uri='s3://b/j' is invalid: path is already a URI",
        ),
        (lambda p: a.pending(p / "f.txt", name="my model"), r"^name='my model' is invalid: use letters"),
        (lambda p: a.pending(p / "f.txt", name=""), r"^name='' is invalid: must not be empty"),
        (
            lambda p: a.pending(p / "sock"),
            r"^path='.*sock' is invalid: neither a regular file nor a directory$",
        ),
    ],
)
def test_bad_arguments_are_refused_at_the_call(tmp_path: Path, call: Any, message: str) -> None:
    (tmp_path / "f.txt").write_bytes(b"x")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "sock"))
        with pytest.raises(ValueError, match=message):
            call(tmp_path)


def test_a_path_of_another_type_is_refused() -> None:
    with pytest.raises(TypeError, match=r"^path must be a str or a path, got int 3$"):
        a.pending(3)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the local store


def test_a_file_round_trips_through_the_store(store: a.ArtifactStore, tmp_path: Path) -> None:
    data = os.urandom(3 * a.CHUNK + 17)  # several chunks and a part of one
    (tmp_path / "model.pt").write_bytes(data)
    record = store.add(tmp_path / "model.pt")
    assert record.stored and record.sha256 == _sha(data) and record.size_bytes == len(data)
    blob = store.path_of(_sha(data))
    assert blob == store.root / "sha256" / _sha(data)[:2] / _sha(data)
    assert blob.read_bytes() == data
    assert _mode(blob) == 0o600
    for directory in (store.root, store.root / "sha256", blob.parent, store.root / "tmp"):
        assert _mode(directory) == 0o700, directory
    assert list((store.root / "tmp").iterdir()) == [], "the temporary file was renamed into place"
    restored = store.restore(record, tmp_path / "back.pt")
    assert restored == tmp_path / "back.pt" and restored.read_bytes() == data


def test_a_directory_round_trips_through_the_store(
    store: a.ArtifactStore, tree: Path, tmp_path: Path
) -> None:
    record = store.add(tree)
    dest = store.restore(record, tmp_path / "restored")
    found = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert found == ["config.json", "weights/empty", "weights/layer1/w.bin"]
    for entry in record.files or ():
        assert (dest / entry.path).read_bytes() == (tree / entry.path).read_bytes()
    assert not (dest / "latest").exists() and not (dest / "pipe").exists()
    # The manifest is stored under the directory's hash: a record without it restores too.
    bare = a.Artifact(
        record.name, record.uri, record.size_bytes, record.sha256, record.media_type, stored=True
    )
    assert store.manifest(bare) == record.files
    again = store.restore(bare, tmp_path / "again")
    assert sorted(str(p.relative_to(again)) for p in again.rglob("*") if p.is_file()) == found


def test_content_is_stored_once(store: a.ArtifactStore, tmp_path: Path) -> None:
    (tmp_path / "one.bin").write_bytes(b"same")
    (tmp_path / "two.bin").write_bytes(b"same")
    assert store.add(tmp_path / "one.bin").sha256 == store.add(tmp_path / "two.bin").sha256
    assert [p.name for p in (store.root / "sha256").rglob("*") if p.is_file()] == [_sha(b"same")]


def test_a_damaged_copy_of_another_size_is_replaced_when_stored_again(
    store: a.ArtifactStore, tmp_path: Path
) -> None:
    (tmp_path / "m.pt").write_bytes(b"weights")
    record = store.add(tmp_path / "m.pt")
    blob = store.path_of(_sha(b"weights"))
    blob.write_bytes(b"wei")  # cut short (a full disk, a crash)
    assert store.add(tmp_path / "m.pt") == record
    assert blob.read_bytes() == b"weights" and _mode(blob) == 0o600
    assert store.restore(record, tmp_path / "back").read_bytes() == b"weights"


def test_a_file_inside_a_directory_is_never_read_through_a_link(tmp_path: Path) -> None:
    """Links are skipped by the walk; one swapped in after it is refused when opened."""
    (tmp_path / "real").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        a._open_source(tmp_path / "link", follow=False)
    os.close(a._open_source(tmp_path / "link", follow=True))  # the path you name yourself is followed


def test_a_corrupted_copy_is_detected_on_restore(store: a.ArtifactStore, tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"good weights")
    record = store.add(tmp_path / "model.pt")
    blob = store.path_of(_sha(b"good weights"))
    blob.write_bytes(b"evil weights")
    with pytest.raises(a.ArtifactCorrupt) as caught:
        store.restore(record, tmp_path / "back.pt")
    message = str(caught.value)
    assert "'model.pt'" in message and str(blob) in message
    assert (
        f"has sha256 {_sha(b'evil weights')}, but was stored with sha256 {_sha(b'good weights')}" in message
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "model.pt"], "nothing left at dest"


def test_a_corrupted_file_of_a_directory_is_named(store: a.ArtifactStore, tree: Path, tmp_path: Path) -> None:
    record = store.add(tree)
    store.path_of(_sha(b"\x00\x01" * 5000)).write_bytes(b"\x00" * 10000)
    with pytest.raises(a.ArtifactCorrupt, match=r"^artifact 'model/weights/layer1/w\.bin': the stored copy "):
        store.restore(record, tmp_path / "restored")
    assert not (tmp_path / "restored").exists()
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_a_missing_copy_is_named(store: a.ArtifactStore, tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"w")
    record = store.add(tmp_path / "model.pt")
    store.path_of(_sha(b"w")).unlink()
    with pytest.raises(a.ArtifactError, match=r"its stored copy .* is missing; was it stored under another"):
        store.restore(record, tmp_path / "back.pt")


@pytest.mark.parametrize("uri", ["s3://bucket/models/model.pt", "gs://bucket/m"])
def test_a_reference_cannot_be_restored(store: a.ArtifactStore, tmp_path: Path, uri: str) -> None:
    with pytest.raises(
        a.NotStored, match=rf"only a reference to {uri} was recorded; .* fetch them from {uri}$"
    ):
        store.restore(a.describe(uri, name="model"), tmp_path / "back")


def test_a_file_described_but_not_stored_cannot_be_restored(store: a.ArtifactStore, tmp_path: Path) -> None:
    (tmp_path / "m.pt").write_bytes(b"w")
    record = a.describe(tmp_path / "m.pt")
    with pytest.raises(a.NotStored, match=rf"only a reference to {record.uri} was recorded"):
        store.restore(record, tmp_path / "back")


def test_restore_never_overwrites(store: a.ArtifactStore, tmp_path: Path) -> None:
    (tmp_path / "m.pt").write_bytes(b"w")
    record = store.add(tmp_path / "m.pt")
    (tmp_path / "back").write_bytes(b"mine")
    with pytest.raises(ValueError, match=r"^dest='.*back' is invalid: it exists"):
        store.restore(record, tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == b"mine"


@pytest.mark.parametrize("bad", ["../escape", "/etc/passwd", "a/../../b", "..", ""])
def test_a_manifest_path_outside_the_directory_is_refused(
    store: a.ArtifactStore, tmp_path: Path, bad: str
) -> None:
    (tmp_path / "f").write_bytes(b"x")
    sha = store.add(tmp_path / "f").sha256
    assert sha is not None
    record = a.Artifact(
        "d", "file:///d", 1, sha, a.DIRECTORY_MEDIA_TYPE, (a.ManifestEntry(bad, 1, sha),), stored=True
    )
    with pytest.raises(a.ArtifactError, match=r"^artifact 'd': the manifest's path .* leaves its directory$"):
        store.restore(record, tmp_path / "out" / "d")
    assert not (tmp_path / "escape").exists() and not (tmp_path / "out" / "d").exists()


@pytest.mark.parametrize("bad", ["ab", "A" * 64, "g" * 64, "0" * 63])
def test_path_of_refuses_what_is_not_a_sha256(store: a.ArtifactStore, bad: str) -> None:
    with pytest.raises(ValueError, match=r"^sha256='.*' is invalid: expected 64 lowercase hex digits$"):
        store.path_of(bad)


# ---------------------------------------------------------------- the background hasher


def test_a_1_gib_file_costs_its_caller_a_stat(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with big.open("wb") as out:
        out.truncate(GIB)  # sparse: made at once, read back as zeros
    me = psutil.Process()
    done: list[a.Artifact] = []
    hasher = a.BackgroundHasher(done.append)
    read_before = me.io_counters().read_chars
    item = a.pending(big)  # all a logging call does (the worker does not exist before submit)
    read_by_caller = me.io_counters().read_chars - read_before
    hasher.submit(item)
    assert item.size_bytes == GIB and item.path == big
    assert read_by_caller < 64 * 1024, "the caller read the file"
    stats = hasher.close()
    assert me.io_counters().read_chars - read_before >= GIB, "the hasher read it"
    zeros, expected = bytes(a.CHUNK), hashlib.sha256()
    for _ in range(GIB // a.CHUNK):
        expected.update(zeros)
    assert done == [
        a.Artifact("big.bin", big.as_uri(), GIB, expected.hexdigest(), "application/octet-stream")
    ]
    assert stats == a.HasherStats(hashed=1)


class Gate:
    """A callback that holds the worker on its first record until it is opened."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.holding = threading.Event()
        self.records: list[a.Artifact] = []

    def __call__(self, record: a.Artifact) -> None:
        if not self.holding.is_set():
            self.holding.set()
            self.opened.wait(30)
        self.records.append(record)


def _files(tmp_path: Path, n: int) -> list[a.Pending]:
    items = []
    for i in range(n):
        (tmp_path / f"f{i}.txt").write_bytes(f"file {i}".encode())
        items.append(a.pending(tmp_path / f"f{i}.txt"))
    return items


def test_a_full_queue_defers_hashing_to_close(tmp_path: Path, store: a.ArtifactStore) -> None:
    gate = Gate()
    hasher = a.BackgroundHasher(gate, store=store, queue_size=2)
    first, *rest = _files(tmp_path, 5)
    hasher.submit(first)
    wait_for(gate.holding.is_set, 10, "the worker to hold on its first record")
    for item in rest:  # two fit in the queue (n = queue_size), the next two are deferred
        hasher.submit(item)
    assert hasher.stats == a.HasherStats(hashed=1, deferred=2)
    gate.opened.set()
    stats = hasher.close()
    assert stats == a.HasherStats(hashed=5, deferred=2)
    assert [r.name for r in gate.records] == [f"f{i}.txt" for i in range(5)]
    assert all(r.sha256 == _sha(f"file {i}".encode()) and r.stored for i, r in enumerate(gate.records))


def test_close_out_of_time_delivers_the_rest_unhashed(tmp_path: Path) -> None:
    gate = Gate()
    hasher = a.BackgroundHasher(gate, queue_size=1)
    first, *rest = _files(tmp_path, 3)
    hasher.submit(first)
    wait_for(gate.holding.is_set, 10, "the worker to hold on its first record")
    for item in rest:
        hasher.submit(item)  # one queued, one deferred
    closing = threading.Thread(target=hasher.close, kwargs={"timeout": 0.05})
    closing.start()
    wait_for(lambda: hasher.cancelled, 10, "close() to give up")
    gate.opened.set()
    closing.join(10)
    assert not closing.is_alive()
    assert [(r.name, r.sha256) for r in gate.records] == [
        ("f0.txt", _sha(b"file 0")),
        ("f1.txt", None),
        ("f2.txt", None),
    ]
    assert gate.records[1] == rest[0].unhashed() and gate.records[1].size_bytes == 6
    assert hasher.stats == a.HasherStats(hashed=1, deferred=1, unhashed=2)


def test_past_max_deferred_one_is_delivered_at_once_unhashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(a, "MAX_DEFERRED", 1)
    gate = Gate()
    hasher = a.BackgroundHasher(gate, queue_size=1)
    first, queued, deferred, over = _files(tmp_path, 4)
    hasher.submit(first)
    wait_for(gate.holding.is_set, 10, "the worker to hold on its first record")
    hasher.submit(queued)
    hasher.submit(deferred)
    assert hasher.stats == a.HasherStats(hashed=1, deferred=1)
    hasher.submit(over)  # MAX_DEFERRED are waiting: delivered now, in this thread
    assert hasher.stats == a.HasherStats(hashed=1, deferred=2, unhashed=1)
    gate.opened.set()
    assert hasher.close() == a.HasherStats(hashed=3, deferred=2, unhashed=1)
    # In the order the callback finished them: the held first one after the one delivered at once.
    assert [r.name for r in gate.records] == ["f3.txt", "f0.txt", "f1.txt", "f2.txt"]
    assert [r.sha256 is None for r in gate.records] == [True, False, False, False]


def test_an_unreadable_file_is_delivered_unhashed_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    items = _files(tmp_path, 3)
    for item in items[:2]:
        assert item.path is not None
        item.path.unlink()  # gone between the call and the hashing
    done: list[a.Artifact] = []
    hasher = a.BackgroundHasher(done.append)
    with caplog.at_level(logging.WARNING, logger="pipeline_sdk.artifacts"):
        for item in items:
            hasher.submit(item)
        assert hasher.close() == a.HasherStats(hashed=1, unhashed=2)
    assert [(r.name, r.sha256) for r in done] == [
        ("f0.txt", None),
        ("f1.txt", None),
        ("f2.txt", _sha(b"file 2")),
    ]
    assert len(caplog.records) == 1
    assert "'f0.txt'" in caplog.records[0].getMessage() and "No such file" in caplog.records[0].getMessage()


def test_a_raising_callback_is_counted_as_lost(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def broken(record: a.Artifact) -> None:
        raise RuntimeError(f"cannot emit {record.name}")

    hasher = a.BackgroundHasher(broken)
    with caplog.at_level(logging.WARNING, logger="pipeline_sdk.artifacts"):
        for item in _files(tmp_path, 2):
            hasher.submit(item)
        assert hasher.close() == a.HasherStats(hashed=2, lost=2)
    assert [r.getMessage() for r in caplog.records] == [
        "mlobs: the artifact record of 'f0.txt' was lost: its callback raised RuntimeError: "
        "cannot emit f0.txt (later ones are counted only)"
    ]


def test_a_reference_goes_through_whole(tmp_path: Path) -> None:
    done: list[a.Artifact] = []
    hasher = a.BackgroundHasher(done.append)
    hasher.submit(a.pending("s3://bucket/k.bin"))
    assert hasher.close() == a.HasherStats(hashed=1)
    assert done == [a.describe("s3://bucket/k.bin")]


def test_submit_after_close_is_refused_and_close_without_work_starts_no_thread() -> None:
    before = {t.name for t in threading.enumerate()}
    hasher = a.BackgroundHasher(lambda record: None)
    assert hasher.close() == a.HasherStats()
    assert a.THREAD_NAME not in {t.name for t in threading.enumerate()} - before
    with pytest.raises(RuntimeError, match="the hasher is closed"):
        hasher.submit(a.pending("s3://b/k"))


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_a_bad_queue_size_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"^queue_size=.* is invalid: expected a whole number from 1$"):
        a.BackgroundHasher(lambda record: None, queue_size=bad)


def test_hashing_stops_when_cancelled(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(b"x" * (3 * a.CHUNK))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(a.Cancelled):
        a.hash_pending(a.pending(tmp_path / "f.bin"), cancel=cancel)
