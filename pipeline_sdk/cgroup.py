"""The memory limit and CPU quota of the cgroup a process runs in, and "peak 3.1 GiB of a 4 GiB limit".

Inside a container the kernel enforces the pod's limits through the container's cgroup; the
run's summary sets its peak memory against that limit.  psutil does not expose cgroup files,
so this module reads the few small control files itself:

- **cgroup v2** (one unified tree): ``memory.max`` holds bytes or ``max``; ``cpu.max`` holds
  ``<quota> <period>`` in microseconds, the quota ``max`` when unlimited.
- **cgroup v1** (a tree per controller): ``memory.limit_in_bytes``, where "unlimited" is a huge
  number (``PAGE_COUNTER_MAX`` times the page size, 9223372036854771712 with 4 KiB pages: any
  value from :data:`V1_UNLIMITED_FROM` on counts as unlimited); ``cpu.cfs_quota_us`` (-1 when
  unlimited) over ``cpu.cfs_period_us``.

Where the files are: ``/proc/self/cgroup`` names the process's cgroup in each hierarchy
(``0::<path>`` for v2, ``<n>:<controllers>:<path>`` for v1), below the mount at
``/sys/fs/cgroup`` (v1: ``/sys/fs/cgroup/<controllers>``, e.g. ``cpu,cpuacct``, or the single
controller's name).  Inside a container that path may name the host's cgroup while only the
container's own cgroup is mounted; when the path does not exist under the mount, the mount
itself is the process's cgroup.  A limit set on a parent binds its children too, so the limit
is the tightest one from the process's cgroup up to the mount.

v2 is read first; a resource it has no file for (no controller in the unified tree, as in
systemd's hybrid layout) is read from v1.  Reading never raises: a missing file means no limit
is known, and a file that cannot be read or parsed is logged (at warning level, naming the file
and its content) and treated as missing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PROC_ROOT = Path("/proc")
CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_UNLIMITED_FROM = 1 << 62  # a v1 memory limit this large or larger is the kernel's "unlimited"

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


@dataclass(frozen=True)
class Limits:
    """What the cgroup allows the process: None where no limit applies or none was found."""

    version: int | None  # 2 or 1: the hierarchy the limits were read from; None: no control file found
    memory_limit_bytes: int | None  # the tightest memory limit
    cpu_limit_cores: float | None  # the tightest CPU quota, in cores (quota / period)


class _Unlimited:
    """A control file that says "no limit"."""


_UNLIMITED = _Unlimited()
Value = float | _Unlimited  # what one control file says; None: no usable file


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("mlobs: cannot read %s (%s); its limit is ignored", path, exc)
        return None


def _malformed(path: Path, text: str) -> None:
    log.warning("mlobs: %s holds %r, not a limit the kernel writes; it is ignored", path, text)


def _v2_memory(directory: Path) -> Value | None:
    path = directory / "memory.max"
    text = _read(path)
    if text is None:
        return None
    if text == "max":
        return _UNLIMITED
    if not text.isdigit():
        _malformed(path, text)
        return None
    return int(text)


def _v2_cpu(directory: Path) -> Value | None:
    path = directory / "cpu.max"
    text = _read(path)
    if text is None:
        return None
    quota, _, period = text.partition(" ")
    if not period.isdigit() or int(period) == 0 or not (quota == "max" or quota.isdigit()):
        _malformed(path, text)
        return None
    return _UNLIMITED if quota == "max" else int(quota) / int(period)


def _v1_memory(directory: Path) -> Value | None:
    path = directory / "memory.limit_in_bytes"
    text = _read(path)
    if text is None:
        return None
    if not text.isdigit():
        _malformed(path, text)
        return None
    return _UNLIMITED if int(text) >= V1_UNLIMITED_FROM else int(text)


def _v1_cpu(directory: Path) -> Value | None:
    quota_path, period_path = directory / "cpu.cfs_quota_us", directory / "cpu.cfs_period_us"
    quota, period = _read(quota_path), _read(period_path)
    if quota is None or period is None:
        return None
    if not period.isdigit() or int(period) == 0:
        _malformed(period_path, period)
        return None
    if quota == "-1":
        return _UNLIMITED
    if not quota.isdigit():
        _malformed(quota_path, quota)
        return None
    return int(quota) / int(period)


def _upwards(mount: Path, cgroup_path: str) -> Iterator[Path]:
    """The process's cgroup directory, then each parent up to and including the mount."""
    leaf = mount / cgroup_path.lstrip("/")
    if not leaf.is_dir():
        leaf = mount
    yield leaf
    while leaf != mount and mount in leaf.parents:
        leaf = leaf.parent
        yield leaf


def _tightest(directories: list[Path], read: Callable[[Path], Value | None]) -> Value | None:
    """The smallest limit on the way up, _UNLIMITED when files say none, None when there is no file."""
    found: Value | None = None
    for directory in directories:
        value = read(directory)
        if value is None:
            continue
        if found is None or isinstance(found, _Unlimited):
            found = value
        elif not isinstance(value, _Unlimited):
            found = min(found, value)
    return found


@dataclass(frozen=True)
class _Memberships:
    """The process's cgroup in each hierarchy, from ``/proc/<pid>/cgroup``."""

    v2: str | None  # its path in the unified tree ("0::<path>"), None when it has none
    v1: dict[str, tuple[str, str]]  # v1 controller -> (its hierarchy's controllers, e.g. "cpu,cpuacct"; path)


def _memberships(proc_root: Path, pid: str) -> _Memberships:
    text = _read(proc_root / pid / "cgroup")
    v2: str | None = None
    v1: dict[str, tuple[str, str]] = {}
    for line in (text or "").splitlines():
        number, sep, rest = line.partition(":")
        controllers, sep2, path = rest.partition(":")
        if not (sep and sep2 and number.isdigit()):
            continue
        if number == "0" and controllers == "":
            v2 = path
        for controller in controllers.split(","):
            v1.setdefault(controller, (controllers, path))
    return _Memberships(v2, v1)


def _v1_directories(cgroup_root: Path, memberships: _Memberships, controller: str) -> list[Path]:
    if controller not in memberships.v1:
        return []
    controllers, path = memberships.v1[controller]
    for name in (controllers, controller):  # cpu,cpuacct/ or its cpu/ link
        mount = cgroup_root / name
        if mount.is_dir():
            return list(_upwards(mount, path))
    return []


def _limit(value: Value | None) -> float | None:
    return None if value is None or isinstance(value, _Unlimited) else value


def read_limits(proc_root: Path = PROC_ROOT, cgroup_root: Path = CGROUP_ROOT, pid: str = "self") -> Limits:
    """The memory limit and CPU quota of process ``pid``'s cgroup (v2 first, else v1).  Never raises."""
    memberships = _memberships(proc_root, pid)
    v2 = [] if memberships.v2 is None else list(_upwards(cgroup_root, memberships.v2))
    versions: set[int] = set()
    values: list[Value | None] = []
    for v2_read, v1_read, controller in ((_v2_memory, _v1_memory, "memory"), (_v2_cpu, _v1_cpu, "cpu")):
        value = _tightest(v2, v2_read)
        if value is not None:
            versions.add(2)
        else:
            value = _tightest(_v1_directories(cgroup_root, memberships, controller), v1_read)
            if value is not None:
                versions.add(1)
        values.append(value)
    memory, cpu = (_limit(v) for v in values)
    return Limits(
        version=max(versions) if versions else None,
        memory_limit_bytes=None if memory is None else int(memory),
        cpu_limit_cores=cpu,
    )


def format_bytes(size: int) -> str:
    """``size`` in binary units with at most one decimal: "0 B", "1.5 KiB", "3.1 GiB", "4 GiB"."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"size: expected a number of bytes, 0 or more, got {size!r}")
    value, unit = float(size), 0
    while unit < len(_UNITS) - 1 and round(value, 1) >= 1024:
        value /= 1024
        unit += 1
    text = f"{value:.1f}".removesuffix(".0") if unit else str(size)
    return f"{text} {_UNITS[unit]}"


def describe_peak(peak_bytes: int, limit_bytes: int | None) -> str:
    """A peak against its limit: "peak 3.1 GiB of a 4 GiB limit", or "peak 512 MiB, no memory limit"."""
    if limit_bytes is None:
        return f"peak {format_bytes(peak_bytes)}, no memory limit"
    return f"peak {format_bytes(peak_bytes)} of a {format_bytes(limit_bytes)} limit"
