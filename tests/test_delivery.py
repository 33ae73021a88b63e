"""Durability against a real Forward-protocol server running in its own process.

Every test counts exactly: each event arrives, with its content, in order.  A
duplicate is allowed only as a whole chunk resent after a lost ack (at-least-once
delivery), and then it must be byte-for-byte the same event, so InfluxDB writes
the same point twice.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from pipeline_sdk import Client, FluentTransport
from pipeline_sdk import contract as c
from pipeline_sdk.testing.forward_server import Received
from tests.conftest import ROOT, wait_for

PIPELINE, STEP = "train", "fit"


def assert_exactly_once_in_order(messages: list[Received], run_id: str, n: int) -> int:
    """Every list-metric event 0..n-1 of ``run_id`` once, in order; returns the duplicates seen."""
    chunk_seen = Counter(m.chunk for m in messages)
    first: dict[int, tuple[float, int]] = {}
    order: list[int] = []
    duplicates = 0
    for message in messages:
        if message.tag != c.LIST_METRIC.tag:
            continue
        assert message.chunk is not None, "every message asks for an ack"
        for time_ns, record in message.entries:
            assert record[c.TAG_RUN_ID] == run_id
            assert record[c.TAG_PIPELINE] == PIPELINE and record[c.TAG_STEP] == STEP
            assert record[c.TAG_NAME] == "loss"
            index = record[c.FIELD_INDEX]
            if index in first:
                assert first[index] == (record[c.FIELD_VALUE], time_ns), f"duplicate {index} differs"
                assert chunk_seen[message.chunk] > 1, f"event {index} duplicated outside a resent chunk"
                duplicates += 1
                continue
            first[index] = (record[c.FIELD_VALUE], time_ns)
            order.append(index)
    assert len(order) == n, f"{len(order)} distinct events delivered, expected {n}"
    assert order == list(range(n)), "events out of order"
    assert all(first[i][0] == i * 0.5 for i in range(n)), "an event's value changed on the way"
    times = [first[i][1] for i in range(n)]
    assert all(a < b for a, b in itertools.pairwise(times)), "event times are not unique and increasing"
    return duplicates


def log_series(rec, n: int) -> None:  # type: ignore[no-untyped-def]
    for i in range(n):
        rec.log_metric("loss", i * 0.5, step=i)


def test_server_killed_and_restarted_mid_stream_loses_nothing(home: Path, forward_server) -> None:  # type: ignore[no-untyped-def]
    n = 100_000
    first = forward_server()
    client = Client(FluentTransport("127.0.0.1", first.port, timeout=2.0), home=home)
    rec = client.recorder(PIPELINE, STEP, "run-kill")
    second = None
    for i in range(n):
        rec.log_metric("loss", i * 0.5, step=i)
        if i == 30_000:
            wait_for(lambda: first.event_count() > 0, 20, "the first server to receive events")
            first.kill()
        elif i == 60_000:
            second = forward_server(port=first.port)
    assert second is not None
    assert client.flush(timeout=60), f"not delivered: {client.stats()}"
    stats = client.stats()
    assert client.close(timeout=5)
    messages = first.received() + second.received()
    duplicates = assert_exactly_once_in_order(messages, "run-kill", n)
    assert first.event_count() > 0 and second.event_count() > 0, "the kill was not mid-stream"
    assert stats.delivered_events == n
    assert stats.dropped_queue_full == stats.dropped_spool_full == 0
    assert stats.delivery_failures >= 1, "the kill should have been noticed"
    print(f"kill/restart: {n} events, {duplicates} duplicates from resent chunks, {stats}")


def _bound_port() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def test_server_absent_for_the_whole_run_then_started(home: Path, forward_server) -> None:  # type: ignore[no-untyped-def]
    n = 50_000
    placeholder = _bound_port()  # bound, not listening: every connect is refused
    port = placeholder.getsockname()[1]
    client = Client(FluentTransport("127.0.0.1", port, timeout=2.0), home=home)
    rec = client.recorder(PIPELINE, STEP, "run-absent")
    log_series(rec, n)
    assert client.shipper.wait_spooled(30)
    wait_for(lambda: client.stats().delivery_failures >= 2, 10, "refused deliveries")
    assert client.stats().delivered_events == 0
    assert client.stats().spooled_events == n
    placeholder.close()
    server = forward_server(port=port)
    assert client.flush(timeout=30), f"not delivered: {client.stats()}"
    assert client.close(timeout=5)
    assert_exactly_once_in_order(server.received(), "run-absent", n)


WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from pipeline_sdk import Client, FluentTransport
    port, n, run_id, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    client = Client(FluentTransport("127.0.0.1", port, timeout=1.0))
    rec = client.recorder("train", "fit", run_id)
    for i in range(n):
        rec.log_metric("loss", i * 0.5, step=i)
    if mode == "sigkill":
        assert client.shipper.wait_spooled(30)
        print("SPOOLED", client.shipper.spool_path, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    delivered = client.close(timeout=0.5)
    print("CLOSED", delivered, client.shipper.spool_path, flush=True)
    """
)


def _writer(home: Path, port: int, n: int, run_id: str, mode: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOBS_")}
    env["MLOBS_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-c", WRITER, str(port), str(n), run_id, mode],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("mode", ["exit", "sigkill"])
def test_a_later_process_delivers_what_an_earlier_one_left(home: Path, forward_server, mode: str) -> None:  # type: ignore[no-untyped-def]
    n = 20_000
    placeholder = _bound_port()
    port = placeholder.getsockname()[1]
    done = _writer(home, port, n, f"run-{mode}", mode)
    if mode == "sigkill":
        assert done.returncode == -signal.SIGKILL, done.stderr
        assert "SPOOLED" in done.stdout
    else:
        assert done.returncode == 0, done.stderr
        assert "CLOSED False" in done.stdout  # it could not deliver within its timeout
        assert "not delivered" in done.stderr  # and said so
    spool_root = home / "spool" / "fluent"
    left = [p for p in spool_root.iterdir() if any(p.glob("*.seg"))]
    assert len(left) == 1, f"expected the first process's spool under {spool_root}"
    placeholder.close()
    server = forward_server(port=port)

    later = Client(FluentTransport("127.0.0.1", port, timeout=2.0), home=home)
    assert later.flush(timeout=30), f"not delivered: {later.stats()}"
    stats = later.stats()
    assert later.close(timeout=5)
    assert stats.adopted_events == n
    assert_exactly_once_in_order(server.received(), f"run-{mode}", n)
    assert not left[0].exists(), "the delivered spool directory should be removed"


def test_server_that_accepts_but_never_reads(home: Path, forward_server) -> None:  # type: ignore[no-untyped-def]
    n = 200_000  # about 20 MB of entries: more than the loopback socket buffers hold
    server = forward_server("--stalled")
    client = Client(FluentTransport("127.0.0.1", server.port, timeout=1.0), home=home)
    rec = client.recorder(PIPELINE, STEP, "run-stalled")
    slowest = 0
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        rec.log_metric("loss", i * 0.5, step=i)
        slowest = max(slowest, clock() - t0)
    # The sender's socket filled up and timed out, while log calls went on.
    wait_for(lambda: client.stats().delivery_failures >= 1, 20, "the sender to time out on the stall")
    assert client.stats().delivered_events < n
    # fluent-logger would block each call for its 3 s timeout; ours never waits on the socket.
    assert slowest < 0.5e9, f"a log call took {slowest / 1e6:.1f} ms while the server stalled"
    server.resume()
    assert client.flush(timeout=60), f"not delivered: {client.stats()}"
    assert client.close(timeout=5)
    assert_exactly_once_in_order(server.received(), "run-stalled", n)
    print(f"stalled: slowest log call {slowest / 1e3:.0f} us")
