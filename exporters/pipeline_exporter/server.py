"""The exporter's HTTP endpoints, /metrics, /healthz and /readyz, on bounded resources.

A scrape must get through whatever else connects, so no client can hold a thread
or grow memory:

* One thread (the loop) accepts connections and reads request heads from all of them
  without blocking (``selectors``).  A connection that has not sent its whole head
  (request line and headers, at most ``max_head_bytes``, else 431) within ``timeout``
  seconds of being accepted is closed (with 408 if it sent part of one): the deadline
  is for the whole head, so a client dribbling a byte at a time gains nothing.
* At most ``max_connections`` are open.  A new connection at the cap closes the oldest
  one still sending its head, to make room; when every open one is being answered, the
  new one gets 503 at once.  Nothing waits in a queue of ours beyond the cap.
* ``workers`` threads answer complete requests.  Each response is written within
  ``timeout`` seconds in all, then the connection is closed (one request per
  connection, HTTP/1.0, which is all a scraper or a kubelet probe needs).
* A short reply the loop sends itself (408, 431, 503) is followed by a lingering
  close: the loop stops writing, then discards what the client still sends for up to
  ``LINGER`` seconds, so the kernel does not reset the connection (and destroy the
  reply) over unread bytes.  At most ``max_connections`` connections linger; past
  that, they are closed at once.
* /metrics is prometheus_client's own ``MetricsHandler`` (content negotiation,
  OpenMetrics, gzip, ``name[]`` filters).

So: 1 + ``workers`` threads whatever the clients do; at most ``max_connections``
sockets open for requests (and as many lingering); ``max_connections * max_head_bytes``
bytes of request heads in memory, plus one response per worker.
"""

from __future__ import annotations

import contextlib
import io
import logging
import queue
import selectors
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import urlsplit

from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import CollectorRegistry

log = logging.getLogger("mlobs.exporter")
_HEAD_ENDS = (b"\r\n\r\n", b"\n\n")
LINGER = 2.0  # seconds a connection closed with a reply of the loop's own may drain


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{name}: expected a positive number of seconds, got {value!r}")
    return float(value)


def _at_least(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected a whole number of at least {minimum}, got {value!r}")
    return value


def _head_length(data: bytes) -> int | None:
    """Length of the request head (through the blank line) in ``data``; None: not all in yet."""
    ends = [(i, len(end)) for end in _HEAD_ENDS if (i := data.find(end)) >= 0]
    if not ends:
        return None
    i, n = min(ends)
    return i + n


def canned(status: HTTPStatus) -> bytes:
    body = f"{status.phrase}\n".encode()
    head = f"HTTP/1.0 {status.value} {status.phrase}\r\nContent-Type: text/plain\r\n"
    return (head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


class _Conn:
    """A connection: its socket, the deadline of its head, and the head so far."""

    __slots__ = ("addr", "deadline", "head", "lingering", "sock")

    def __init__(self, sock: socket.socket, addr: Any, deadline: float) -> None:
        self.sock, self.addr, self.deadline, self.head = sock, addr, deadline, b""
        self.lingering = False  # replied and half-closed: draining until EOF or the deadline


class _Chunks:
    """The handler's ``wfile``: keeps what it writes (no copy), sent with a deadline at the end."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        return


class HttpServer:
    """/metrics, /healthz and /readyz with per-connection deadlines and bounded connections."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        alive: Callable[[], bool],
        ready: Callable[[], bool],
        *,
        timeout: float = 10.0,
        max_connections: int = 256,
        workers: int = 4,
        max_head_bytes: int = 8192,
    ) -> None:
        self.timeout = _positive("timeout", timeout)
        self.max_connections = _at_least("max_connections", max_connections, 1)
        self._max_head = _at_least("max_head_bytes", max_head_bytes, 1024)
        workers = _at_least("workers", workers, 1)
        self._handler = _handler_class(registry, alive, ready)
        self._listener = socket.create_server((host, port), backlog=socket.SOMAXCONN)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._pending: OrderedDict[int, _Conn] = OrderedDict()  # reading heads, oldest first
        self._lingering: OrderedDict[int, _Conn] = OrderedDict()  # draining after a reply, oldest first
        self._lock = threading.Lock()
        self._busy = 0  # handed to the workers and not closed yet
        self._work: queue.Queue[_Conn | None] = queue.Queue()  # at most max_connections in it
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._loop, name="exporter-http", daemon=True)]
        self._threads += [
            threading.Thread(target=self._worker, name=f"exporter-http-{i}", daemon=True)
            for i in range(workers)
        ]

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._pending) + self._busy

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def alive(self) -> bool:
        return all(t.is_alive() for t in self._threads)

    def close(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):  # the loop may be gone already
            self._wake_w.send(b"x")
        for _ in self._threads[1:]:
            self._work.put(None)
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(self.timeout + 1)
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    # ---- the loop: accept, read heads, enforce deadlines -----------------------------------------

    def _loop(self) -> None:
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._stopping.is_set():
                for key, _ in self._selector.select(self._wait()):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        self._wake_r.recv(64)
                    elif key.data.sock.fileno() < 0:
                        continue  # closed earlier in this batch (evicted to make room)
                    elif key.data.lingering:
                        self._drain(key.data)
                    else:
                        self._read(key.data)
                self._expire(time.monotonic())
        finally:
            for conn in [*self._pending.values(), *self._lingering.values()]:
                self._drop(conn)
            self._selector.close()

    def _wait(self) -> float | None:
        deadlines = [
            next(iter(table.values())).deadline for table in (self._pending, self._lingering) if table
        ]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _accept(self) -> None:
        while True:
            try:
                sock, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors: let the kernel queue hold them
                log.warning("accepting a connection failed: %s", exc)
                self._stopping.wait(0.1)
                return
            sock.setblocking(False)
            with self._lock:
                full = len(self._pending) + self._busy >= self.max_connections
            conn = _Conn(sock, addr, time.monotonic() + self.timeout)
            if full and not self._pending:  # every open connection is being answered
                self._linger(conn, canned(HTTPStatus.SERVICE_UNAVAILABLE))
                continue
            if full:
                self._drop(next(iter(self._pending.values())))  # the oldest one still sending its head
            with self._lock:
                self._pending[sock.fileno()] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(self._max_head + 1 - len(conn.head))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away
            self._drop(conn)
            return
        conn.head += data
        length = _head_length(conn.head)
        if length is None and len(conn.head) <= self._max_head:
            return
        if length is None or length > self._max_head:
            self._unpend(conn)
            self._linger(conn, canned(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE))
            return
        self._selector.unregister(conn.sock)
        with self._lock:
            del self._pending[conn.sock.fileno()]
            self._busy += 1
        self._work.put(conn)

    def _expire(self, now: float) -> None:
        while self._lingering and next(iter(self._lingering.values())).deadline <= now:
            self._drop(next(iter(self._lingering.values())))
        while self._pending:
            conn = next(iter(self._pending.values()))
            if conn.deadline > now:
                return
            if conn.head:  # part of a request: say why it ends
                self._unpend(conn)
                self._linger(conn, canned(HTTPStatus.REQUEST_TIMEOUT))
            else:
                self._drop(conn)

    def _unpend(self, conn: _Conn) -> None:
        self._selector.unregister(conn.sock)
        with self._lock:
            del self._pending[conn.sock.fileno()]

    def _linger(self, conn: _Conn, reply: bytes) -> None:
        """Send a short reply, stop writing, and drain what the client still sends (see LINGER)."""
        try:
            conn.sock.send(reply)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            conn.sock.close()
            return
        if len(self._lingering) >= self.max_connections:
            self._drop(next(iter(self._lingering.values())))
        conn.lingering, conn.deadline = True, time.monotonic() + min(LINGER, self.timeout)
        self._lingering[conn.sock.fileno()] = conn
        self._selector.register(conn.sock, selectors.EVENT_READ, conn)

    def _drain(self, conn: _Conn) -> None:
        try:
            if conn.sock.recv(65536):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass  # reset: nothing left to drain
        self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        """Close a connection the loop holds (reading its head, or lingering)."""
        self._selector.unregister(conn.sock)
        if conn.lingering:
            del self._lingering[conn.sock.fileno()]
        else:
            with self._lock:
                del self._pending[conn.sock.fileno()]
        conn.sock.close()

    # ---- the workers: answer complete requests ---------------------------------------------------

    def _worker(self) -> None:
        while (conn := self._work.get()) is not None:
            try:
                self._answer(conn)
            finally:
                conn.sock.close()
                with self._lock:
                    self._busy -= 1

    def _answer(self, conn: _Conn) -> None:
        deadline = time.monotonic() + self.timeout
        try:
            handler = self._handler(cast(Any, conn), conn.addr, cast(Any, self))  # read by setup() below
            parts = cast(_Chunks, handler.wfile).parts
        except Exception:
            log.exception("answering %s failed", conn.addr)
            parts = [canned(HTTPStatus.INTERNAL_SERVER_ERROR)]
        conn.sock.setblocking(True)
        try:
            for part in parts:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the response took longer than the timeout")
                conn.sock.settimeout(left)
                conn.sock.sendall(part)  # the timeout bounds the whole sendall
        except OSError as exc:
            log.debug("writing to %s failed: %s", conn.addr, exc)


def _handler_class(
    registry: CollectorRegistry, alive: Callable[[], bool], ready: Callable[[], bool]
) -> type[MetricsHandler]:
    class Handler(MetricsHandler):
        """Reads the head the loop read, writes into _Chunks; /metrics is prometheus_client's."""

        server_version = "mlobs-pipeline-exporter"

        def setup(self) -> None:
            self.rfile = io.BytesIO(cast(_Conn, self.request).head)
            self.wfile = cast(Any, _Chunks())

        def finish(self) -> None:
            return

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/metrics":
                super().do_GET()
            elif path == "/healthz":
                ok = alive()
                self._reply(200 if ok else 503, b"ok\n" if ok else b"a watch or HTTP thread died\n")
            elif path == "/readyz":
                ok = ready()
                self._reply(
                    200 if ok else 503,
                    b"ok\n" if ok else b"not ready: a watch has not listed yet, or is failing\n",
                )
            else:
                self._reply(404, b"not found: try /metrics, /healthz or /readyz\n")

        def _reply(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    Handler.registry = registry
    return Handler


def serve(
    host: str,
    port: int,
    registry: CollectorRegistry,
    alive: Callable[[], bool],
    ready: Callable[[], bool],
    **limits: Any,
) -> HttpServer:
    """Start an :class:`HttpServer` (its threads are daemons); ``server.port`` is the bound port."""
    server = HttpServer(host, port, registry, alive, ready, **limits)
    server.start()
    return server
