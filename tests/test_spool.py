"""The on-disk spool, value by value: frame layout, offsets, acks, roll-over, descriptors, corrupt bytes.

The first tests pin exact values (they run against every mutant of ``spool.py``, so they are
kept cheap); the last ones drive the spool as a whole.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import errno
import fcntl
import inspect
import logging
import os
import resource
import socket
import stat
import subprocess
import types
import typing
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline_sdk import Client, LocalTransport
from pipeline_sdk import frames as frames_module
from pipeline_sdk import segments as segments_module
from pipeline_sdk import spool as spool_module
from pipeline_sdk.ratelog import RateLimitedLog
from pipeline_sdk.spool import (
    LOCK_NAME,
    SEGMENT_BYTES,
    Chunk,
    Frame,
    SpoolDir,
    crc32_holding_gil,
    frame_bytes,
)


def frames_of(n: int, size: int = 100) -> list[list[bytes]]:
    return [frame_bytes("mlobs.metric", 1, bytes([i % 256]) * size) for i in range(n)]


def drain(spool: SpoolDir) -> list[bytes]:
    out = []
    while (frame := spool.next_frame()) is not None:
        out.append(frame.entries)
        spool.ack(frame)
    return out


pytestmark = pytest.mark.timeout(30)  # each test takes well under a second; a mutant that hangs fails fast

TAG = "mlobs.metric"


def frame(i: int, size: int = 50, tag: str = TAG, count: int = 1) -> list[bytes]:
    return frame_bytes(tag, count, bytes([i % 256]) * size)


def length(parts: list[bytes]) -> int:
    return sum(len(p) for p in parts)


L = length(frame(0))  # 15-byte header + 12-byte tag + 50 bytes of entries


def segments(spool: SpoolDir) -> dict[str, int]:
    """The segment files of ``spool`` and their sizes on disk."""
    return {p.name: p.stat().st_size for p in sorted(spool.path.glob("*.seg"))}


def ack_bytes(spool: SpoolDir, seq: int) -> bytes:
    return (spool.path / f"{seq:012d}.ack").read_bytes()


def leftover(root: Path, n: int, segment_bytes: int = SEGMENT_BYTES) -> Path:
    """A spool directory left behind by a process that appended ``n`` frames and ended."""
    spool = SpoolDir.create(root, segment_bytes=segment_bytes)
    for i in range(n):
        spool.append([frame(i)])
    assert spool.release() is False
    return spool.path


def open_fds() -> dict[int, str]:
    """This process's open file descriptors and what each one points to."""
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own descriptor, gone already
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return fds


def fds_on(directory: Path) -> dict[int, str]:
    return {fd: target for fd, target in open_fds().items() if target.startswith(str(directory))}


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """RLIMIT_FSIZE: the kernel writes no byte at or past ``limit`` (a short write, then EFBIG)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def assert_annotations_resolve(module: types.ModuleType) -> int:
    """Every annotation of ``module``'s functions, classes and methods resolves; how many were read."""
    read = 0
    for obj in vars(module).values():
        if not (inspect.isfunction(obj) or inspect.isclass(obj)) or obj.__module__ != module.__name__:
            continue
        members = [m for m in vars(obj).values() if inspect.isfunction(m)] if inspect.isclass(obj) else []
        for target in (obj, *members):
            typing.get_type_hints(target)
            read += 1
    return read


def test_the_annotations_resolve_as_introspection_reads_them() -> None:
    assert sum(assert_annotations_resolve(m) for m in (spool_module, frames_module, segments_module)) >= 30
    assert typing.get_type_hints(SpoolDir.next_frame) == {"return": Frame | None}
    assert typing.get_type_hints(SpoolDir.append) == {"frames": list[list[bytes]], "return": int}
    assert typing.get_type_hints(segments_module.read_ack) == {"path": Path, "return": int | None}


# ---- the frame format ------------------------------------------------------------------------


def test_a_frame_is_header_tag_and_entries_with_a_crc_of_both() -> None:
    parts = frame_bytes("tâg", 7, b"xyz")
    crc = zlib.crc32(b"xyz", zlib.crc32("tâg".encode()))
    assert parts == [
        b"MF" + bytes([4]) + (3).to_bytes(4, "big") + (7).to_bytes(4, "big") + crc.to_bytes(4, "big"),
        "tâg".encode(),
        b"xyz",
    ]
    assert L == 15 + 12 + 50


@pytest.mark.parametrize("n", [0, 1, 4095, 4096, 4097, 8192, 10_000])
def test_the_crc_in_pieces_is_zlibs_crc(n: int) -> None:
    data = bytes(i * 7 % 251 for i in range(n))
    assert crc32_holding_gil(data) == zlib.crc32(data)
    assert crc32_holding_gil(data, 12345) == zlib.crc32(data, 12345)


def read_at(path: Path, offset: int, limit: int, *, verify: bool = True) -> Frame:
    """``frames.read_frame`` on the file at ``path``, its descriptor closed after."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return frames_module.read_frame(fd, offset, limit, owner="o", segment=0, verify=verify)
    finally:
        os.close(fd)


@pytest.mark.parametrize("delta", [1, -1])
def test_a_checksum_one_above_or_below_the_contents_is_a_mismatch(tmp_path: Path, delta: int) -> None:
    header, tag, entries = frame(0)
    crc = int.from_bytes(header[11:15], "big")
    path = tmp_path / "frame"
    path.write_bytes(header[:11] + ((crc + delta) % 2**32).to_bytes(4, "big") + tag + entries)
    with pytest.raises(frames_module.SpoolCorrupt, match=r"^checksum mismatch$"):
        read_at(path, 0, L)
    assert read_at(path, 0, L, verify=False).entries == entries  # unverified: taken as it is


def test_a_header_is_whole_when_it_ends_exactly_at_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "frames"
    path.write_bytes(b"".join(frame_bytes("", 0, b"")) + b"".join(frame(1)))  # 15 bytes: a header only
    empty = read_at(path, 0, 15)
    assert (empty.tag, empty.count, empty.entries, empty.end) == ("", 0, b"", 15)
    assert read_at(path, 0, 16).end == 15
    with pytest.raises(frames_module.SpoolCorrupt, match=r"^truncated frame header$"):
        read_at(path, 0, 14)
    assert (read_at(path, 15, 15 + L).entries, read_at(path, 15, 15 + L).end) == (bytes([1]) * 50, 15 + L)
    with pytest.raises(frames_module.SpoolCorrupt, match=r"^truncated frame$"):
        read_at(path, 15, 15 + L - 1)


# ---- appending, acknowledging, rolling over ------------------------------------------------------


def test_append_returns_the_bytes_written_and_frames_know_their_place(tmp_path: Path) -> None:
    spool = SpoolDir.create(tmp_path)
    assert spool.append([frame(0), frame(1, count=3)]) == 2 * L
    param = frame(2, size=10, tag="mlobs.param")
    assert spool.append([param]) == length(param) == 15 + 11 + 10
    assert spool.append([]) == 0  # nothing to write: no file touched
    assert segments(spool) == {"000000000000.seg": 2 * L + 36}
    assert (spool.disk_bytes(), spool.pending_bytes()) == (2 * L + 36, 2 * L + 36)
    got = list(iter(spool.next_frame, None))
    assert [(f.tag, f.count, f.entries, f.segment, f.end) for f in got] == [
        (TAG, 1, bytes([0]) * 50, 0, L),
        (TAG, 3, bytes([1]) * 50, 0, 2 * L),
        ("mlobs.param", 1, bytes([2]) * 10, 0, 2 * L + 36),
    ]
    ids = [base64.b64decode(f.chunk_id, validate=True) for f in got]
    assert [len(i) for i in ids] == [16, 16, 16] and len(set(ids)) == 3
    assert spool.pending_bytes() == 2 * L + 36  # handed out is not delivered
    spool.release()


def test_each_ack_writes_the_offset_as_8_bytes_big_endian(tmp_path: Path) -> None:
    spool = SpoolDir.create(tmp_path)
    for i in range(3):
        spool.append([frame(i)])
    first, second, third = iter(spool.next_frame, None)
    spool.ack(first)
    assert ack_bytes(spool, 0) == L.to_bytes(8, "big")
    assert (spool.disk_bytes(), spool.pending_bytes()) == (3 * L, 2 * L)
    spool.ack(first)  # acknowledged twice: nothing moves
    assert ack_bytes(spool, 0) == L.to_bytes(8, "big")
    spool.ack(second)
    assert ack_bytes(spool, 0) == (2 * L).to_bytes(8, "big")
    assert stat.S_IMODE((spool.path / "000000000000.ack").stat().st_mode) == 0o600
    assert stat.S_IMODE((spool.path / "000000000000.seg").stat().st_mode) == 0o600
    spool.ack(third)  # delivered to its end, the segment being written too: both files go at once
    assert sorted(p.name for p in spool.path.iterdir()) == [LOCK_NAME]
    assert (spool.disk_bytes(), spool.pending_bytes()) == (0, 0)
    spool.append([frame(3)])  # a new segment: numbers are never reused (they name chunk ids)
    assert segments(spool) == {"000000000001.seg": L}
    [again] = iter(spool.next_frame, None)
    assert (again.segment, again.end, again.entries) == (1, L, bytes([3]) * 50)
    assert again.chunk_id not in {first.chunk_id, second.chunk_id, third.chunk_id}
    spool.release()


def test_an_ack_of_a_frame_not_in_the_spool_changes_nothing(tmp_path: Path) -> None:
    spool = SpoolDir.create(tmp_path)
    spool.append([frame(0)])
    [got] = iter(spool.next_frame, None)
    spool.ack(Frame(TAG, 1, got.entries, got.chunk_id, segment=5, end=L))
    assert spool.pending_bytes() == L and not (spool.path / "000000000000.ack").exists()
    spool.release()


@pytest.mark.parametrize(
    ("segment_bytes", "expected"),
    [
        (3 * L - 1, {"000000000000.seg": 2 * L, "000000000001.seg": 2 * L}),
        (3 * L, {"000000000000.seg": 3 * L, "000000000001.seg": L}),
        (3 * L + 1, {"000000000000.seg": 3 * L, "000000000001.seg": L}),
        (L - 1, {f"{i:012d}.seg": L for i in range(4)}),  # a frame over the size gets a segment of its own
    ],
)
def test_a_segment_rolls_over_past_its_size_exactly(
    tmp_path: Path, segment_bytes: int, expected: dict[str, int]
) -> None:
    spool = SpoolDir.create(tmp_path, segment_bytes=segment_bytes)
    for i in range(4):
        spool.append([frame(i)])
    assert segments(spool) == expected
    assert [f.entries[0] for f in iter(spool.next_frame, None)] == [0, 1, 2, 3]
    spool.release()


def test_a_segment_holds_8_mib_by_default(tmp_path: Path) -> None:
    mib8 = 8 * 1024 * 1024
    spool = SpoolDir.create(tmp_path)
    big = frame_bytes(TAG, 1, b"b" * (mib8 - L - 15 - 12))
    spool.append([big])
    spool.append([frame(0)])  # exactly 8 MiB: still the first segment
    spool.append([frame(1)])
    assert segments(spool) == {"000000000000.seg": mib8, "000000000001.seg": L}
    spool.release()


def test_an_ack_in_the_middle_does_not_roll_the_segment(tmp_path: Path) -> None:
    spool = SpoolDir.create(tmp_path)
    spool.append([frame(0)])
    spool.append([frame(1)])
    first = spool.next_frame()
    assert first is not None
    spool.ack(first)
    spool.append([frame(2)])
    assert segments(spool) == {"000000000000.seg": 3 * L}
    assert [f.entries[0] for f in iter(spool.next_frame, None)] == [1, 2]
    spool.release()


def test_a_delivered_segment_that_was_rolled_over_is_removed(tmp_path: Path) -> None:
    spool = SpoolDir.create(tmp_path, segment_bytes=2 * L)
    spool.append([frame(0)])
    [got] = iter(spool.next_frame, None)
    spool.ack(got)  # delivered while being written: closed and removed
    spool.append([frame(1)])
    spool.append([frame(2)])
    spool.append([frame(3)])  # rolls: segment 1 is full, nothing of it delivered yet
    assert segments(spool) == {"000000000001.seg": 2 * L, "000000000002.seg": L}
    got_1, got_2, got_3 = iter(spool.next_frame, None)
    spool.ack(got_1)
    spool.ack(got_2)
    assert segments(spool) == {"000000000002.seg": L}
    spool.ack(got_3)
    assert segments(spool) == {}
    assert spool.errors == 0  # segment 0 had no ack file to remove: nothing failed
    assert spool.release() is True and not spool.path.exists()


def test_an_ack_for_a_segment_already_removed_touches_no_other(tmp_path: Path) -> None:
    spool = SpoolDir.create(tmp_path, segment_bytes=L)
    spool.append([frame(0)])
    spool.append([frame(1)])
    first, _ = iter(spool.next_frame, None)
    spool.ack(first)
    assert segments(spool) == {"000000000001.seg": L}
    spool.ack(first)  # again (a chunk acknowledged twice): segment 1 is not segment 0
    assert spool.pending_bytes() == L and not (spool.path / "000000000001.ack").exists()
    spool.rewind()
    assert [f.entries[0] for f in iter(spool.next_frame, None)] == [1]
    spool.release()


def test_the_segment_being_written_is_removed_once_delivered_even_before_older_ones(tmp_path: Path) -> None:
    spool = SpoolDir.create(tmp_path, segment_bytes=L)
    spool.append([frame(0)])
    spool.append([frame(1)])
    first, second = iter(spool.next_frame, None)
    spool.ack(second)  # segment 1, the one being written, delivered to its end
    assert segments(spool) == {"000000000000.seg": L}
    spool.append([frame(2)])  # so the next append starts a new segment
    assert segments(spool) == {"000000000000.seg": L, "000000000002.seg": L}
    spool.ack(first)
    assert segments(spool) == {"000000000002.seg": L}
    spool.release()


# ---- a write the disk refuses (RLIMIT_FSIZE: a real short write, then EFBIG) -------------------


def test_a_short_write_is_undone_and_the_segment_takes_the_next_write(tmp_path: Path) -> None:
    spool = SpoolDir.create(tmp_path)
    spool.append([frame(0)])
    with file_size_limit(L + 10), pytest.raises(OSError, match=f"short write: 10 of {L} bytes to "):
        spool.append([frame(1)])
    assert segments(spool) == {"000000000000.seg": L}  # truncated back
    assert (spool.disk_bytes(), spool.pending_bytes()) == (L, L)
    with file_size_limit(L), pytest.raises(OSError) as refused:
        spool.append([frame(2)])
    assert refused.value.errno == errno.EFBIG
    assert segments(spool) == {"000000000000.seg": L}
    assert spool.append([frame(3)]) == L
    assert segments(spool) == {"000000000000.seg": 2 * L}
    assert [(f.entries[0], f.end) for f in iter(spool.next_frame, None)] == [(0, L), (3, 2 * L)]
    assert spool.errors == 0
    spool.release()


@contextlib.contextmanager
def append_only(path: Path) -> Iterator[None]:
    """``chattr +a``: the kernel then refuses to truncate the file (EPERM); root on ext4 and the like."""
    refused = subprocess.run(["chattr", "+a", str(path)], check=False, capture_output=True).returncode
    if os.geteuid() != 0 or refused:
        pytest.skip("chattr +a needs root and a file system with inode flags")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-a", str(path)], check=True)


def test_a_failed_write_that_cannot_be_undone_is_counted_and_never_read(tmp_path: Path) -> None:
    spool = SpoolDir.create(tmp_path)
    spool.append([frame(0)])
    seg = spool.path / "000000000000.seg"
    with append_only(seg), file_size_limit(L + 10), pytest.raises(OSError, match="short write: 10 of"):
        spool.append([frame(1)])  # 10 bytes written, and they cannot be truncated away
    assert spool.errors == 1
    assert spool.last_error == (
        f"{seg}: could not truncate after a failed write: [Errno {errno.EPERM}] Operation not permitted"
    )
    assert (seg.stat().st_size, spool.disk_bytes()) == (L + 10, L)  # the reader never looks past L
    spool.append([frame(2)])  # written over them
    assert [(f.entries[0], f.end) for f in iter(spool.next_frame, None)] == [(0, L), (2, 2 * L)]
    spool.release()


def test_a_failed_first_write_leaves_the_fresh_segment_in_use(tmp_path: Path) -> None:
    spool = SpoolDir.create(tmp_path, segment_bytes=L - 1)  # every frame is over the size
    with file_size_limit(10), pytest.raises(OSError, match="short write"):
        spool.append([frame(0)])
    assert segments(spool) == {"000000000000.seg": 0}
    spool.append([frame(1)])
    assert segments(spool) == {"000000000000.seg": L}
    assert [(f.segment, f.entries[0]) for f in iter(spool.next_frame, None)] == [(0, 1)]
    spool.release()


def test_an_append_that_is_not_bytes_raises_and_leaves_the_spool_as_it_was(tmp_path: Path) -> None:
    spool = SpoolDir.create(tmp_path)
    spool.append([frame(0)])
    with pytest.raises(TypeError):
        spool.append([[b"MF", "not bytes"]])  # type: ignore[list-item]
    assert (spool.disk_bytes(), segments(spool)) == (L, {"000000000000.seg": L})
    header_and_tag, entries = b"".join(frame(1)[:2]), frame(1)[2]
    assert spool.append([[header_and_tag, entries]]) == L  # a frame may come in any number of parts
    assert [(f.entries[0], f.end) for f in iter(spool.next_frame, None)] == [(0, L), (1, 2 * L)]
    spool.release()


# ---- file names, descriptors and flags ------------------------------------------------------------


def test_a_spool_directory_is_named_by_time_host_pid_and_random(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "h" * 39 + "XYZ")
    first, second = SpoolDir.create(tmp_path), SpoolDir.create(tmp_path)
    stamp, host, pid, token = first.name.split("-")
    assert (len(stamp), host, pid, len(token)) == (20, "h" * 39 + "X", str(os.getpid()), 8)
    assert second.name > first.name  # names sort by creation time
    first.release()
    second.release()


def test_a_spool_directory_whose_lock_cannot_be_opened_is_not_left_behind(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    lowest_free = os.open(os.devnull, os.O_RDONLY)
    os.close(lowest_free)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # no descriptor left: EMFILE
    try:
        with pytest.raises(OSError) as refused:
            SpoolDir.create(root)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert refused.value.errno == errno.EMFILE
    assert list(root.iterdir()) == []


def test_a_new_directory_locked_first_by_an_adopter_is_left_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process adopting leftovers can lock a directory between its mkdir and its owner's lock."""
    real_lock = segments_module.lock_owner  # the function spool.py imported (and the test replaces there)
    raced: list[SpoolDir] = []
    calls = 0

    def racing_lock(path: Path) -> int | None:
        nonlocal calls
        calls += 1
        if calls == 1:  # right after the first mkdir, another process lists the spool root
            raced.extend(SpoolDir.adopt_orphans(tmp_path, exclude="none"))
        return real_lock(path)

    monkeypatch.setattr(spool_module, "lock_owner", racing_lock)
    spool = SpoolDir.create(tmp_path)  # not an error: it starts again under a new name
    [adopter] = raced
    assert adopter.name != spool.name
    assert adopter.release() is True  # it found the directory empty: removed
    assert [p.name for p in tmp_path.iterdir()] == [spool.name]
    spool.append([frame(0)])
    assert [f.entries[0] for f in iter(spool.next_frame, None)] == [0]
    spool.release()


def test_a_new_directory_is_tried_under_ten_names_at_most(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tries: list[Path] = []

    def always_taken(path: Path) -> int | None:
        tries.append(path)
        return None

    monkeypatch.setattr(spool_module, "lock_owner", always_taken)
    with pytest.raises(BlockingIOError, match=f"every new spool directory in {tmp_path} was locked"):
        SpoolDir.create(tmp_path)
    assert len(tries) == len({p.parent for p in tries}) == 10


@pytest.mark.parametrize(("planted", "used"), [(1, 1), (99, 99)])
def test_a_stray_file_with_the_next_segment_name_is_skipped_not_overwritten(
    tmp_path: Path, planted: int, used: int
) -> None:
    spool = SpoolDir.create(tmp_path)
    for seq in range(planted):
        (spool.path / f"{seq:012d}.seg").write_bytes(b"a user's file")
    spool.append([frame(0)])
    assert segments(spool)[f"{used:012d}.seg"] == L
    assert all((spool.path / f"{s:012d}.seg").read_bytes() == b"a user's file" for s in range(planted))
    [got] = iter(spool.next_frame, None)
    assert got.segment == used
    spool.release()


def test_no_free_segment_name_among_a_hundred_is_an_error(tmp_path: Path) -> None:
    spool = SpoolDir.create(tmp_path)
    for seq in range(100):
        (spool.path / f"{seq:012d}.seg").write_bytes(b"")
    with pytest.raises(FileExistsError, match=f"no free segment name in {spool.path}"):
        spool.append([frame(0)])
    spool.append([frame(1)])  # the next hundred names are tried next
    assert segments(spool)["000000000100.seg"] == L
    spool.release(remove_if_empty=False)


def test_every_descriptor_is_close_on_exec_and_closed_after_release(tmp_path: Path) -> None:
    before = set(open_fds())
    spool = SpoolDir.create(tmp_path)
    spool.append([frame(0)])
    spool.append([frame(1)])
    first = spool.next_frame()
    assert first is not None
    spool.ack(first)
    opened = fds_on(spool.path)
    assert sorted(Path(t).name for t in opened.values()) == [
        "000000000000.ack",
        "000000000000.seg",
        LOCK_NAME,
    ]
    for fd in opened:
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC, f"fd {fd} ({opened[fd]}) lacks FD_CLOEXEC"
    assert spool.release() is False
    assert set(open_fds()) == before
    [adopted] = SpoolDir.adopt_orphans(tmp_path, exclude="none")
    assert [Path(t).name for t in fds_on(adopted.path).values()] == [LOCK_NAME]  # opened when read
    second = adopted.next_frame()
    assert second is not None and second.entries[0] == 1
    adopted.ack(second)
    # read to its end: the segment and its ack are closed and gone...
    assert [Path(t).name for t in fds_on(adopted.path).values()] == [LOCK_NAME]
    assert sorted(p.name for p in adopted.path.iterdir()) == [LOCK_NAME]
    adopted.release()
    assert set(open_fds()) == before  # ...and the lock with the directory
    assert not adopted.path.exists()


def test_the_reader_opens_close_on_exec_and_never_through_a_symlink(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    left = leftover(tmp_path / "spool", 2)
    [adopted] = SpoolDir.adopt_orphans(tmp_path / "spool", exclude="none")
    seg = left / "000000000000.seg"
    forged, saved = tmp_path / "forged.seg", tmp_path / "saved.seg"
    forged.write_bytes(b"".join(frame(9)))
    seg.rename(saved)
    seg.symlink_to(forged)  # swapped in after adoption, before the first read
    with caplog.at_level(logging.WARNING, "mlobs.spool"):
        assert adopted.next_frame() is None
    assert adopted.errors == 1
    assert adopted.last_error == (
        f"{seg}: cannot open for reading: [Errno {errno.ELOOP}] Too many levels of symbolic links: '{seg}'"
    )
    assert [r.getMessage() for r in caplog.records] == [f"mlobs: spool {adopted.last_error}"]
    assert adopted.pending_bytes() == 2 * L  # kept: not lost, not delivered
    seg.unlink()
    saved.rename(seg)  # the segment is back: read from where it was
    got = adopted.next_frame()
    assert got is not None and got.entries == bytes([0]) * 50
    [fd] = [fd for fd, target in fds_on(left).items() if target == str(seg)]
    assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    assert forged.read_bytes() == b"".join(frame(9))
    ack = left / "000000000000.ack"
    ack.mkdir()  # the ack cannot be written: delivered all the same, counted, warned under the same file
    with caplog.at_level(logging.WARNING, "mlobs.spool"):
        adopted.ack(got)
    assert adopted.errors == 2
    assert (
        adopted.last_error
        == f"{seg}: could not record the ack: [Errno {errno.EISDIR}] Is a directory: '{ack}'"
    )
    assert len(caplog.records) == 1  # one warning per file every WARN_EVERY seconds
    assert adopted.pending_bytes() == L  # the ack holds in memory
    assert [f.entries[0] for f in iter(adopted.next_frame, None)] == [1]
    adopted.release()


# ---- leftover spools: what is read back ------------------------------------------------------------


@pytest.mark.parametrize(
    ("ack", "delivered"),
    [
        (None, [0, 1, 2]),  # no ack file: nothing delivered yet
        (b"", [0, 1, 2]),
        (L.to_bytes(8, "big")[:7], [0, 1, 2]),  # 7 bytes: a torn ack, distrusted
        (L.to_bytes(8, "big"), [1, 2]),
        ((2 * L).to_bytes(8, "big"), [2]),
        (L.to_bytes(8, "big") + b"\0", [0, 1, 2]),  # 9 bytes: not an ack of ours
        ((10**6).to_bytes(8, "big"), []),  # past the end: everything was delivered
    ],
)
def test_an_ack_file_is_read_back_exactly(tmp_path: Path, ack: bytes | None, delivered: list[int]) -> None:
    left = leftover(tmp_path, 3)
    if ack is not None:
        (left / "000000000000.ack").write_bytes(ack)
    [adopted] = SpoolDir.adopt_orphans(tmp_path, exclude="none")
    assert adopted.pending_bytes() == len(delivered) * L
    assert [f.entries[0] for f in iter(adopted.next_frame, None)] == delivered
    assert (adopted.lost_bytes, adopted.errors) == (0, 0)
    assert adopted.release() is (not delivered)
    assert left.exists() is bool(delivered)


@pytest.mark.timeout(10)
def test_a_fifo_planted_as_an_ack_never_blocks_adoption(tmp_path: Path) -> None:
    left = leftover(tmp_path, 2, segment_bytes=L)
    os.mkfifo(left / "000000000000.ack")  # opened for reading as it is, it would wait for a writer
    [adopted] = SpoolDir.adopt_orphans(tmp_path, exclude="none")
    assert adopted.errors == 1 and str(adopted.last_error).startswith(f"{left / '000000000000.seg'}: ")
    assert [(f.segment, f.entries[0]) for f in iter(adopted.next_frame, None)] == [(1, 1)]
    adopted.release()


def test_release_removes_the_directory_when_its_lock_file_is_gone_already(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = SpoolDir.create(tmp_path)
    (spool.path / LOCK_NAME).unlink()
    with caplog.at_level(logging.WARNING, "mlobs.spool"):
        assert spool.release() is True
    assert not spool.path.exists() and caplog.records == []


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another uid needs root")
@pytest.mark.parametrize("name", ["000000000000.seg", "000000000000.ack"])
def test_a_segment_or_ack_of_another_uid_is_left_alone(tmp_path: Path, name: str) -> None:
    left = leftover(tmp_path, 2, segment_bytes=L)
    (left / "000000000000.ack").write_bytes((0).to_bytes(8, "big"))
    os.chown(left / name, 65534, 65534)
    [adopted] = SpoolDir.adopt_orphans(tmp_path, exclude="none")
    assert adopted.errors == 1 and "000000000000.seg: the segment or its .ack" in str(adopted.last_error)
    assert [(f.segment, f.entries[0]) for f in iter(adopted.next_frame, None)] == [(1, 1)]
    adopted.release()


def test_a_delivered_file_that_cannot_be_removed_is_removed_at_release(tmp_path: Path) -> None:
    left = leftover(tmp_path, 1)
    [adopted] = SpoolDir.adopt_orphans(tmp_path, exclude="none")
    ack = left / "000000000000.ack"
    ack.mkdir()  # unlink() refuses a directory
    [got] = iter(adopted.next_frame, None)
    adopted.ack(got)
    assert adopted.errors == 1
    assert (
        adopted.last_error
        == f"{ack}: could not remove a delivered file: [Errno {errno.EISDIR}] Is a directory: '{ack}'"
    )
    assert sorted(p.name for p in left.iterdir()) == ["000000000000.ack", LOCK_NAME]
    ack.rmdir()
    ack.write_bytes(b"")  # removable now
    assert adopted.release() is True
    assert not left.exists()


def test_a_read_that_fails_is_counted_and_tried_again(tmp_path: Path) -> None:
    left = leftover(tmp_path, 2)
    seg = left / "000000000000.seg"
    [adopted] = SpoolDir.adopt_orphans(tmp_path, exclude="none")
    first = adopted.next_frame()
    assert first is not None
    [fd] = [fd for fd, target in fds_on(left).items() if target == str(seg)]
    directory = os.open(tmp_path, os.O_RDONLY)
    os.dup2(directory, fd)  # the reader's descriptor now fails every read (EISDIR), as a bad disk would (EIO)
    assert adopted.next_frame() is None
    assert adopted.errors == 1
    assert adopted.last_error == f"{seg}: read at byte {L} failed: [Errno {errno.EISDIR}] Is a directory"
    assert (adopted.lost_bytes, adopted.pending_bytes()) == (0, 2 * L)
    again = os.open(seg, os.O_RDWR)
    os.dup2(again, fd)  # the disk is back
    os.close(again)
    os.close(directory)
    second = adopted.next_frame()
    assert second is not None and (second.entries[0], second.end) == (1, 2 * L)
    adopted.release()


@pytest.mark.parametrize(("cut", "why"), [(5, "truncated frame header"), (20, "truncated frame body")])
def test_a_segment_cut_short_after_adoption_loses_what_is_missing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, cut: int, why: str
) -> None:
    left = leftover(tmp_path, 3)
    seg = left / "000000000000.seg"
    [adopted] = SpoolDir.adopt_orphans(tmp_path, exclude="none")
    os.truncate(seg, L + cut)  # within frame 1, which the spool still counts on
    with caplog.at_level(logging.ERROR, "mlobs.spool"):
        assert [f.entries[0] for f in iter(adopted.next_frame, None)] == [0]
    assert adopted.lost_bytes == 2 * L
    assert [r.getMessage() for r in caplog.records] == [
        f"mlobs: spool segment {seg} is corrupt at byte {L} ({why}); skipping {2 * L} bytes"
    ]


def test_a_frame_whose_tag_is_not_utf8_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    left = leftover(tmp_path, 2)
    seg = left / "000000000000.seg"
    tag, entries = b"\xff\xfe", b"e" * 10
    crc = zlib.crc32(tag + entries)
    bad = b"MF" + bytes([2]) + (10).to_bytes(4, "big") + (1).to_bytes(4, "big") + crc.to_bytes(4, "big")
    data = seg.read_bytes()
    seg.write_bytes(data[:L] + bad + tag + entries + data[L:])  # a checksum that holds, a tag that does not
    [adopted] = SpoolDir.adopt_orphans(tmp_path, exclude="none")
    with caplog.at_level(logging.ERROR, "mlobs.spool"):
        assert [f.entries[0] for f in iter(adopted.next_frame, None)] == [0, 1]
    assert adopted.lost_bytes == 15 + 2 + 10
    assert "(tag is not UTF-8)" in caplog.records[0].getMessage()


def test_appending_to_an_adopted_spool_starts_past_its_highest_segment(tmp_path: Path) -> None:
    left = leftover(tmp_path, 3, segment_bytes=2 * L)
    (left / "000000000004.seg").mkdir()  # not a regular file: never read, but its number is taken
    [adopted] = SpoolDir.adopt_orphans(tmp_path, exclude="none")
    assert adopted.errors == 1
    old = list(iter(adopted.next_frame, None))
    adopted.append([frame(7)])
    assert segments(adopted)["000000000005.seg"] == L
    new = list(iter(adopted.next_frame, None))
    assert [(f.segment, f.entries[0]) for f in old + new] == [(0, 0), (0, 1), (1, 2), (5, 7)]
    for got in old + new:
        adopted.ack(got)
    assert adopted.pending_bytes() == 0
    assert sorted(segments(adopted)) == ["000000000004.seg"]  # the directory is left alone
    adopted.release()


def test_a_symlinked_ack_costs_only_its_own_segment(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_bytes((2 * L).to_bytes(8, "big"))  # would say "delivered" if it were believed
    root = tmp_path / "spool"
    left = leftover(root, 3, segment_bytes=L)
    (left / "000000000001.ack").symlink_to(target)
    [adopted] = SpoolDir.adopt_orphans(root, exclude="none")
    assert adopted.errors == 1
    assert adopted.last_error == (
        f"{left / '000000000001.seg'}: the segment or its .ack is not a regular file of this user; "
        "left alone, not delivered"
    )
    assert [(f.segment, f.entries[0]) for f in iter(adopted.next_frame, None)] == [(0, 0), (2, 2)]
    assert target.read_bytes() == (2 * L).to_bytes(8, "big")


def test_a_symlinked_segment_is_counted_at_adoption_and_the_others_delivered(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    left = leftover(root, 2, segment_bytes=L)
    forged = tmp_path / "forged.seg"
    (left / "000000000000.seg").rename(forged)
    (left / "000000000000.seg").symlink_to(forged)
    [adopted] = SpoolDir.adopt_orphans(root, exclude="none")
    assert adopted.errors == 1 and "000000000000.seg: the segment or its .ack" in str(adopted.last_error)
    assert adopted.pending_bytes() == L
    assert [(f.segment, f.entries[0]) for f in iter(adopted.next_frame, None)] == [(1, 1)]


def test_a_leftover_directory_that_cannot_be_read_is_skipped_and_its_lock_closed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    spool_log = logging.getLogger("mlobs.spool")
    monkeypatch.setattr(spool_module, "_throttle", RateLimitedLog(spool_log, clock=clock))  # its own warnings
    bad = leftover(tmp_path, 1)
    locked = leftover(tmp_path, 1)
    (locked / LOCK_NAME).unlink()
    (locked / LOCK_NAME).mkdir()  # its lock cannot be opened: never even locked
    good = leftover(tmp_path, 2)
    monkeypatch.chdir(bad)  # a socket's path must be short
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind("000000000000.ack")  # opening a socket fails (ENXIO): not a file we can read
    before = set(open_fds())
    with caplog.at_level(logging.WARNING, "mlobs.spool"):
        [adopted] = SpoolDir.adopt_orphans(tmp_path, exclude="none")
        assert adopted.name == good.name
        assert set(open_fds()) - before == set(fds_on(good))  # the bad one's lock was closed
        adopted.release()
        clock.now = 10.0
        [again] = SpoolDir.adopt_orphans(tmp_path, exclude="none")  # a later process tries them again
        again.release()
    enxio = (
        f"mlobs: leftover spool {bad} not adopted: [Errno {errno.ENXIO}] No such device or address: "
        f"'{bad / '000000000000.ack'}'"
    )
    assert [r.getMessage() for r in caplog.records] == [
        enxio,  # the other ("Is a directory: '.../owner.lock'") within the same 10 s: suppressed, counted
        enxio + " (1 similar messages suppressed)",
    ]
    assert again.name == good.name


def test_which_leftover_directories_are_adopted_and_in_what_order(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert SpoolDir.adopt_orphans(root, exclude="none") == []  # no spool root yet
    names = [leftover(root, 1).name for _ in range(3)]
    linked = leftover(tmp_path / "elsewhere", 1)
    (root / "0-a-symlink").symlink_to(linked, target_is_directory=True)
    (root / "0-a-file").write_text("not a directory")
    adopted = SpoolDir.adopt_orphans(root, exclude=names[1])
    assert [s.name for s in adopted] == [names[0], names[2]]  # oldest first; never through a symlink
    for spool in adopted:
        spool.release()


def test_an_unlistable_spool_root_is_logged_and_adopts_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "_throttle", RateLimitedLog(logging.getLogger("mlobs.spool")))  # fresh
    root = tmp_path / "a-file"
    root.write_text("not a directory")
    with caplog.at_level(logging.WARNING, "mlobs.spool"):
        assert SpoolDir.adopt_orphans(root, exclude="none") == []
    [record] = caplog.records
    assert record.getMessage().startswith(f"mlobs: cannot list leftover spools in {root}: [Errno 20]")


def test_release_keeps_an_empty_directory_when_asked_and_unlocks_it(tmp_path: Path) -> None:
    spool = SpoolDir.create(tmp_path)
    assert spool.release(remove_if_empty=False) is True
    assert sorted(p.name for p in spool.path.iterdir()) == [LOCK_NAME]
    [again] = SpoolDir.adopt_orphans(tmp_path, exclude="none")  # unlocked: adoptable
    assert again.release() is True and not spool.path.exists()


def test_release_leaves_a_directory_that_holds_a_stranger(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = SpoolDir.create(tmp_path)
    (spool.path / "notes.txt").write_text("a user's file")
    with caplog.at_level(logging.WARNING, "mlobs.spool"):
        assert spool.release() is True
    assert sorted(p.name for p in spool.path.iterdir()) == ["notes.txt"]
    [record] = caplog.records
    assert record.getMessage().startswith(f"mlobs: could not remove spool directory {spool.path}: ")


# ---- corrupt bytes: skipped, counted exactly, acknowledged across ----------------------------------


def corrupt_leftover(root: Path, junk: bytes, at: int = 1, n: int = 4) -> Path:
    """A leftover segment of ``n`` frames with ``junk`` written between frames ``at - 1`` and ``at``."""
    left = leftover(root, n)
    seg = left / "000000000000.seg"
    data = seg.read_bytes()
    seg.write_bytes(data[: at * L] + junk + data[at * L :])
    return seg


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("junk", "why"),
    [
        (b"X", "bad magic"),  # one stray byte: the next frame starts right after it
        (b"XMF" + b"\xff" * 30, "bad magic"),  # a magic at an odd offset, no frame behind it
        (b"XYMF" + b"\xff" * 30, "bad magic"),  # and at an even one
        (b"MF" + b"\xff" * 13, "truncated frame"),  # a header whose lengths run past the end
        (b"Z" * 200, "bad magic"),  # more junk than there is before it
    ],
)
def test_junk_between_frames_costs_exactly_its_bytes(
    tmp_path: Path, junk: bytes, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    seg = corrupt_leftover(tmp_path, junk)
    [adopted] = SpoolDir.adopt_orphans(tmp_path, exclude="none")
    with caplog.at_level(logging.ERROR, "mlobs.spool"):
        assert [f.entries[0] for f in iter(adopted.next_frame, None)] == [0, 1, 2, 3]
    assert adopted.lost_bytes == len(junk)
    assert [r.getMessage() for r in caplog.records] == [
        f"mlobs: spool segment {seg} is corrupt at byte {L} ({why}); skipping {len(junk)} bytes"
    ]


def test_a_magic_late_in_a_corrupt_frame_does_not_hide_the_frame_after_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    left = leftover(tmp_path, 4)
    seg = left / "000000000000.seg"
    data = bytearray(seg.read_bytes())
    fake = L + 15 + 12 + 45  # "MF" in frame 1's entries, past the middle of the frame: its crc fails
    data[fake : fake + 2] = b"MF"
    seg.write_bytes(bytes(data))
    [adopted] = SpoolDir.adopt_orphans(tmp_path, exclude="none")
    with caplog.at_level(logging.ERROR, "mlobs.spool"):
        assert [(f.entries[0], f.end) for f in iter(adopted.next_frame, None)] == [
            (0, L),
            (2, 3 * L),
            (3, 4 * L),
        ]
    assert adopted.lost_bytes == L
    assert [r.getMessage() for r in caplog.records] == [
        f"mlobs: spool segment {seg} is corrupt at byte {L} (checksum mismatch); skipping {L} bytes"
    ]


def test_a_gap_is_acknowledged_across_once_what_precedes_it_is(tmp_path: Path) -> None:
    seg = corrupt_leftover(tmp_path, b"J" * 20, at=2)
    [adopted] = SpoolDir.adopt_orphans(tmp_path, exclude="none")
    got = list(iter(adopted.next_frame, None))
    assert [(f.entries[0], f.end) for f in got] == [(0, L), (1, 2 * L), (2, 3 * L + 20), (3, 4 * L + 20)]
    assert adopted.lost_bytes == 20
    adopted.ack(got[0])
    assert seg.with_suffix(".ack").read_bytes() == L.to_bytes(8, "big")
    adopted.rewind()  # a failed delivery: everything after the ack again, the gap skipped, not recounted
    assert [f.entries[0] for f in iter(adopted.next_frame, None)] == [1, 2, 3]
    assert adopted.lost_bytes == 20
    adopted.ack(got[1])  # the gap right after: acknowledged across at once
    assert seg.with_suffix(".ack").read_bytes() == (2 * L + 20).to_bytes(8, "big")
    assert adopted.pending_bytes() == 2 * L
    adopted.ack(got[2])
    assert seg.with_suffix(".ack").read_bytes() == (3 * L + 20).to_bytes(8, "big")
    adopted.ack(got[3])
    assert not seg.exists() and adopted.pending_bytes() == 0


def test_a_gap_at_the_start_is_acknowledged_at_once(tmp_path: Path) -> None:
    seg = corrupt_leftover(tmp_path, b"J" * 20, at=0, n=2)
    [adopted] = SpoolDir.adopt_orphans(tmp_path, exclude="none")
    first = adopted.next_frame()
    assert first is not None and first.entries[0] == 0
    assert seg.with_suffix(".ack").read_bytes() == (20).to_bytes(8, "big")
    assert (adopted.lost_bytes, adopted.pending_bytes()) == (20, 2 * L)


@pytest.mark.timeout(10)
def test_junk_at_the_end_without_a_magic_costs_exactly_its_bytes(tmp_path: Path) -> None:
    left = leftover(tmp_path, 2)
    with open(left / "000000000000.seg", "ab") as fh:
        fh.write(b"XYZ")  # no frame starts anywhere in it
    [adopted] = SpoolDir.adopt_orphans(tmp_path, exclude="none")
    assert [f.entries[0] for f in iter(adopted.next_frame, None)] == [0, 1]
    assert adopted.lost_bytes == 3


def test_corrupt_bytes_at_the_end_are_acknowledged_with_the_last_frame(tmp_path: Path) -> None:
    left = leftover(tmp_path, 2)
    seg = left / "000000000000.seg"
    with open(seg, "ab") as fh:
        fh.write(b"MF\x07")  # a torn header
    [adopted] = SpoolDir.adopt_orphans(tmp_path, exclude="none")
    got = list(iter(adopted.next_frame, None))
    assert adopted.lost_bytes == 3
    for f in got:
        adopted.ack(f)
    assert not seg.exists()
    assert adopted.release() is True


def test_a_segment_that_vanished_costs_its_pending_bytes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    left = leftover(tmp_path, 3, segment_bytes=2 * L)
    (left / "000000000000.ack").write_bytes(L.to_bytes(8, "big"))
    [adopted] = SpoolDir.adopt_orphans(tmp_path, exclude="none")
    (left / "000000000000.seg").unlink()
    with caplog.at_level(logging.ERROR, "mlobs.spool"):
        assert [(f.segment, f.entries[0]) for f in iter(adopted.next_frame, None)] == [(1, 2)]
    assert adopted.lost_bytes == L
    assert [r.getMessage() for r in caplog.records] == [
        f"mlobs: spool segment {left / '000000000000.seg'} is corrupt at byte {L} "
        f"(the file vanished (No such file or directory)); skipping {L} bytes"
    ]
    assert sorted(segments(adopted)) == ["000000000001.seg"]  # segment 0's ack went with it
    assert adopted.pending_bytes() == L


def test_bytes_that_appear_after_adoption_are_never_read(tmp_path: Path) -> None:
    left = leftover(tmp_path, 2)
    seg = left / "000000000000.seg"
    with open(seg, "ab") as fh:
        fh.write(b"MF\x07")
    [adopted] = SpoolDir.adopt_orphans(tmp_path, exclude="none")
    with open(seg, "ab") as fh:  # grows after adoption: not part of what was found
        fh.write(b"".join(frame(5)))
    assert [f.entries[0] for f in iter(adopted.next_frame, None)] == [0, 1]
    assert adopted.lost_bytes == 3


# ---- warnings: one of a kind every 10 seconds, counting the rest ----------------------------------


def test_the_throttle_logs_one_message_of_a_kind_every_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    throttle = RateLimitedLog(logging.getLogger("mlobs.spool"), clock=clock)
    with caplog.at_level(logging.INFO, "mlobs.spool"):
        for now, kind in [(0.0, "a"), (5.0, "a"), (5.0, "b"), (9.999, "a"), (10.0, "a"), (19.0, "a")]:
            clock.now = now
            throttle.log(kind, logging.WARNING, "%s at %s", kind, now)
        clock.now = 20.0
        throttle.log("a", logging.INFO, "%s at %s", "a", 20.0)
        clock.now = 40.0
        throttle.log("a", logging.INFO, "%s at %s", "a", 40.0)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "a at 0.0"),
        (logging.WARNING, "b at 5.0"),
        (logging.WARNING, "a at 10.0 (2 similar messages suppressed)"),
        (logging.INFO, "a at 20.0 (1 similar messages suppressed)"),
        (logging.INFO, "a at 40.0"),
    ]


def test_a_spool_error_is_counted_every_time_and_warned_once_per_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    left = leftover(tmp_path, 2, segment_bytes=L)
    for seq in (0, 1):
        (left / f"{seq:012d}.ack").mkdir()
    with caplog.at_level(logging.WARNING, "mlobs.spool"):
        [adopted] = SpoolDir.adopt_orphans(tmp_path, exclude="none")
        assert (adopted.errors, adopted.pending_bytes()) == (2, 0)
        adopted.release(remove_if_empty=False)
        [again] = SpoolDir.adopt_orphans(tmp_path, exclude="none")
        assert again.errors == 2
        again.release(remove_if_empty=False)
    suffix = ": the segment or its .ack is not a regular file of this user; left alone, not delivered"
    assert sorted(r.getMessage() for r in caplog.records) == [
        f"mlobs: spool {left / f'{seq:012d}.seg'}{suffix}" for seq in (0, 1)
    ]


def test_frames_and_chunks_are_frozen_and_a_chunk_id_is_derived_from_its_ends(tmp_path: Path) -> None:
    spool = SpoolDir.create(tmp_path)
    spool.append([frame(i, count=i + 1) for i in range(3)])
    got = list(iter(spool.next_frame, None))
    one = Chunk.of(got[:1])
    assert (one.tag, one.count, one.chunk_id, one.entries) == (TAG, 1, got[0].chunk_id, [got[0].entries])
    three = Chunk.of(got)
    assert (three.count, three.frames, three.entries) == (6, tuple(got), [f.entries for f in got])
    assert len(base64.b64decode(three.chunk_id, validate=True)) == 16
    assert three.chunk_id not in {f.chunk_id for f in got}
    assert Chunk.of(got[:2]).chunk_id not in {three.chunk_id, got[0].chunk_id, got[1].chunk_id}
    spool.rewind()
    assert Chunk.of(list(iter(spool.next_frame, None))).chunk_id == three.chunk_id  # a resend: same id
    with pytest.raises(dataclasses.FrozenInstanceError):
        got[0].end = 0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        three.count = 0  # type: ignore[misc]
    spool.release()


# ---- the spool as a whole -----------------------------------------------------------------------


def test_frames_come_back_in_order_and_acked_segments_are_deleted(tmp_path: Path) -> None:
    spool = SpoolDir.create(tmp_path, segment_bytes=1000)
    for i in range(30):
        assert spool.append([frame_bytes("mlobs.metric", 1, bytes([i]) * 100)]) > 0
    assert len(list(spool.path.glob("*.seg"))) > 3  # rolled over
    assert [e[0] for e in drain(spool)] == list(range(30))
    assert spool.pending_bytes() == 0
    assert list(spool.path.glob("*.seg")) == []  # the one being written too, once delivered
    assert spool.release() is True
    assert not spool.path.exists()


def test_chunk_ids_are_stable_and_unique(tmp_path: Path) -> None:
    spool = SpoolDir.create(tmp_path)
    spool.append(frames_of(3))
    ids = [f.chunk_id for f in iter(spool.next_frame, None)]
    assert len(set(ids)) == 3
    spool.rewind()
    assert [f.chunk_id for f in iter(spool.next_frame, None)] == ids  # a resend carries the same id


def test_acks_survive_the_process(tmp_path: Path) -> None:
    spool = SpoolDir.create(tmp_path)
    spool.append(frames_of(10))
    for _ in range(4):
        frame = spool.next_frame()
        assert frame is not None
        spool.ack(frame)
    assert spool.release() is False  # six frames left: the directory stays
    [again] = SpoolDir.adopt_orphans(tmp_path, exclude="none")
    assert [e[0] for e in drain(again)] == [4, 5, 6, 7, 8, 9]
    assert again.release() is True


def test_a_live_owner_is_not_adopted(tmp_path: Path) -> None:
    owner = SpoolDir.create(tmp_path)
    owner.append(frames_of(2))
    assert SpoolDir.adopt_orphans(tmp_path, exclude="none") == []  # flock held by the owner
    owner.release()
    assert len(SpoolDir.adopt_orphans(tmp_path, exclude="none")) == 1


def test_a_torn_tail_is_skipped_and_counted(tmp_path: Path) -> None:
    spool = SpoolDir.create(tmp_path)
    spool.append(frames_of(3))
    spool.release()
    [seg] = list(next(tmp_path.iterdir()).glob("*.seg"))
    with open(seg, "r+b") as fh:  # a write cut short by a crash
        fh.truncate(seg.stat().st_size - 40)
    [adopted] = SpoolDir.adopt_orphans(tmp_path, exclude="none")
    assert [e[0] for e in drain(adopted)] == [0, 1]
    assert adopted.lost_bytes > 0


def test_a_corrupt_frame_is_detected_by_its_checksum(tmp_path: Path) -> None:
    spool = SpoolDir.create(tmp_path)
    spool.append(frames_of(3))
    spool.release()
    [seg] = list(next(tmp_path.iterdir()).glob("*.seg"))
    data = bytearray(seg.read_bytes())
    data[-10] ^= 0xFF  # flip bits in the last frame's body
    seg.write_bytes(bytes(data))
    [adopted] = SpoolDir.adopt_orphans(tmp_path, exclude="none")
    assert [e[0] for e in drain(adopted)] == [0, 1]


def test_spool_bound_drops_are_counted_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from pipeline_sdk.config import Settings

    settings = Settings(
        fluentd_host=None, fluentd_port=24224, home=tmp_path, flush_timeout=5, spool_max_bytes=20_000
    )
    # a transport that never accepts: a store path that cannot be created
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the store's directory should be")
    client = Client(LocalTransport(blocker / "db" / "mlobs.db"), home=tmp_path, settings=settings)
    rec = client.recorder("p", "s", "r")
    for i in range(1000):
        rec.log_metric("loss", float(i), step=i)
    assert client.shipper.wait_spooled(10)
    stats = client.stats()
    assert stats.dropped_spool_full > 0
    assert stats.spooled_events + stats.dropped_spool_full == 1000
    assert any("spool" in r.getMessage() and "dropped" in r.getMessage() for r in caplog.records)
    client.close(timeout=0)


def test_lock_file_is_private(tmp_path: Path) -> None:
    spool = SpoolDir.create(tmp_path)
    assert oct(os.stat(spool.path).st_mode & 0o777) == "0o700"
    assert (spool.path / LOCK_NAME).exists()
    spool.release()
