"""Real Prometheus, Alertmanager and an SMTP server, started for a test on 127.0.0.1.

Prometheus and Alertmanager come from Debian's packages (`make test` installs them,
no older than the minimums in versions.env); the SMTP server is aiosmtpd, which holds a real SMTP
conversation and hands over the parsed message.  Every server binds port 0 on
127.0.0.1; the port each one got is read from the kernel's socket table.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import psutil
from aiosmtpd.smtp import SMTP, Envelope, Session

PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
PUSHGATEWAY = "/usr/bin/prometheus-pushgateway"


def listening_port(pid: int, timeout: float = 30.0) -> int:
    """The TCP port a process listens on (it was started with port 0)."""
    deadline = time.monotonic() + timeout
    proc = psutil.Process(pid)
    while time.monotonic() < deadline:
        ports = [
            conn.laddr.port
            for conn in proc.net_connections(kind="tcp")
            if conn.status == psutil.CONN_LISTEN and conn.laddr.ip == "127.0.0.1"
        ]
        if ports:
            return ports[0]
        if proc.status() == psutil.STATUS_ZOMBIE:
            raise RuntimeError(f"process {pid} exited before it listened")
        time.sleep(0.02)
    raise RuntimeError(f"process {pid} did not listen within {timeout} s")


@dataclass
class Received:
    at: float
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def part(self, subtype: str) -> str:
        body = self.message.get_body(preferencelist=(subtype,))
        assert body is not None, f"no text/{subtype} part"
        return str(body.get_content())


class SmtpSink:
    """aiosmtpd on 127.0.0.1:0 in a thread of its own; collects every message."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        sink = self

        class Handler:
            async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
                raw = envelope.original_content or b""
                message = email.message_from_bytes(raw, policy=email.policy.default)
                assert isinstance(message, EmailMessage)
                sink.messages.append(Received(time.time(), message))
                return "250 OK"

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            server = self._loop.run_until_complete(
                self._loop.create_server(lambda: SMTP(Handler()), host="127.0.0.1", port=0)
            )
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()
            server.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class Service:
    """A server binary on 127.0.0.1:0 with its own directory and log."""

    def __init__(self, argv: list[str], workdir: Path, name: str) -> None:
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=workdir)
        try:
            self.port = listening_port(self.proc.pid)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"{name} did not start:\n{self.log_path.read_text()[-3000:]}") from None
        self.url = f"http://127.0.0.1:{self.port}"

    def get_json(self, path: str, **params: str) -> Any:
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        with urllib.request.urlopen(self.url + path + query, timeout=10) as resp:
            return json.loads(resp.read())

    def ready(self) -> bool:
        """The server answers its API (Prometheus says 503 while it starts up)."""
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=10) as resp:
                return bool(resp.status == 200)
        except urllib.error.HTTPError as exc:
            if exc.code == 503:
                return False
            raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def alertmanager(config: Path, workdir: Path) -> Service:
    data = workdir / "alertmanager-data"
    data.mkdir(exist_ok=True)
    return Service(
        [
            ALERTMANAGER,
            f"--config.file={config}",
            "--web.listen-address=127.0.0.1:0",
            "--cluster.listen-address=",
            f"--storage.path={data}",
        ],
        workdir,
        "alertmanager",
    )


def prometheus(config: Path, workdir: Path) -> Service:
    data = workdir / "prometheus-data"
    data.mkdir(exist_ok=True)
    return Service(
        [
            PROMETHEUS,
            f"--config.file={config}",
            "--web.listen-address=127.0.0.1:0",
            f"--storage.tsdb.path={data}",
            "--storage.tsdb.retention.time=1h",
        ],
        workdir,
        "prometheus",
    )


def pushgateway(workdir: Path) -> Service:
    """Debian's Pushgateway, in memory only: Debian's build persists to /var/lib/prometheus by default,
    which would hand every test the groups an earlier one pushed."""
    return Service(
        [PUSHGATEWAY, "--web.listen-address=127.0.0.1:0", "--persistence.file="], workdir, "pushgateway"
    )


def have_pushgateway() -> bool:
    return shutil.which(PUSHGATEWAY) is not None


def have_binaries() -> bool:
    return all(shutil.which(b) for b in (PROMETHEUS, ALERTMANAGER))
