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
"""

from __future__ import annotations

import argparse
import gzip
import os
import selectors
import signal
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
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


class ForwardServer:
    def __init__(self, host: str, port: int, out: BinaryIO, ack: bool = True, stalled: bool = False) -> None:
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
            for key, _ in self.selector.select(timeout=0.5):
                if key.data is None:
                    self._accept()
                else:
                    self._read(key.data)
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
                self._handle(conn, message)
        except (ProtocolError, ValueError, TypeError, msgpack.UnpackException) as exc:
            print(f"forward_server: closing connection: {exc}", file=sys.stderr, flush=True)
            self._close(conn)

    def _handle(self, conn: _Conn, message: Any) -> None:
        tag, mode, count, entries, option = decode_message(message)
        chunk = option.get("chunk")
        self.out.write(msgpack.packb([tag, chunk, mode, count, entries], use_bin_type=True))
        self.out.flush()  # recorded before acknowledged
        self.events += count
        self.messages += 1
        if chunk is not None and self.ack:
            conn.sock.setblocking(True)
            try:
                conn.sock.sendall(msgpack.packb({"ack": chunk}))
            except OSError:
                pass  # the sender gave up on this connection; it will resend the chunk
            finally:
                conn.sock.setblocking(False)


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
    args = parser.parse_args(argv)
    with open(args.out, "ab") as out:
        server = ForwardServer(args.host, args.port, out, ack=not args.no_ack, stalled=args.stalled)

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
