"""A step that ends while the aggregators are down loses nothing when a node forwarder is up.

A real SDK process (a subprocess, as a step's container is) records a run and ends.  The node
forwarder is stood in for by the Forward-protocol receiver of pipeline_sdk.testing (the
handshake with the shared key, and an ack only once the events are written, as in_forward
acks once they are in the forwarder's file buffer); the aggregators are a port that refuses
connections.  With the chart's two tiers the SDK sends to the forwarder: every event is in the
stand-in's hands when the process has exited, its spool is empty, and the exit wait (from the
end of the step's work to the end of the process) is under a second.  The same step pointed at
the aggregators (one tier) waits its whole flush timeout and leaves its events in the pod's
spool, which dies with the pod: the reason for the forwarder tier.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pipeline_sdk import contract as c
from tests.conftest import ROOT, ForwardServerProcess

KEY = "two-tiers-shared-key-0123456789abcdef"
EVENTS = 300  # list-metric points of the step
FLUSH_TIMEOUT = 3.0  # the step's exit bound (MLOBS_FLUSH_TIMEOUT); the chart's default is 10 s

STEP = f"""
import sys, time
import pipeline_sdk
with pipeline_sdk.run(pipeline="train", step="fit", run_id="two-tiers-1") as run:
    for i in range({EVENTS}):
        run.log_metric("loss", 1.0 / (i + 1), step=i)
    sys.stdout.write(f"END {{time.monotonic_ns()}}\\n")
    sys.stdout.flush()
"""


def run_step(home: Path, port: int) -> tuple[float, str]:
    """Run the step against 127.0.0.1:port; (seconds from the end of its work to its exit, stdout)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOBS_")}
    env |= {
        c.ENV_HOME: str(home),
        c.ENV_FLUENTD_HOST: "127.0.0.1",
        c.ENV_FLUENTD_PORT: str(port),
        c.ENV_FLUENTD_SHARED_KEY: KEY,
        c.ENV_FLUSH_TIMEOUT: str(FLUSH_TIMEOUT),
        c.ENV_SYSTEM_INTERVAL: "0",
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", STEP],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=60)
    exited = time.monotonic_ns()
    assert proc.returncode == 0, err
    [end] = [int(line.split()[1]) for line in out.splitlines() if line.startswith("END ")]
    return (exited - end) / 1e9, err


def spooled(home: Path) -> int:
    """Bytes of events the SDK kept in its spool (what a pod's end would lose)."""
    return sum(p.stat().st_size for p in (home / "spool").rglob("*.seg"))


def test_the_node_forwarder_has_every_event_before_the_step_exits(
    tmp_path: Path, forward_server: Callable[..., ForwardServerProcess], refused_port: int
) -> None:
    node_forwarder = forward_server("--shared-key", KEY)
    waited, _ = run_step(tmp_path / "home", node_forwarder.port)
    received = node_forwarder.received()
    points = [r for m in received if m.tag == c.LIST_METRIC.tag for _, r in m.entries]
    runs = [r[c.TAG_STATUS] for m in received if m.tag == c.RUN.tag for _, r in m.entries]
    assert sorted(p[c.FIELD_INDEX] for p in points) == list(range(EVENTS))
    assert {p[c.TAG_RUN_ID] for p in points} == {"two-tiers-1"}
    assert runs == ["started", "succeeded"]
    assert spooled(tmp_path / "home") == 0, "nothing is left in the pod's spool"
    assert waited < 1.0, f"the step waited {waited:.3f} s at exit"
    print(f"two tiers: exit wait {waited * 1000:.0f} ms for {EVENTS + 2} events")
    assert refused_port > 0  # the aggregators stay down throughout: nothing here reaches them


def test_one_tier_with_the_aggregators_down_waits_and_keeps_the_events_in_the_pod(
    tmp_path: Path, refused_port: int
) -> None:
    waited, _ = run_step(tmp_path / "home", refused_port)
    assert FLUSH_TIMEOUT - 0.1 <= waited < FLUSH_TIMEOUT + 2.0, f"waited {waited:.3f} s"
    assert spooled(tmp_path / "home") > 0, "the events stay in a spool that dies with the pod"
