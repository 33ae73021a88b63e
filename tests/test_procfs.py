"""``/proc`` read directly, against psutil on the same real processes, and its edges: a name that
holds ``) ``, a zombie, a pid that names another process, and the kernel's children lists (which
this machine's kernel lacks: there, a ``/proc`` tree written in the kernel's own formats).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from pipeline_sdk import procfs
from pipeline_sdk import system as s
from tests.conftest import wait_for

pytestmark = pytest.mark.skipif(not procfs.available(), reason="Linux /proc only")

TICK = 1 / procfs.CLOCK_TICKS
# A process that starts children as its argument says ("2,1": two children, the first with one
# child of its own), says it is ready once they are, then waits; the top one has a second thread.
NODE = r"""
import subprocess, sys, threading
shape = [int(n) for n in sys.argv[1].split(",") if n]
kids = [
    subprocess.Popen([sys.executable, __file__, ",".join(map(str, shape[1:])) if i == 0 else "", "child"],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    for i in range(shape[0] if shape else 0)
]
for k in kids:
    k.stdout.readline()
if len(sys.argv) < 3:
    threading.Thread(target=sys.stdin.read, daemon=True).start()
print(flush=True)
sys.stdin.read()
"""


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    (tmp_path / "node.py").write_text(NODE)
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "node.py"), "2,1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    yield proc
    for child in psutil.Process(proc.pid).children(recursive=True):
        child.kill()
    proc.kill()
    proc.wait()


def test_descendants_are_psutils_at_every_depth(tree: subprocess.Popen[str]) -> None:
    ours = procfs.descendants(procfs.Proc.of(tree.pid))
    theirs = psutil.Process(tree.pid).children(recursive=True)
    assert len(ours) == 3  # two children and a grandchild
    assert sorted(p.pid for p in ours) == sorted(p.pid for p in theirs)
    assert sorted(procfs._descendants_from_scan(tree.pid)) == sorted(p.pid for p in theirs)
    assert all(p.start == procfs.Proc.of(p.pid).start for p in ours)


def test_a_reading_is_psutils(tree: subprocess.Popen[str]) -> None:
    ours, denied = procfs.read(procfs.Proc.of(tree.pid))
    p = psutil.Process(tree.pid)
    with p.oneshot():
        t, rss, threads, io, fds = (
            p.cpu_times(),
            p.memory_info().rss,
            p.num_threads(),
            p.io_counters(),
            p.num_fds(),
        )
    assert denied == []
    assert threads == ours.threads == 2
    assert ours.open_fds == fds
    assert abs(ours.rss_bytes - rss) <= 16 * procfs.PAGE_BYTES  # the process is idle: a few pages at most
    assert ours.cpu_seconds == pytest.approx(
        t.user + t.system + t.children_user + t.children_system, abs=2 * TICK
    )
    assert (ours.read_bytes, ours.write_bytes) == (io.read_bytes, io.write_bytes)


def test_the_sampler_reads_the_same_tree_both_ways(tree: subprocess.Popen[str]) -> None:
    errors: list[str] = []
    native = s._ProcessTree(tree.pid, every=1, native=True).read(lambda what, exc: errors.append(what))
    portable = s._ProcessTree(tree.pid, every=1, native=False).read(lambda what, exc: errors.append(what))
    assert errors == []
    assert native.processes == portable.processes == 4
    assert native.threads == portable.threads == 5
    assert native.open_fds == portable.open_fds
    assert abs(native.rss_bytes - portable.rss_bytes) <= 64 * procfs.PAGE_BYTES
    assert native.cpu_seconds == pytest.approx(portable.cpu_seconds, abs=8 * TICK)


def test_a_name_that_holds_a_parenthesis_and_spaces_is_parsed(tmp_path: Path) -> None:
    code = "open('/proc/self/comm', 'w').write('x) 9 9 9'); print(flush=True); input()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        assert Path(f"/proc/{proc.pid}/comm").read_text() == "x) 9 9 9\n"
        reading, _ = procfs.read(procfs.Proc.of(proc.pid))
        assert reading.threads == 1
        assert reading.rss_bytes == psutil.Process(proc.pid).memory_info().rss
    finally:
        proc.kill()
        proc.wait()


def test_a_zombie_is_gone_and_not_a_descendant() -> None:
    child = subprocess.Popen([sys.executable, "-c", ""])
    wait_for(lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE, 10, "the child to exit")
    try:
        with pytest.raises(procfs.Gone):
            procfs.Proc.of(child.pid)
        assert child.pid not in [p.pid for p in procfs.descendants(procfs.Proc.of(os.getpid()))]
    finally:
        child.wait()


def test_a_pid_that_now_names_another_process_is_gone() -> None:
    me = procfs.Proc.of(os.getpid())
    with pytest.raises(procfs.Gone):
        procfs.read(procfs.Proc(me.pid, me.start + 1))
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    with pytest.raises(procfs.Gone):
        procfs.Proc.of(gone.pid)


def _fake_proc(root: Path, procs: dict[int, tuple[int, list[int]]], lists: bool) -> None:
    """A /proc with ``pid: (ppid, children)``, each with a stat line in the kernel's format.

    With the children lists, every stat line names parent 0: only the lists can tell the tree.
    """
    for pid, (ppid, children) in procs.items():
        d = root / str(pid)
        (d / "task" / str(pid)).mkdir(parents=True)
        parent = 0 if lists else ppid
        (d / "stat").write_text(f"{pid} (py) S {parent} " + " ".join(["0"] * 17) + f" {1000 + pid} 0 0\n")
        if lists:
            (d / "task" / str(pid) / "children").write_text("".join(f"{c} " for c in children))
    me = root / "self" / "task" / str(os.getpid())
    me.mkdir(parents=True)
    if lists:
        (me / "children").write_text("")


@pytest.mark.parametrize("lists", [True, False], ids=["children lists", "scan"])
def test_descendants_from_the_kernels_lists_and_from_a_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lists: bool
) -> None:
    monkeypatch.setattr(procfs, "PROC", str(tmp_path))
    _fake_proc(tmp_path, {1: (0, [10, 30]), 10: (1, [11]), 11: (10, []), 30: (1, []), 40: (2, [])}, lists)
    assert procfs.has_children_lists() is lists
    found = procfs.descendants(procfs.Proc.of(1))
    assert sorted((p.pid, p.start) for p in found) == [(10, 1010), (11, 1011), (30, 1030)]
    assert procfs.descendants(procfs.Proc.of(10)) == [procfs.Proc(11, 1011)]
