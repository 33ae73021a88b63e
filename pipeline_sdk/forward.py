"""Fluentd Forward protocol with acknowledgements, on top of fluent-logger.

fluent-logger 0.11 sends Message mode only and never asks for an ack, so a
Fluentd that dies after reading loses the events silently.  This sender keeps
fluent-logger's connection handling (``FluentSender._reconnect``/``_close``,
TCP or ``unix://`` sockets, the timeout) and sends PackedForward messages
``[tag, entries, {"chunk": id, "size": n}]``, then waits for ``{"ack": id}``.
Only an acknowledged chunk counts as delivered.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence

import msgpack
from fluent.sender import FluentSender

_UINT32 = struct.Struct(">I")
_IOV_MAX = 1024  # buffers per sendmsg() on Linux


class DeliveryError(Exception):
    """A chunk was not acknowledged; it stays in the spool and is sent again."""


class AckForwardSender(FluentSender):  # type: ignore[misc]  # fluent-logger ships no types
    """Sends PackedForward chunks and waits for Fluentd's ack of each."""

    def __init__(self, host: str, port: int, timeout: float = 3.0) -> None:
        super().__init__("", host=host, port=port, timeout=timeout, nanosecond_precision=True)
        self._unpacker = msgpack.Unpacker(raw=False)

    @property
    def address(self) -> str:
        return self.host if self.host.startswith("unix://") else f"{self.host}:{self.port}"

    def send_chunk(self, tag: str, entries: Sequence[bytes], count: int, chunk_id: str) -> None:
        """Deliver one chunk; raises DeliveryError unless Fluentd acknowledged it.

        ``entries`` are the parts of the PackedForward ``entries`` blob; they are sent
        as they are (scatter-gather), never copied into one message.
        """
        try:
            self._reconnect()  # first: while Fluentd is down, a retry costs one refused connect
            assert self.socket is not None
            size = sum(len(part) for part in entries)
            head = b"\x93" + msgpack.packb(tag) + b"\xc6" + _UINT32.pack(size)  # [tag, bin32(entries),
            tail = msgpack.packb({"chunk": chunk_id, "size": count})  # option]
            self._send_parts([head, *entries, tail])
            self._await_ack(chunk_id)
        except OSError as exc:
            self._drop_connection()
            raise DeliveryError(f"Fluentd at {self.address}: {exc or type(exc).__name__}") from exc
        except DeliveryError:
            self._drop_connection()
            raise

    def _send_parts(self, parts: list[bytes]) -> None:
        """sendmsg() until every part is out, within one timeout for the whole message."""
        assert self.socket is not None
        deadline = time.monotonic() + self.timeout
        views = [memoryview(p) for p in parts if p]
        try:
            while views:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("timed out")
                self.socket.settimeout(left)
                sent = self.socket.sendmsg(views[:_IOV_MAX])
                while sent:
                    if sent >= len(views[0]):
                        sent -= len(views.pop(0))
                    else:
                        views[0] = views[0][sent:]
                        sent = 0
        finally:
            if self.socket is not None:
                self.socket.settimeout(self.timeout)

    def _await_ack(self, chunk_id: str) -> None:
        assert self.socket is not None
        while True:
            for reply in self._unpacker:
                if isinstance(reply, dict) and reply.get("ack") == chunk_id:
                    return
                raise DeliveryError(
                    f"Fluentd at {self.address} answered {reply!r} instead of the ack of {chunk_id}"
                )
            data = self.socket.recv(4096)
            if not data:
                raise DeliveryError(f"Fluentd at {self.address} closed the connection before the ack")
            self._unpacker.feed(data)

    def _drop_connection(self) -> None:
        self._close()
        self._unpacker = msgpack.Unpacker(raw=False)

    def close(self) -> None:
        self._drop_connection()
