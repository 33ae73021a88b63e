"""Where spooled frames are delivered: Fluentd (Forward protocol) or the local store.

Both transports sit behind the same hand-off (:mod:`pipeline_sdk.shipper`): the
caller appends to a queue, a thread writes the spool, another delivers from it.
A transport only knows how to deliver one chunk, and raises
:class:`~pipeline_sdk.forward.DeliveryError` when it could not.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Protocol

from .config import Settings
from .forward import AckForwardSender, DeliveryError
from .frames import Chunk
from .local_store import DB_NAME, LocalStore


class Sink(Protocol):
    def deliver(self, chunk: Chunk) -> None: ...
    def close(self) -> None: ...


class Transport(Protocol):
    """A destination for events."""

    kind: str  # names the spool namespace: a dead process's spool goes to the same kind

    def open(self) -> Sink: ...
    def describe(self) -> str: ...


class FluentTransport:
    """Fluentd's Forward protocol, each chunk acknowledged; authenticated with ``shared_key``."""

    kind = "fluent"

    def __init__(
        self, host: str, port: int = 24224, timeout: float = 3.0, *, shared_key: str | None = None
    ) -> None:
        if shared_key is not None and not shared_key.strip():
            raise ValueError("shared_key must not be blank: pass None to send without authentication")
        self.host, self.port, self.timeout = host, port, timeout
        self._shared_key = shared_key  # the Forward handshake's key (MLOBS_FLUENTD_SHARED_KEY)

    def open(self) -> Sink:
        sender = AckForwardSender(self.host, self.port, self.timeout, shared_key=self._shared_key)
        return _FluentSink(sender)

    def describe(self) -> str:
        return f"Fluentd at {self.host}:{self.port}"


class _FluentSink:
    def __init__(self, sender: AckForwardSender) -> None:
        self._sender = sender

    def deliver(self, chunk: Chunk) -> None:
        self._sender.send_chunk(chunk.tag, chunk.entries, chunk.count, chunk.chunk_id)

    def close(self) -> None:
        self._sender.close()


class LocalTransport:
    """The embedded SQLite store under ``MLOBS_HOME``."""

    kind = "local"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def open(self) -> Sink:
        return _LocalSink(self.path)

    def describe(self) -> str:
        return f"the local store {self.path}"


class _LocalSink:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._store: LocalStore | None = None  # opened on first delivery, retried on failure

    def deliver(self, chunk: Chunk) -> None:
        try:
            if self._store is None:
                self._store = LocalStore(self._path)
            self._store.write_entries(chunk.tag, b"".join(chunk.entries))
        except (sqlite3.Error, OSError) as exc:  # locked by another writer, disk full, bad path...
            raise DeliveryError(f"local store {self._path}: {exc}") from exc

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def transport_from_settings(settings: Settings) -> Transport:
    """Fluentd when ``MLOBS_FLUENTD_HOST`` is set, else the local store."""
    if settings.fluentd_host:
        return FluentTransport(
            settings.fluentd_host, settings.fluentd_port, shared_key=settings.fluentd_shared_key
        )
    return LocalTransport(settings.home / DB_NAME)
