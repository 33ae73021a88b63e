"""The cgroup reader on fixture trees of both versions, and the human summary of a peak against a limit.

Each tree is built in ``tmp_path`` as the kernel lays it out: ``proc/self/cgroup`` names the
process's cgroup, and ``sys/fs/cgroup`` holds the control files (one unified tree in v2, one
tree per controller in v1).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pipeline_sdk.cgroup import V1_UNLIMITED_FROM, Limits, describe_peak, format_bytes, read_limits

GIB = 1 << 30
MIB = 1 << 20


class Tree:
    """A fake /proc and /sys/fs/cgroup under one directory."""

    def __init__(self, base: Path, cgroup_lines: str | None) -> None:
        self.proc = base / "proc"
        self.root = base / "sys" / "fs" / "cgroup"
        self.root.mkdir(parents=True)
        if cgroup_lines is not None:
            (self.proc / "self").mkdir(parents=True)
            (self.proc / "self" / "cgroup").write_text(cgroup_lines)

    def file(self, relative: str, content: str) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)

    def read(self) -> Limits:
        return read_limits(proc_root=self.proc, cgroup_root=self.root)


# ---------------------------------------------------------------- cgroup v2


def test_v2_limits_of_the_process_cgroup(tmp_path: Path) -> None:
    tree = Tree(tmp_path, "0::/kubepods/pod1/ctr\n")
    tree.file("kubepods/pod1/ctr/memory.max", "4294967296\n")
    tree.file("kubepods/pod1/ctr/cpu.max", "200000 100000\n")
    assert tree.read() == Limits(version=2, memory_limit_bytes=4 * GIB, cpu_limit_cores=2.0)


def test_v2_max_is_unlimited(tmp_path: Path) -> None:
    tree = Tree(tmp_path, "0::/job\n")
    tree.file("job/memory.max", "max\n")
    tree.file("job/cpu.max", "max 100000\n")
    assert tree.read() == Limits(version=2, memory_limit_bytes=None, cpu_limit_cores=None)


def test_v2_the_tightest_limit_on_the_way_up_applies(tmp_path: Path) -> None:
    tree = Tree(tmp_path, "0::/pod/ctr\n")
    tree.file("pod/ctr/memory.max", "max\n")
    tree.file("pod/memory.max", "1073741824\n")  # the pod's limit binds the container
    tree.file("memory.max", "2147483648\n")
    tree.file("pod/ctr/cpu.max", "50000 100000\n")  # 0.5 of a core, tighter than the pod's 1.5
    tree.file("pod/cpu.max", "150000 100000\n")
    assert tree.read() == Limits(version=2, memory_limit_bytes=GIB, cpu_limit_cores=0.5)


def test_v2_in_a_cgroup_namespace_the_mount_is_the_container(tmp_path: Path) -> None:
    # With a private cgroup namespace the process sees its own cgroup as "/".
    tree = Tree(tmp_path, "0::/\n")
    tree.file("memory.max", "536870912\n")
    tree.file("cpu.max", "100000 100000\n")
    assert tree.read() == Limits(version=2, memory_limit_bytes=512 * MIB, cpu_limit_cores=1.0)


def test_v2_a_host_path_that_is_not_mounted_falls_back_to_the_mount(tmp_path: Path) -> None:
    # Without a namespace, /proc/self/cgroup names the host's path, but only the container's own
    # cgroup is mounted at /sys/fs/cgroup.
    tree = Tree(tmp_path, "0::/kubepods.slice/pod-x.slice/cri-abc.scope\n")
    tree.file("memory.max", "268435456\n")
    assert tree.read() == Limits(version=2, memory_limit_bytes=256 * MIB, cpu_limit_cores=None)


def test_v2_a_missing_cpu_file_leaves_the_cpu_limit_unknown(tmp_path: Path) -> None:
    tree = Tree(tmp_path, "0::/job\n")  # the cpu controller is not enabled for this subtree
    tree.file("job/memory.max", "1073741824\n")
    assert tree.read() == Limits(version=2, memory_limit_bytes=GIB, cpu_limit_cores=None)


def test_a_malformed_file_is_logged_and_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tree = Tree(tmp_path, "0::/job\n")
    tree.file("job/memory.max", "lots\n")
    tree.file("job/cpu.max", "100000\n")  # no period
    tree.file("memory.max", "2147483648\n")
    with caplog.at_level(logging.WARNING, logger="pipeline_sdk.cgroup"):
        assert tree.read() == Limits(version=2, memory_limit_bytes=2 * GIB, cpu_limit_cores=None)
    messages = sorted(r.getMessage() for r in caplog.records)
    assert len(messages) == 2
    assert "cpu.max" in messages[0] and "'100000'" in messages[0]
    assert "memory.max" in messages[1] and "'lots'" in messages[1]


def test_a_zero_period_is_malformed(tmp_path: Path) -> None:
    tree = Tree(tmp_path, "0::/\n")
    tree.file("cpu.max", "100000 0\n")
    assert tree.read() == Limits(version=None, memory_limit_bytes=None, cpu_limit_cores=None)


# ---------------------------------------------------------------- cgroup v1

V1_LINES = (
    "12:pids:/docker/abc\n5:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n"
)


def test_v1_limits_of_the_process_cgroup(tmp_path: Path) -> None:
    tree = Tree(tmp_path, V1_LINES)
    tree.file("memory/docker/abc/memory.limit_in_bytes", "2147483648\n")
    tree.file("cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "50000\n")
    tree.file("cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n")
    assert tree.read() == Limits(version=1, memory_limit_bytes=2 * GIB, cpu_limit_cores=0.5)


def test_v1_unlimited_values(tmp_path: Path) -> None:
    tree = Tree(tmp_path, V1_LINES)
    tree.file("memory/docker/abc/memory.limit_in_bytes", "9223372036854771712\n")  # PAGE_COUNTER_MAX
    tree.file("cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "-1\n")
    tree.file("cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n")
    assert tree.read() == Limits(version=1, memory_limit_bytes=None, cpu_limit_cores=None)


@pytest.mark.parametrize(
    ("value", "limit"),
    [
        (V1_UNLIMITED_FROM - 4096, V1_UNLIMITED_FROM - 4096),  # the largest limit one would set
        (V1_UNLIMITED_FROM, None),
        (V1_UNLIMITED_FROM + 4096, None),  # PAGE_COUNTER_MAX with 64 KiB pages is still above it
    ],
)
def test_v1_unlimited_boundary(tmp_path: Path, value: int, limit: int | None) -> None:
    tree = Tree(tmp_path, V1_LINES)
    tree.file("memory/docker/abc/memory.limit_in_bytes", f"{value}\n")
    assert tree.read().memory_limit_bytes == limit


def test_v1_separate_cpu_mount_and_namespaced_path(tmp_path: Path) -> None:
    # The path names the host's cgroup; the container only has its own mounted at the root.
    tree = Tree(tmp_path, "4:memory:/kubepods/pod/ctr\n2:cpu:/kubepods/pod/ctr\n")
    tree.file("memory/memory.limit_in_bytes", "1073741824\n")
    tree.file("cpu/cpu.cfs_quota_us", "300000\n")
    tree.file("cpu/cpu.cfs_period_us", "100000\n")
    assert tree.read() == Limits(version=1, memory_limit_bytes=GIB, cpu_limit_cores=3.0)


def test_v1_missing_files(tmp_path: Path) -> None:
    tree = Tree(tmp_path, V1_LINES)
    tree.file("cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "50000\n")  # and no period file
    assert tree.read() == Limits(version=None, memory_limit_bytes=None, cpu_limit_cores=None)


def test_hybrid_takes_memory_from_v1_when_the_unified_tree_has_no_controller(tmp_path: Path) -> None:
    # systemd's hybrid layout: v1 controllers and a controller-less v2 tree at unified/.
    tree = Tree(tmp_path, "4:memory:/session\n0::/session\n")
    tree.file("unified/session/cgroup.procs", "")
    tree.file("memory/session/memory.limit_in_bytes", "3221225472\n")
    assert tree.read() == Limits(version=1, memory_limit_bytes=3 * GIB, cpu_limit_cores=None)


def test_no_cgroup_file_at_all(tmp_path: Path) -> None:
    tree = Tree(tmp_path, None)  # e.g. macOS: no /proc
    assert tree.read() == Limits(version=None, memory_limit_bytes=None, cpu_limit_cores=None)


def test_this_machine_does_not_raise() -> None:
    limits = read_limits()
    assert limits.version in (1, 2, None)
    assert limits.memory_limit_bytes is None or limits.memory_limit_bytes > 0


# ---------------------------------------------------------------- human summary


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1 KiB"),
        (1536, "1.5 KiB"),
        (MIB - 1, "1 MiB"),  # 1023.999 KiB rounds up into the next unit, never "1024 KiB"
        (int(3.1 * GIB), "3.1 GiB"),
        (4 * GIB, "4 GiB"),
        (5 << 40, "5 TiB"),
        (3 << 60, "3072 PiB"),  # the largest unit
    ],
)
def test_format_bytes(size: int, text: str) -> None:
    assert format_bytes(size) == text


def test_format_bytes_refuses_a_negative_size() -> None:
    with pytest.raises(ValueError, match=r"size: expected a number of bytes, 0 or more, got -1"):
        format_bytes(-1)


def test_describe_peak() -> None:
    assert describe_peak(int(3.1 * GIB), 4 * GIB) == "peak 3.1 GiB of a 4 GiB limit"
    assert describe_peak(512 * MIB, None) == "peak 512 MiB, no memory limit"
