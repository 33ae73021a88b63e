"""Forward-protocol authentication (the handshake of in_forward's ``<security>``) on real sockets.

The handshake, as the Forward Protocol Specification v1 defines it:

* the server sends ``['HELO', {'nonce': n, 'auth': a, 'keepalive': bool}]`` on connect;
* the client answers ``['PING', client_hostname, salt, sha512_hex(salt + client_hostname + n + key),
  username, sha512_hex(a + username + password)]``;
* the server answers ``['PONG', ok, reason, server_hostname, sha512_hex(salt + server_hostname + n +
  key)]``, and closes the connection when ``ok`` is false.

The digests here are computed with hashlib straight from that text, never with the code under
test, and each side is also tested against a hand-written peer, so a mistake shared by our client
and our test server cannot cancel out.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from pipeline_sdk import Client, FluentTransport
from pipeline_sdk import contract as c
from pipeline_sdk.config import Settings
from pipeline_sdk.encoding import pack_entry
from pipeline_sdk.forward import AckForwardSender, DeliveryError, ForwardAuthError
from pipeline_sdk.transports import transport_from_settings
from tests.conftest import ForwardServerProcess, wait_for

KEY = "k3y-0f-the-test-5erver-0123456789abcdef"
T = 1_795_000_000_123_456_789
SERVER_NAME = "forward-server.test"  # the test server's self_hostname (never this machine's name)


StartServer = Callable[..., ForwardServerProcess]  # the forward_server fixture of conftest


def sha512_hex(*parts: bytes | str) -> str:
    return hashlib.sha512(b"".join(p.encode() if isinstance(p, str) else p for p in parts)).hexdigest()


def auth_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def chunk(i: int) -> tuple[list[bytes], int, str]:
    return [pack_entry(T + i, {"i": i})], 1, f"Y2h1bmst{i:04d}"


def secured(
    forward_server: StartServer, tmp_path: Path, *extra: str, key: str = KEY, port: int = 0
) -> tuple[ForwardServerProcess, Path]:
    """A test server that requires ``key``, logging each handshake to a JSON-lines file."""
    log = tmp_path / f"auth-{time.monotonic_ns()}.jsonl"
    server = forward_server(
        "--shared-key", key, "--self-hostname", SERVER_NAME, "--auth-log", str(log), *extra, port=port
    )
    return server, log


# ---- the sender against our test server ------------------------------------------------------------------


def test_the_right_key_is_delivered_over_one_kept_alive_connection(
    forward_server: StartServer, tmp_path: Path
) -> None:
    server, log = secured(forward_server, tmp_path)
    sender = AckForwardSender("127.0.0.1", server.port, timeout=5, shared_key=KEY, self_hostname="step-pod-1")
    for i in range(5):
        sender.send_chunk("mlobs.metric", *chunk(i))
    sender.close()
    assert [m.chunk for m in server.received()] == [chunk(i)[2] for i in range(5)]
    assert auth_log(log) == [{"ok": True, "reason": "", "client_hostname": "step-pod-1", "username": ""}]


def test_a_server_denying_keepalive_gets_a_handshake_per_chunk(
    forward_server: StartServer, tmp_path: Path
) -> None:
    server, log = secured(forward_server, tmp_path, "--deny-keepalive")
    sender = AckForwardSender("127.0.0.1", server.port, timeout=5, shared_key=KEY)
    for i in range(3):
        sender.send_chunk("mlobs.metric", *chunk(i))
    sender.close()
    assert len(server.received()) == 3
    assert [entry["ok"] for entry in auth_log(log)] == [True, True, True]


def test_a_wrong_key_is_refused_and_nothing_is_recorded(forward_server: StartServer, tmp_path: Path) -> None:
    server, log = secured(forward_server, tmp_path)
    sender = AckForwardSender("127.0.0.1", server.port, timeout=5, shared_key="not-" + KEY)
    with pytest.raises(ForwardAuthError) as refused:
        sender.send_chunk("mlobs.metric", *chunk(0))
    message = str(refused.value)
    assert f"Fluentd at 127.0.0.1:{server.port} refused the shared key (shared_key mismatch)" in message
    assert c.ENV_FLUENTD_SHARED_KEY in message
    assert KEY not in message and "not-" + KEY not in message, "an error never shows a key"
    assert isinstance(refused.value, DeliveryError)  # so the shipper keeps the chunk and retries
    assert server.received() == []
    assert auth_log(log) == [
        {
            "ok": False,
            "reason": "shared_key mismatch",
            "client_hostname": socket.gethostname(),
            "username": "",
        }
    ]
    sender.close()


def test_no_key_against_a_server_that_requires_one(forward_server: StartServer, tmp_path: Path) -> None:
    server, log = secured(forward_server, tmp_path)
    sender = AckForwardSender("127.0.0.1", server.port, timeout=5)
    with pytest.raises(ForwardAuthError) as refused:
        sender.send_chunk("mlobs.metric", *chunk(0))
    assert str(refused.value) == (
        f"Fluentd at 127.0.0.1:{server.port} requires the shared key (it opened the Forward "
        f"handshake with HELO), but {c.ENV_FLUENTD_SHARED_KEY} is not set: set it to the key "
        "of its <security> section"
    )
    wait_for(lambda: auth_log(log) != [], 10, "the server to refuse the chunk sent in place of a PING")
    assert [entry["reason"] for entry in auth_log(log)] == ["invalid ping message"]
    assert server.received() == []
    sender.close()


def test_a_key_against_a_server_without_security_is_not_sent_anything(forward_server: StartServer) -> None:
    """Fail closed: without HELO the server cannot prove it knows the key, so nothing is sent."""
    server = forward_server()  # no --shared-key: like in_forward without <security>, no HELO
    sender = AckForwardSender("127.0.0.1", server.port, timeout=0.3, shared_key=KEY)
    t0 = time.monotonic()
    with pytest.raises(ForwardAuthError) as refused:
        sender.send_chunk("mlobs.metric", *chunk(0))
    waited = time.monotonic() - t0
    assert 0.3 <= waited < 3
    assert str(refused.value) == (
        f"Fluentd at 127.0.0.1:{server.port} sent no HELO within 0.3 s, but "
        f"{c.ENV_FLUENTD_SHARED_KEY} is set: the receiver does not ask for the shared key "
        "(no <security> in its forward source) and so cannot prove it knows it; give it the "
        f"key, or unset {c.ENV_FLUENTD_SHARED_KEY} to send without authentication"
    )
    sender.close()
    # The server reads connections in order: once it acknowledged a later one, the first one
    # had nothing to read.
    probe = AckForwardSender("127.0.0.1", server.port, timeout=5)
    probe.send_chunk("mlobs.metric", *chunk(1))
    probe.close()
    assert [m.chunk for m in server.received()] == [chunk(1)[2]]


def test_user_authentication(forward_server: StartServer, tmp_path: Path) -> None:
    server, log = secured(forward_server, tmp_path, "--user", "alice:s3cret")
    good = AckForwardSender(
        "127.0.0.1", server.port, timeout=5, shared_key=KEY, username="alice", password="s3cret"
    )
    good.send_chunk("mlobs.metric", *chunk(0))
    good.close()
    bad = AckForwardSender(
        "127.0.0.1", server.port, timeout=5, shared_key=KEY, username="alice", password="guess"
    )
    with pytest.raises(ForwardAuthError, match=r"refused the user alice \(username/password mismatch\)"):
        bad.send_chunk("mlobs.metric", *chunk(1))
    bad.close()
    assert [m.chunk for m in server.received()] == [chunk(0)[2]]
    assert [(e["ok"], e["reason"], e["username"]) for e in auth_log(log)] == [
        (True, "", "alice"),
        (False, "username/password mismatch", "alice"),
    ]


def test_a_blank_key_is_refused_at_the_call() -> None:
    with pytest.raises(ValueError, match="shared_key must not be blank"):
        AckForwardSender("127.0.0.1", 1, shared_key=" ")


# ---- each side against a hand-written peer that follows the spec ------------------------------------------


def test_our_server_follows_the_spec(forward_server: StartServer, tmp_path: Path) -> None:
    server, _ = secured(forward_server, tmp_path)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        unpacker = msgpack.Unpacker(raw=False)

        def read() -> Any:
            while True:
                for obj in unpacker:
                    return obj
                unpacker.feed(sock.recv(4096))

        kind, options = read()
        assert kind == "HELO" and set(options) == {"nonce", "auth", "keepalive"}
        nonce = options["nonce"]
        assert isinstance(nonce, bytes) and len(nonce) == 16 and options["keepalive"] is True
        salt = os.urandom(16)
        ping = ["PING", "hand.written", salt, sha512_hex(salt, "hand.written", nonce, KEY), "", ""]
        sock.sendall(msgpack.packb(ping, use_bin_type=True))
        assert read() == ["PONG", True, "", SERVER_NAME, sha512_hex(salt, SERVER_NAME, nonce, KEY)]
        sock.sendall(msgpack.packb(["mlobs.x", [[T // 10**9, {"i": 1}]], {"chunk": "aGFuZA=="}]))
        assert read() == {"ack": "aGFuZA=="}
    assert [m.chunk for m in server.received()] == ["aGFuZA=="]


class SpecServer:
    """A one-connection Forward server written from the spec, whose PONG the test chooses."""

    def __init__(self, pong: Callable[[list[Any], bytes], list[Any]], auth: bytes = b"") -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.nonce = os.urandom(16)
        self.auth = auth
        self.pong = pong
        self.ping: list[Any] | None = None
        self.after_pong: list[Any] = []  # what the client sent once it had the PONG
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(5)
        unpacker = msgpack.Unpacker(raw=False)
        conn.sendall(
            msgpack.packb(
                ["HELO", {"nonce": self.nonce, "auth": self.auth, "keepalive": True}], use_bin_type=True
            )
        )
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                unpacker.feed(data)
                for obj in unpacker:
                    if self.ping is None:
                        self.ping = obj
                        conn.sendall(msgpack.packb(self.pong(obj, self.nonce), use_bin_type=True))
                    else:
                        self.after_pong.append(obj)
                        if isinstance(obj, list) and len(obj) == 3:
                            conn.sendall(msgpack.packb({"ack": obj[2]["chunk"]}))
        finally:
            conn.close()
            self.listener.close()

    def join(self) -> None:
        self.thread.join(5)
        assert not self.thread.is_alive()


def honest_pong(ping: list[Any], nonce: bytes) -> list[Any]:
    return ["PONG", True, "", SERVER_NAME, sha512_hex(ping[2], SERVER_NAME, nonce, KEY)]


def test_our_sender_follows_the_spec() -> None:
    peer = SpecServer(honest_pong, auth=b"user-auth-salt!!")
    sender = AckForwardSender(
        "127.0.0.1",
        peer.port,
        timeout=5,
        shared_key=KEY,
        self_hostname="step-pod-2",
        username="bob",
        password="pw",
    )
    sender.send_chunk("mlobs.metric", *chunk(7))
    sender.close()
    peer.join()
    assert peer.ping is not None
    kind, hostname, salt, digest, username, password = peer.ping
    assert (kind, hostname, username) == ("PING", "step-pod-2", "bob")
    assert isinstance(salt, bytes) and len(salt) == 16
    assert digest == sha512_hex(salt, "step-pod-2", peer.nonce, KEY)
    assert password == sha512_hex(b"user-auth-salt!!", "bob", "pw")
    assert [m[2]["chunk"] for m in peer.after_pong] == [chunk(7)[2]]


def test_without_an_auth_salt_no_user_is_sent() -> None:
    peer = SpecServer(honest_pong)
    sender = AckForwardSender(
        "127.0.0.1", peer.port, timeout=5, shared_key=KEY, username="bob", password="pw"
    )
    sender.send_chunk("mlobs.metric", *chunk(8))
    sender.close()
    peer.join()
    assert peer.ping is not None and peer.ping[4:] == ["", ""]


@pytest.mark.parametrize(
    ("pong", "expected"),
    [
        (
            lambda ping, nonce: [
                "PONG",
                True,
                "",
                SERVER_NAME,
                sha512_hex(ping[2], SERVER_NAME, nonce, "other key"),
            ],
            "did not prove it knows the shared key (its PONG digest does not match)",
        ),
        (  # a reflected PING: the client's own digest comes back under the client's own name
            lambda ping, nonce: ["PONG", True, "", ping[1], ping[3]],
            "answered the handshake with this host's own name",
        ),
        (lambda ping, nonce: ["PONG", True, ""], "answered the PING with ['PONG', True, '']"),
    ],
    ids=["wrong digest", "reflection", "malformed"],
)
def test_a_server_that_cannot_prove_the_key_gets_nothing(pong: Any, expected: str) -> None:
    peer = SpecServer(pong)
    sender = AckForwardSender("127.0.0.1", peer.port, timeout=5, shared_key=KEY)
    with pytest.raises(
        ForwardAuthError,
        match=expected.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]"),
    ):
        sender.send_chunk("mlobs.metric", *chunk(9))
    sender.close()
    peer.join()
    assert peer.ping is not None
    assert peer.after_pong == [], "no event goes to a server that did not authenticate"


# ---- through the client: retried, counted, nothing lost --------------------------------------------------


def log_values(client: Client, run_id: str, n: int) -> None:
    rec = client.recorder("train", "fit", run_id)
    for i in range(n):
        rec.log_metric("loss", i * 0.5, step=i)


def metric_indices(server: ForwardServerProcess) -> list[int]:
    return sorted(r[c.FIELD_INDEX] for m in server.received() for _, r in m.entries)


def test_a_refused_key_is_retried_and_counted_and_the_fixed_key_delivers_everything(
    home: Path, forward_server: StartServer, tmp_path: Path
) -> None:
    n = 500
    server, _ = secured(forward_server, tmp_path)
    wrong = Client(
        FluentTransport("127.0.0.1", server.port, timeout=2.0, shared_key="wrong-" + KEY), home=home
    )
    log_values(wrong, "run-wrong-key", n)
    wait_for(lambda: wrong.stats().delivery_failures >= 3, 20, "three refused deliveries")
    stats = wrong.stats()
    assert stats.delivered_events == 0 and stats.spooled_events == n
    assert stats.last_error is not None
    assert "refused the shared key (shared_key mismatch)" in stats.last_error
    assert c.ENV_FLUENTD_SHARED_KEY in stats.last_error
    assert server.event_count() == 0
    assert wrong.close(timeout=0.2) is False  # kept in the spool under MLOBS_HOME

    fixed = Client(FluentTransport("127.0.0.1", server.port, timeout=2.0, shared_key=KEY), home=home)
    assert fixed.flush(20)
    assert fixed.stats().adopted_events == n and fixed.stats().delivery_failures == 0
    assert fixed.close()
    assert metric_indices(server) == list(range(n))  # every event, exactly once


def test_a_receiver_restarted_with_the_clients_key_gets_everything(
    home: Path, forward_server: StartServer, tmp_path: Path
) -> None:
    n = 300
    first, _ = secured(forward_server, tmp_path, key="old-" + KEY)
    client = Client(FluentTransport("127.0.0.1", first.port, timeout=2.0, shared_key=KEY), home=home)
    log_values(client, "run-rotated", n)
    wait_for(lambda: client.stats().delivery_failures >= 2, 20, "refused deliveries")
    first.stop()
    second, _ = secured(forward_server, tmp_path, port=first.port)
    assert client.flush(20)
    assert client.stats().delivered_events == n
    assert client.close()
    assert first.event_count() == 0
    assert metric_indices(second) == list(range(n))


def test_the_key_comes_from_the_environment(
    home: Path, forward_server: StartServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = secured(forward_server, tmp_path)
    monkeypatch.setenv(c.ENV_FLUENTD_HOST, "127.0.0.1")
    monkeypatch.setenv(c.ENV_FLUENTD_PORT, str(server.port))
    assert Settings.from_env().fluentd_shared_key is None
    unset = Client(transport_from_settings(Settings.from_env()), home=home / "a")
    log_values(unset, "run-no-key", 3)
    wait_for(lambda: unset.stats().delivery_failures >= 1, 20, "a refused delivery")
    assert f"{c.ENV_FLUENTD_SHARED_KEY} is not set" in (unset.stats().last_error or "")
    unset.close(timeout=0.1)

    monkeypatch.setenv(c.ENV_FLUENTD_SHARED_KEY, KEY)
    settings = Settings.from_env()
    assert settings.fluentd_shared_key == KEY
    transport = transport_from_settings(settings)
    assert KEY not in repr(transport.describe())
    client = Client(transport, home=home / "b")
    log_values(client, "run-env-key", 3)
    assert client.flush(20) and client.stats().delivery_failures == 0
    client.close()
    assert metric_indices(server) == [0, 1, 2]


def test_the_handshake_never_lands_on_the_caller(
    home: Path, forward_server: StartServer, tmp_path: Path
) -> None:
    server, log = secured(forward_server, tmp_path, "--helo-delay", "1.0")
    client = Client(FluentTransport("127.0.0.1", server.port, timeout=3.0, shared_key=KEY), home=home)
    rec = client.recorder("train", "fit", "run-slow-helo")
    t0 = time.monotonic()
    slowest = 0.0
    for i in range(2000):
        t = time.perf_counter()
        rec.log_metric("loss", i * 0.5, step=i)
        slowest = max(slowest, time.perf_counter() - t)
    calls = time.monotonic() - t0
    assert calls < 0.5 and slowest < 0.1, (calls, slowest)  # the 1 s HELO wait is not the caller's
    assert client.flush(20)
    assert time.monotonic() - t0 >= 1.0  # delivery itself did wait for the HELO
    client.close()
    assert metric_indices(server) == list(range(2000))
    assert len(auth_log(log)) == 1  # one handshake: the connection was kept alive
