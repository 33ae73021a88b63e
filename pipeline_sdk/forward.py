"""Fluentd Forward protocol with acknowledgements, on top of fluent-logger.

fluent-logger 0.11 sends Message mode only and never asks for an ack, so a
Fluentd that dies after reading loses the events silently.  This sender keeps
fluent-logger's connection handling (``FluentSender._reconnect``/``_close``,
TCP or ``unix://`` sockets, the timeout) and sends PackedForward messages
``[tag, entries, {"chunk": id, "size": n}]``, then waits for ``{"ack": id}``.
Only an acknowledged chunk counts as delivered.
"""

from __future__ import annotations

import msgpack
from fluent.sender import FluentSender


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

    def send_chunk(self, tag: str, entries: bytes, count: int, chunk_id: str) -> None:
        """Deliver one chunk; raises DeliveryError unless Fluentd acknowledged it."""
        try:
            self._reconnect()  # first: while Fluentd is down, a retry costs one refused connect
            assert self.socket is not None
            message = msgpack.packb([tag, entries, {"chunk": chunk_id, "size": count}], use_bin_type=True)
            self.socket.sendall(message)
            self._await_ack(chunk_id)
        except OSError as exc:
            self._drop_connection()
            raise DeliveryError(f"Fluentd at {self.address}: {exc or type(exc).__name__}") from exc
        except DeliveryError:
            self._drop_connection()
            raise

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
