"""Linux's ``/proc`` read directly: the few numbers of a process the system sampler needs.

psutil reads the same files, but one reading of a process through it opens five (``stat``,
``statm``, ``status``, ``io`` and the ``fd`` directory) and builds objects around each; here
``status`` is left out (``stat`` has the thread count) and the rest read as bytes.  Listing a
process's descendants through psutil opens the ``stat`` file of every process on the machine
and parses each into a ``Process``; here the kernel's own list of each thread's children
(``/proc/<pid>/task/<tid>/children``, on kernels built with ``CONFIG_PROC_CHILDREN``) is read
instead, so the cost follows the size of the tree, not of the machine, and where the kernel has
no such list every ``stat`` file is read once and only its parent field parsed.

A process is named by its pid and its start time (``stat``'s 22nd field): a pid the kernel gave
to a new process after the first one exited is not taken for the first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

PROC = "/proc"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

# Fields of /proc/<pid>/stat, counted from the state (the 3rd field, the first after the name).
_PPID, _UTIME, _STIME, _CUTIME, _CSTIME, _THREADS, _START = 1, 11, 12, 13, 14, 17, 19


class Gone(Exception):
    """The process exited (or is a zombie, or its pid now names another process)."""


def available() -> bool:
    """Whether this system has a Linux ``/proc`` (the sampler uses psutil where it has not)."""
    return os.path.isfile(f"{PROC}/self/stat") and os.path.isfile(f"{PROC}/self/io")


def has_children_lists() -> bool:
    """Whether the kernel keeps each thread's children list (``CONFIG_PROC_CHILDREN``)."""
    return os.path.isfile(f"{PROC}/self/task/{os.getpid()}/children")


def _stat(pid: int) -> list[bytes]:
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise Gone(pid) from exc
    fields = raw[raw.rindex(b")") + 2 :].split()  # the name is in parentheses and may hold anything
    if fields[0] in (b"Z", b"X"):
        raise Gone(pid)
    return fields


@dataclass(frozen=True)
class Proc:
    """A process, as pid and start time (in clock ticks after boot)."""

    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> Proc:
        return cls(pid, int(_stat(pid)[_START]))


@dataclass(frozen=True)
class Reading:
    cpu_seconds: float  # user + system of the process and of the children it has waited for
    rss_bytes: int
    threads: int
    read_bytes: int | None  # None: not readable (another user's process)
    write_bytes: int | None
    open_fds: int | None


def read(proc: Proc) -> tuple[Reading, list[PermissionError]]:
    """One reading of ``proc`` and the permission errors of its optional parts (``io``, ``fd``).

    Raises :class:`Gone` when the process exited or its pid was reused.
    """
    fields = _stat(proc.pid)
    if int(fields[_START]) != proc.start:
        raise Gone(proc.pid)
    ticks = int(fields[_UTIME]) + int(fields[_STIME]) + int(fields[_CUTIME]) + int(fields[_CSTIME])
    denied: list[PermissionError] = []
    read_bytes = write_bytes = fds = None
    try:
        read_bytes, write_bytes = _io(proc.pid)
    except PermissionError as exc:
        denied.append(exc)
    try:
        fds = len(os.listdir(f"{PROC}/{proc.pid}/fd"))
    except PermissionError as exc:
        denied.append(exc)
    except FileNotFoundError as exc:
        raise Gone(proc.pid) from exc
    reading = Reading(
        cpu_seconds=ticks / CLOCK_TICKS,
        rss_bytes=_resident_pages(proc.pid) * PAGE_BYTES,
        threads=int(fields[_THREADS]),
        read_bytes=read_bytes,
        write_bytes=write_bytes,
        open_fds=fds,
    )
    return reading, denied


def _resident_pages(pid: int) -> int:
    # statm, not stat's own rss field: since Linux 6.2 the counters are per CPU, and stat reads their
    # approximate value (here 23 pages under status's VmRSS), statm and status their exact sum.
    try:
        with open(f"{PROC}/{pid}/statm", "rb") as f:
            return int(f.read().split()[1])
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise Gone(pid) from exc


def _io(pid: int) -> tuple[int, int]:
    try:
        with open(f"{PROC}/{pid}/io", "rb") as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise Gone(pid) from exc
    values = dict(line.split(b": ", 1) for line in lines if b": " in line)
    return int(values[b"read_bytes"]), int(values[b"write_bytes"])


def descendants(root: Proc) -> list[Proc]:
    """Every live descendant of ``root``, found through the kernel's children lists where it has them."""
    try:
        pids = _descendants_from_lists(root.pid)
    except _NoChildrenLists:
        pids = _descendants_from_scan(root.pid)
    found: list[Proc] = []
    for pid in pids:
        try:
            found.append(Proc.of(pid))
        except Gone:
            continue
    return found


class _NoChildrenLists(Exception):
    pass


def _children_listed(pid: int) -> list[int]:
    try:
        tids = os.listdir(f"{PROC}/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        return []  # exited since it was found
    children: list[int] = []
    for tid in tids:
        try:
            with open(f"{PROC}/{pid}/task/{tid}/children", "rb") as f:
                children.extend(int(p) for p in f.read().split())
        except FileNotFoundError:
            if not os.path.isdir(f"{PROC}/{pid}/task/{tid}"):
                continue  # the thread ended
            raise _NoChildrenLists from None
    return children


def _descendants_from_lists(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in _children_listed(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def _descendants_from_scan(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    with os.scandir(PROC) as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                ppid = int(_stat(int(entry.name))[_PPID])
            except (Gone, PermissionError):
                continue  # exited while listed, or a zombie: not a live descendant
            children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found
