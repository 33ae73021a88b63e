"""docs/instrument.md's examples as runs: the pods each makes, through the exporter and the SDK.

* :func:`scenario`: the pods an example makes for one execution in which the retried step fails
  once and then succeeds (tests/support/instrument_pods.py makes them as their controllers would);
* :class:`Exporter`: the exporter's real watchers over the fake Kubernetes API (testing.kube_fake),
  folding the events into a real tracker; :meth:`Exporter.read_back` sends its run records
  through the real record sender into a local store;
* :func:`sdk_identity`: the SDK started in the environment Kubernetes would give a pod;
* :func:`agreement`: what the exporter and the SDK in each pod say differently.

The Kubeflow and Airflow pods come from the frameworks themselves, run in venvs of their own
beside this one (:func:`build`, tests/support/instrument_build.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from exporters.pipeline_exporter.collectors import ExporterStats
from exporters.pipeline_exporter.figures import FinishedRun
from exporters.pipeline_exporter.records import RecordSender
from exporters.pipeline_exporter.tracker import RunTracker
from exporters.pipeline_exporter.watcher import Watcher, list_function
from pipeline_sdk import Client, LocalTransport
from pipeline_sdk import contract as c
from pipeline_sdk import run as sdk_run
from pipeline_sdk.config import Settings
from pipeline_sdk.local_store import DB_NAME
from pipeline_sdk.testing import kube_objects as k
from pipeline_sdk.testing.kube_fake import FakeKubeServer
from tests.conftest import ROOT, wait_for
from tests.support import instrument_pods as ip

Obj = dict[str, Any]
EXAMPLES = ROOT / "examples" / "instrument"
T0 = 1_795_000_000.0
RELEASE_NS = "mlobs"  # where make up installs the release "mlobs"
SHARED_KEY = "k" * 32  # the Forward key, as the user copied it into their namespace
KFP_NS = "kubeflow-user-example-com"  # Kubeflow's profile namespace
CLIENT_NAMESPACES = ("ml", KFP_NS)  # the examples' namespaces
SECRETS = {(ns, "mlobs-fluentd-forward"): {"shared-key": SHARED_KEY} for ns in CLIENT_NAMESPACES}
FLUENTD_ENDS = (
    "mlobs-fluentd-forwarder.mlobs.svc",
    str(c.DEFAULT_FLUENTD_PORT),
    SHARED_KEY,
)  # host, port, key
ARGO_NAME = "train-x7k2p"  # what the workflow's generateName became
KFP_RUN = "6f1c2d3e-0a1b-4c5d-8e9f-0123456789ab"  # Kubeflow's run id
AIRFLOW_RUN = "scheduled__2026-11-22T03:00:00+00:00"  # Airflow's run id
AIRFLOW_TRIES = 2


def load(name: str) -> list[Obj]:
    return [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]


# ---- the frameworks, in venvs of their own ---------------------------------------------------------


def side_venv(name: str) -> Path:
    """The interpreter of the venv make test builds for one framework (beside this venv)."""
    python = Path(sys.prefix) / f"instrument-{name}" / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{python} is missing: `make pytest` builds it (make {python.parents[1]}/.installed)")
    return python


def build(name: str, tmp: Path, *args: str) -> None:
    """tests/support/instrument_build.py NAME ARGS... with that framework's venv, in ``tmp``."""
    env = {**os.environ, "AIRFLOW_HOME": str(tmp / "airflow-home")}
    done = subprocess.run(
        [str(side_venv(name)), str(ROOT / "tests" / "support" / "instrument_build.py"), name, *args],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def compiled_kfp(tmp: Path) -> list[Obj]:
    """kfp's IR of the example pipeline: the pipeline spec, then the Kubernetes platform spec."""
    build("kfp", tmp, str(tmp / "pipeline.yaml"))
    return list(yaml.safe_load_all((tmp / "pipeline.yaml").read_text()))


def airflow_pods(tmp: Path) -> tuple[dict[tuple[str, int], Obj], dict[str, int]]:
    """(task, try) -> the pod the Airflow provider builds for that try of the task; and each task's
    retries."""
    build("airflow", tmp, str(tmp / "pods.json"), AIRFLOW_RUN, str(AIRFLOW_TRIES))
    built = json.loads((tmp / "pods.json").read_text())
    return {(p["task"], p["try"]): p["pod"] for p in built}, {p["task"]: p["retries"] for p in built}


# ---- the runs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    pod: Obj  # the manifest, as its controller makes it
    exit_code: int  # 0: the step succeeds


@dataclass(frozen=True)
class StepRun:
    """The attempts of one step of one run, and the Job that owns them (None: bare pods)."""

    attempts: tuple[Attempt, ...]
    job: Obj | None = None


def job_run(job: Obj, *codes: int) -> StepRun:
    return StepRun(tuple(Attempt(ip.job_pod(job, i), code) for i, code in enumerate(codes)), job)


def pods_of(*attempts: tuple[Obj, int]) -> list[StepRun]:
    return [StepRun((Attempt(pod, code),)) for pod, code in attempts]


def scenario(example: str, kfp_ir: list[Obj] | None = None, airflow: Any = None) -> list[StepRun]:
    """An example's step runs: the retried step fails once, then succeeds (for the CronJob, on the
    second of two scheduled runs)."""
    if example == "job.yaml":
        [job] = load(example)
        return [job_run(job, 1, 0)]
    if example == "cronjob.yaml":
        [cronjob] = load(example)
        return [job_run(ip.cronjob_job(cronjob, T0), 0), job_run(ip.cronjob_job(cronjob, T0 + 86400), 1, 0)]
    if example == "argo_workflow.yaml":
        [wf] = load(example)
        return pods_of(
            (ip.argo_pod(wf, ARGO_NAME, "prepare", 0), 0),
            (ip.argo_pod(wf, ARGO_NAME, "fit", 0), 1),
            (ip.argo_pod(wf, ARGO_NAME, "fit", 1), 0),
        )
    if example == "kfp_pipeline.py":
        assert kfp_ir is not None
        first, retry = (ip.kfp_pods(kfp_ir, KFP_RUN, KFP_NS, n) for n in (0, 1))
        return pods_of((first["prepare"], 0), (first["fit"], 1), (retry["fit"], 0))
    assert example == "airflow_dag.py", example
    return pods_of((airflow[("prepare", 1)], 0), (airflow[("fit", 1)], 1), (airflow[("fit", 2)], 0))


def names(runs: list[StepRun]) -> list[str]:
    return [a.pod["metadata"]["name"] for run in runs for a in run.attempts]


def served_job(job: Obj, status: k8s.V1JobStatus) -> Obj:
    """The Job as the API serves it, with ``status``."""
    model = ip.model(job, "V1Job")
    model.metadata.uid = job["metadata"].setdefault("uid", f"uid-{job['metadata']['name']}")
    model.metadata.creation_timestamp = k.ts(T0)
    model.status = status
    return k.serialise(model)


class Exporter:
    """The exporter's watchers over the fake API, feeding a tracker whose run records are kept."""

    def __init__(self) -> None:
        self.server = FakeKubeServer()
        self.records: list[FinishedRun] = []
        self.tracker = RunTracker(records=self, settle=0.1)
        self.stats = ExporterStats()
        self._pod_events = 0  # events of pods the watch delivers (they carry the pipeline label)
        api = k8s.ApiClient(k8s.Configuration(host=self.server.url))
        self.watchers = [
            Watcher(r, list_function(api, r, None), on, self.stats, timeout_seconds=5, backoff=(0.02, 0.2))
            for r, on in (("jobs", self.tracker.on_job), ("pods", self.tracker.on_pod))
        ]
        for watcher in self.watchers:
            watcher.start()
        wait_for(lambda: all(w.synced.is_set() for w in self.watchers), 20, "the first lists")

    def send(self, record: FinishedRun) -> None:  # the tracker's record sink
        self.records.append(record)

    def play(self, runs: list[StepRun]) -> None:
        """Each run's attempts one after the other, 20 s apart; then its Job's end."""
        t = T0
        for run in runs:
            if run.job is not None:
                self.server.kube.apply(
                    "jobs", served_job(run.job, k8s.V1JobStatus(start_time=k.ts(t), active=1))
                )
            for attempt in run.attempts:
                pod, code = attempt.pod, attempt.exit_code
                phase = "Failed" if code else "Succeeded"
                self.server.kube.apply("pods", ip.served(pod, "Running", created=t, started=t + 1))
                done = ip.served(pod, phase, created=t, started=t + 1, exit_code=code, finished=t + 5)
                self.server.kube.apply("pods", done)
                self._pod_events += 2 if c.LABEL_PIPELINE in pod["metadata"]["labels"] else 0
                t += 20
            if run.job is not None:
                # The two watches are two streams: the pods' events first, as the kubelet reports
                # a pod's end before the Job controller marks the Job complete.
                wait_for(lambda: self.stats.watch_events["pods"] >= self._pod_events, 20, "the pod events")
                failed = sum(1 for a in run.attempts if a.exit_code)
                end = k8s.V1JobCondition(type="Complete", status="True", last_transition_time=k.ts(t))
                status = k8s.V1JobStatus(
                    start_time=k.ts(T0),
                    completion_time=k.ts(t),
                    succeeded=1,
                    failed=failed or None,
                    conditions=[end],
                )
                self.server.kube.apply("jobs", served_job(run.job, status))

    def counted(self, pipeline: str, step: str) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
        """The pair's finished runs by (status, reason), and its failed pods by reason: what
        mlobs_pipeline_runs_total and mlobs_pipeline_pod_failures_total count."""
        stats = self.tracker.snapshot().steps[(pipeline, step)]
        runs = {(s.value, r.value): n for (s, r), n in stats.runs.items() if n}
        return runs, {r.value: n for r, n in stats.pod_failures.items() if n}

    def read_back(self, home: Path) -> None:
        """Send every run record through the exporter's record sender into the store under ``home``."""
        client = Client(LocalTransport(home / DB_NAME), home=home / "exporter-spool")
        stats = ExporterStats()
        sender = RecordSender(client, stats)
        for record in self.records:
            sender.send(record)
        assert client.flush(10) and client.close(timeout=10)
        assert (stats.records_sent, stats.records_dropped) == (
            sum(len(r.per_attempt) for r in self.records),
            0,
        )

    def close(self) -> None:
        for watcher in self.watchers:
            watcher.stop()
        self.server.close()


def summary(record: FinishedRun) -> tuple[Any, ...]:
    attempts = tuple((a.pod, a.status.value, a.exit_code) for a in record.per_attempt)
    return record.run_id, record.pipeline, record.step, record.namespace, record.status.value, attempts


# ---- the SDK in the pod -----------------------------------------------------------------------------


def sdk_identity(
    env: dict[str, str], home: Path, monkeypatch: pytest.MonkeyPatch, *, fails: bool
) -> tuple[str, ...]:
    """(pipeline, step, run id, attempt) of the run the SDK starts in the environment ``env``, and
    where it would send events (Fluentd's host, port and key).  The run writes to the local store
    under ``home``; with ``fails``, the step raises."""
    with monkeypatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("MLOBS_")]:
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        client = Client(LocalTransport(home / DB_NAME), home=home / "sdk-spool")
        identity: tuple[str, ...] = ()
        try:
            with sdk_run(client=client, capture_logs=False) as rec:
                identity = (rec.pipeline, rec.step, rec.run_id, rec.attempt)
                if fails:
                    raise RuntimeError("bad shard")
        except RuntimeError as exc:
            assert fails and str(exc) == "bad shard", exc
        finally:
            client.close(timeout=5)
        settings = Settings.from_env(env)
    return (
        *identity,
        str(settings.fluentd_host),
        str(settings.fluentd_port),
        str(settings.fluentd_shared_key),
    )


def sdk_of(runs: list[StepRun], home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[str, ...]]:
    """By pod name: what the SDK in each pod of ``runs`` names (see sdk_identity)."""
    return {
        a.pod["metadata"]["name"]: sdk_identity(
            ip.step_env(a.pod, SECRETS), home, monkeypatch, fails=a.exit_code != 0
        )
        for run in runs
        for a in run.attempts
    }


def agreement(runs: list[StepRun], records: list[FinishedRun], sdk: dict[str, tuple[str, ...]]) -> list[str]:
    """Each pod, as the exporter recorded it and as the SDK in it named itself: what differs."""
    by_pod = {a.pod: r for r in records for a in r.per_attempt}
    problems = []
    for attempt in (a for run in runs for a in run.attempts):
        name, labels = attempt.pod["metadata"]["name"], attempt.pod["metadata"]["labels"]
        record = by_pod.get(name)
        if record is None:
            mlobs = {key: v for key, v in labels.items() if key.startswith("mlobs")}
            problems.append(f"{name}: not tracked: no run record (its mlobs labels: {mlobs})")
        elif sdk[name][:4] != (exporter_side := (record.pipeline, record.step, record.run_id, name)):
            problems.append(f"{name}: the SDK names {sdk[name][:4]}, the exporter {exporter_side}")
    return problems


def track(
    runs: list[StepRun], exporter: Exporter, home: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[tuple[Any, ...]], dict[str, tuple[str, ...]]]:
    """Play ``runs``, start the SDK in each pod, and hold the two to each other: the run records'
    summaries (sorted) and what the SDK in each pod named.  The records are read back into the
    local store under ``home``, beside the SDK's own events."""
    exporter.play(runs)
    attempts = sum(len(r.attempts) for r in runs)
    wait_for(
        lambda: sum(len(r.per_attempt) for r in exporter.records) == attempts, 20, f"{attempts} attempts"
    )
    sdk = sdk_of(runs, home, monkeypatch)
    assert agreement(runs, exporter.records, sdk) == []
    exporter.read_back(home)
    return sorted(summary(r) for r in exporter.records), sdk
