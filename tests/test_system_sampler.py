"""The system sampler on real processes: CPU, memory, I/O, threads and files of a process and its children.

The processes are real children of the test (and their own forked workers, as data loaders
make them); each one measures what it used itself (``time.process_time``, ``ru_maxrss``) and
the samples must show at least that much, and not much more.  Nothing sleeps: the tests poll
what the sampler has delivered.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from pipeline_sdk import cgroup
from pipeline_sdk import system as s
from tests.conftest import ROOT, wait_for

MIB = 1 << 20
INTERVAL = 0.1
# The kernel counts a process's CPU in clock ticks, user and system apart, each rounded down.
TICKS = 2 / os.sysconf("SC_CLK_TCK")
# A worker that allocates and touches MiB of memory, burns CPU seconds (its own process time), then
# says so on stdout as JSON and holds its memory until stdin closes.  With "fork" as the third
# argument the work is done by a forked worker (multiprocessing, as a data loader's), the child waits.
WORKER = r"""
import json, multiprocessing, resource, sys, time

def work(mib, cpu, report):
    buf = bytearray(mib << 20)
    buf[::4096] = b"\x01" * len(range(0, len(buf), 4096))  # touch every page
    while time.process_time() < cpu:
        pass
    report({"cpu": time.process_time(), "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024})
    sys.stdin.read() if report is emit else report.__self__.recv()

def emit(message):
    print(json.dumps(message), flush=True)

mib, cpu, mode = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
if mode == "fork":
    here, there = multiprocessing.get_context("fork").Pipe()
    worker = multiprocessing.get_context("fork").Process(target=work, args=(mib, cpu, there.send))
    worker.start()
    emit(here.recv())
    sys.stdin.read()
    here.send("exit")
    worker.join()
else:
    work(mib, cpu, emit)
"""


@dataclass
class Collected:
    """What the sampler hands its callback, thread-safely."""

    samples: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, sample: dict[str, Any]) -> None:
        with self.lock:
            self.samples.append(sample)

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.samples)

    def first(self, what: str, predicate: Any, after: int = 0, timeout: float = 20.0) -> dict[str, Any]:
        """The first sample from number ``after`` on that ``predicate`` holds for, once there is one."""
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [x for x in self.snapshot()[after:] if predicate(x)]
            return bool(found)

        wait_for(seen, timeout, what)
        return found[0]


def _worker(mib: int, cpu: float, mode: str = "direct") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(mib), str(cpu), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _report(proc: subprocess.Popen[str]) -> dict[str, float]:
    assert proc.stdout is not None
    report: dict[str, float] = json.loads(proc.stdout.readline())
    return report


def _finish(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0
    proc.stdout.close()


def _rss() -> int:
    return psutil.Process().memory_info().rss


# ---------------------------------------------------------------- a child's CPU and memory


@pytest.mark.parametrize("mode", ["direct", "fork"])
def test_a_child_shows_its_cpu_and_memory_in_samples_and_summary(mode: str) -> None:
    collected = Collected()
    sampler = s.SystemSampler(INTERVAL, collected)
    cpu_before = time.process_time()
    rss_low = rss_high = _rss()
    sampler.start()
    worker = _worker(64, 0.5, mode)
    report = _report(worker)  # it holds 64 MiB and has used 0.5 s of CPU
    rss_low, rss_high = min(rss_low, _rss()), max(rss_high, _rss())
    processes = 3 if mode == "fork" else 2  # this one, the child (and its forked worker)
    holding = collected.first(
        "a sample of the child holding its memory",
        lambda x: x[s.FIELD_PROCESSES] == processes and x[s.FIELD_CPU_SECONDS] >= report["cpu"] - TICKS,
    )
    # Its memory: at least the 64 MiB it touched, at most its own peak on top of ours.
    extra = (processes - 2) * 30 * MIB  # a forked worker's parent: an interpreter more
    assert rss_low + 64 * MIB <= holding[s.FIELD_RSS_BYTES] <= rss_high + report["maxrss"] + extra + 4 * MIB
    assert holding[s.FIELD_PEAK_RSS_BYTES] >= holding[s.FIELD_RSS_BYTES]
    assert holding[s.FIELD_THREADS] >= processes
    _finish(worker)  # exited and reaped: its CPU now counts in our children's times
    after = collected.first(
        "a sample after the child was reaped",
        lambda x: x[s.FIELD_PROCESSES] == 1,
        after=len(collected.snapshot()),
    )
    assert after[s.FIELD_CPU_SECONDS] >= report["cpu"] - TICKS
    summary = sampler.stop()
    cpu_self = time.process_time() - cpu_before  # all this process did meanwhile, the sampler included
    assert summary is not None and summary.peak_rss_bytes is not None
    # Bounds: the child's own CPU at least; at most that, ours, and 0.25 s for the interpreters'
    # start and exit (and a forked worker's parent) around the measured work.
    assert report["cpu"] - TICKS <= summary.cpu_seconds <= report["cpu"] + cpu_self + 0.25
    assert rss_low + 64 * MIB <= summary.peak_rss_bytes <= rss_high + report["maxrss"] + extra + 4 * MIB
    assert summary.mean_cpu_percent == pytest.approx(100 * summary.cpu_seconds / summary.wall_seconds)
    assert summary.errors == 0, "a child that exited between listing and reading is skipped, not an error"
    assert summary.samples == len(collected.snapshot())
    samples = collected.snapshot()
    cpu = [x[s.FIELD_CPU_SECONDS] for x in samples]
    assert cpu == sorted(cpu), "CPU seconds never go back"
    assert [x[s.SAMPLE_TIME_NS] for x in samples] == sorted(x[s.SAMPLE_TIME_NS] for x in samples)
    assert all(x[s.FIELD_CPU_PERCENT] >= 0 for x in samples)
    assert max(x[s.FIELD_CPU_PERCENT] for x in samples) >= 50, "the child burnt a core for 0.5 s"
    assert summary.cpu_seconds == pytest.approx(cpu[-1])


IN_PROCESS = r"""
import json, resource, sys, time
import psutil
from pipeline_sdk.system import SystemSampler, FIELD_RSS_BYTES
samples = []
sampler = SystemSampler(0.1, samples.append)
sampler.start()
baseline = psutil.Process().memory_info().rss
buf = bytearray(100 << 20)
buf[::4096] = b"\x01" * len(range(0, len(buf), 4096))
deadline = time.monotonic() + 20
while not any(x[FIELD_RSS_BYTES] >= baseline + (100 << 20) for x in list(samples)):
    assert time.monotonic() < deadline, "no sample saw the allocation"
    time.sleep(0.01)
del buf
summary = sampler.stop()
print(json.dumps({
    "sampled": max(x[FIELD_RSS_BYTES] for x in samples),
    "last": samples[-1][FIELD_RSS_BYTES],
    "hwm": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    "peak": summary.peak_rss_bytes,
    "summary_hwm": summary.hwm_rss_bytes,
}))
"""


# Linux keeps a process's high-water mark across exec, folding in the memory it had from the
# process that forked it: a child started by a large pytest process begins with pytest's mark. A
# small Python in between gives the measured child a fresh, small mark of its own.
def fresh_process(code: str) -> subprocess.CompletedProcess[str]:
    """``python -c code``, started by a small intermediate Python so its ru_maxrss starts small."""
    relay = "import subprocess, sys; sys.exit(subprocess.run([sys.executable, '-c', sys.argv[1]]).returncode)"
    return subprocess.run(
        [sys.executable, "-c", relay, code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def test_peak_rss_is_within_5_percent_of_the_kernel_high_water_mark() -> None:
    """In a fresh process, so the high-water mark is this allocation's and not an earlier test's."""
    out = fresh_process(IN_PROCESS)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["hwm"] >= 100 * MIB
    # The kernel keeps its RSS counters per CPU and its mark lazily: the two differ by a few pages
    # either way (the sampled RSS was seen above the mark by 104 KiB).
    assert abs(found["sampled"] - found["hwm"]) <= 0.05 * found["hwm"]
    assert found["summary_hwm"] == found["hwm"]
    # The mark rose during the run, so the summary's peak is the larger of the two.
    assert found["peak"] == max(found["sampled"], found["hwm"])
    assert found["last"] < found["sampled"] - 90 * MIB, "the memory was given back before the last sample"


BETWEEN_SAMPLES = r"""
import json, resource
from pipeline_sdk.system import SystemSampler, FIELD_RSS_BYTES
samples = []
sampler = SystemSampler(60, samples.append)  # no sample but the last, at stop()
sampler.start()
buf = bytearray(100 << 20)
buf[::4096] = b"\x01" * len(range(0, len(buf), 4096))
del buf
summary = sampler.stop()
print(json.dumps({
    "sampled": samples[-1][FIELD_RSS_BYTES],
    "hwm": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    "peak": summary.peak_rss_bytes,
}))
"""


def test_a_peak_between_two_samples_is_the_kernel_high_water_mark() -> None:
    out = fresh_process(BETWEEN_SAMPLES)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["sampled"] < found["hwm"] - 90 * MIB, "no sample saw the 100 MiB"
    assert found["peak"] == found["hwm"] >= 100 * MIB


def test_a_child_that_came_and_went_between_two_listings_still_counts() -> None:
    """Its CPU reaches us through our children's times (the kernel adds it up when it is reaped)."""
    tree = s._ProcessTree(os.getpid(), every=1_000)  # lists the children at the first reading only
    before = tree.read(lambda what, exc: pytest.fail(f"{what}: {exc}"))
    worker = _worker(1, 0.3)
    report = _report(worker)
    _finish(worker)
    after = tree.read(lambda what, exc: pytest.fail(f"{what}: {exc}"))
    assert after.processes == before.processes == 1
    assert after.cpu_seconds - before.cpu_seconds >= report["cpu"] - TICKS


# ---------------------------------------------------------------- I/O, threads, open files

FILES_AND_THREADS = r"""
import os, sys, threading
print("ready", flush=True)
sys.stdin.readline()
files = [open(os.devnull) for _ in range(7)]
stop = threading.Event()
threads = [threading.Thread(target=stop.wait) for _ in range(3)]
for t in threads:
    t.start()
with open(sys.argv[1], "wb") as out:
    out.write(b"x" * (8 << 20))
    out.flush()
    os.fsync(out.fileno())
    os.posix_fadvise(out.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # out of the page cache: read from disk
with open(sys.argv[1], "rb") as back:
    assert len(back.read()) == 8 << 20
print("opened", flush=True)
sys.stdin.readline()
stop.set()
"""


def test_threads_open_files_and_written_bytes_of_a_process(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", FILES_AND_THREADS, str(tmp_path / "out.bin")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline() == "ready\n"
        collected = Collected()
        sampler = s.SystemSampler(INTERVAL, collected, pid=proc.pid)
        sampler.start()
        before = collected.first("a sample before", lambda x: True)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "opened\n"
        after = collected.first("a sample after", lambda x: True, after=len(collected.snapshot()))
        assert after[s.FIELD_OPEN_FDS] - before[s.FIELD_OPEN_FDS] == 7
        assert after[s.FIELD_THREADS] - before[s.FIELD_THREADS] == 3
        assert after[s.FIELD_PROCESSES] == before[s.FIELD_PROCESSES] == 1
        assert 8 * MIB <= after[s.FIELD_WRITE_BYTES] - before[s.FIELD_WRITE_BYTES] <= 9 * MIB
        assert 8 * MIB <= after[s.FIELD_READ_BYTES] - before[s.FIELD_READ_BYTES] <= 9 * MIB
        summary = sampler.stop()
        assert summary is not None and summary.errors == 0
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
        proc.stdout.close()


# ---------------------------------------------------------------- failures, stop, interval


def test_the_callback_raising_is_counted_logged_once_and_sampling_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []

    def flaky(sample: dict[str, Any]) -> None:
        calls.append(1)
        if len(calls) <= 3:
            raise RuntimeError(f"emit failed #{len(calls)}")

    sampler = s.SystemSampler(INTERVAL, flaky)
    with caplog.at_level(logging.WARNING, logger="pipeline_sdk.system"):
        sampler.start()
        wait_for(lambda: len(calls) >= 5, 20, "two samples delivered after three failures")
        summary = sampler.stop()
    assert summary is not None
    assert summary.errors == 3
    assert summary.samples == len(calls)  # every sample was taken, the failed deliveries too
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert "callback" in lines[0] and "RuntimeError: emit failed #1" in lines[0]


def test_a_process_that_is_gone_is_counted_per_sample_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    collected = Collected()
    sampler = s.SystemSampler(INTERVAL, collected, pid=proc.pid)
    with caplog.at_level(logging.WARNING, logger="pipeline_sdk.system"):
        sampler.start()
        collected.first("a sample of the live process", lambda x: True)
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
        wait_for(lambda: sampler.errors >= 3, 20, "three failed samples")
        delivered = len(collected.snapshot())
        summary = sampler.stop()
    assert summary is not None
    assert summary.errors >= 4  # the three, and the last sample at stop
    assert summary.samples == delivered == len(collected.snapshot())  # failed samples deliver nothing
    assert len(caplog.records) == 1
    assert f"pid={proc.pid}" in caplog.records[0].getMessage()


def test_a_failing_limits_reader_is_counted() -> None:
    def broken() -> cgroup.Limits:
        raise PermissionError("no /sys here")

    sampler = s.SystemSampler(INTERVAL, limits=broken)
    sampler.start()
    summary = sampler.stop()
    assert summary is not None
    assert summary.errors == 1
    assert (summary.memory_limit_bytes, summary.cpu_limit_cores) == (None, None)


def test_the_summary_carries_the_cgroup_limits() -> None:
    limits = cgroup.Limits(version=2, memory_limit_bytes=4 << 30, cpu_limit_cores=1.5)
    sampler = s.SystemSampler(INTERVAL, limits=lambda: limits)
    sampler.start()
    summary = sampler.stop()
    assert summary is not None
    assert (summary.memory_limit_bytes, summary.cpu_limit_cores) == (4 << 30, 1.5)
    fields = summary.fields()
    assert fields[s.FIELD_MEMORY_LIMIT_BYTES] == 4 << 30 and fields[s.FIELD_CPU_LIMIT_CORES] == 1.5
    assert fields[s.FIELD_SYSTEM_SAMPLES] == 1 and fields[s.FIELD_SYSTEM_ERRORS] == 0
    assert set(fields) <= set(s.SUMMARY_FIELDS)
    assert summary.describe().startswith(cgroup.describe_peak(summary.peak_rss_bytes or 0, 4 << 30) + "; ")
    assert "limit 1.5 cores" in summary.describe()


def test_describe() -> None:
    summary = s.Summary(
        samples=12,
        errors=1,
        wall_seconds=10.0,
        cpu_seconds=8.5,
        mean_cpu_percent=85.0,
        peak_rss_bytes=int(3.1 * (1 << 30)),
        hwm_rss_bytes=None,
        memory_limit_bytes=4 << 30,
        cpu_limit_cores=2.0,
    )
    assert summary.describe() == (
        "peak 3.1 GiB of a 4 GiB limit; 8.5 CPU seconds, mean 85% of one core (limit 2 cores); "
        "12 samples, 1 failed reading"
    )
    assert summary.fields() == {
        s.FIELD_SYSTEM_SAMPLES: 12,
        s.FIELD_SYSTEM_ERRORS: 1,
        s.FIELD_CPU_SECONDS: 8.5,
        s.FIELD_MEAN_CPU_PERCENT: 85.0,
        s.FIELD_PEAK_RSS_BYTES: int(3.1 * (1 << 30)),
        s.FIELD_MEMORY_LIMIT_BYTES: 4 << 30,
        s.FIELD_CPU_LIMIT_CORES: 2.0,
    }


def test_stop_is_immediate_and_takes_one_last_sample() -> None:
    collected = Collected()
    sampler = s.SystemSampler(60, collected)  # the next sample would be a minute away
    sampler.start()
    running = sampler.running
    assert running
    began = time.monotonic()
    summary = sampler.stop()
    assert time.monotonic() - began < 5, "stop() waits on the event, not for the interval"
    assert not sampler.running
    assert summary is not None and summary.samples == 1 and len(collected.snapshot()) == 1
    assert sampler.stop() == summary, "a second stop returns the same summary"


def test_no_sampler_thread_outlives_stop() -> None:
    before = {t.name for t in threading.enumerate()}
    sampler = s.SystemSampler(INTERVAL)
    sampler.start()
    assert s.THREAD_NAME in {t.name for t in threading.enumerate()} - before
    sampler.stop()
    assert s.THREAD_NAME not in {t.name for t in threading.enumerate()} - before


def test_interval_zero_disables_the_sampler() -> None:
    collected = Collected()
    before = threading.active_count()
    sampler = s.SystemSampler(0, collected)
    sampler.start()
    assert not sampler.running and threading.active_count() == before
    assert sampler.stop() is None
    assert collected.snapshot() == []


def test_starting_twice_is_refused() -> None:
    sampler = s.SystemSampler(INTERVAL)
    sampler.start()
    try:
        with pytest.raises(RuntimeError, match="already started"):
            sampler.start()
    finally:
        sampler.stop()


@pytest.mark.parametrize("bad", [-1, -0.001, s.MIN_INTERVAL - 0.001, math.nan, math.inf, "10", True, None])
def test_a_bad_interval_is_refused_by_name(bad: Any) -> None:
    with pytest.raises(
        ValueError, match=r"^interval: expected 0 \(off\) or a number of seconds from 0\.05, got "
    ):
        s.SystemSampler(bad)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"on_sample": "print"}, r"^on_sample: expected a function of one sample, or None, got 'print'$"),
        ({"pid": 0}, r"^pid: expected a process id \(a whole number from 1\), or None, got 0$"),
        ({"pid": "1"}, r"^pid: expected a process id .* got '1'$"),
        ({"pid": True}, r"^pid: expected a process id .* got True$"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        s.SystemSampler(INTERVAL, **kwargs)


@pytest.mark.parametrize("good", [0, 0.0, s.MIN_INTERVAL, 10, 3600.5])
def test_good_intervals(good: float) -> None:
    assert s.validate_interval(good) == float(good)


@pytest.mark.parametrize(("raw", "value"), [("10", 10.0), ("0", 0.0), (" 0.5 ", 0.5), ("0.05", 0.05)])
def test_parse_interval(raw: str, value: float) -> None:
    assert s.parse_interval(raw) == value


@pytest.mark.parametrize("raw", ["ten", "-1", "0.01", "nan", "inf"])
def test_parse_interval_refuses(raw: str) -> None:
    with pytest.raises(ValueError, match=r"^must be 0 \(off\) or a number of seconds from 0\.05$"):
        s.parse_interval(raw)


def test_sample_cost_is_measured_on_real_readings(caplog: pytest.LogCaptureFixture) -> None:
    cost = s.sample_cost(50)
    assert 0 < cost < 0.05  # CPU seconds per sample: measured, printed by make bench, not judged here
    assert caplog.records == []  # every one of the 50 was a reading, not a counted failure


def test_sample_cost_refuses_to_time_failures() -> None:
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    with pytest.raises(RuntimeError, match=rf"^sample_cost: 10 of 10 samples of pid {gone.pid} failed"):
        s.sample_cost(10, pid=gone.pid)


# ---------------------------------------------------------------- GPUs through NVML


class FakeNvml(types.ModuleType):
    """The part of nvidia-ml-py's ``pynvml`` the sampler calls; NVML itself needs a GPU and its driver."""

    class NVMLError(Exception):
        pass

    def __init__(self, gpus: int, fail_init: bool = False) -> None:
        super().__init__("pynvml")
        self.gpus, self.fail_init, self.failing, self.shutdowns = gpus, fail_init, set[int](), 0

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise self.NVMLError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return self.gpus

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return f"GPU-{handle}abc"

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        if handle in self.failing:
            raise self.NVMLError("GPU is lost")
        return types.SimpleNamespace(gpu=30 + handle, memory=5)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return types.SimpleNamespace(total=16 << 30, used=(handle + 1) << 30, free=0)


def _one_sample(
    monkeypatch: pytest.MonkeyPatch, nvml: Any, visible: str | None
) -> tuple[dict[str, Any], int]:
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    collected = Collected()
    sampler = s.SystemSampler(60, collected)
    sampler.start()
    summary = sampler.stop()
    assert summary is not None
    return collected.snapshot()[0], summary.errors


def test_gpus_are_sampled_through_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNvml(3)
    sample, errors = _one_sample(monkeypatch, nvml, "2,0")
    assert errors == 0
    assert sample[s.SAMPLE_GPUS] == [
        {
            s.TAG_GPU: "2",
            s.FIELD_GPU_UTILIZATION_PERCENT: 32.0,
            s.FIELD_GPU_MEMORY_USED_BYTES: 3 << 30,
            s.FIELD_GPU_MEMORY_TOTAL_BYTES: 16 << 30,
        },
        {
            s.TAG_GPU: "0",
            s.FIELD_GPU_UTILIZATION_PERCENT: 30.0,
            s.FIELD_GPU_MEMORY_USED_BYTES: 1 << 30,
            s.FIELD_GPU_MEMORY_TOTAL_BYTES: 16 << 30,
        },
    ]
    assert nvml.shutdowns == 1


def test_a_failing_gpu_is_counted_and_the_others_sampled(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNvml(2)
    nvml.failing.add(0)
    sample, errors = _one_sample(monkeypatch, nvml, None)
    assert errors == 1
    assert [g[s.TAG_GPU] for g in sample[s.SAMPLE_GPUS]] == ["1"]


@pytest.mark.parametrize(
    ("nvml", "visible"),
    [
        (None, None),  # nvidia-ml-py is not installed (the gpu extra): an import error
        (FakeNvml(2, fail_init=True), None),  # installed, but no driver
        (FakeNvml(0), None),  # a driver, no GPU
        (FakeNvml(2), ""),  # GPUs, none visible
    ],
)
def test_no_gpu_means_no_gpu_fields_and_no_error(
    monkeypatch: pytest.MonkeyPatch, nvml: Any, visible: str | None
) -> None:
    sample, errors = _one_sample(monkeypatch, nvml, visible)
    assert errors == 0
    assert s.SAMPLE_GPUS not in sample
    assert s.FIELD_CPU_SECONDS in sample


@pytest.mark.parametrize(
    ("value", "indices"),
    [
        (None, [0, 1, 2, 3]),
        ("", []),
        ("1", [1]),
        ("3,1", [3, 1]),
        ("1,7,0", [1]),  # as CUDA does: the devices before the first one that does not exist
        ("0,-1,2", [0]),
        ("GPU-2a", [2]),  # a UUID, or a unique start of one
        ("GPU-", []),  # not unique
        ("1,1", [1]),
        (" 2 , 0", [2, 0]),
        ("MIG-abc", []),  # a MIG instance: NVML's device list has no index for it
    ],
)
def test_visible_gpus(value: str | None, indices: list[int]) -> None:
    uuids = ["GPU-0aa", "GPU-1bb", "GPU-2ab", "GPU-3cc"]
    assert s.visible_gpus(uuids, value) == indices


def test_the_proposed_stream_keys_are_the_sample_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    sample, _ = _one_sample(monkeypatch, None, None)
    keys = set(sample) - {s.SAMPLE_TIME_NS, s.SAMPLE_GPUS}
    assert keys <= set(s.SYSTEM.fields)
    assert s.SYSTEM.tag == "mlobs." + s.SYSTEM.measurement
    assert s.TAG_GPU in s.SYSTEM.tags
    assert s.ENV_SYSTEM_INTERVAL == "MLOBS_SYSTEM_INTERVAL" and s.DEFAULT_SYSTEM_INTERVAL == 10.0
