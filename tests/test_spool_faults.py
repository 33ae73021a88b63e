"""Spool and delivery under real faults: every event is delivered or counted, and no thread dies.

The faults are real wherever the kernel can produce them here: a full disk is a small
tmpfs (mounted by the test, which needs root; CI runs as root), a process out of file
descriptors is a lowered ``RLIMIT_NOFILE``, a permission error is a process running
as an unprivileged uid.  Each test counts exactly: ``spooled + dropped == logged``.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline_sdk import Client, LocalTransport
from pipeline_sdk import contract as c
from pipeline_sdk.local_store import DB_NAME, LocalStore
from pipeline_sdk.spool import LOCK_NAME, SpoolDir, frame_bytes
from pipeline_sdk.transports import Sink, Transport
from tests.conftest import ROOT, wait_for

IS_ROOT = os.geteuid() == 0
NOBODY = 65534


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOBS_")}
    env["MLOBS_HOME"] = str(home)
    env["PYTHONPATH"] = str(ROOT)
    return env


# Root ignores file permissions; without these two capabilities it obeys them like any user.
UNPRIVILEGED = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"] if IS_ROOT else []


def _run_script(script: str, home: Path, *args: str, unprivileged: bool = False) -> dict[str, object]:
    """Run ``script`` in a fresh interpreter; it prints one JSON line, returned here."""
    prefix = UNPRIVILEGED if unprivileged else []
    done = subprocess.run(
        [*prefix, sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(home),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"script failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    last = done.stdout.strip().splitlines()[-1]
    result: dict[str, object] = json.loads(last)
    result["stderr"] = done.stderr
    return result


@contextlib.contextmanager
def mounted_tmpfs(mount: Path, options: str) -> Iterator[Path]:
    """A tmpfs of the test's own at ``mount``, so a full or read-only disk is real and cheap."""
    if not IS_ROOT:
        pytest.skip("mounting a tmpfs to fill a real disk needs root (CI runs as root)")
    mount.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs."""
    with mounted_tmpfs(tmp_path / "tmpfs", "size=2m,mode=0700") as mount:
        yield mount


def fill(path: Path) -> Path:
    """Fill the file system of ``path`` until it refuses another byte; the filler file."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):  # ENOSPC: on to smaller writes, then done
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return filler


# ---- segment files that cannot be created -----------------------------------------------

EMFILE_SCRIPT = """
    import json, resource, sys
    from pipeline_sdk import Client, LocalTransport
    from pathlib import Path
    home = Path(sys.argv[1])
    client = Client(LocalTransport(home / "mlobs.db"), home=home)
    rec = client.recorder("p", "s", "r")
    assert client.flush(10)
    # Every new file descriptor is refused (EMFILE) while the next 500 events are logged.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Delivered, so the segment is gone: the next write must open a new segment file.
    resource.setrlimit(resource.RLIMIT_NOFILE, (3, hard))
    for i in range(500):
        rec.log_metric("loss", float(i), step=i)
    assert client.shipper.wait_spooled(10)
    during = client.stats()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    for i in range(500, 700):
        rec.log_metric("loss", float(i), step=i)
    assert client.flush(10)
    after = client.stats()
    client.close()
    print(json.dumps({"during": vars(during), "after": vars(after)}))
"""


def test_a_segment_that_cannot_be_opened_counts_its_events_and_spooling_resumes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    out = _run_script(EMFILE_SCRIPT, home, str(home))
    during, after = out["during"], out["after"]
    assert isinstance(during, dict) and isinstance(after, dict)
    assert during["dropped_spool_error"] == 500
    assert during["spooler_alive"] and during["delivery_alive"]
    assert "Too many open files" in str(during["last_spool_error"])
    assert after["spooled_events"] == 200 and after["delivered_events"] == 200
    assert after["dropped_spool_error"] == 500
    store = LocalStore(home / DB_NAME)
    steps = sorted(p.fields[c.FIELD_INDEX] for p in store.points(c.LIST_METRIC.measurement))
    assert steps == list(range(500, 700))


PERMISSION_SCRIPT = """
    import json, os, sys, time
    from pathlib import Path
    from pipeline_sdk import Client, LocalTransport
    from pipeline_sdk.forward import DeliveryError

    class Gate:
        kind = "local"
        up = False
        def __init__(self, path):
            self.inner = LocalTransport(path)
        def open(self):
            inner, gate = self.inner.open(), self
            class Sink:
                def deliver(self, chunk):
                    if not gate.up:
                        raise DeliveryError("receiver down")
                    inner.deliver(chunk)
                def close(self):
                    inner.close()
            return Sink()
        def describe(self):
            return "a gate"

    home = Path(sys.argv[1])
    gate = Gate(home / "mlobs.db")
    client = Client(gate, home=home)
    rec = client.recorder("p", "s", "r")
    for i in range(100):
        rec.log_metric("loss", float(i), step=i)
    assert client.shipper.wait_spooled(10)
    spool = client.shipper.spool_path
    os.chmod(spool, 0o500)  # from now on no file may be made or removed in the spool
    gate.up = True
    deadline = time.monotonic() + 10
    while client.stats().delivered_events < 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    for i in range(100, 150):
        rec.log_metric("loss", float(i), step=i)
    assert client.shipper.wait_spooled(10)
    during = client.stats()
    os.chmod(spool, 0o700)
    for i in range(150, 200):
        rec.log_metric("loss", float(i), step=i)
    assert client.flush(10)
    after = client.stats()
    client.close()
    print(json.dumps({"during": vars(during), "after": vars(after), "left": os.path.exists(spool)}))
"""


def test_permission_denied_in_the_spool_is_counted_and_lived_with(tmp_path: Path) -> None:
    """A delivered segment that cannot be removed, then one that cannot be created (EACCES)."""
    home = tmp_path / "home"
    out = _run_script(PERMISSION_SCRIPT, home, str(home), unprivileged=True)
    during, after = out["during"], out["after"]
    assert isinstance(during, dict) and isinstance(after, dict)
    assert during["delivered_events"] == 100
    assert during["spool_errors"] == 1  # the delivered segment stayed: removed at release instead
    assert during["dropped_spool_error"] == 50
    assert "Permission denied" in str(during["last_spool_error"])
    assert during["spooler_alive"] and during["delivery_alive"]
    assert after["delivered_events"] == 150 and after["dropped_spool_error"] == 50
    assert out["left"] is False, "the delivered segment should have been removed once it could be"


# ---- a full disk ---------------------------------------------------------------------------


def test_an_ack_that_cannot_be_written_keeps_delivery_going(tmpfs: Path) -> None:
    """ENOSPC on the ack file: the events were delivered, so nothing is lost, and the thread lives."""
    spool = SpoolDir.create(tmpfs / "spool")
    assert spool.append([frame_bytes(c.METRIC.tag, 1, b"x" * 100) for _ in range(3)]) > 0
    filler = fill(tmpfs)
    frame = spool.next_frame()
    assert frame is not None
    spool.ack(frame)  # the ack file cannot get its first page
    assert spool.errors == 1
    assert "No space left on device" in str(spool.last_error)
    filler.unlink()
    second = spool.next_frame()
    assert second is not None and second.end > frame.end  # the in-memory ack holds: no resend
    spool.ack(second)
    assert spool.errors == 1
    assert spool.pending_bytes() == frame.end  # one frame of 3 left


class _Receiver:
    """A transport to the local store that can be switched off (refuses every delivery)."""

    kind = "local"

    def __init__(self, path: Path) -> None:
        self.inner = LocalTransport(path)
        self.up = False

    def open(self) -> Sink:
        inner = self.inner.open()
        receiver = self

        class _Gate:
            def deliver(self, chunk):  # type: ignore[no-untyped-def]
                from pipeline_sdk.forward import DeliveryError

                if not receiver.up:
                    raise DeliveryError("receiver down")
                inner.deliver(chunk)

            def close(self) -> None:
                inner.close()

        return _Gate()

    def describe(self) -> str:
        return "a receiver that can be switched off"


def test_a_drained_spool_gives_its_disk_space_back(tmp_path: Path) -> None:
    """The active segment is removed once delivered, so a spool that hit its bound takes events again."""
    from pipeline_sdk.config import Settings

    settings = Settings(
        fluentd_host=None, fluentd_port=24224, home=tmp_path, flush_timeout=5, spool_max_bytes=200_000
    )
    receiver = _Receiver(tmp_path / "store" / DB_NAME)
    client = Client(receiver, home=tmp_path / "home", settings=settings)
    rec = client.recorder("p", "s", "bound")
    logged = 0
    while client.stats().dropped_spool_full == 0:  # small batches, until the bound refuses one
        for _ in range(100):
            rec.log_metric("loss", float(logged), step=logged)
            logged += 1
        assert client.shipper.wait_spooled(10)
    first = client.stats()
    assert first.spooled_events > 1000
    receiver.up = True
    assert client.flush(20)
    spool_dir = client.shipper.spool_path
    on_disk = sum(p.stat().st_size for p in spool_dir.glob("*.seg"))
    assert on_disk == 0, f"{on_disk} bytes of delivered events still on disk"
    for i in range(logged, logged + 1000):
        rec.log_metric("loss", float(i), step=i)
    assert client.flush(20)
    after = client.stats()
    client.close()
    assert after.dropped_spool_full == first.dropped_spool_full  # nothing more dropped
    assert after.delivered_events == first.spooled_events + 1000


# ---- leftover spools -------------------------------------------------------------------------


def _leftover(root: Path, values: range) -> Path:
    spool = SpoolDir.create(root)
    for i in values:
        spool.append([frame_bytes(c.METRIC.tag, 1, bytes([i % 256]) * 10)])
    spool.release()
    return spool.path


def test_stray_files_in_a_leftover_spool_are_ignored(tmp_path: Path) -> None:
    left = _leftover(tmp_path, range(3))
    (left / "000000000003 (copy).seg").write_bytes(b"junk")
    (left / "notes.txt").write_text("a user's file")
    (left / "12.seg").write_bytes(b"junk")
    [adopted] = SpoolDir.adopt_orphans(tmp_path, exclude="none")
    assert [f.entries[0] for f in iter(adopted.next_frame, None)] == [0, 1, 2]


def test_each_leftover_directory_is_adopted_in_its_own_error_handling(tmp_path: Path) -> None:
    _leftover(tmp_path, range(2))
    bad = _leftover(tmp_path, range(9, 10))
    [seg] = bad.glob("*.seg")
    seg.with_suffix(".ack").mkdir()  # a directory where the ack file should be
    (bad / "000000000001.seg").mkdir()  # and where a segment file should be
    good = _leftover(tmp_path, range(5, 7))
    adopted = SpoolDir.adopt_orphans(tmp_path, exclude="none")
    firsts = sorted(f.entries[0] for spool in adopted for f in iter(spool.next_frame, None))
    assert firsts == [0, 1, 5, 6]
    assert good.exists()


@pytest.mark.skipif(not IS_ROOT, reason="giving a directory to another uid needs root")
def test_a_leftover_directory_of_another_uid_is_never_adopted(tmp_path: Path) -> None:
    foreign = _leftover(tmp_path, range(3))
    for path in (foreign, *foreign.iterdir()):
        os.chown(path, NOBODY, NOBODY)
    before = {p.name: p.read_bytes() for p in foreign.iterdir()}
    assert SpoolDir.adopt_orphans(tmp_path, exclude="none") == []
    assert {p.name: p.read_bytes() for p in foreign.iterdir()} == before


def test_a_symlinked_ack_is_never_followed(tmp_path: Path) -> None:
    target = tmp_path / "precious.txt"
    target.write_bytes(b"the user's data")
    root = tmp_path / "spool"
    left = _leftover(root, range(3))
    [seg] = left.glob("*.seg")
    seg.with_suffix(".ack").symlink_to(target)
    adopted = SpoolDir.adopt_orphans(root, exclude="none")
    for spool in adopted:
        for frame in iter(spool.next_frame, None):
            spool.ack(frame)
        spool.release()
    assert target.read_bytes() == b"the user's data"
    assert target.is_file() and not target.is_symlink()


def test_a_symlinked_segment_is_never_read(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    left = _leftover(root, range(1))
    forged = tmp_path / "forged.seg"
    forged.write_bytes(b"".join(frame_bytes(c.METRIC.tag, 1, b"\xff" * 10)))
    (left / "000000000007.seg").symlink_to(forged)
    [adopted] = SpoolDir.adopt_orphans(root, exclude="none")
    assert [f.entries for f in iter(adopted.next_frame, None)] == [bytes([0]) * 10]


# ---- corrupt frames ---------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["body", "magic", "length"])
def test_a_corrupt_frame_costs_only_that_frame(tmp_path: Path, where: str) -> None:
    spool = SpoolDir.create(tmp_path)
    frames = [frame_bytes(c.METRIC.tag, 1, bytes([i]) * 50) for i in range(10)]
    for frame in frames:
        spool.append([frame])
    spool.release()
    [seg] = next(tmp_path.iterdir()).glob("*.seg")
    size = len(b"".join(frames[0]))
    data = bytearray(seg.read_bytes())
    start = 4 * size
    offset = {"body": start + size - 5, "magic": start, "length": start + 4}[where]
    data[offset] ^= 0xFF
    seg.write_bytes(bytes(data))
    [adopted] = SpoolDir.adopt_orphans(tmp_path, exclude="none")
    got = [f.entries[0] for f in iter(adopted.next_frame, None)]
    assert got == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert adopted.lost_bytes == size


def test_corrupt_bytes_at_the_end_are_counted_exactly(tmp_path: Path) -> None:
    spool = SpoolDir.create(tmp_path)
    spool.append([frame_bytes(c.METRIC.tag, 1, b"a" * 50)])
    spool.release()
    [seg] = next(tmp_path.iterdir()).glob("*.seg")
    with open(seg, "ab") as fh:
        fh.write(b"MF" + b"\x07" * 31)  # a torn frame that starts like one
    [adopted] = SpoolDir.adopt_orphans(tmp_path, exclude="none")
    assert [f.entries for f in iter(adopted.next_frame, None)] == [b"a" * 50]
    assert adopted.lost_bytes == 33


# ---- an unusable MLOBS_HOME --------------------------------------------------------------------

HOME_SCRIPT = """
    import json, sys
    import pipeline_sdk
    from pipeline_sdk.read import ReadClient
    ran = False
    with pipeline_sdk.run(pipeline="p", step="s", run_id="r1") as run:
        ran = True
        run.log_metric("loss", 0.5)
        home = run.client.home
    metrics = {row["name"]: row["value"] for row in ReadClient(home=home).metrics("r1")}
    print(json.dumps({"ran": ran, "home": str(home), "metrics": metrics}))
"""


def _assert_fell_back(out: dict[str, object], wanted: Path) -> None:
    assert out["ran"] is True
    fallback = Path(str(out["home"]))
    assert fallback != wanted
    assert oct(fallback.stat().st_mode & 0o777) == "0o700"
    assert out["metrics"] == {"loss": 0.5}
    stderr = str(out["stderr"])
    assert str(wanted) in stderr and str(fallback) in stderr, stderr


def test_a_home_that_cannot_be_created_falls_back_to_a_private_temporary_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    wanted = blocker / "home"
    _assert_fell_back(_run_script(HOME_SCRIPT, wanted), wanted)


def test_a_read_only_home_falls_back(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "ro", "ro,size=1m") as wanted:
        _assert_fell_back(_run_script(HOME_SCRIPT, wanted), wanted)


def test_a_home_without_write_permission_falls_back(tmp_path: Path) -> None:
    wanted = tmp_path / "locked"
    wanted.mkdir(mode=0o500)  # no write permission, for root too once it drops DAC override
    _assert_fell_back(_run_script(HOME_SCRIPT, wanted, unprivileged=True), wanted)


def test_a_full_home_never_crashes_the_step(tmpfs: Path) -> None:
    fill(tmpfs)
    out = _run_script(HOME_SCRIPT, tmpfs / "home")
    _assert_fell_back(out, tmpfs / "home")


# ---- permissions -------------------------------------------------------------------------------


def _mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.lstat().st_mode))


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_home_spool_and_store_are_private(tmp_path: Path, umask: int) -> None:
    home = tmp_path / "a" / "home"
    old = os.umask(umask)
    try:
        client = Client(LocalTransport(home / DB_NAME), home=home)
        rec = client.recorder("p", "s", "r")
        rec.log_metric("loss", 1.0, step=0)
        rec.log_metric("loss", 2.0, step=1)
        assert client.flush(10)
        spool_dir = client.shipper.spool_path
        modes = {
            "home": _mode(home),
            "spool": _mode(home / "spool"),
            "spool/local": _mode(home / "spool" / "local"),
            "owner": _mode(spool_dir),
            "lock": _mode(spool_dir / LOCK_NAME),
            "db": _mode(home / DB_NAME),
            "wal": _mode(home / (DB_NAME + "-wal")),
            "shm": _mode(home / (DB_NAME + "-shm")),
        }
        segments = {_mode(p) for p in spool_dir.iterdir() if p.suffix in (".seg", ".ack")}
        client.close()
    finally:
        os.umask(old)
    assert modes == {
        "home": "0o700",
        "spool": "0o700",
        "spool/local": "0o700",
        "owner": "0o700",
        "lock": "0o600",
        "db": "0o600",
        "wal": "0o600",
        "shm": "0o600",
    }
    assert segments <= {"0o600"}


# ---- supervised threads ------------------------------------------------------------------------


class _FlakyTransport:
    """A user's transport whose first open() raises: a bug, not a delivery error."""

    kind = "local"

    def __init__(self, path: Path) -> None:
        self.inner: Transport = LocalTransport(path)
        self.opens = 0

    def open(self) -> Sink:
        self.opens += 1
        if self.opens == 1:
            raise RuntimeError("the transport's first open blew up")
        return self.inner.open()

    def describe(self) -> str:
        return "a flaky transport"


def test_a_crashed_delivery_thread_restarts_and_delivers_everything(tmp_path: Path) -> None:
    transport = _FlakyTransport(tmp_path / DB_NAME)
    client = Client(transport, home=tmp_path / "home")
    rec = client.recorder("p", "s", "r")
    for i in range(1000):
        rec.log_metric("loss", float(i), step=i)
    assert client.flush(20), client.stats()
    stats = client.stats()
    client.close()
    assert stats.thread_restarts == 1
    assert "the transport's first open blew up" in str(stats.last_thread_error)
    assert stats.delivery_alive and stats.spooler_alive
    assert stats.delivered_events == 1000


def test_a_crashed_spooler_counts_what_it_held_and_restarts(tmp_path: Path) -> None:
    client = Client(LocalTransport(tmp_path / DB_NAME), home=tmp_path / "home", linger=60)
    rec = client.recorder("p", "s", "r")
    queue = client.shipper.queues[c.PARAM.tag]
    rec.log_param("a", 1)
    queue.append("not bytes")  # type: ignore[arg-type]  # a bug somewhere puts a str in the queue
    rec.log_param("b", 2)
    assert client.shipper.wait_spooled(10)
    wait_for(lambda: client.stats().thread_restarts == 1, 10, "the spooler to restart")
    rec.log_param("c", 3)
    assert client.flush(10)
    stats = client.stats()
    client.close()
    assert stats.dropped_spool_error == 3  # the slice it held when it crashed, counted
    assert stats.spooler_alive
    assert "TypeError" in str(stats.last_thread_error)
    assert stats.delivered_events == 1


# ---- all at once: a disk that fills and is freed, a receiver down and up (the slowest: last) ------


def test_disk_full_chaos_nothing_lost_without_a_count(tmp_path: Path) -> None:
    """100k list-metric events while the disk fills and is freed, the receiver down and then up."""
    with mounted_tmpfs(tmp_path / "tmpfs", "size=8m,mode=0700") as home:
        _chaos(home, tmp_path / "store" / DB_NAME)  # the receiver's disk is not the full one


def _chaos(home: Path, store: Path) -> None:
    receiver = _Receiver(store)
    client = Client(receiver, home=home, linger=0.005)
    rec = client.recorder("p", "s", "chaos")
    logged = 0

    def log(n: int) -> None:
        nonlocal logged
        for _ in range(n):
            rec.log_metric("loss", float(logged), step=logged)
            logged += 1

    log(20_000)
    assert client.shipper.wait_spooled(20)
    filler = fill(home)  # the disk is now full: what follows cannot be spooled
    log(30_000)
    assert client.shipper.wait_spooled(20)
    full = client.stats()
    assert full.dropped_spool_error > 0, full
    assert full.spooler_alive and full.delivery_alive
    filler.unlink()  # space is back
    freed_at = logged
    log(20_000)
    receiver.up = True  # the receiver comes back
    log(30_000)
    assert client.flush(60), client.stats()
    stats = client.stats()
    assert client.close(5)
    assert logged == 100_000
    received = {p.fields[c.FIELD_INDEX] for p in LocalStore(store).points(c.LIST_METRIC.measurement)}
    assert len(received) + stats.dropped_events == logged, stats
    assert set(range(freed_at, logged)) <= received, "an event logged after the space was freed is missing"
    assert stats.spooler_alive and stats.delivery_alive
    assert stats.thread_restarts == 0
    print(f"chaos: {len(received)} delivered, {stats.dropped_events} dropped and counted, {stats}")
