"""The Forward protocol on real sockets: every mode the test server decodes, and the ack rules."""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Iterator

import msgpack
import pytest
from fluent.sender import EventTime, FluentSender

from pipeline_sdk.encoding import pack_entry
from pipeline_sdk.forward import AckForwardSender, DeliveryError
from tests.conftest import wait_for

T = 1_795_000_000_123_456_789


def send(port: int, message: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(message)
        sock.shutdown(socket.SHUT_WR)
        return sock.recv(4096)


def test_message_mode_from_fluent_logger(forward_server) -> None:  # type: ignore[no-untyped-def]
    server = forward_server()
    sender = FluentSender("mlobs", host="127.0.0.1", port=server.port, nanosecond_precision=True)
    assert sender.emit_with_time("log", EventTime.from_unix_nano(T), {"message": "hello"})
    sender.close()
    wait_for(lambda: server.event_count() == 1, 10, "the message-mode event")
    [received] = server.received()
    assert (received.tag, received.mode, received.chunk) == ("mlobs.log", "message", None)
    assert received.entries == [(T, {"message": "hello"})]


def test_forward_mode_with_chunk_is_acknowledged(forward_server) -> None:  # type: ignore[no-untyped-def]
    server = forward_server()
    entries = [[EventTime.from_unix_nano(T + i), {"i": i}] for i in range(3)]
    reply = send(
        server.port, msgpack.packb(["mlobs.x", entries, {"chunk": "Y2h1bmstMQ=="}], use_bin_type=True)
    )
    assert msgpack.unpackb(reply) == {"ack": "Y2h1bmstMQ=="}
    [received] = server.received()
    assert received.mode == "forward"
    assert received.entries == [(T + i, {"i": i}) for i in range(3)]


def test_compressed_packed_forward(forward_server) -> None:  # type: ignore[no-untyped-def]
    server = forward_server()
    blob = gzip.compress(b"".join(pack_entry(T + i, {"i": i}) for i in range(5)))
    option = {"chunk": "Y2h1bmstMg==", "compressed": "gzip", "size": 5}
    reply = send(server.port, msgpack.packb(["mlobs.x", blob, option], use_bin_type=True))
    assert msgpack.unpackb(reply) == {"ack": "Y2h1bmstMg=="}
    [received] = server.received()
    assert received.mode == "compressed"
    assert [r["i"] for _, r in received.entries] == list(range(5))


def test_our_sender_gets_its_ack(forward_server) -> None:  # type: ignore[no-untyped-def]
    server = forward_server()
    sender = AckForwardSender("127.0.0.1", server.port, timeout=5)
    parts = [pack_entry(T + i, {"i": i}) for i in range(10)]  # sent scatter-gather, not joined
    sender.send_chunk("mlobs.list_metric", parts, 10, "Y2h1bmstMw==")
    sender.close()
    [received] = server.received()
    assert (received.mode, received.chunk, len(received.entries)) == ("packed", "Y2h1bmstMw==", 10)
    assert [r["i"] for _, r in received.entries] == list(range(10))


def test_a_wrong_size_is_refused_and_not_acknowledged(forward_server) -> None:  # type: ignore[no-untyped-def]
    server = forward_server()
    sender = AckForwardSender("127.0.0.1", server.port, timeout=5)
    with pytest.raises(DeliveryError, match="closed the connection before the ack"):
        sender.send_chunk("mlobs.x", [pack_entry(T, {"i": 1})], 2, "Y2h1bmstNA==")
    assert server.received() == []


@pytest.fixture
def wrong_ack_server() -> Iterator[int]:
    """A real socket peer that answers every message with someone else's ack."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    done = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        unpacker = msgpack.Unpacker(raw=False)
        while not done.is_set():
            data = conn.recv(65536)
            if not data:
                break
            unpacker.feed(data)
            for _ in unpacker:
                conn.sendall(msgpack.packb({"ack": "not-yours"}))
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    done.set()
    listener.close()


def test_a_wrong_ack_is_a_failed_delivery(wrong_ack_server: int) -> None:
    sender = AckForwardSender("127.0.0.1", wrong_ack_server, timeout=5)
    with pytest.raises(DeliveryError, match="instead of the ack"):
        sender.send_chunk("mlobs.x", [pack_entry(T, {"i": 1})], 1, "Y2h1bmstNQ==")


def test_no_ack_times_out(forward_server) -> None:  # type: ignore[no-untyped-def]
    server = forward_server("--no-ack")
    sender = AckForwardSender("127.0.0.1", server.port, timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(DeliveryError, match="timed out"):
        sender.send_chunk("mlobs.x", [pack_entry(T, {"i": 1})], 1, "Y2h1bmstNg==")
    assert time.monotonic() - t0 < 5
