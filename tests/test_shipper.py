"""The shipper, value by value: counters, warnings, backoff, frame and chunk boundaries, bounds, close.

These tests run against every mutant of ``shipper.py``, so they are cheap: most drive one
piece of a real :class:`Shipper` by hand (its threads idle or stopped), with a real spool
on disk and a transport that records what it is given (or refuses it, as a receiver that
is down would).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import random
import re
import resource
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, get_type_hints

import pytest

from pipeline_sdk import backoff as backoff_module
from pipeline_sdk import contract as c
from pipeline_sdk import delivery as delivery_module
from pipeline_sdk import shipper as shipper_module
from pipeline_sdk import spooler as spooler_module
from pipeline_sdk import stats as stats_module
from pipeline_sdk.backoff import Backoff
from pipeline_sdk.forward import DeliveryError
from pipeline_sdk.ratelog import RateLimitedLog
from pipeline_sdk.shipper import Shipper, ShipperStats, _atexit_closer
from pipeline_sdk.spool import Chunk, Frame, SpoolDir, frame_bytes
from tests.conftest import wait_for
from tests.test_spool import assert_annotations_resolve

# The documented bounds, spelt out: the tests pin them rather than follow the module's constants.
FRAME_EVENTS, FRAME_BYTES = 4096, 1024 * 1024  # a frame: at most this many events, or about this many bytes
CHUNK_EVENTS, CHUNK_BYTES = 16_384, 4 * 1024 * 1024  # a chunk: consecutive frames up to these
SLICE, YIELD = 8192, 0.0002  # events per GIL hold of the spooler; its sleep between two slices
pytestmark = pytest.mark.timeout(30)  # each test takes well under a second; a mutant that hangs fails fast

SMALL = c.METRIC.tag  # its entries are popped whole frames at a time
OTHER = c.PARAM.tag  # popped one by one, counting bytes
HEADER = 15


def frame_size(tag: str, entries: int) -> int:
    return HEADER + len(tag.encode()) + entries


class Recorder:
    """A transport that records every chunk delivered; ``plan`` lists the outcomes to come (False: refuse)."""

    kind = "local"

    def __init__(self, plan: list[bool] | None = None, *, down: bool = False) -> None:
        self.plan = list(plan or [])
        self.down = down
        self.attempts = 0
        self.chunks: list[Chunk] = []
        self.opens = self.closes = 0
        self.on_refusal: Callable[[int], None] = lambda attempt: None

    def open(self) -> Recorder:
        self.opens += 1
        return self

    def describe(self) -> str:
        return "a recorder"

    def deliver(self, chunk: Chunk) -> None:
        self.attempts += 1
        ok = self.plan.pop(0) if self.plan else not self.down
        if not ok:
            self.on_refusal(self.attempts)
            raise DeliveryError(f"refused {self.attempts}")
        self.chunks.append(chunk)

    def close(self) -> None:
        self.closes += 1

    def frames(self) -> list[tuple[str, int]]:
        return [(f.tag, f.count) for chunk in self.chunks for f in chunk.frames]

    def events(self) -> int:
        return sum(chunk.count for chunk in self.chunks)


class Waits(threading.Event):
    """A stop event whose waits are recorded and return at once (set: True, as the real one)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(float("inf") if timeout is None else timeout)
        return self.is_set()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Shipper]]:
    """Shippers of the test's own (``linger=60``: the spooler waits until woken); all closed at the end."""
    made: list[Shipper] = []

    def build(transport: Recorder | None = None, **kwargs: object) -> Shipper:
        kwargs.setdefault("linger", 60.0)
        shipper = Shipper(transport or Recorder(), tmp_path / "home", **kwargs)  # type: ignore[arg-type]
        made.append(shipper)
        return shipper

    yield build
    for shipper in made:
        shipper.close(timeout=0)


def stopped(shipper: Shipper) -> Waits:
    """Stop ``shipper``'s threads, then give it a fresh stop event whose waits are recorded."""
    assert shipper.close(timeout=5)
    waits = Waits()
    shipper._stopping = waits
    return waits


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """RLIMIT_FSIZE: the kernel writes no byte at or past ``limit`` (a short write, then EFBIG)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def spool_of(root: Path, frames: list[tuple[str, int, int]]) -> SpoolDir:
    """A spool holding frames of (tag, event count, bytes of entries)."""
    spool = SpoolDir.create(root)
    for tag, count, size in frames:
        spool.append([frame_bytes(tag, count, b"e" * size)])
    return spool


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


# ---- counters ---------------------------------------------------------------------------------


def test_stats_start_at_zero_and_dropped_events_sums_the_four_drop_counters() -> None:
    fresh = vars(ShipperStats())
    assert {k: v for k, v in fresh.items() if v is not None and v is not False and v != 0} == {}
    assert (fresh["spooler_alive"], fresh["delivery_alive"]) == (False, False)
    assert (fresh["last_error"], fresh["last_spool_error"], fresh["last_thread_error"]) == (None, None, None)
    stats = ShipperStats(  # values whose bits overlap: no other operator than + gives their sum
        dropped_queue_full=7,
        dropped_spool_full=70,
        dropped_spool_error=700,
        dropped_log_records=7000,
        dropped_invalid=70_000,
        dropped_at_close=700_000,
        lost_corrupt_bytes=7_000_000,  # bytes, not events: not in the sum
        delivery_failures=70_000_000,  # retried: not lost
    )
    assert stats.dropped_events == 777_777


def test_the_annotations_resolve_as_introspection_reads_them() -> None:
    modules = (shipper_module, spooler_module, delivery_module, stats_module)
    assert sum(assert_annotations_resolve(module) for module in modules) >= 35
    assert get_type_hints(Shipper._next_chunk) == {
        "spool": SpoolDir,
        "carry": Frame | None,
        "return": tuple[Chunk | None, Frame | None],
    }
    assert get_type_hints(Shipper.close) == {"timeout": float | None, "return": bool}


# ---- warnings: one of a kind every 10 seconds, with the count of those suppressed -----------------


def test_a_rate_limited_warning_says_how_many_it_suppressed(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()  # starts at 0: a process started right after boot warns too
    limited = RateLimitedLog(logging.getLogger("mlobs"), clock=clock)
    logged = []
    with caplog.at_level(logging.WARNING, "mlobs"):
        caplog.clear()
        for now in (0.0, 5.0, 9.999, 10.0, 19.0, 20.0, 40.0):
            clock.now = now
            logged.append(limited.warning("drop", "at %s", now))
        clock.now = 40.5
        logged.append(limited.warning("delivery", "another kind at %s", clock.now))  # its own interval
        try:
            raise OSError("the cause")
        except OSError:
            clock.now = 50.0
            logged.append(limited.warning("drop", "with the traceback", exc_info=True))
    assert logged == [True, False, False, True, False, True, True, True, True]
    assert messages(caplog) == [
        "at 0.0",
        "at 10.0 (2 similar messages suppressed)",
        "at 20.0 (1 similar messages suppressed)",
        "at 40.0",
        "another kind at 40.5",
        "with the traceback",
    ]
    formatted = [logging.Formatter("%(message)s").format(r) for r in caplog.records]
    assert formatted[:5] == messages(caplog)[:5]  # no traceback where there was none to give
    assert formatted[5].startswith("with the traceback\nTraceback (most recent call last):")
    assert formatted[5].endswith("OSError: the cause")


# ---- backoff: from the first delay, doubling to the cap, with jitter --------------------------------


def test_backoff_doubles_from_the_first_delay_to_the_cap_and_a_success_resets_it() -> None:
    backoff = Backoff(0.05, 2.0, jitter=0)  # the shipper's supervisor: no jitter
    assert backoff.reset() is False  # not failing yet
    assert [backoff.failed() for _ in range(8)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert backoff.jittered() == 2.0
    assert backoff.reset() is True
    assert backoff.delay == 0.0
    assert backoff.failed() == 0.05
    watcher = Backoff(0.5, 30.0)  # the exporter's watches: 16 s doubled would pass the cap
    assert [watcher.failed() for _ in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert [Backoff(1, 1).failed() for _ in range(2)] == [1.0, 1.0]  # first == cap: allowed


def test_a_new_backoff_is_not_failing_and_waits_nothing() -> None:
    backoff = Backoff(1, 30)
    assert (backoff.delay, backoff.jittered()) == (0.0, 0.0)  # jittered: 0 spread by any factor
    assert [type(v) for v in (backoff.first, backoff.cap, backoff.jitter)] == [float, float, float]
    assert (backoff.first, backoff.cap, backoff.jitter) == (1.0, 30.0, 0.2)  # the default jitter


def test_backoff_takes_first_and_cap_by_name_too_and_jitter_only_by_name() -> None:
    assert Backoff(first=0.5, cap=1.0, jitter=0.1).failed() == 0.5
    with pytest.raises(TypeError, match=r"takes 3 positional arguments but 4 were given"):
        Backoff(0.5, 1.0, 0.1)  # type: ignore[call-arg]


class Edge:
    """A random source at one end of every range."""

    def __init__(self, high: bool) -> None:
        self.high = high

    def uniform(self, low: float, high: float) -> float:
        return high if self.high else low


def test_backoff_jitter_spreads_each_wait_within_its_share(monkeypatch: pytest.MonkeyPatch) -> None:
    backoff = Backoff(0.5, 30.0)
    backoff.failed()
    monkeypatch.setattr(backoff_module, "random", Edge(high=False))
    assert backoff.jittered() == 0.4  # 0.5 * 0.8
    monkeypatch.setattr(backoff_module, "random", Edge(high=True))
    assert backoff.jittered() == 0.6  # 0.5 * 1.2
    monkeypatch.setattr(backoff_module, "random", random.Random(7))
    assert backoff.jittered() == 0.5 * random.Random(7).uniform(0.8, 1.2)
    assert Backoff(0.5, 30.0, jitter=0.5).failed() == 0.5
    monkeypatch.setattr(backoff_module, "random", Edge(high=True))
    wide = Backoff(0.5, 30.0, jitter=0.5)
    wide.failed()
    assert wide.jittered() == 0.75


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((0, 1.0), ValueError, "first=0, cap=1.0 are invalid: must be 0 < first <= cap"),
        ((0.0, 1.0), ValueError, "first=0.0, cap=1.0 are invalid: must be 0 < first <= cap"),
        ((-0.5, 1.0), ValueError, "first=-0.5, cap=1.0 are invalid: must be 0 < first <= cap"),
        ((2.0, 1.0), ValueError, "first=2.0, cap=1.0 are invalid: must be 0 < first <= cap"),
        ((0.1, 1.0, 1.0), ValueError, "jitter=1.0 is invalid: must be from 0 to less than 1"),
        ((0.1, 1.0, -0.1), ValueError, "jitter=-0.1 is invalid: must be from 0 to less than 1"),
        (("1", 2.0), TypeError, "first must be a number of seconds, got str '1'"),
        ((1.0, True), TypeError, "cap must be a number of seconds, got bool True"),
    ],
)
def test_backoff_refuses_bad_settings_by_name(
    args: tuple[Any, ...], error: type[Exception], message: str
) -> None:
    first, cap, *jitter = args
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        Backoff(first, cap, **({"jitter": jitter[0]} if jitter else {}))


# ---- the constructor -------------------------------------------------------------------------------


def test_defaults_and_keyword_only_settings(tmp_path: Path) -> None:
    shipper = Shipper(Recorder(), tmp_path / "defaults")
    try:
        assert shipper.wait_spooled(0) is True  # nothing queued, nothing being written
        threads = {t.name: (t.daemon, t.is_alive()) for t in (shipper._spooler, shipper._delivery)}
        assert threads == {"mlobs-spooler": (True, True), "mlobs-delivery": (True, True)}
        assert (shipper.max_queue, shipper.soft_limit) == (262_144, 65_536)
        assert (shipper._spool_max_bytes, shipper._linger, shipper._exit_timeout) == (
            512 * 1024 * 1024,
            0.01,
            10.0,
        )
        assert shipper.spool_path.parent == tmp_path / "defaults" / "spool" / "local"
        assert set(shipper.queues) == {stream.tag for stream in c.STREAMS}
    finally:
        shipper.close(timeout=0)
    with pytest.raises(TypeError):
        Shipper(Recorder(), tmp_path / "positional", 1000)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("max_queue", "soft_limit"),
    [(1, 1), (3, 1), (4, 1), (7, 1), (8, 2), (262_143, 65_535), (262_144, 65_536), (262_148, 65_536)],
)
def test_the_soft_limit_is_a_quarter_of_the_queue_at_least_1_at_most_65536(
    make: Callable[..., Shipper], max_queue: int, soft_limit: int
) -> None:
    assert make(max_queue=max_queue).soft_limit == soft_limit


# ---- the caller's side --------------------------------------------------------------------------------


def test_a_full_queue_drops_the_event_counts_it_and_warns_once(
    make: Callable[..., Shipper], caplog: pytest.LogCaptureFixture, sleeps: list[float]
) -> None:
    shipper = make(max_queue=4)
    queue = shipper.queues[SMALL]
    queue.extend([b"e"] * 4)
    with caplog.at_level(logging.WARNING, "mlobs"):
        caplog.clear()
        assert shipper.relieve(queue) is False
        assert shipper.relieve(queue) is False
    stats = shipper.stats()
    assert (stats.dropped_queue_full, stats.dropped_events, stats.queued_events) == (2, 2, 4)
    assert messages(caplog) == [
        f"mlobs: in-memory queue full (4 events): event dropped (1 so far); "
        f"the spool at {shipper.spool_path} cannot keep up"
    ]
    assert sleeps == []  # a dropped event costs the caller no wait
    queue.pop()
    assert shipper.relieve(queue) is True  # below the bound: the spooler is woken, nothing dropped
    assert sleeps == [0.0001]  # and the caller lends it the GIL for 0.1 ms
    assert shipper.wait_spooled(10)
    stats = shipper.stats()
    assert (stats.dropped_queue_full, stats.spooled_events, stats.queued_events) == (2, 3, 0)


def test_a_log_record_the_handler_could_not_record_is_counted(make: Callable[..., Shipper]) -> None:
    shipper = make()
    shipper.count_lost_log_record()
    shipper.count_lost_log_record()
    stats = shipper.stats()
    assert (stats.dropped_log_records, stats.dropped_events) == (2, 2)


# ---- the spooler: frames, slices, the bound, a refused write ------------------------------------------


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The shipper's sleeps, recorded (and slept)."""
    recorded: list[float] = []

    def sleep(seconds: float) -> None:
        recorded.append(seconds)
        time.sleep(seconds)

    fake = SimpleNamespace(monotonic=time.monotonic, sleep=sleep)
    monkeypatch.setattr(shipper_module, "time", fake)  # relieve()
    monkeypatch.setattr(spooler_module, "time", fake)  # the spooler's yield between slices
    return recorded


@pytest.mark.parametrize(
    ("queued", "frames", "slices"),
    [
        ({SMALL: FRAME_EVENTS - 1}, [(SMALL, 4095)], 1),
        ({SMALL: FRAME_EVENTS}, [(SMALL, 4096)], 1),
        ({SMALL: FRAME_EVENTS + 1}, [(SMALL, 4096), (SMALL, 1)], 1),
        ({SMALL: SLICE}, [(SMALL, 4096), (SMALL, 4096)], 1),
        ({SMALL: SLICE + 1}, [(SMALL, 4096), (SMALL, 4096), (SMALL, 1)], 2),
        # A slice is SLICE events across the streams, taken in the contract's order of streams.
        (
            {SMALL: 8190, c.LIST_METRIC.tag: 5},
            [(SMALL, 4096), (SMALL, 4094), (c.LIST_METRIC.tag, 2), (c.LIST_METRIC.tag, 3)],
            2,
        ),
        (
            {SMALL: SLICE - 1, c.LIST_METRIC.tag: 2},
            [(SMALL, 4096), (SMALL, 4095), (c.LIST_METRIC.tag, 1), (c.LIST_METRIC.tag, 1)],
            2,
        ),
        ({SMALL: SLICE, OTHER: 3}, [(OTHER, 3), (SMALL, 4096), (SMALL, 4093), (SMALL, 3)], 2),
    ],
)
def test_the_spooler_cuts_frames_at_frame_events_and_slices_at_slice(
    make: Callable[..., Shipper],
    sleeps: list[float],
    queued: dict[str, int],
    frames: list[tuple[str, int]],
    slices: int,
) -> None:
    recorder = Recorder()
    shipper = make(recorder)
    for tag, n in queued.items():
        shipper.queues[tag].extend([b"e"] * n)
    shipper._drain()  # in this thread: one drain, slice after slice
    assert shipper.flush(10)
    assert recorder.frames() == frames
    assert sleeps == [YIELD] * (slices - 1)  # between two slices the GIL is handed to callers
    stats = shipper.stats()
    total = sum(queued.values())
    assert (stats.spooled_events, stats.delivered_events, stats.thread_restarts) == (total, total, 0)


@pytest.mark.parametrize(
    ("sizes", "most", "popped"),
    [
        ([FRAME_BYTES // 4] * 5, 100, [4, 1]),
        ([FRAME_BYTES - 1, 1, 1], 100, [2, 1]),
        ([FRAME_BYTES, 1], 100, [1, 1]),
        ([FRAME_BYTES + 1, 1], 100, [1, 1]),  # an entry over the size still makes a frame of its own
        ([1] * 10, 3, [3, 3, 3, 1]),  # and at most ``most`` entries
        ([1] * 300, 257, [257, 43]),
    ],
)
def test_large_entries_are_cut_into_frames_of_about_frame_bytes(
    sizes: list[int], most: int, popped: list[int]
) -> None:
    queue = deque(bytes([i % 256]) * size for i, size in enumerate(sizes))
    frames = []
    while queue:
        frames.append(Shipper._pop_frame(OTHER, queue, most))
    assert [len(f) for f in frames] == popped
    assert [e for f in frames for e in f] == [
        bytes([i % 256]) * size for i, size in enumerate(sizes)
    ]  # in order


def test_small_entries_are_popped_by_count_alone() -> None:
    queue = deque([bytes([i]) * FRAME_BYTES for i in range(5)])  # metric entries are never this big
    assert Shipper._pop_frame(SMALL, queue, 3) == [bytes([i]) * FRAME_BYTES for i in range(3)]
    assert Shipper._pop_frame(SMALL, queue, 3) == [bytes([i]) * FRAME_BYTES for i in (3, 4)]
    assert Shipper._pop_frame(SMALL, queue, 3) == []


@pytest.mark.parametrize(("spare", "spooled", "first_drop"), [(-1, 1, 3), (0, 3, 1), (1, 3, 1)])
def test_the_spool_bound_is_exact(
    make: Callable[..., Shipper], caplog: pytest.LogCaptureFixture, spare: int, spooled: int, first_drop: int
) -> None:
    three, one = frame_size(SMALL, 30), frame_size(SMALL, 10)
    shipper = make(Recorder(down=True), spool_max_bytes=three + spare)
    shipper.queues[SMALL].extend([b"0123456789"] * 3)
    with caplog.at_level(logging.WARNING, "mlobs"):
        caplog.clear()
        shipper._drain()  # 3 events in a frame of ``three`` bytes
        shipper.queues[SMALL].append(b"0123456789")
        shipper._drain()  # and one in a frame of ``one``
    stats = shipper.stats()
    assert (stats.spooled_events, stats.dropped_spool_full, stats.dropped_events) == (
        spooled,
        4 - spooled,
        4 - spooled,
    )
    assert stats.pending_bytes == (three if spooled == 3 else one)
    assert [m for m in messages(caplog) if "full" in m] == [
        f"mlobs: spool {shipper.spool_path} full (bound {three + spare} bytes): {first_drop} events dropped "
        f"({first_drop} so far); a recorder is not taking them"
    ]


def test_the_spool_bound_counts_what_is_on_disk_plus_the_write(make: Callable[..., Shipper]) -> None:
    assert frame_size(SMALL, 37) == 64
    shipper = make(Recorder(down=True), spool_max_bytes=127)
    for _ in range(2):
        shipper.queues[SMALL].append(b"x" * 37)
        shipper._drain()
    stats = shipper.stats()
    assert (stats.spooled_events, stats.dropped_spool_full, stats.pending_bytes) == (
        1,
        1,
        64,
    )  # 64 + 64 > 127


def test_a_write_the_disk_refuses_drops_and_counts_its_events(
    make: Callable[..., Shipper], caplog: pytest.LogCaptureFixture
) -> None:
    shipper = make(Recorder(down=True))
    shipper.queues[SMALL].extend([b"0123456789"] * 3)
    with caplog.at_level(logging.WARNING, "mlobs"), file_size_limit(10):
        caplog.clear()
        shipper._drain()
    stats = shipper.stats()
    [seg] = shipper.spool_path.glob("*.seg")
    short = f"short write: 10 of {frame_size(SMALL, 30)} bytes to {seg}"
    why = f"writing the spool {shipper.spool_path} failed: {short}"
    assert (stats.dropped_spool_error, stats.spooled_events, stats.last_spool_error) == (3, 0, why)
    assert [m for m in messages(caplog) if "dropped" in m] == [f"mlobs: 3 events dropped (3 so far): {why}"]
    shipper.queues[SMALL].extend([b"0123456789"] * 2)
    shipper._drain()  # room again: spooled
    stats = shipper.stats()
    assert (stats.dropped_spool_error, stats.spooled_events, stats.pending_bytes) == (
        3,
        2,
        frame_size(SMALL, 20),
    )
    assert (stats.spooler_alive, stats.delivery_alive) == (True, True)


def test_without_a_spool_directory_events_are_dropped_and_creation_is_retried_every_second(
    make: Callable[..., Shipper], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "home").mkdir()
    blocker = tmp_path / "home" / "spool"
    blocker.write_text("a file where the spool's directory should be")
    recorder = Recorder()
    root = tmp_path / "home" / "spool" / "local"
    clock = FakeClock()
    clock.now = 0.5  # a young clock (a VM booted half a second ago): the first attempt is made all the same
    with monkeypatch.context() as patched:
        patched.setattr(spooler_module, "time", SimpleNamespace(monotonic=clock, sleep=time.sleep))
        shipper = make(recorder)
        stats = shipper.stats()
        assert (
            stats.last_spool_error
            == f"cannot create a spool directory in {root}: [Errno 20] Not a directory: '{root}'"
        )
        assert shipper.spool_path == root
        shipper.queues[SMALL].extend([b"e"] * 3)
        shipper._drain()
        stats = shipper.stats()
        assert (stats.dropped_spool_error, stats.pending_bytes) == (3, 0)
        assert stats.last_spool_error == f"no spool directory could be created in {root}"
        blocker.unlink()
        clock.now = 1.4999
        assert shipper._ensure_spool() is None  # less than a second since the last attempt: not yet
        clock.now = 1.5
        spool = shipper._ensure_spool()
        assert spool is not None and shipper.spool_path == spool.path and spool.path.parent == root
        assert shipper._ensure_spool() is spool
    shipper.queues[SMALL].extend([b"e"] * 2)
    shipper._drain()
    assert shipper.flush(10)
    stats = shipper.stats()
    assert (stats.spooled_events, stats.delivered_events, stats.dropped_spool_error) == (2, 2, 3)
    assert (stats.spooler_alive, stats.delivery_alive, stats.thread_restarts) == (True, True, 0)


def test_the_spool_directory_is_tried_again_whenever_a_second_has_passed_not_only_at_one(
    make: Callable[..., Shipper], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "home").mkdir()
    blocker = tmp_path / "home" / "spool"
    blocker.write_text("a file where the spool's directory should be")
    clock = FakeClock()
    clock.now = 100.0
    with monkeypatch.context() as patched:
        patched.setattr(spooler_module, "time", SimpleNamespace(monotonic=clock, sleep=time.sleep))
        shipper = make(Recorder())
        assert shipper.spool_path == tmp_path / "home" / "spool" / "local"  # the first attempt failed
        clock.now = 102.5  # 2.5 s later: tried again, and failed again
        assert shipper._ensure_spool() is None
        blocker.unlink()
        clock.now = 103.0  # half a second after that attempt: not yet, though it would work now
        assert shipper._ensure_spool() is None
        clock.now = 104.75  # 1.75 s after it
        spool = shipper._ensure_spool()
        assert spool is not None and shipper.spool_path == spool.path


# ---- the delivery thread: chunks, backoff, leftover spools ------------------------------------------


def test_a_failed_delivery_backs_off_doubling_to_two_seconds_with_jitter(
    make: Callable[..., Shipper],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder([False] * 9 + [True, False, False, True])
    shipper = make(recorder)
    waits = stopped(shipper)
    monkeypatch.setattr(backoff_module, "random", random.Random(7))
    spool = spool_of(tmp_path / "spool", [(SMALL, 2, 5), (OTHER, 3, 5)])
    with caplog.at_level(logging.INFO, "mlobs"):
        caplog.clear()
        assert shipper._deliver_all(recorder, spool, adopted=True) is True
    backoffs = [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0, 0.05, 0.1]  # reset once a chunk got through
    jitter = random.Random(7)
    assert waits.waits == pytest.approx([b * jitter.uniform(0.8, 1.2) for b in backoffs])
    assert all(0.8 * b <= w <= 1.2 * b for b, w in zip(backoffs, waits.waits, strict=True))
    stats = shipper.stats()
    assert (stats.delivery_failures, stats.last_error) == (11, "refused 12")
    assert (stats.delivered_events, stats.adopted_events) == (5, 5)
    assert [(c.tag, c.count) for c in recorder.chunks] == [(SMALL, 2), (OTHER, 3)]
    assert messages(caplog) == [
        "mlobs: delivery failed, will retry in 0.05 s: refused 1",
        "mlobs: delivery to a recorder recovered",
        "mlobs: delivery to a recorder recovered",
    ]
    assert spool.pending_bytes() == 0


def test_delivery_stopped_while_failing_keeps_the_frames(
    make: Callable[..., Shipper], tmp_path: Path
) -> None:
    recorder = Recorder(down=True)
    shipper = make(recorder)
    waits = stopped(shipper)
    recorder.on_refusal = lambda attempt: waits.set() if attempt == 2 else None
    spool = spool_of(tmp_path / "spool", [(SMALL, 2, 5)])
    assert shipper._deliver_all(recorder, spool, adopted=True) is False
    assert (recorder.attempts, len(waits.waits)) == (2, 2)
    assert spool.pending_bytes() == frame_size(SMALL, 5)
    again = spool.next_frame()  # rewound: handed out again
    assert again is not None and again.count == 2


@pytest.mark.parametrize(
    ("frames", "chunks"),
    [
        ([(SMALL, CHUNK_EVENTS - 1, 0), (SMALL, 1, 0), (SMALL, 1, 0)], [[16383, 1], [1]]),
        ([(SMALL, CHUNK_EVENTS, 0), (SMALL, 1, 0)], [[16384], [1]]),
        ([(SMALL, CHUNK_EVENTS + 1, 0), (SMALL, 1, 0)], [[16385], [1]]),
        ([(SMALL, 4096, 0)] * 5, [[4096] * 4, [4096]]),
        ([(OTHER, 1, CHUNK_BYTES - 1), (OTHER, 1, 1), (OTHER, 1, 1)], [[1, 1], [1]]),
        ([(OTHER, 1, CHUNK_BYTES), (OTHER, 1, 1)], [[1], [1]]),
        ([(OTHER, 1, CHUNK_BYTES // 4)] * 5, [[1] * 4, [1]]),
    ],
)
def test_consecutive_frames_go_out_as_chunks_up_to_chunk_events_and_chunk_bytes(
    make: Callable[..., Shipper],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    frames: list[tuple[str, int, int]],
    chunks: list[list[int]],
) -> None:
    recorder = Recorder()
    shipper = make(recorder)
    stopped(shipper)
    spool = spool_of(tmp_path / "spool", frames)
    with caplog.at_level(logging.INFO, "mlobs"):
        caplog.clear()
        assert shipper._deliver_all(recorder, spool, adopted=True) is True  # returns once the spool is empty
    assert messages(caplog) == []  # nothing failed, so nothing "recovered"
    assert [[f.count for f in chunk.frames] for chunk in recorder.chunks] == chunks
    assert [chunk.count for chunk in recorder.chunks] == [sum(counts) for counts in chunks]
    stats = shipper.stats()
    total = sum(f[1] for f in frames)
    assert (stats.delivered_events, stats.adopted_events) == (total, total)
    assert spool.pending_bytes() == 0


def test_a_chunk_holds_one_tag_and_the_frame_read_ahead_starts_the_next(
    make: Callable[..., Shipper], tmp_path: Path
) -> None:
    recorder = Recorder()
    shipper = make(recorder)
    stopped(shipper)
    spool = spool_of(
        tmp_path / "spool", [(SMALL, 1, 1), (SMALL, 2, 1), (OTHER, 3, 1), (OTHER, 4, 1), (SMALL, 5, 1)]
    )
    assert shipper._deliver_all(recorder, spool, adopted=True) is True
    assert [(chunk.tag, [f.count for f in chunk.frames]) for chunk in recorder.chunks] == [
        (SMALL, [1, 2]),
        (OTHER, [3, 4]),
        (SMALL, [5]),
    ]
    assert [chunk.chunk_id for chunk in recorder.chunks] == [
        Chunk.of(list(chunk.frames)).chunk_id for chunk in recorder.chunks
    ]
    assert shipper.stats().delivered_events == 15 and spool.pending_bytes() == 0


def test_a_crashing_loop_restarts_after_a_doubling_backoff_capped_at_two_seconds(
    make: Callable[..., Shipper], caplog: pytest.LogCaptureFixture
) -> None:
    shipper = make()
    waits = stopped(shipper)
    runs = 0

    def loop() -> None:
        nonlocal runs
        runs += 1
        if runs <= 8:
            raise RuntimeError(f"boom {runs}")

    with caplog.at_level(logging.WARNING, "mlobs"):
        caplog.clear()
        shipper._supervise(loop)
    assert waits.waits == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])
    stats = shipper.stats()
    assert (runs, stats.thread_restarts, stats.last_thread_error) == (
        9,
        8,
        "MainThread: RuntimeError: boom 8",
    )
    [record] = caplog.records
    assert record.getMessage() == "mlobs: MainThread: RuntimeError: boom 1; restarting in 0.05 s"
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError

    def crash() -> None:
        raise ValueError("late")

    waits.set()  # stopping: no restart after the next crash
    shipper._supervise(crash)
    assert waits.waits[8:] == [0.05] and shipper.stats().thread_restarts == 9


def test_leftover_spools_are_delivered_first_and_their_losses_counted(
    make: Callable[..., Shipper], tmp_path: Path
) -> None:
    root = tmp_path / "home" / "spool" / "local"
    older = spool_of(root, [(SMALL, 2, 10), (SMALL, 3, 10), (SMALL, 4, 10)])
    older.release()
    seg = next(older.path.glob("*.seg"))
    data = bytearray(seg.read_bytes())
    data[frame_size(SMALL, 10) + 3] ^= 0xFF  # the second frame's length: corrupt
    seg.write_bytes(bytes(data))
    newer = spool_of(root, [(OTHER, 5, 10)])
    newer.release()
    recorder = Recorder()
    shipper = make(recorder, linger=0.01)
    shipper.queues[SMALL].append(b"e")
    assert shipper.flush(10)
    stats = shipper.stats()
    assert recorder.frames() == [(SMALL, 2), (SMALL, 4), (OTHER, 5), (SMALL, 1)]  # oldest first, ours last
    assert (stats.delivered_events, stats.adopted_events, stats.spooled_events) == (12, 11, 1)
    assert (stats.lost_corrupt_bytes, stats.spool_errors, stats.last_spool_error) == (
        frame_size(SMALL, 10),
        0,
        None,
    )
    assert not older.path.exists() and not newer.path.exists()  # delivered to their ends: removed


def test_a_leftover_spools_harmless_errors_are_counted(make: Callable[..., Shipper], tmp_path: Path) -> None:
    root = tmp_path / "home" / "spool" / "local"
    older = SpoolDir.create(root, segment_bytes=1)
    older.append([frame_bytes(SMALL, 2, b"e")])
    older.append([frame_bytes(SMALL, 3, b"e")])
    older.release()
    (older.path / "000000000000.ack").mkdir()
    recorder = Recorder()
    shipper = make(recorder, linger=0.01)
    assert shipper.flush(10)
    stats = shipper.stats()
    assert recorder.frames() == [(SMALL, 3)]
    assert (stats.adopted_events, stats.lost_corrupt_bytes, stats.spool_errors) == (3, 0, 1)
    assert stats.last_spool_error == (
        f"{older.path / '000000000000.seg'}: the segment or its .ack is not a regular file of this user; "
        "left alone, not delivered"
    )


def test_close_releases_an_undelivered_leftover_spool_for_a_later_process(
    make: Callable[..., Shipper], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "home" / "spool" / "local"
    older = spool_of(root, [(SMALL, 2, 10)])
    older.release()
    recorder = Recorder(down=True)
    shipper = make(recorder, linger=0.01)
    wait_for(lambda: recorder.attempts >= 1, 10, "a delivery attempt")
    assert SpoolDir.adopt_orphans(root, exclude="none") == []  # held by the shipper
    with caplog.at_level(logging.WARNING, "mlobs"):
        caplog.clear()
        assert shipper.close(timeout=0) is False
    assert messages(caplog) == [
        f"mlobs: 0 bytes of events not delivered to a recorder within 0.0 s; they are kept in "
        f"{shipper.spool_path} and the next process using this MLOBS_HOME delivers them"
    ]
    assert (recorder.opens, recorder.closes) == (1, 1)
    [again] = SpoolDir.adopt_orphans(root, exclude="none")
    assert again.name == older.name and again.pending_bytes() == frame_size(SMALL, 10)
    again.release()


# ---- flush and close ---------------------------------------------------------------------------------


def test_close_delivers_what_it_can_and_says_what_it_left(
    make: Callable[..., Shipper], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shipper = make(Recorder(down=True), linger=0.01, exit_timeout=0.2)
    shipper.queues[SMALL].extend([b"0123456789"] * 3)
    assert shipper.wait_spooled(10) is True
    assert shipper.flush(0.05) is False
    stats = shipper.stats()
    assert (stats.queued_events, stats.pending_bytes, stats.delivered_events) == (0, frame_size(SMALL, 30), 0)
    path = shipper.spool_path
    with caplog.at_level(logging.WARNING, "mlobs"):
        caplog.clear()
        assert shipper.close() is False
    assert messages(caplog)[-1] == (
        f"mlobs: {frame_size(SMALL, 30)} bytes of events not delivered to a recorder within 0.2 s; "
        f"they are kept in {path} and the next process using this MLOBS_HOME delivers them"
    )
    assert shipper.close() is True  # closed already
    stats = shipper.stats()
    assert (stats.spooler_alive, stats.delivery_alive) == (False, False)
    [left] = SpoolDir.adopt_orphans(path.parent, exclude="none")  # unlocked, kept
    assert left.name == path.name and left.pending_bytes() == frame_size(SMALL, 30)
    left.release()


def test_flush_and_wait_spooled_wait_without_spinning(make: Callable[..., Shipper]) -> None:
    shipper = make(Recorder(down=True))
    shipper.queues[SMALL].append(b"e")
    assert shipper.wait_spooled(10)
    checks = 0
    pending = shipper._pending_bytes

    def counted() -> int:
        nonlocal checks
        checks += 1
        return pending()

    shipper._pending_bytes = counted  # type: ignore[method-assign]
    cpu, started = time.process_time(), time.monotonic()
    assert shipper.flush(0.3) is False  # the receiver is down: it waits out its timeout...
    assert time.monotonic() - started >= 0.3
    assert checks <= 12, f"flush checked {checks} times in 0.3 s"  # ...looking every 50 ms, not in a loop
    assert time.process_time() - cpu < 0.15


def test_wait_spooled_waits_for_entries_popped_but_not_yet_written(
    make: Callable[..., Shipper], monkeypatch: pytest.MonkeyPatch
) -> None:
    append = SpoolDir.append

    def slow_append(spool: SpoolDir, frames: list[list[bytes]]) -> int:  # a slow disk
        time.sleep(0.2)
        return append(spool, frames)

    monkeypatch.setattr(SpoolDir, "append", slow_append)
    shipper = make(Recorder(down=True))
    shipper.queues[SMALL].append(b"e")
    started = time.monotonic()
    assert shipper.wait_spooled(0.05) is False  # still being written
    assert time.monotonic() - started >= 0.05
    assert shipper.wait_spooled(10)
    assert shipper.stats().spooled_events == 1


def test_a_sink_that_raised_something_unexpected_is_closed_and_opened_afresh(
    make: Callable[..., Shipper],
) -> None:
    recorder = Recorder()
    deliver = recorder.deliver
    calls = 0

    def buggy(chunk: Chunk) -> None:  # a custom transport's bug, once
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyError("a bug in the transport")
        deliver(chunk)

    recorder.deliver = buggy  # type: ignore[method-assign]
    shipper = make(recorder, linger=0.01)
    shipper.queues[SMALL].append(b"e")
    assert shipper.flush(10)
    stats = shipper.stats()
    assert (stats.thread_restarts, stats.delivered_events, stats.delivery_failures) == (1, 1, 0)
    assert stats.last_thread_error == "mlobs-delivery: KeyError: 'a bug in the transport'"
    assert (recorder.opens, recorder.closes) == (2, 1)
    assert recorder.frames() == [(SMALL, 1)]  # handed out again after the restart, delivered once


def test_close_after_delivering_everything_removes_the_spool(make: Callable[..., Shipper]) -> None:
    recorder = Recorder()
    shipper = make(recorder, linger=0.01)
    shipper.queues[OTHER].extend([b"a", b"b"])
    assert shipper.close(5) is True
    assert recorder.frames() == [(OTHER, 2)] and recorder.closes == 1
    assert not shipper.spool_path.exists()


def test_close_waits_a_bounded_time_for_each_thread_and_leaves_a_stuck_one(
    make: Callable[..., Shipper], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    entered, release = threading.Event(), threading.Event()

    def hang(chunk: Chunk) -> None:  # a receiver that never answers
        entered.set()
        release.wait(10)

    recorder = Recorder()
    recorder.deliver = hang  # type: ignore[method-assign]
    shipper = make(recorder, linger=0.01)
    shipper.queues[SMALL].append(b"e")
    assert entered.wait(10)
    joins: list[float | None] = []

    def bounded(thread: threading.Thread) -> Callable[[float | None], None]:
        real = thread.join

        def join(timeout: float | None = None) -> None:
            joins.append(timeout)
            real(0.2)

        return join

    for thread in (shipper._spooler, shipper._delivery):
        monkeypatch.setattr(thread, "join", bounded(thread))
    with caplog.at_level(logging.WARNING, "mlobs"):
        caplog.clear()
        assert shipper.close(timeout=0) is False
    release.set()
    assert joins == [5.0, 5.0]
    assert messages(caplog)[-1] == "mlobs: ['mlobs-delivery'] did not stop within 5 s; leaving them behind"
    wait_for(lambda: not shipper._delivery.is_alive(), 10, "the delivery thread to stop")


def test_the_atexit_closer_closes_and_holds_no_reference(tmp_path: Path) -> None:
    shipper = Shipper(Recorder(), tmp_path / "home", linger=0.01)
    shipper.queues[SMALL].append(b"e")
    closer = _atexit_closer(shipper)
    closer()
    stats = shipper.stats()
    assert (stats.spooled_events, stats.delivered_events) == (1, 1)
    assert (stats.spooler_alive, stats.delivery_alive) == (False, False)
    assert shipper.close() is True
    ref = weakref.ref(shipper)
    del shipper, stats
    gc.collect()
    assert ref() is None  # neither the closer nor the fork hook kept it alive
    closer()  # and a closer of a collected shipper does nothing


def test_a_forked_child_starts_afresh_with_queues_stats_and_a_spool_of_its_own(
    make: Callable[..., Shipper],
) -> None:
    recorder = Recorder()
    parent = make(recorder)
    parent.queues[SMALL].extend([b"parent"] * 3)  # queued in the parent, not spooled yet
    closed = make(Recorder())
    closed.close(timeout=5)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it sees, then leave without running anything of pytest's
        try:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(20)
            at_fork = (parent._queued(), parent.stats().spooled_events, str(parent.spool_path))
            parent.queues[SMALL].append(b"child")
            flushed = parent.flush(10)
            stats = parent.stats()
            report = {
                "at_fork": at_fork,
                "flushed": flushed,
                "frames": recorder.frames(),
                "stats": (
                    stats.spooled_events,
                    stats.delivered_events,
                    stats.spooler_alive,
                    stats.delivery_alive,
                ),
                "closed_threads": (closed.stats().spooler_alive, closed.stats().delivery_alive),
            }
            os.write(write_end, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = json.loads(pipe.read() or b"null")
    assert os.waitpid(pid, 0)[1] == 0
    assert report is not None, "the child reported nothing"
    queued, spooled, child_spool = report["at_fork"]
    assert (queued, spooled) == (0, 0)  # the parent's entries are the parent's to deliver
    assert child_spool != str(parent.spool_path) and Path(child_spool).parent == parent.spool_path.parent
    assert report["flushed"] is True
    assert report["frames"] == [[SMALL, 1]]
    assert report["stats"] == [1, 1, True, True]
    assert report["closed_threads"] == [False, False]  # a closed shipper stays closed in the child
    assert parent.flush(10)
    assert recorder.frames() == [(SMALL, 3)]  # and the parent delivers its own, once
