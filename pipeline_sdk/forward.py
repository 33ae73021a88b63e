"""Fluentd Forward protocol with acknowledgements and authentication, on top of fluent-logger.

fluent-logger 0.11 sends Message mode only and never asks for an ack, so a
Fluentd that dies after reading loses the events silently.  This sender keeps
fluent-logger's connection handling (``FluentSender._reconnect``/``_close``,
TCP or ``unix://`` sockets, the timeout) and sends PackedForward messages
``[tag, entries, {"chunk": id, "size": n}]``, then waits for ``{"ack": id}``.
Only an acknowledged chunk counts as delivered.

With a shared key (``MLOBS_FLUENTD_SHARED_KEY``) every new connection first runs the
handshake of the Forward Protocol Specification v1, which in_forward's ``<security>``
section asks for:

1. the server sends ``['HELO', {'nonce': n, 'auth': a, 'keepalive': k}]``;
2. we send ``['PING', our_hostname, salt, sha512_hex(salt + our_hostname + n + key),
   username, sha512_hex(a + username + password)]`` (the user part only when ``a`` is
   not empty, else two empty strings);
3. the server sends ``['PONG', ok, reason, its_hostname, sha512_hex(salt + its_hostname +
   n + key)]``; we check that digest too, so a receiver that does not know the key gets
   nothing.  A PONG naming our own hostname is refused: a peer that merely reflects our
   PING would otherwise pass the check.

The connection is then kept for the next chunks (unless HELO said ``keepalive: false``),
so the handshake costs one round trip per connection, on the delivery thread.

A sender with a key whose receiver sends no HELO within the timeout fails closed: that
receiver does not require the key and so cannot prove it knows it (in_forward without
``<security>`` sends nothing first).  Fluentd's own out_forward does the same: it waits
for HELO and gives up.  A sender without a key that receives HELO stops with an error
naming ``MLOBS_FLUENTD_SHARED_KEY``.  Every failure is a :class:`DeliveryError`: the
chunk stays in the spool and is sent again, so nothing is lost once the key is fixed.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import time
from collections.abc import Sequence
from typing import Any

import msgpack
from fluent.sender import FluentSender

from .contract import ENV_FLUENTD_SHARED_KEY

_UINT32 = struct.Struct(">I")
_IOV_MAX = 1024  # buffers per sendmsg() on Linux
_SALT_BYTES = 16  # of the shared_key_salt (in_forward's own nonce and salts are 16 bytes)


class DeliveryError(Exception):
    """A chunk was not acknowledged; it stays in the spool and is sent again."""


class ForwardAuthError(DeliveryError):
    """The Forward handshake failed: a key refused, missing, unexpected or not proven."""


def _sha512_hex(*parts: bytes) -> str:
    return hashlib.sha512(b"".join(parts)).hexdigest()


def _raw(value: Any) -> bytes:
    """A handshake value as the bytes Ruby's Digest hashes (msgpack bin or str)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    raise TypeError(f"expected a string, got {type(value).__name__}")


class AckForwardSender(FluentSender):  # type: ignore[misc]  # fluent-logger ships no types
    """Sends PackedForward chunks and waits for Fluentd's ack of each; authenticates if keyed."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float = 3.0,
        *,
        shared_key: str | None = None,
        self_hostname: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        if shared_key is not None and not shared_key.strip():
            raise ValueError("shared_key must not be blank: pass None to send without authentication")
        super().__init__("", host=host, port=port, timeout=timeout, nanosecond_precision=True)
        self._shared_key = shared_key
        self._self_hostname = self_hostname or socket.gethostname()
        self._username = username or ""
        self._password = password or ""
        self._authenticated = False  # the current connection finished the handshake
        self._keepalive = True  # the receiver lets us keep the connection (HELO's keepalive)
        self._new_unpacker()

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
            if self._shared_key is not None and not self._authenticated:
                self._handshake(self._shared_key)
            size = sum(len(part) for part in entries)
            head = b"\x93" + msgpack.packb(tag) + b"\xc6" + _UINT32.pack(size)  # [tag, bin32(entries),
            tail = msgpack.packb({"chunk": chunk_id, "size": count})  # option]
            self._send_parts([head, *entries, tail])
            self._await_ack(chunk_id)
            if not self._keepalive:
                self._drop_connection()
        except OSError as exc:
            self._drop_connection()
            raise DeliveryError(f"Fluentd at {self.address}: {exc or type(exc).__name__}") from exc
        except DeliveryError:
            self._drop_connection()
            raise

    # ---- the handshake -------------------------------------------------------------------------

    def _handshake(self, key: str) -> None:
        deadline = time.monotonic() + self.timeout
        try:
            helo = self._next_message(deadline, "during the handshake")
        except TimeoutError:
            raise ForwardAuthError(
                f"Fluentd at {self.address} sent no HELO within {self.timeout:g} s, but "
                f"{ENV_FLUENTD_SHARED_KEY} is set: the receiver does not ask for the shared key "
                "(no <security> in its forward source) and so cannot prove it knows it; give it the "
                f"key, or unset {ENV_FLUENTD_SHARED_KEY} to send without authentication"
            ) from None
        options = helo[1] if _is_helo(helo) else None
        if not isinstance(options, dict) or "nonce" not in options:
            raise ForwardAuthError(f"Fluentd at {self.address} opened with {helo!r:.120} instead of HELO")
        nonce, auth = _raw(options["nonce"]), _raw(options.get("auth") or b"")
        salt = os.urandom(_SALT_BYTES)
        host, secret = self._self_hostname.encode(), key.encode()
        username = self._username if auth else ""
        password = _sha512_hex(auth, username.encode(), self._password.encode()) if auth else ""
        ping = ["PING", self._self_hostname, salt, _sha512_hex(salt, host, nonce, secret), username, password]
        self._send_parts([msgpack.packb(ping, use_bin_type=True)])
        pong = self._next_message(deadline, "during the handshake")
        if not (isinstance(pong, list) and len(pong) == 5 and pong[0] == "PONG"):
            raise ForwardAuthError(f"Fluentd at {self.address} answered the PING with {pong!r:.120}")
        _, ok, reason, server_hostname, digest = pong
        if ok is not True:
            if "username" in str(reason):
                raise ForwardAuthError(f"Fluentd at {self.address} refused the user {username} ({reason})")
            raise ForwardAuthError(
                f"Fluentd at {self.address} refused the shared key ({reason}): {ENV_FLUENTD_SHARED_KEY} "
                "must hold the shared_key of the <security> section of its forward source"
            )
        if _raw(server_hostname) == host:
            raise ForwardAuthError(
                f"Fluentd at {self.address} answered the handshake with this host's own name "
                f"{self._self_hostname!r}: a reflected PING, or a receiver misconfigured with our hostname"
            )
        if digest != _sha512_hex(salt, _raw(server_hostname), nonce, secret):
            raise ForwardAuthError(
                f"Fluentd at {self.address} did not prove it knows the shared key (its PONG digest "
                f"does not match): not the receiver {ENV_FLUENTD_SHARED_KEY} belongs to"
            )
        self._keepalive = options.get("keepalive", True) is not False
        self._authenticated = True

    # ---- the transport phase -------------------------------------------------------------------

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

    def _next_message(self, deadline: float, when: str) -> Any:
        """The next msgpack object from Fluentd; TimeoutError past ``deadline``."""
        assert self.socket is not None
        try:
            while True:
                for message in self._unpacker:
                    return message
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("timed out")
                self.socket.settimeout(left)
                data = self.socket.recv(4096)
                if not data:
                    raise DeliveryError(f"Fluentd at {self.address} closed the connection {when}")
                self._unpacker.feed(data)
        finally:
            if self.socket is not None:
                self.socket.settimeout(self.timeout)

    def _await_ack(self, chunk_id: str) -> None:
        reply = self._next_message(time.monotonic() + self.timeout, "before the ack")
        if isinstance(reply, dict) and reply.get("ack") == chunk_id:
            return
        if _is_helo(reply):
            raise ForwardAuthError(
                f"Fluentd at {self.address} requires the shared key (it opened the Forward handshake "
                f"with HELO), but {ENV_FLUENTD_SHARED_KEY} is not set: set it to the key of its "
                "<security> section"
            )
        raise DeliveryError(f"Fluentd at {self.address} answered {reply!r} instead of the ack of {chunk_id}")

    def _new_unpacker(self) -> None:
        # surrogateescape: a nonce sent as msgpack str need not be UTF-8; _raw() restores its bytes
        self._unpacker = msgpack.Unpacker(raw=False, unicode_errors="surrogateescape")

    def _drop_connection(self) -> None:
        self._close()
        self._new_unpacker()
        self._authenticated = False

    def close(self) -> None:
        self._drop_connection()


def _is_helo(message: Any) -> bool:
    return isinstance(message, list) and len(message) == 2 and message[0] == "HELO"
