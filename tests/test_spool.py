"""The on-disk spool: order, acks that survive the process, segment clean-up, torn writes, ownership."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline_sdk import Client, LocalTransport
from pipeline_sdk.spool import LOCK_NAME, SpoolDir, frame_bytes


def frames_of(n: int, size: int = 100) -> list[list[bytes]]:
    return [frame_bytes("mlobs.metric", 1, bytes([i % 256]) * size) for i in range(n)]


def drain(spool: SpoolDir) -> list[bytes]:
    out = []
    while (frame := spool.next_frame()) is not None:
        out.append(frame.entries)
        spool.ack(frame)
    return out


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
