"""What a run's process uses: CPU, memory, I/O, threads, open files and GPUs, sampled in the background.

A :class:`SystemSampler` reads, every ``interval`` seconds, the process and all its
descendants (data loaders fork workers, and those may fork again), from ``/proc`` on Linux
(:mod:`pipeline_sdk.procfs`) and through psutil elsewhere:

- **CPU seconds**: user plus system time of the process, of its live descendants, and of the
  children it has already waited for (``cpu_times().children_*``, which the kernel adds up when
  a child is reaped, its own reaped children included), counted from ``start()``.  A child that
  is never waited for (re-parented to init) drops out when it exits.  The total never goes back.
- **CPU percent**: the CPU seconds used since the previous sample over the wall time between
  the two, in percent of one core (four busy cores read 400).
- **RSS**: resident memory of the process plus its live descendants (a forked worker's pages
  shared with its parent count in both), and **peak RSS**, the largest RSS sampled so far.
- **Read and written bytes**: what the process and its descendants read from and wrote to
  storage (``io_counters`` read_bytes/write_bytes; a reaped child's count is added to its
  parent's by the kernel); reads served by the page cache are not counted.  Absent where
  psutil has no I/O counters (macOS).
- **Threads** and **open file descriptors** (files, sockets, pipes: what ``ulimit -n`` limits;
  absent on Windows), summed over the processes.
- **GPUs**: utilisation and memory of each visible GPU (``CUDA_VISIBLE_DEVICES``, see
  :func:`visible_gpus`) through NVML, when nvidia-ml-py (the ``gpu`` extra) is installed and
  a GPU is present; otherwise a sample has no GPU entries, and that is no error.

Descendants are listed from the kernel's children lists where it keeps them (the cost follows
the tree), else by reading every process's parent from its ``stat`` file (about 10 µs each: 1 ms
with 100 processes; in a pod, which sees only its own processes, far less), so new children are
looked for at most once every :data:`CHILDREN_REFRESH_SECONDS` (at every sample with the default
interval of 10 s).  CPU time is cumulative, so a child found late is still counted in full; its
memory shows from the sample that finds it on.

Each sample is a dict keyed by the system stream's names (:data:`pipeline_sdk.contract.SYSTEM`),
handed to ``on_sample``; the one taken at ``stop()`` is the last.  Besides the readings above,
a sample says how long after ``start()`` it was taken (``elapsed_seconds``: runs overlaid on
their own time) and, when the cgroup sets them, the memory limit and CPU quota (a limit line
beside the use).  ``stop()`` returns a :class:`Summary`: peak RSS,
CPU seconds, mean CPU, the number of samples and of failures, and the cgroup's memory limit
and CPU quota (:mod:`pipeline_sdk.cgroup`).  The peak RSS of the summary also takes the
kernel's high-water mark of the process (``getrusage``'s ``ru_maxrss``: it catches a peak
between two samples) when that mark rose during the run; the mark counts since the process
started, so in a long-lived process (a notebook) an earlier run's higher peak is not this run's.

The sampler never blocks or raises into its caller: it runs in a daemon thread that waits on
an event (so ``stop()`` is immediate), and every failure (a reading, the callback, the limits)
is counted in :attr:`SystemSampler.errors` and the summary, logged once per kind, and sampling
goes on.  Children that exit between being listed and being read are skipped, not counted.

One concern in one module, past 400 lines: the sampler, its readings (the process tree, the
GPUs), its summary and its cost (:func:`sample_cost`) change together.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import psutil

from . import cgroup, procfs
from .contract import (  # the stream's names, importable from here too
    DEFAULT_SYSTEM_INTERVAL,
    ENV_SYSTEM_INTERVAL,  # noqa: F401 - re-exported
    FIELD_CPU_LIMIT_CORES,
    FIELD_CPU_PERCENT,
    FIELD_CPU_SECONDS,
    FIELD_ELAPSED_SECONDS,
    FIELD_GPU_MEMORY_TOTAL_BYTES,
    FIELD_GPU_MEMORY_USED_BYTES,
    FIELD_GPU_UTILIZATION_PERCENT,
    FIELD_MEAN_CPU_PERCENT,
    FIELD_MEMORY_LIMIT_BYTES,
    FIELD_OPEN_FDS,
    FIELD_PEAK_RSS_BYTES,
    FIELD_PROCESSES,
    FIELD_READ_BYTES,
    FIELD_RSS_BYTES,
    FIELD_SYSTEM_ERRORS,
    FIELD_SYSTEM_SAMPLES,
    FIELD_THREADS,
    FIELD_WRITE_BYTES,
    SYSTEM,  # noqa: F401 - re-exported
    TAG_GPU,
)

log = logging.getLogger(__name__)

SAMPLE_TIME_NS: Final = "time_ns"  # a sample's key for when it was taken (Unix ns): the event's time
SAMPLE_GPUS: Final = "gpus"  # a sample's key for its GPU rows: dicts of TAG_GPU and the GPU fields
SUMMARY_FIELDS: Final = (  # the keys Summary.fields() may return
    FIELD_SYSTEM_SAMPLES,
    FIELD_SYSTEM_ERRORS,
    FIELD_CPU_SECONDS,
    FIELD_MEAN_CPU_PERCENT,
    FIELD_PEAK_RSS_BYTES,
    FIELD_MEMORY_LIMIT_BYTES,
    FIELD_CPU_LIMIT_CORES,
)

MIN_INTERVAL: Final = 0.05  # below it the sampler's own work starts to show in what it measures
CHILDREN_REFRESH_SECONDS: Final = 1.0  # new descendants are looked for at most this often
STOP_TIMEOUT: Final = 5.0  # stop() waits at most this long for the last sample
THREAD_NAME: Final = "mlobs-system-sampler"
_INTERVAL_RULE = f"0 (off) or a number of seconds from {MIN_INTERVAL:g}"
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux

Sample = dict[str, Any]


def validate_interval(interval: object, name: str = "interval") -> float:
    """``interval`` as a float: 0 (off) or a finite number of seconds from MIN_INTERVAL."""
    if isinstance(interval, bool) or not isinstance(interval, int | float):
        raise ValueError(f"{name}: expected {_INTERVAL_RULE}, got {interval!r}")
    value = float(interval)
    if not (value == 0 or (math.isfinite(value) and value >= MIN_INTERVAL)):
        raise ValueError(f"{name}: expected {_INTERVAL_RULE}, got {interval!r}")
    return value


def parse_interval(raw: str) -> float:
    """MLOBS_SYSTEM_INTERVAL's parser (for ``config.EnvVar``): the error says what the value should be."""
    try:
        return validate_interval(float(raw))
    except ValueError:
        raise ValueError(f"must be {_INTERVAL_RULE}") from None


def _hwm_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _MAXRSS_UNIT


@dataclass(frozen=True)
class Summary:
    """What a run used, from ``SystemSampler.stop()``.  None: not known (no sample, no limit)."""

    samples: int  # samples taken
    errors: int  # failures counted (readings, deliveries, the limits)
    wall_seconds: float  # from start() to the last sample
    cpu_seconds: float  # CPU of the process and its descendants over that time
    mean_cpu_percent: float | None  # cpu_seconds / wall_seconds, in % of one core
    peak_rss_bytes: int | None  # the largest RSS sampled, or the kernel's mark if it rose higher in the run
    hwm_rss_bytes: int | None  # the kernel's high-water mark of the process (since it started)
    memory_limit_bytes: int | None  # the cgroup's memory limit
    cpu_limit_cores: float | None  # the cgroup's CPU quota

    def fields(self) -> dict[str, int | float]:
        """The summary as event fields (SUMMARY_FIELDS), those not known left out."""
        values: dict[str, int | float | None] = {
            FIELD_SYSTEM_SAMPLES: self.samples,
            FIELD_SYSTEM_ERRORS: self.errors,
            FIELD_CPU_SECONDS: self.cpu_seconds,
            FIELD_MEAN_CPU_PERCENT: self.mean_cpu_percent,
            FIELD_PEAK_RSS_BYTES: self.peak_rss_bytes,
            FIELD_MEMORY_LIMIT_BYTES: self.memory_limit_bytes,
            FIELD_CPU_LIMIT_CORES: self.cpu_limit_cores,
        }
        return {key: value for key, value in values.items() if value is not None}

    def describe(self) -> str:
        """For people: "peak 3.1 GiB of a 4 GiB limit; 8.5 CPU seconds, mean 85% of one core; 12 samples"."""
        parts = []
        if self.peak_rss_bytes is not None:
            parts.append(cgroup.describe_peak(self.peak_rss_bytes, self.memory_limit_bytes))
        cpu = f"{self.cpu_seconds:.1f} CPU seconds"
        if self.mean_cpu_percent is not None:
            cpu += f", mean {self.mean_cpu_percent:.0f}% of one core"
        if self.cpu_limit_cores is not None:
            cpu += f" (limit {self.cpu_limit_cores:g} cores)"
        parts.append(cpu)
        counts = f"{self.samples} sample{'' if self.samples == 1 else 's'}"
        if self.errors:
            counts += f", {self.errors} failed reading{'' if self.errors == 1 else 's'}"
        parts.append(counts)
        return "; ".join(parts)


@dataclass
class _Totals:
    """One reading of the process tree; None where the platform or a failure gave no value."""

    cpu_seconds: float = 0.0
    rss_bytes: int = 0
    threads: int = 0
    processes: int = 0
    read_bytes: int | None = 0
    write_bytes: int | None = 0
    open_fds: int | None = 0

    def add(self, reading: procfs.Reading) -> None:
        self.cpu_seconds += reading.cpu_seconds
        self.rss_bytes += reading.rss_bytes
        self.threads += reading.threads
        self.processes += 1
        if reading.read_bytes is None or reading.write_bytes is None:
            self.read_bytes = self.write_bytes = None
        elif self.read_bytes is not None and self.write_bytes is not None:
            self.read_bytes += reading.read_bytes
            self.write_bytes += reading.write_bytes
        self.open_fds = (
            None if reading.open_fds is None or self.open_fds is None else self.open_fds + reading.open_fds
        )


def _psutil_reading(proc: psutil.Process, fail: Callable[[str, BaseException], None]) -> procfs.Reading:
    """One process through psutil: all of it, or none when psutil raises (the caller decides)."""
    with proc.oneshot():
        t = proc.cpu_times()
        rss = proc.memory_info().rss
        threads = proc.num_threads()
        io = _optional(proc, "io_counters", fail)
        fds = _optional(proc, "num_fds", fail)
    return procfs.Reading(
        cpu_seconds=t.user + t.system + t.children_user + t.children_system,
        rss_bytes=rss,
        threads=threads,
        read_bytes=None if io is None else io.read_bytes,
        write_bytes=None if io is None else io.write_bytes,
        open_fds=fds,
    )


def _optional(proc: psutil.Process, method: str, fail: Callable[[str, BaseException], None]) -> Any:
    """``proc.<method>()``, or None where the platform lacks it or it is denied (counted)."""
    if not hasattr(proc, method):
        return None
    try:
        return getattr(proc, method)()
    except psutil.AccessDenied as exc:
        fail(f"reading {method}", exc)
        return None


class _ProcessTree:
    """A process and its descendants, the descendants listed again at every n-th reading.

    On Linux through :mod:`pipeline_sdk.procfs` (a third of psutil's cost per process, and a
    listing that follows the tree, not the machine); elsewhere, or with ``native=False``, psutil.
    """

    def __init__(self, pid: int, every: int, native: bool | None = None) -> None:
        self.native = procfs.available() if native is None else native
        self._root: procfs.Proc | psutil.Process = procfs.Proc.of(pid) if self.native else psutil.Process(pid)
        self._every = every  # list the descendants at every n-th reading (the first one included)
        self._children: list[Any] = []
        self._readings = 0

    def read(self, fail: Callable[[str, BaseException], None]) -> _Totals:
        if self._readings % self._every == 0:
            try:
                self._children = self._list()
            except (psutil.AccessDenied, PermissionError) as exc:
                fail("listing the children", exc)
        self._readings += 1
        totals = _Totals()
        totals.add(
            self._read(self._root, fail)
        )  # first: a child reaped after this is missed once, never twice
        alive: list[Any] = []
        for child in self._children:
            try:
                totals.add(self._read(child, fail))
            except (psutil.NoSuchProcess, procfs.Gone):  # exited (or a zombie) since it was listed: skipped
                continue
            except (psutil.AccessDenied, PermissionError) as exc:
                fail("reading a child", exc)
            alive.append(child)
        self._children = alive
        return totals

    def _list(self) -> list[Any]:
        if isinstance(self._root, procfs.Proc):
            return list(procfs.descendants(self._root))
        return list(self._root.children(recursive=True))

    def _read(self, proc: Any, fail: Callable[[str, BaseException], None]) -> procfs.Reading:
        if not isinstance(proc, procfs.Proc):
            return _psutil_reading(proc, fail)
        reading, denied = procfs.read(proc)
        for exc in denied:
            fail(f"reading {os.path.basename(str(exc.filename))}", exc)  # one kind per file, not per pid
        return reading


def visible_gpus(uuids: Sequence[str], value: str | None) -> list[int]:
    """NVML indices of the GPUs ``CUDA_VISIBLE_DEVICES`` (``value``) lets the process use, in its order.

    Unset: all.  Entries are indices or (starts of) UUIDs ("GPU-..."); as CUDA does, the list
    stops at the first entry that names no device, and an entry that matches several UUIDs
    names none.  An index is NVML's (PCI bus order), which is CUDA's with
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (and on a node of identical GPUs).  MIG instances have no
    NVML index and are left out.
    """
    if value is None:
        return list(range(len(uuids)))
    found: list[int] = []
    for entry in (e.strip() for e in value.split(",")):
        if entry.isdigit() and int(entry) < len(uuids):
            index = int(entry)
        elif entry.startswith("GPU-") and len([u for u in uuids if u.startswith(entry)]) == 1:
            index = next(i for i, u in enumerate(uuids) if u.startswith(entry))
        else:
            break
        if index not in found:
            found.append(index)
    return found


class _Gpus:
    """The visible GPUs through NVML (nvidia-ml-py's ``pynvml``, imported only here)."""

    def __init__(self, nvml: Any, handles: list[tuple[int, Any]]) -> None:
        self._nvml = nvml
        self._handles = handles

    @classmethod
    def open(cls, environ: Mapping[str, str]) -> _Gpus | None:
        """None when nvidia-ml-py is not installed, NVML has no driver, or no GPU is visible."""
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError:
            return None
        try:
            nvml.nvmlInit()
        except nvml.NVMLError:
            return None
        try:
            count = nvml.nvmlDeviceGetCount()
            all_handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            uuids = [str(nvml.nvmlDeviceGetUUID(h)) for h in all_handles]
        except nvml.NVMLError:
            nvml.nvmlShutdown()
            raise
        handles = [(i, all_handles[i]) for i in visible_gpus(uuids, environ.get("CUDA_VISIBLE_DEVICES"))]
        if not handles:
            nvml.nvmlShutdown()
            return None
        return cls(nvml, handles)

    def read(self, fail: Callable[[str, BaseException], None]) -> list[dict[str, Any]]:
        rows = []
        for index, handle in self._handles:
            try:
                busy = self._nvml.nvmlDeviceGetUtilizationRates(handle).gpu
                memory = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            except self._nvml.NVMLError as exc:
                fail(f"gpu {index}", exc)
                continue
            rows.append(
                {
                    TAG_GPU: str(index),
                    FIELD_GPU_UTILIZATION_PERCENT: float(busy),
                    FIELD_GPU_MEMORY_USED_BYTES: int(memory.used),
                    FIELD_GPU_MEMORY_TOTAL_BYTES: int(memory.total),
                }
            )
        return rows

    def close(self) -> None:
        self._nvml.nvmlShutdown()


class SystemSampler:
    """Samples process ``pid`` (default: this one) and its descendants every ``interval`` seconds.

    ``on_sample(sample)`` gets each sample (from the sampler's thread: it must not block);
    ``limits`` reads the cgroup's limits once, at the start.  ``interval`` 0 turns the sampler
    off: ``start()`` does nothing and ``stop()`` returns None.  A bad ``interval`` raises
    ValueError naming it; nothing else the sampler does raises into its caller.
    """

    def __init__(
        self,
        interval: float,
        on_sample: Callable[[Sample], None] | None = None,
        *,
        pid: int | None = None,
        limits: Callable[[], cgroup.Limits] = cgroup.read_limits,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.interval = validate_interval(interval)
        if on_sample is not None and not callable(on_sample):
            raise ValueError(f"on_sample: expected a function of one sample, or None, got {on_sample!r}")
        if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int) or pid < 1):
            raise ValueError(f"pid: expected a process id (a whole number from 1), or None, got {pid!r}")
        self._on_sample = on_sample
        self._pid = os.getpid() if pid is None else pid
        self._read_limits = limits
        self._environ = os.environ if environ is None else environ
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False
        self._summary: Summary | None = None
        self._errors = 0
        self._logged: set[str] = set()
        self._samples = 0
        # Written by the sampler's thread; read by stop() once that thread has ended.
        self._tree: _ProcessTree | None = None
        self._gpus: _Gpus | None = None
        self._limits = cgroup.Limits(version=None, memory_limit_bytes=None, cpu_limit_cores=None)
        self._t0 = self._last_t = time.monotonic()
        self._base: _Totals | None = None
        self._cpu = 0.0
        self._read = self._write = 0
        self._peak_rss: int | None = None
        self._hwm_start: int | None = None

    @property
    def running(self) -> bool:
        """The sampler's thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def errors(self) -> int:
        """Failures counted so far: readings, deliveries to ``on_sample``, the limits."""
        with self._lock:
            return self._errors

    @property
    def samples(self) -> int:
        """Samples taken so far (a delivery that failed included)."""
        with self._lock:
            return self._samples

    def start(self) -> None:
        """Start the sampler's daemon thread (nothing when ``interval`` is 0).  Never blocks."""
        if self.interval == 0:
            return
        if self._started:
            raise RuntimeError("SystemSampler.start(): already started; a sampler samples one run")
        self._started = True
        self._t0 = self._last_t = time.monotonic()
        if self._pid == os.getpid():
            self._hwm_start = _hwm_bytes()  # here, not in the thread: a peak right after start() counts
        # The baseline too, here: a busy step holds the GIL, and a thread that read it first could
        # see the step's first seconds already spent (a 0.3 s burn was lost that way).
        self._open_tree()
        thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:  # no thread can be started: the run goes on without samples
            self._fail("starting the sampler's thread", exc)
            return
        self._thread = thread

    def stop(self, timeout: float = STOP_TIMEOUT) -> Summary | None:
        """Take the last sample, end the thread and return the summary (None when off).  Idempotent."""
        if not self._started:
            return None
        if self._summary is not None:
            return self._summary
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._fail("the last sample", TimeoutError(f"not done within {timeout} s"))
        self._summary = self._summarise()
        return self._summary

    # ---------------------------------------------------------------- the sampler's thread

    def _run(self) -> None:
        self._begin()
        next_at = self._t0 + self.interval
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            self._sample()
            next_at += self.interval
            if next_at <= time.monotonic():  # fell behind (the machine was suspended): skip, never burst
                next_at = time.monotonic() + self.interval
        self._sample()
        if self._gpus is not None:
            self._guard("NVML's shutdown", self._gpus.close)

    def _open_tree(self) -> None:
        """The process tree and its baseline reading (a failure is counted: sampling goes on without)."""
        try:
            every = max(1, math.ceil(CHILDREN_REFRESH_SECONDS / self.interval - 1e-9))
            self._tree = _ProcessTree(self._pid, every)
            self._base = self._tree.read(self._fail)
        except Exception as exc:  # noqa: BLE001 - any failure is counted; the run must go on
            self._fail(f"reading the process (pid={self._pid})", exc)

    def _begin(self) -> None:
        try:
            self._limits = self._read_limits()
        except Exception as exc:  # noqa: BLE001 - any failure is counted; the run must go on
            self._fail("reading the cgroup limits", exc)
        try:
            self._gpus = _Gpus.open(self._environ)
        except Exception as exc:  # noqa: BLE001
            self._fail("opening NVML", exc)

    def _guard(self, what: str, call: Callable[[], object]) -> None:
        try:
            call()
        except Exception as exc:  # noqa: BLE001
            self._fail(what, exc)

    def _sample(self) -> None:
        time_ns, now = time.time_ns(), time.monotonic()
        try:
            if self._tree is None:
                raise psutil.NoSuchProcess(self._pid)
            totals = self._tree.read(self._fail)
        except Exception as exc:  # noqa: BLE001
            self._fail(f"reading the process (pid={self._pid})", exc)
            return
        base = self._base if self._base is not None else totals
        self._base = base
        cpu = max(self._cpu, totals.cpu_seconds - base.cpu_seconds)
        elapsed = now - self._last_t
        sample: Sample = {
            SAMPLE_TIME_NS: time_ns,
            FIELD_ELAPSED_SECONDS: now - self._t0,
            FIELD_CPU_PERCENT: 100 * (cpu - self._cpu) / elapsed if elapsed > 0 else 0.0,
            FIELD_CPU_SECONDS: cpu,
            FIELD_RSS_BYTES: totals.rss_bytes,
            FIELD_PEAK_RSS_BYTES: max(self._peak_rss or 0, totals.rss_bytes),
            FIELD_THREADS: totals.threads,
            FIELD_PROCESSES: totals.processes,
        }
        if totals.read_bytes is not None and totals.write_bytes is not None:
            self._read = max(self._read, totals.read_bytes - (base.read_bytes or 0))
            self._write = max(self._write, totals.write_bytes - (base.write_bytes or 0))
            sample[FIELD_READ_BYTES], sample[FIELD_WRITE_BYTES] = self._read, self._write
        if totals.open_fds is not None:
            sample[FIELD_OPEN_FDS] = totals.open_fds
        if self._limits.memory_limit_bytes is not None:
            sample[FIELD_MEMORY_LIMIT_BYTES] = self._limits.memory_limit_bytes
        if self._limits.cpu_limit_cores is not None:
            sample[FIELD_CPU_LIMIT_CORES] = self._limits.cpu_limit_cores
        if self._gpus is not None:
            try:
                if rows := self._gpus.read(self._fail):
                    sample[SAMPLE_GPUS] = rows
            except Exception as exc:  # noqa: BLE001
                self._fail("reading the GPUs", exc)
        with self._lock:
            self._cpu, self._last_t = cpu, now
            self._peak_rss = sample[FIELD_PEAK_RSS_BYTES]
            self._samples += 1
        if self._on_sample is not None:
            try:
                self._on_sample(sample)
            except Exception as exc:  # noqa: BLE001
                self._fail("the callback on_sample", exc)

    def _fail(self, what: str, exc: BaseException) -> None:
        with self._lock:
            self._errors += 1
            first = what not in self._logged
            self._logged.add(what)
        if first:
            log.warning(
                "mlobs: system sampler (pid=%d): %s failed (%s: %s); counted in the run's %s, sampling "
                "goes on, and later failures of this kind are counted only",
                self._pid,
                what,
                type(exc).__name__,
                exc,
                FIELD_SYSTEM_ERRORS,
            )

    def _summarise(self) -> Summary:
        with self._lock:
            samples, errors, cpu, peak = self._samples, self._errors, self._cpu, self._peak_rss
            wall = self._last_t - self._t0 if samples else 0.0
        hwm = _hwm_bytes() if self._pid == os.getpid() else None
        if hwm is not None and self._hwm_start is not None and hwm > self._hwm_start:
            peak = max(peak or 0, hwm)  # the mark rose during the run: a peak between two samples
        return Summary(
            samples=samples,
            errors=errors,
            wall_seconds=wall,
            cpu_seconds=cpu,
            mean_cpu_percent=100 * cpu / wall if wall > 0 else None,
            peak_rss_bytes=peak,
            hwm_rss_bytes=hwm,
            memory_limit_bytes=self._limits.memory_limit_bytes,
            cpu_limit_cores=self._limits.cpu_limit_cores,
        )


def sample_cost(
    samples: int = 1000, interval: float = DEFAULT_SYSTEM_INTERVAL, pid: int | None = None
) -> float:
    """CPU seconds one sample costs (``time.process_time`` around ``samples`` of them, no thread).

    At ``interval`` the descendants are listed as often as the sampler lists them; the sampler
    then costs ``sample_cost() / interval`` of one core.  For ``make bench``.
    """
    sampler = SystemSampler(interval, pid=pid)
    sampler._begin()
    sampler._open_tree()
    failed_before = sampler.errors
    began = time.process_time()
    for _ in range(samples):
        sampler._sample()
    cost = (time.process_time() - began) / samples
    if sampler._gpus is not None:
        sampler._gpus.close()
    if sampler._tree is None or sampler.errors > failed_before:
        failed = samples if sampler._tree is None else sampler.errors - failed_before
        raise RuntimeError(
            f"sample_cost: {failed} of {samples} samples of pid {sampler._pid} failed: "
            "the cost of failures is not the sampler's"
        )
    return cost
