"""Leader election of the exporter: the elector against the fake API's Leases, and two or three
exporter processes handing over while runs finish, every run's record received exactly once."""

from __future__ import annotations

import collections
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from exporters.pipeline_exporter.config import ConfigError, ExporterConfig
from exporters.pipeline_exporter.figures import FinishedRun
from exporters.pipeline_exporter.leader import ElectionSettings, FencedRecords, LeaseElector
from pipeline_sdk import contract as c
from pipeline_sdk.testing import kube_objects as k
from pipeline_sdk.testing.kube_fake import FakeKubeServer
from tests.conftest import wait_for
from tests.support.exporter_process import Exporter

NS, NAME = "mlobs", "mlobs-pipeline-exporter"


@pytest.fixture
def api() -> Iterator[FakeKubeServer]:
    server = FakeKubeServer()
    yield server
    server.close()


def request(url: str, method: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


# ---- the fake API's Leases: the real wire format and update semantics -----------------------------


def test_fake_leases_have_real_update_semantics(api: FakeKubeServer) -> None:
    base = f"{api.url}/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
    code, missing = request(f"{base}/{NAME}", "GET")
    assert (code, missing["kind"], missing["reason"], missing["code"]) == (404, "Status", "NotFound", 404)
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": NAME}}
    code, created = request(base, "POST", lease)
    assert code == 201
    version = created["metadata"]["resourceVersion"]
    assert created["metadata"]["namespace"] == NS
    code, again = request(base, "POST", lease)
    assert (code, again["reason"], again["details"]["name"]) == (409, "AlreadyExists", NAME)
    stale = {**created, "metadata": {**created["metadata"], "resourceVersion": str(int(version) - 1)}}
    code, conflict = request(f"{base}/{NAME}", "PUT", stale)
    assert (code, conflict["reason"], conflict["status"]) == (409, "Conflict", "Failure")
    code, replaced = request(f"{base}/{NAME}", "PUT", {**created, "spec": {"holderIdentity": "a"}})
    assert code == 200
    assert int(replaced["metadata"]["resourceVersion"]) == int(version) + 1
    code, conflict = request(f"{base}/{NAME}", "PUT", created)  # the version just replaced
    assert (code, conflict["reason"]) == (409, "Conflict")
    code, read = request(f"{base}/{NAME}", "GET")
    assert (code, read["spec"], read["metadata"]["uid"]) == (
        200,
        {"holderIdentity": "a"},
        created["metadata"]["uid"],
    )
    code, _ = request(
        f"{base}/other", "PUT", {**created, "metadata": {"name": "other", "resourceVersion": "1"}}
    )
    assert code == 404
    assert [m for m, _ in api.kube.requests] == ["GET", "POST", "POST", "PUT", "PUT", "PUT", "GET", "PUT"]


# ---- the elector on the fake API ------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def wall(self) -> float:
        return self.now

    def mono(self) -> float:
        return self.now


def elector(
    api: FakeKubeServer, identity: str, clock: Clock, events: list[tuple[str, Any]], through: list[float]
) -> LeaseElector:
    settings = ElectionSettings(NS, NAME, identity, lease_duration=2.0, renew_deadline=1.0, retry_period=0.2)
    return LeaseElector(
        k8s.ApiClient(k8s.Configuration(host=api.url)),
        settings,
        on_started=lambda cutoff: events.append((f"{identity} started", cutoff)),
        on_stopped=lambda: events.append((f"{identity} stopped", None)),
        counted_through=lambda: through[-1] if through else None,
        clock=clock.wall,
        monotonic=clock.mono,
    )


def spec(api: FakeKubeServer) -> dict[str, Any]:
    lease = api.kube.lease(NS, NAME)
    assert lease is not None
    return dict(lease["spec"]) | {"annotations": lease["metadata"].get("annotations")}


def test_acquire_renew_expire_take_over_and_release(api: FakeKubeServer) -> None:
    clock, events, through = Clock(), list[tuple[str, Any]](), list[float]()
    a, b = elector(api, "a", clock, events, through), elector(api, "b", clock, events, through)
    assert a.try_acquire_or_renew() is True, "no Lease: created"
    assert events == [("a started", None)], "a new Lease: a cold start, everything finished is historical"
    first = spec(api)
    assert (first["holderIdentity"], first["leaseDurationSeconds"], first["leaseTransitions"]) == ("a", 2, 0)
    assert b.try_acquire_or_renew() is False, "held and not expired"
    clock.now += 1.9
    assert b.try_acquire_or_renew() is False, "1.9 s unchanged of a 2 s lease: not yet"
    through.append(clock.now - 1.5)
    assert a.try_acquire_or_renew() is True, "renewed"
    renewed = spec(api)
    assert renewed["renewTime"] != first["renewTime"] and renewed["acquireTime"] == first["acquireTime"]
    assert renewed["annotations"] == {c.ANNOTATION_COUNTED_THROUGH: f"{through[-1]:.6f}"}
    assert b.try_acquire_or_renew() is False, "b sees the renewal: its own clock starts again"
    clock.now += 1.99
    assert b.try_acquire_or_renew() is False, "1.99 s unchanged: not expired"
    clock.now += 0.02
    assert b.try_acquire_or_renew() is True, "2.01 s unchanged: expired, taken over"
    assert events[-1] == ("b started", through[-1]), "the cutoff is a's counted-through"
    taken = spec(api)
    assert (taken["holderIdentity"], taken["leaseTransitions"]) == ("b", 1)
    assert a.try_acquire_or_renew() is False, "a's round: another holds it"
    assert a.leading is True, "one failed round does not stop a leader by itself (run() decides)"
    assert b.release() is True
    released = spec(api)
    assert released.get("holderIdentity") is None and released["leaseDurationSeconds"] == 1
    assert a.try_acquire_or_renew() is True, "a released Lease is taken at once, without waiting"
    assert spec(api)["leaseTransitions"] == 2


def test_a_write_that_loses_the_race_is_a_conflict(api: FakeKubeServer) -> None:
    clock, events, through = Clock(), list[tuple[str, Any]](), list[float]()
    a, b = elector(api, "a", clock, events, through), elector(api, "b", clock, events, through)
    assert a.try_acquire_or_renew() is True
    clock.now += 3
    assert b.try_acquire_or_renew() is False  # first sight of the record: b's clock starts now
    clock.now += 3
    # b read the Lease, then a renewed before b's write: b's replace carries a stale resourceVersion.
    real = b._api.read_namespaced_lease

    def read_then_a_renews(name: str, namespace: str) -> k8s.V1Lease:
        lease = real(name, namespace)
        assert a.try_acquire_or_renew() is True
        return lease

    b._api.read_namespaced_lease = read_then_a_renews  # type: ignore[method-assign,assignment]
    assert b.try_acquire_or_renew() is False, "409 Conflict: the round is lost"
    assert spec(api)["holderIdentity"] == "a"
    assert ("PUT", f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{NAME}") in api.kube.requests
    assert [e for e, _ in events] == ["a started"]


def test_a_leader_that_cannot_renew_stops_within_the_renew_deadline(api: FakeKubeServer) -> None:
    events: list[tuple[str, Any]] = []
    settings = ElectionSettings(NS, NAME, "a", lease_duration=2.0, renew_deadline=1.0, retry_period=0.2)
    a = LeaseElector(
        k8s.ApiClient(k8s.Configuration(host=api.url)),
        settings,
        on_started=lambda cutoff: events.append(("started", time.monotonic())),
        on_stopped=lambda: events.append(("stopped", time.monotonic())),
    )
    stop = threading.Event()
    thread = threading.Thread(target=a.run, args=(stop,), daemon=True)
    thread.start()
    wait_for(lambda: len(events) == 1, 5, "a to lead")
    api.kube.fail_requests = 10**6  # the API answers 500 from now on
    failing = time.monotonic()
    wait_for(lambda: len(events) == 2, 5, "a to stop leading")
    stop.set()
    thread.join(5)
    took = events[1][1] - failing
    assert events[1][0] == "stopped" and 0.8 <= took <= 1.6, f"stopped {took:.2f} s after the API failed"


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (
            {"leaseDuration": "1s", "renewDeadline": "1s"},
            "leaseDuration (1.0 s) must be longer than renewDeadline",
        ),
        (
            {"renewDeadline": "2s", "retryPeriod": "2s"},
            "renewDeadline (2.0 s) must be longer than 1.2 x retryPeriod",
        ),
        ({"enabled": "yes"}, "leaderElection.enabled: expected true or false, got 'yes'"),
        ({"leaseName": ""}, "leaderElection.leaseName: expected a name, got ''"),
        ({"lease": "x"}, "leaderElection: unknown keys ['lease']"),
    ],
)
def test_bad_leader_election_settings_are_refused(block: dict[str, Any], message: str) -> None:
    with pytest.raises(
        ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        ExporterConfig.parse({"leaderElection": block})


def test_leader_election_settings_parse() -> None:
    raw = {"enabled": True, "leaseName": "x", "leaseDuration": "2s", "renewDeadline": 1, "retryPeriod": 0.2}
    got = ExporterConfig.parse({"leaderElection": raw}).leader_election
    assert (got.enabled, got.lease_name, got.lease_duration, got.renew_deadline, got.retry_period) == (
        True,
        "x",
        2.0,
        1.0,
        0.2,
    )
    assert ExporterConfig.parse({}).leader_election.enabled is False


def test_the_fence_sends_only_what_ended_by_the_cutoff() -> None:
    sent: list[str] = []

    class Sink:
        def send(self, record: FinishedRun) -> None:
            sent.append(record.run_id)

    fence = FencedRecords(Sink())
    for run_id, end in (("r9", 9.0), ("r10", 10.0), ("r11", 11.0)):
        fence.send(finished(run_id, end))
    assert (fence.release(9.999), sent, fence.held) == (1, ["r9"], 2)
    assert (fence.release(10.0), sent, fence.held) == (1, ["r9", "r10"], 1), "the cutoff itself is in"
    assert (fence.drop(), fence.held, fence.dropped, sent) == (1, 0, 1, ["r9", "r10"])


def finished(run_id: str, end: float) -> FinishedRun:
    return FinishedRun(
        run_id=run_id,
        pipeline="p",
        step="s",
        namespace="ml",
        status=c.RunStatus.SUCCEEDED,
        reason=c.RunReason.COMPLETED,
        exit_code=None,
        start=end - 1,
        end=end,
        image=None,
        node=None,
        pod=None,
        attempts=1,
        per_attempt=(),
    )


# ---- exporter processes handing over ----------------------------------------------------------------

RUNS, HANDOVERS = 1000, 3


def test_failover_counts_every_run_once(api: FakeKubeServer, tmp_path: Path, forward_server) -> None:  # type: ignore[no-untyped-def]
    """1,000 runs finish while the leader is SIGKILLed three times; each kill's pod restarts (same
    identity and MLOBS_HOME, as a container restarts in its pod) and becomes the standby.

    Exactly once: the Forward receiver holds one run record per run id, no more and no fewer.  A run
    that finished while no one led ended after the last counted-through the dead leader published,
    so the new leader counts it: it is not historical, and it is not lost.
    """
    fluentd = forward_server()
    config = tmp_path / "exporter.yaml"
    election = {
        "enabled": True,
        "leaseNamespace": NS,
        "leaseDuration": 2,
        "renewDeadline": 1,
        "retryPeriod": 0.2,
    }
    config.write_text(json.dumps({"leaderElection": election}))
    pods: dict[str, Exporter] = {}

    def start(name: str) -> Exporter:
        pods[name] = Exporter(
            api.url, tmp_path / f"home-{name}", fluentd.port, "--config", str(config), MLOBS_POD_NAME=name
        )
        return pods[name]

    def leader() -> str | None:
        lease = api.kube.lease(NS, NAME)
        return lease["spec"].get("holderIdentity") if lease else None

    def gauge(name: str) -> float | None:
        try:
            return pods[name].value(c.PROM_EXPORTER_LEADER)
        except OSError:
            return None

    try:
        start("a")
        start("b")
        wait_for(lambda: leader() in pods and gauge(leader() or "") == 1, 10, "a leader")
        standby = ({"a", "b"} - {leader()}).pop()
        assert gauge(standby) == 0 and pods[standby].get("/readyz")[0] == 200, "a standby is ready"

        fed = threading.Event()

        def feed() -> None:
            for i in range(RUNS):
                now = time.time()
                for resource, _, obj in k.succeeding(k.RunSpec("train", "fit", f"run-{i}"), now - 1, now)[
                    -2:
                ]:
                    api.kube.apply(resource, obj)
                time.sleep(0.022)  # about 45 runs a second: 1,000 runs over about 22 s
            fed.set()

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        failovers = []
        for _ in range(HANDOVERS):
            time.sleep(4.5)  # runs finish under the current leader meanwhile
            old = leader()
            assert old is not None
            pods[old].proc.kill()
            pods[old].proc.wait(5)
            killed = time.monotonic()
            new = ({"a", "b"} - {old}).pop()
            wait_for(lambda new=new: gauge(new) == 1, 5, f"{new} to lead after {old} was killed")  # type: ignore[misc]
            failovers.append(time.monotonic() - killed)
            start(old)  # its pod restarts it: the standby now; it delivers what its spool holds
        wait_for(fed.is_set, 30, "every run applied")
        ids = [f"run-{i}" for i in range(RUNS)]
        wait_for(
            lambda: {r[c.TAG_RUN_ID] for m in fluentd.received() for _, r in m.entries} >= set(ids),
            15,
            "a record of every run",
        )
        time.sleep(2.0)  # a record sent twice would come within the lag (1.5 s) and a renewal
        counts = collections.Counter(r[c.TAG_RUN_ID] for m in fluentd.received() for _, r in m.entries)
        twice = {run: n for run, n in counts.items() if n != 1}
        print(f"failovers: {[round(f, 2) for f in failovers]} s; records: {sum(counts.values())}")
        assert len(failovers) == HANDOVERS and max(failovers) <= 2.0 + 0.2 + 0.5, failovers
        assert twice == {}, f"{len(twice)} runs recorded more than once"
        assert sorted(counts) == sorted(ids) and sum(counts.values()) == RUNS
        assert api.kube.lease(NS, NAME)["spec"]["leaseTransitions"] >= HANDOVERS  # type: ignore[index]
    finally:
        for exporter in pods.values():
            exporter.stop()
