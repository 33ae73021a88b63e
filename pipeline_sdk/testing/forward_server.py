"""A real Fluentd Forward-protocol receiver, for tests and benchmarks.

It listens on TCP, decodes the msgpack stream in every mode the protocol has
(Message, Forward, PackedForward and CompressedPackedForward), records each
message to a file and flushes it, and only then answers ``{"ack": chunk}`` when
the message asked for one, as Fluentd's in_forward does with
``require_ack_response``.

Run it in its own process::

    python -m pipeline_sdk.testing.forward_server --port 0 --out events.bin

It prints ``LISTENING <port>`` once bound.  Signals drive the failure modes the
tests need: SIGUSR1 stops reading (connections are accepted, never read, so the
sender's socket buffers fill up), SIGUSR2 resumes, SIGTERM exits.
``--no-ack`` reads and records but never acknowledges (a hung Fluentd).

``--shared-key KEY`` requires the handshake of the Forward Protocol Specification v1,
as in_forward's ``<security>`` section does: on connect the server sends
``['HELO', {'nonce', 'auth', 'keepalive'}]``, checks the client's
``['PING', hostname, salt, sha512_hex(salt + hostname + nonce + key), user, digest]``
and answers ``['PONG', true, '', self_hostname, sha512_hex(salt + self_hostname + nonce
+ key)]``, or ``['PONG', false, reason, '', '']`` and closes the connection.  Only then
are events accepted.  ``--user NAME:PASSWORD`` (repeatable) also requires a user
(``sha512_hex(auth + name + password)``), ``--deny-keepalive`` closes the connection
after each ack, ``--helo-delay S`` sends HELO late, and ``--auth-log FILE`` appends one
JSON line per handshake: ``{"ok", "reason", "client_hostname", "username"}``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import msgpack

from pipeline_sdk.encoding import decode_event_time, entry_time_ns, pack_entry


class ProtocolError(Exception):
    pass


def decode_message(message: Any) -> tuple[str, str, int, bytes, dict[str, Any]]:
    """(tag, mode, event count, entries, option) of one Forward-protocol message.

    Every entry is decoded and checked; ``entries`` comes back as a msgpack stream
    of ``[time, record]`` (the PackedForward blob as received, or the entries of the
    other modes packed again) for :func:`read_recorded`.
    """
    if not isinstance(message, list) or len(message) not in (2, 3, 4) or not isinstance(message[0], str):
        raise ProtocolError(f"not a forward message: {str(message)[:80]}")
    tag, second = message[0], message[1]
    if isinstance(second, list):  # Forward mode
        option = message[2] if len(message) > 2 else None
        entries = [(entry_time_ns(t), _record(r)) for t, r in second]
        blob = b"".join(pack_entry(t, r) for t, r in entries)
        return tag, "forward", len(entries), blob, option or {}
    if isinstance(second, (bytes, str)):  # PackedForward, maybe compressed
        option = (message[2] if len(message) > 2 else None) or {}
        blob = second.encode("latin-1") if isinstance(second, str) else second
        mode = "packed"
        if option.get("compressed") == "gzip":
            blob, mode = gzip.decompress(blob), "compressed"
        count = 0
        unpacker = msgpack.Unpacker(raw=False, ext_hook=_event_time_bytes)
        unpacker.feed(blob)
        for time, record in unpacker:  # decode every entry and check its shape, cheaply
            if time.__class__ is not bytes:
                entry_time_ns(time)  # integer or float seconds, or an error
            if record.__class__ is not dict:
                _record(record)
            count += 1
        if "size" in option and option["size"] != count:
            raise ProtocolError(f"size option {option['size']} but {count} entries")
        return tag, mode, count, blob, option
    if len(message) in (3, 4):  # Message mode
        option = message[3] if len(message) == 4 else None
        entry = (entry_time_ns(second), _record(message[2]))
        return tag, "message", 1, pack_entry(*entry), option or {}
    raise ProtocolError("message without a record")


def _event_time_bytes(code: int, data: bytes) -> bytes:
    """ext_hook of the hot path: an EventTime stays 8 raw bytes (read_recorded decodes it)."""
    if code != 0 or len(data) != 8:
        raise ProtocolError(f"unexpected msgpack ext type {code} of {len(data)} bytes")
    return data


def _record(record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise ProtocolError(f"entry record is {type(record).__name__}, not a map")
    return record


@dataclass
class _Conn:
    sock: socket.socket
    unpacker: msgpack.Unpacker
    nonce: bytes = b""  # of the handshake; empty: no handshake on this connection
    auth_salt: bytes = b""
    established: bool = True  # the transport phase: events are accepted


@dataclass(frozen=True)
class Security:
    """What ``<security>`` of in_forward holds: the shared key, our name, the users."""

    shared_key: str
    self_hostname: str
    users: dict[str, str] = field(default_factory=dict)  # name -> password; empty: no user auth
    keepalive: bool = True  # HELO's keepalive: False closes the connection after each ack
    helo_delay: float = 0.0  # seconds before HELO is sent
    log: BinaryIO | None = None  # one JSON line per handshake


def _digest(*parts: bytes | str) -> str:
    return hashlib.sha512(b"".join(p.encode() if isinstance(p, str) else p for p in parts)).hexdigest()


class ForwardServer:
    def __init__(
        self,
        host: str,
        port: int,
        out: BinaryIO,
        *,
        ack: bool = True,
        stalled: bool = False,
        security: Security | None = None,
    ) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(128)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.out = out
        self.ack = ack
        self.stalled = stalled
        self.running = True
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.conns: dict[int, _Conn] = {}
        self.events = 0
        self.messages = 0
        self.security = security
        self.helo_due: list[tuple[float, _Conn]] = []  # HELOs held back by --helo-delay

    def set_stalled(self, stalled: bool) -> None:
        if stalled == self.stalled:
            return
        self.stalled = stalled
        for conn in self.conns.values():
            if stalled:
                self.selector.unregister(conn.sock)
            else:
                self.selector.register(conn.sock, selectors.EVENT_READ, conn)

    def serve(self) -> None:
        while self.running:
            wait = min([0.5, *(due - time.monotonic() for due, _ in self.helo_due)])
            for key, _ in self.selector.select(timeout=max(wait, 0)):
                if key.data is None:
                    self._accept()
                else:
                    self._read(key.data)
            while self.helo_due and self.helo_due[0][0] <= time.monotonic():
                conn = self.helo_due.pop(0)[1]
                if conn.sock.fileno() in self.conns:
                    self._send(conn, self._helo(conn))
        for conn in list(self.conns.values()):
            conn.sock.close()
        self.listener.close()

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        conn = _Conn(
            sock, msgpack.Unpacker(raw=False, ext_hook=decode_event_time, max_buffer_size=64 * 1024 * 1024)
        )
        self.conns[sock.fileno()] = conn
        if not self.stalled:
            self.selector.register(sock, selectors.EVENT_READ, conn)
        if self.security is not None:  # in_forward sends HELO first, before reading anything
            conn.nonce, conn.auth_salt, conn.established = os.urandom(16), os.urandom(16), False
            if self.security.helo_delay > 0:
                self.helo_due.append((time.monotonic() + self.security.helo_delay, conn))
            else:
                self._send(conn, self._helo(conn))

    def _close(self, conn: _Conn) -> None:
        if not self.stalled:  # while stalled, connections are not registered
            self.selector.unregister(conn.sock)
        self.conns.pop(conn.sock.fileno(), None)
        conn.sock.close()

    def _read(self, conn: _Conn) -> None:
        if self.stalled:  # SIGUSR1 arrived after select() reported it ready
            return
        try:
            data = conn.sock.recv(1024 * 1024)
        except BlockingIOError:
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._close(conn)  # a partial message left in the unpacker is discarded
            return
        conn.unpacker.feed(data)
        try:
            for message in conn.unpacker:
                if not self._handle(conn, message):
                    return
        except (ProtocolError, ValueError, TypeError, msgpack.UnpackException) as exc:
            print(f"forward_server: closing connection: {exc}", file=sys.stderr, flush=True)
            self._close(conn)

    def _handle(self, conn: _Conn, message: Any) -> bool:
        """Handle one message; False when the connection was closed."""
        if not conn.established:
            return self._pingpong(conn, message)
        tag, mode, count, entries, option = decode_message(message)
        chunk = option.get("chunk")
        self.out.write(msgpack.packb([tag, chunk, mode, count, entries], use_bin_type=True))
        self.out.flush()  # recorded before acknowledged
        self.events += count
        self.messages += 1
        if chunk is not None and self.ack:
            self._send(conn, {"ack": chunk})
            if self.security is not None and not self.security.keepalive:
                self._close(conn)
                return False
        return True

    def _send(self, conn: _Conn, obj: Any) -> None:
        conn.sock.setblocking(True)
        try:
            conn.sock.sendall(msgpack.packb(obj, use_bin_type=True))
        except OSError:
            pass  # the sender gave up on this connection; it will resend the chunk
        finally:
            conn.sock.setblocking(False)

    # ---- the handshake (--shared-key) ------------------------------------------------------------

    def _helo(self, conn: _Conn) -> list[Any]:
        assert self.security is not None
        return ["HELO", {"nonce": conn.nonce, "auth": conn.auth_salt, "keepalive": self.security.keepalive}]

    def _pingpong(self, conn: _Conn, ping: Any) -> bool:
        sec = self.security
        assert sec is not None
        ok, reason = self._check_ping(conn, ping)
        fields = ping[1:5:3] if isinstance(ping, list) and len(ping) == 6 else ["", ""]
        hostname, username = (f if isinstance(f, str) else "" for f in fields)
        if sec.log is not None:
            entry = {"ok": ok, "reason": reason, "client_hostname": hostname, "username": username}
            sec.log.write(json.dumps(entry).encode() + b"\n")
            sec.log.flush()
        if not ok:
            self._send(conn, ["PONG", False, reason, "", ""])
            self._close(conn)
            return False
        salt = ping[2]
        self._send(
            conn,
            [
                "PONG",
                True,
                "",
                sec.self_hostname,
                _digest(salt, sec.self_hostname, conn.nonce, sec.shared_key),
            ],
        )
        conn.established = True
        return True

    def _check_ping(self, conn: _Conn, ping: Any) -> tuple[bool, str]:
        sec = self.security
        assert sec is not None
        if not (isinstance(ping, list) and len(ping) == 6 and ping[0] == "PING"):
            return False, "invalid ping message"
        _, hostname, salt, digest, username, password = ping
        if not all(isinstance(v, (str, bytes)) for v in (hostname, salt, digest, username, password)):
            return False, "invalid ping message"
        if digest != _digest(salt, hostname, conn.nonce, sec.shared_key):
            return False, "shared_key mismatch"
        if sec.users and (
            username not in sec.users or password != _digest(conn.auth_salt, username, sec.users[username])
        ):
            return False, "username/password mismatch"
        return True, ""


@dataclass(frozen=True)
class Received:
    """One recorded message."""

    tag: str
    chunk: str | None
    mode: str
    entries: list[tuple[int, dict[str, Any]]]


def read_recorded(path: Path) -> Iterator[Received]:
    """The messages a server recorded, in arrival order (a torn tail is ignored)."""
    with open(path, "rb") as fh:
        unpacker = msgpack.Unpacker(fh, raw=False, max_buffer_size=256 * 1024 * 1024)
        for tag, chunk, mode, count, blob in unpacker:
            entries = msgpack.Unpacker(raw=False, ext_hook=decode_event_time)
            entries.feed(blob)
            decoded = [(entry_time_ns(t), r) for t, r in entries]
            assert len(decoded) == count, f"recorded {count} events but {len(decoded)} decode"
            yield Received(tag, chunk, mode, decoded)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="file the received messages are appended to")
    parser.add_argument("--no-ack", action="store_true", help="never acknowledge (a hung receiver)")
    parser.add_argument("--stalled", action="store_true", help="start without reading (see SIGUSR1/SIGUSR2)")
    parser.add_argument("--shared-key", help="require the Forward handshake with this key")
    parser.add_argument("--self-hostname", default="mlobs-forward-server", help="our name in PONG")
    parser.add_argument("--user", action="append", default=[], help="NAME:PASSWORD, requires a user")
    parser.add_argument("--deny-keepalive", action="store_true", help="close after each ack")
    parser.add_argument("--helo-delay", type=float, default=0.0, help="seconds before HELO is sent")
    parser.add_argument("--auth-log", type=Path, help="append a JSON line per handshake here")
    args = parser.parse_args(argv)
    if not args.shared_key and (args.user or args.deny_keepalive or args.helo_delay or args.auth_log):
        parser.error("--user, --deny-keepalive, --helo-delay and --auth-log need --shared-key")
    with open(args.out, "ab") as out, open(args.auth_log or os.devnull, "ab") as auth_log:
        security = None
        if args.shared_key:
            users = dict(u.split(":", 1) for u in args.user)
            security = Security(
                args.shared_key, args.self_hostname, users, not args.deny_keepalive, args.helo_delay, auth_log
            )
        server = ForwardServer(
            args.host, args.port, out, ack=not args.no_ack, stalled=args.stalled, security=security
        )

        def stop(signum: int, frame: object) -> None:
            server.running = False

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGUSR1, lambda s, f: server.set_stalled(True))
        signal.signal(signal.SIGUSR2, lambda s, f: server.set_stalled(False))
        print(f"LISTENING {server.port}", flush=True)
        server.serve()
        print(
            f"forward_server: {server.messages} messages, {server.events} events", file=sys.stderr, flush=True
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
