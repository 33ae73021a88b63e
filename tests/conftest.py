"""Shared fixtures: a real Forward-protocol server in its own process, and a refused port.

The whole session runs with ``MLOBS_HOME`` set to a temporary directory of its own (child
processes inherit it), so `make test` never writes into the user's real ``~/.mlobs``; the
session fails if it did.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline_sdk.testing.forward_server import Received, read_recorded

ROOT = Path(__file__).resolve().parents[1]
USER_STORE = Path("~/.mlobs").expanduser()  # the user's own local store: never written by a test


def _listing(path: Path) -> set[str] | None:
    return {str(p.relative_to(path)) for p in path.rglob("*")} if path.exists() else None


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_USER_STORE_KEY] = _listing(USER_STORE)
    os.environ["MLOBS_HOME"] = tempfile.mkdtemp(prefix="mlobs-test-home-")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before, after = session.config.stash[_USER_STORE_KEY], _listing(USER_STORE)
    added = sorted((after or set()) - (before or set()))
    if added:
        print(f"\nthe tests wrote into the user's {USER_STORE}: {added[:5]}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_USER_STORE_KEY = pytest.StashKey[set[str] | None]()


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.01) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class ForwardServerProcess:
    """``python -m pipeline_sdk.testing.forward_server`` run as a child process."""

    def __init__(self, workdir: Path, port: int = 0, *extra: str) -> None:
        self.workdir = workdir
        self.out = workdir / f"received-{time.monotonic_ns()}.bin"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline_sdk.testing.forward_server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--out",
                str(self.out),
                *extra,
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("LISTENING "):
            self.proc.kill()
            raise RuntimeError(f"forward server did not start: {line!r}")
        self.port = int(line.split()[1])

    def received(self) -> list[Received]:
        return list(read_recorded(self.out)) if self.out.exists() else []

    def event_count(self) -> int:
        return sum(len(m.entries) for m in self.received())

    def stall(self) -> None:
        self.proc.send_signal(signal.SIGUSR1)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGUSR2)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def forward_server(tmp_path: Path) -> Iterator[Callable[..., ForwardServerProcess]]:
    """Start forward servers on demand; all are stopped at the end of the test."""
    started: list[ForwardServerProcess] = []

    def start(*extra: str, port: int = 0) -> ForwardServerProcess:
        server = ForwardServerProcess(tmp_path, port, *extra)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 that is bound but not listening: connections are refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An MLOBS_HOME of the test's own, and no Fluentd or identity from the outside."""
    path = tmp_path / "mlobs-home"
    for var in list(os.environ):
        if var.startswith("MLOBS_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("MLOBS_HOME", str(path))
    return path
