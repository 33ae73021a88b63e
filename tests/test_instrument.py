"""docs/instrument.md's examples: shown verbatim, valid for their framework, and tracked by mlobs.

* The doc shows every file of examples/instrument/ verbatim (a drift check).
* Each example passes its framework's own tooling: job.yaml and cronjob.yaml kubernetes-validate
  (strict, at the Kubernetes versions the chart supports); argo_workflow.yaml Argo's Workflow
  models (hera), strictly; kfp_pipeline.py compiles with kfp and kfp-kubernetes, and
  airflow_dag.py's KubernetesPodOperator tasks build their pods, each in a venv of its own
  (tests/instrument_build.py).
* The pods each example makes (tests/instrument_pods.py: what the Job, CronJob, Argo, Kubeflow or
  Airflow controller makes of it) go through the fake Kubernetes API to the exporter's real
  watchers and tracker.  A step that fails once and is retried must come out as the runs, run ids
  and attempts the doc says, and the SDK, started with the environment Kubernetes would give each
  pod, must name the same pipeline, step, run id and attempt, and find Fluentd and its key.
* A pod whose labels are misspelt is reported as not tracked, an attempt the SDK names otherwise
  as a disagreement.

Cohesive over 400 lines: one page's examples, each through the same checks.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pydantic
import pytest
import yaml
from hera.workflows.models import Workflow as ArgoWorkflow
from kubernetes import client as k8s
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from exporters.pipeline_exporter.collectors import ExporterStats
from exporters.pipeline_exporter.figures import FinishedRun
from exporters.pipeline_exporter.tracker import RunTracker
from exporters.pipeline_exporter.watcher import Watcher, list_function
from pipeline_sdk import Client, LocalTransport
from pipeline_sdk import contract as c
from pipeline_sdk import run as sdk_run
from pipeline_sdk.config import Settings
from tests import instrument_pods as ip
from tests import kube_objects as k
from tests.conftest import ROOT, wait_for
from tests.kube_fake import FakeKubeServer
from tests.test_chart import KUBE_VERSIONS
from tests.test_job_retries import chart_step_env
from tests.test_network_policies import FLUENTD, Flow, Pod, Source, admits, core

DOC = ROOT / "docs" / "instrument.md"
EXAMPLES = ROOT / "examples" / "instrument"
EXAMPLE_FILES = ("job.yaml", "cronjob.yaml", "argo_workflow.yaml", "kfp_pipeline.py", "airflow_dag.py")
RELEASE_NS = "mlobs"  # where make up installs the release "mlobs"
SHARED_KEY = "k" * 32  # the Forward key, as the user copied it into their namespace
CLIENT_NAMESPACES = ("ml", "kubeflow-user-example-com")  # the examples' namespaces
SECRETS = {(ns, "mlobs-fluentd-forward"): {"shared-key": SHARED_KEY} for ns in CLIENT_NAMESPACES}
T0 = 1_795_000_000.0
ARGO_NAME = "train-x7k2p"  # what the workflow's generateName became
KFP_RUN = "6f1c2d3e-0a1b-4c5d-8e9f-0123456789ab"  # Kubeflow's run id
AIRFLOW_RUN = "scheduled__2026-11-22T03:00:00+00:00"  # Airflow's run id
AIRFLOW_RUN_LABEL = "scheduled__2026-11-22T0300000000-88313bebb"  # the provider's label-safe form of it


def load(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]


# ---- the doc shows the files -------------------------------------------------------------------------

_INCLUDE = re.compile(r"^<!-- example: (?P<path>\S+) -->$")
_FENCE = re.compile(r"^(`{3,})")


def shown_examples(text: str) -> dict[str, str]:
    """The code block after each ``<!-- example: PATH -->`` line (a not-run line may come between)."""
    lines = text.splitlines()
    shown: dict[str, str] = {}
    for i, line in enumerate(lines):
        include = _INCLUDE.match(line)
        if include is None:
            continue
        j = i + 1
        while j < len(lines) and lines[j].startswith("<!-- not-run:"):
            j += 1
        fence = _FENCE.match(lines[j]) if j < len(lines) else None
        if fence is None:
            raise ValueError(f"line {i + 1}: {line} is not followed by a code block")
        end = next((n for n in range(j + 1, len(lines)) if lines[n] == fence.group(1)), None)
        if end is None:
            raise ValueError(f"line {j + 1}: the code block of {include['path']} is not closed")
        shown[include["path"]] = "\n".join(lines[j + 1 : end]) + "\n"
    return shown


def drift(text: str) -> list[str]:
    """Every example file the doc does not show exactly as it is."""
    shown = shown_examples(text)
    problems = []
    for name in EXAMPLE_FILES:
        path = f"examples/instrument/{name}"
        body = (ROOT / path).read_text()
        if path not in shown:
            problems.append(f"{path}: not shown (add <!-- example: {path} --> and its code block)")
        elif shown[path] != body:
            copy, lines = shown[path].splitlines(), body.splitlines()
            pairs = enumerate(zip(copy, lines, strict=False), 1)
            diff = next((n for n, (a, b) in pairs if a != b), min(len(copy), len(lines)) + 1)
            problems.append(f"{path}: the doc's copy differs from line {diff}: copy the file again")
    problems += [
        f"{p}: shown, but no such example" for p in shown if p.rpartition("/")[2] not in EXAMPLE_FILES
    ]
    return problems


def test_the_doc_shows_every_example_as_it_is() -> None:
    assert drift(DOC.read_text()) == []
    assert sorted(p.name for p in EXAMPLES.glob("*.*") if not p.name.startswith("constraints-")) == sorted(
        EXAMPLE_FILES
    )


def test_a_copy_that_drifted_or_is_missing_is_reported() -> None:
    text = DOC.read_text()
    job = (EXAMPLES / "job.yaml").read_text().splitlines()
    n = next(i for i, line in enumerate(job) if line.strip().startswith(f"{c.LABEL_STEP}: fit"))
    changed = text.replace(job[n], job[n].replace("fit", "fitt"), 1)
    assert drift(changed) == [
        f"examples/instrument/job.yaml: the doc's copy differs from line {n + 1}: copy the file again"
    ]
    longer = text.replace(job[-1], job[-1] + "\n      extra: line", 1)
    assert drift(longer) == [
        f"examples/instrument/job.yaml: the doc's copy differs from line {len(job) + 1}: copy the file again"
    ]
    gone = text.replace("<!-- example: examples/instrument/cronjob.yaml -->", "")
    assert drift(gone) == [
        "examples/instrument/cronjob.yaml: not shown (add <!-- example: examples/instrument/cronjob.yaml --> "
        "and its code block)"
    ]
    with pytest.raises(
        ValueError, match=r"^line 2: <!-- example: a.yaml --> is not followed by a code block$"
    ):
        shown_examples("text\n<!-- example: a.yaml -->\nno block\n")
    with pytest.raises(ValueError, match=r"^line 3: the code block of a.yaml is not closed$"):
        shown_examples("<!-- example: a.yaml -->\n<!-- not-run: x -->\n```yaml\na: 1\n")


# ---- each example passes its framework's tooling -----------------------------------------------------


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("name", ["job.yaml", "cronjob.yaml"])
def test_the_kubernetes_examples_validate(name: str, kube: str) -> None:
    [doc] = load(name)
    used = kubernetes_validate.validate(doc, kube, strict=True)  # raises on an invalid object
    assert used == kube.rpartition(".")[0], "the schemas of that very version"


def test_a_misspelt_field_fails_validation() -> None:
    [job] = load("job.yaml")
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["terminationMesagePolicy"] = container.pop("terminationMessagePolicy")
    with pytest.raises(kubernetes_validate.ValidationError, match="terminationMesagePolicy"):
        kubernetes_validate.validate(job, KUBE_VERSIONS[0], strict=True)


def unknown_to_argo(raw: Any, kept: Any, where: str = "") -> list[str]:
    """Where ``raw`` has what Argo's models dropped (``kept``: the models' dump of it)."""
    if isinstance(raw, dict):
        return [
            p
            for key, value in raw.items()
            for p in (
                unknown_to_argo(value, kept[key], f"{where}.{key}")
                if isinstance(kept, dict) and key in kept
                else [f"{where}.{key}"]
            )
        ]
    if isinstance(raw, list):
        return [p for i, item in enumerate(raw) for p in unknown_to_argo(item, kept[i], f"{where}[{i}]")]
    return [] if raw == kept else [f"{where}: {raw!r} read as {kept!r}"]


def argo_problems(raw: dict[str, Any]) -> list[str]:
    """``raw`` through Argo's Workflow model (hera): its type errors, and what it does not know."""
    try:
        model = ArgoWorkflow.model_validate(raw)
    except pydantic.ValidationError as exc:
        return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    return unknown_to_argo(raw, model.model_dump(by_alias=True, exclude_none=True, mode="json"))


def test_the_argo_workflow_is_what_argos_models_read() -> None:
    [workflow] = load("argo_workflow.yaml")
    assert argo_problems(workflow) == []
    spec = ArgoWorkflow.model_validate(workflow).spec
    assert spec.pod_metadata is not None and spec.pod_metadata.labels == {
        c.LABEL_PIPELINE: "train",
        c.LABEL_RUN_ID: "{{workflow.name}}",
    }
    steps = {t.name: (t.metadata.labels if t.metadata else None) for t in spec.templates or []}
    assert steps == {"main": None, "prepare": {c.LABEL_STEP: "prepare"}, "fit": {c.LABEL_STEP: "fit"}}


def test_a_field_argo_does_not_know_is_reported() -> None:
    [workflow] = load("argo_workflow.yaml")
    workflow["spec"]["podMetdata"] = workflow["spec"].pop("podMetadata")
    workflow["spec"]["templates"][2]["retryStrategy"]["limit"] = ["2"]
    assert argo_problems(workflow) == [  # IntOrString: either reading fails
        "spec.templates.2.retryStrategy.limit.str: Input should be a valid string",
        "spec.templates.2.retryStrategy.limit.int: Input should be a valid integer",
    ]
    workflow["spec"]["templates"][2]["retryStrategy"]["limit"] = "2"
    assert argo_problems(workflow) == [".spec.podMetdata"]


def lock_problems(extra: list[str], lock: str) -> list[str]:
    """What of ``extra`` (pyproject requirements) ``lock`` (a pip freeze) does not pin, or pins outside
    the requirement's range."""
    pins = {}
    for line in lock.splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    problems = []
    for text in extra:
        req = Requirement(text)
        pinned = pins.get(canonicalize_name(req.name))
        if pinned is None:
            problems.append(f"{req.name}: not pinned")
        elif pinned not in req.specifier:
            problems.append(f"{req.name}: pinned {pinned}, outside {req.specifier}")
    return problems


@pytest.mark.parametrize("name", ["kfp", "airflow"])
def test_each_framework_venv_is_pinned_within_its_extra(name: str) -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    lock = (EXAMPLES / f"constraints-{name}.txt").read_text()
    assert lock_problems(extras[f"instrument-{name}"], lock) == []
    assert lock_problems(["kfp>=3", "numpy>=1"], "# a comment\nkfp==2.17.3\n") == [
        "kfp: pinned 2.17.3, outside >=3",
        "numpy: not pinned",
    ]


def side_venv(name: str) -> Path:
    """The interpreter of the venv make test builds for one framework (beside this venv)."""
    python = Path(sys.prefix) / f"instrument-{name}" / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{python} is missing: `make pytest` builds it (make {python.parents[1]}/.installed)")
    return python


def build(name: str, tmp: Path, *args: str) -> None:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp / "airflow-home")}
    done = subprocess.run(
        [str(side_venv(name)), str(ROOT / "tests" / "instrument_build.py"), name, *args],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def kfp_ir(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("kfp")
    build("kfp", tmp, str(tmp / "pipeline.yaml"))
    return list(yaml.safe_load_all((tmp / "pipeline.yaml").read_text()))


@pytest.fixture(scope="module")
def airflow_pods(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], dict[str, Any]]:
    """(task, try) -> the pod the provider builds for that try of the task."""
    tmp = tmp_path_factory.mktemp("airflow")
    pods = {}
    for try_number in (1, 2):
        build("airflow", tmp, str(tmp / "pods.json"), AIRFLOW_RUN, str(try_number))
        for pod in json.loads((tmp / "pods.json").read_text()):
            pods[(pod["metadata"]["labels"]["task_id"], try_number)] = pod
    return pods


def from_pod(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


IDENTITY_ENV = [
    from_pod(c.ENV_PIPELINE, f"metadata.labels['{c.LABEL_PIPELINE}']"),
    from_pod(c.ENV_STEP, f"metadata.labels['{c.LABEL_STEP}']"),
]


def test_the_kfp_pipeline_compiles_with_the_labels_and_env(kfp_ir: list[dict[str, Any]]) -> None:
    pipeline, platform = kfp_ir
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert sorted(executors) == ["exec-fit", "exec-prepare"]
    for step in ("prepare", "fit"):
        config = executors[f"exec-{step}"]
        assert config["podMetadata"] == {"labels": {c.LABEL_PIPELINE: "train", c.LABEL_STEP: step}}
        assert config["fieldPathAsEnv"] == [
            {"name": e["name"], "fieldPath": e["valueFrom"]["fieldRef"]["fieldPath"]}
            for e in [
                *IDENTITY_ENV,
                from_pod(c.ENV_RUN_ID, "metadata.name"),
                from_pod(c.ENV_POD_NAME, "metadata.name"),
                from_pod("KFP_RUN_ID", "metadata.labels['pipeline/runid']"),
            ]
        ]
        [secret] = config["secretAsEnv"]
        assert (secret["secretName"], secret["keyToEnv"]) == (
            "mlobs-fluentd-forward",
            [{"secretKey": "shared-key", "envVar": c.ENV_FLUENTD_SHARED_KEY}],
        )
        assert pipeline["deploymentSpec"]["executors"][f"exec-{step}"]["container"]["env"] == [
            {"name": c.ENV_FLUENTD_HOST, "value": "mlobs-fluentd.mlobs.svc"},
            {"name": c.ENV_FLUENTD_PORT, "value": str(c.DEFAULT_FLUENTD_PORT)},
            {"name": c.ENV_HOME, "value": "/tmp/mlobs"},
        ]
    tasks = pipeline["root"]["dag"]["tasks"]
    assert {t: body["cachingOptions"] for t, body in tasks.items()} == {"prepare": {}, "fit": {}}, "no cache"
    assert tasks["fit"]["retryPolicy"]["maxRetryCount"] == 2 and "retryPolicy" not in tasks["prepare"]


def test_the_airflow_tasks_build_pods_with_the_labels_and_env(
    airflow_pods: dict[tuple[str, int], dict[str, Any]],
) -> None:
    assert sorted(airflow_pods) == [("fit", 1), ("fit", 2), ("prepare", 1), ("prepare", 2)]
    for (task, try_number), pod in airflow_pods.items():
        labels = pod["metadata"]["labels"]
        assert {key: labels[key] for key in (c.LABEL_PIPELINE, c.LABEL_STEP, c.LABEL_RUN_ID)} == {
            c.LABEL_PIPELINE: "train",
            c.LABEL_STEP: task,
            c.LABEL_RUN_ID: AIRFLOW_RUN_LABEL,
        }
        assert labels["run_id"] == AIRFLOW_RUN_LABEL, "the provider's own run_id label: the same value"
        assert labels["try_number"] == str(try_number)
        [container] = pod["spec"]["containers"]
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
        for kube in KUBE_VERSIONS:
            assert kubernetes_validate.validate(pod, kube, strict=True) == kube.rpartition(".")[0]
    names = {pod["metadata"]["name"] for pod in airflow_pods.values()}
    assert len(names) == 4, "each try is a pod of its own name"


# ---- the pods each example makes, and what mlobs makes of them ---------------------------------------


@dataclass(frozen=True)
class Attempt:
    pod: dict[str, Any]  # the manifest, as its controller makes it
    exit_code: int  # 0: the step succeeds


@dataclass(frozen=True)
class StepRun:
    """The attempts of one step of one run, and the Job that owns them (None: bare pods)."""

    attempts: tuple[Attempt, ...]
    job: dict[str, Any] | None = None


def job_run(job: dict[str, Any], *codes: int) -> StepRun:
    return StepRun(tuple(Attempt(ip.job_pod(job, i), code) for i, code in enumerate(codes)), job)


def pods_of(*attempts: tuple[dict[str, Any], int]) -> list[StepRun]:
    return [StepRun((Attempt(pod, code),)) for pod, code in attempts]


def scenario(example: str, kfp_ir: Any = None, airflow: Any = None) -> list[StepRun]:
    """Each example's step runs: the retried step fails once, then succeeds."""
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
        first, retry = (ip.kfp_pods(kfp_ir, KFP_RUN, "kubeflow-user-example-com", n) for n in (0, 1))
        return pods_of((first["prepare"], 0), (first["fit"], 1), (retry["fit"], 0))
    assert example == "airflow_dag.py"
    return pods_of((airflow[("prepare", 1)], 0), (airflow[("fit", 1)], 1), (airflow[("fit", 2)], 0))


def served_job(job: dict[str, Any], status: k8s.V1JobStatus) -> dict[str, Any]:
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
                started = k8s.V1JobStatus(start_time=k.ts(t), active=1)
                self.server.kube.apply("jobs", served_job(run.job, started))
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

    def close(self) -> None:
        for watcher in self.watchers:
            watcher.stop()
        self.server.close()


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    running = Exporter()
    yield running
    running.close()


def summary(record: FinishedRun) -> tuple[Any, ...]:
    attempts = tuple((a.pod, a.status.value, a.exit_code) for a in record.per_attempt)
    return record.run_id, record.pipeline, record.step, record.namespace, record.status.value, attempts


def sdk_identity(env: dict[str, str], tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, ...]:
    """(pipeline, step, run id, attempt) of a run the SDK starts in this environment, and where its
    events would go (Fluentd's host, port and key)."""
    with monkeypatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("MLOBS_")]:
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        client = Client(LocalTransport(tmp / "sdk.db"), home=tmp / "spool")
        try:
            with sdk_run(client=client, capture_logs=False) as rec:
                identity = (rec.pipeline, rec.step, rec.run_id, rec.attempt)
        finally:
            client.close(timeout=5)
        settings = Settings.from_env(env)
    return (
        *identity,
        str(settings.fluentd_host),
        str(settings.fluentd_port),
        str(settings.fluentd_shared_key),
    )


def sdk_of(runs: list[StepRun], tmp: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[str, ...]]:
    """By pod name: what the SDK in each pod of ``runs`` names (see sdk_identity)."""
    return {
        a.pod["metadata"]["name"]: sdk_identity(ip.step_env(a.pod, SECRETS), tmp, monkeypatch)
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
    example_runs: list[StepRun], exporter: Exporter, tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[tuple[Any, ...]], dict[str, tuple[str, ...]]]:
    exporter.play(example_runs)
    attempts = sum(len(r.attempts) for r in example_runs)
    wait_for(
        lambda: sum(len(r.per_attempt) for r in exporter.records) == attempts, 20, f"{attempts} attempts"
    )
    sdk = sdk_of(example_runs, tmp, monkeypatch)
    assert agreement(example_runs, exporter.records, sdk) == []
    return sorted(summary(r) for r in exporter.records), sdk


def names(runs: list[StepRun]) -> list[str]:
    return [a.pod["metadata"]["name"] for run in runs for a in run.attempts]


FLUENTD_ENDS = ("mlobs-fluentd.mlobs.svc", str(c.DEFAULT_FLUENTD_PORT), SHARED_KEY)


def test_a_retried_job_is_one_run_with_an_attempt_per_pod(
    exporter: Exporter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = scenario("job.yaml")
    first, retry = names(runs)
    tracked, sdk = track(runs, exporter, tmp_path, monkeypatch)
    assert tracked == [
        (
            "train-20261122-1",
            "train",
            "fit",
            "ml",
            "succeeded",
            ((first, "failed", 1), (retry, "succeeded", None)),
        )
    ]
    assert sdk[retry] == ("train", "fit", "train-20261122-1", retry, *FLUENTD_ENDS)


def test_each_scheduled_run_of_the_cronjob_has_the_jobs_name_as_run_id(
    exporter: Exporter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = scenario("cronjob.yaml")
    once, first, retry = names(runs)
    tracked, sdk = track(runs, exporter, tmp_path, monkeypatch)
    day1, day2 = f"score-nightly-{int(T0 // 60)}", f"score-nightly-{int(T0 // 60) + 1440}"
    assert tracked == [
        (day1, "score", "batch-score", "ml", "succeeded", ((once, "succeeded", None),)),
        (day2, "score", "batch-score", "ml", "succeeded", ((first, "failed", 1), (retry, "succeeded", None))),
    ]
    assert sdk[first][2:4] == (day2, first)


def test_an_argo_retry_is_a_run_record_of_its_own_under_the_workflows_run_id(
    exporter: Exporter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = scenario("argo_workflow.yaml")
    prepare, first, retry = names(runs)
    assert all(
        p.startswith(f"{ARGO_NAME}-{s}-") for p, s in ((prepare, "prepare"), (first, "fit"), (retry, "fit"))
    )
    tracked, sdk = track(runs, exporter, tmp_path, monkeypatch)
    assert tracked == [
        (ARGO_NAME, "train", "fit", "ml", "failed", ((first, "failed", 1),)),
        (ARGO_NAME, "train", "fit", "ml", "succeeded", ((retry, "succeeded", None),)),
        (ARGO_NAME, "train", "prepare", "ml", "succeeded", ((prepare, "succeeded", None),)),
    ]
    assert sdk[retry] == ("train", "fit", ARGO_NAME, retry, *FLUENTD_ENDS)


def test_each_kfp_task_pod_is_a_run_named_by_the_pod(
    kfp_ir: list[dict[str, Any]], exporter: Exporter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = scenario("kfp_pipeline.py", kfp_ir=kfp_ir)
    prepare, first, retry = names(runs)
    tracked, sdk = track(runs, exporter, tmp_path, monkeypatch)
    ns = "kubeflow-user-example-com"
    assert tracked == sorted(
        [
            (prepare, "train", "prepare", ns, "succeeded", ((prepare, "succeeded", None),)),
            (first, "train", "fit", ns, "failed", ((first, "failed", 1),)),
            (retry, "train", "fit", ns, "succeeded", ((retry, "succeeded", None),)),
        ]
    )
    assert sdk[retry] == ("train", "fit", retry, retry, *FLUENTD_ENDS)
    assert ip.step_env(runs[0].attempts[0].pod, SECRETS)["KFP_RUN_ID"] == KFP_RUN, "the step logs it"


def test_each_airflow_try_is_a_run_record_of_its_own_under_airflows_run_id(
    airflow_pods: dict[tuple[str, int], dict[str, Any]],
    exporter: Exporter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs = scenario("airflow_dag.py", airflow=airflow_pods)
    prepare, first, retry = names(runs)
    tracked, sdk = track(runs, exporter, tmp_path, monkeypatch)
    assert tracked == sorted(
        [
            (AIRFLOW_RUN_LABEL, "train", "prepare", "ml", "succeeded", ((prepare, "succeeded", None),)),
            (AIRFLOW_RUN_LABEL, "train", "fit", "ml", "failed", ((first, "failed", 1),)),
            (AIRFLOW_RUN_LABEL, "train", "fit", "ml", "succeeded", ((retry, "succeeded", None),)),
        ]
    )
    assert sdk[retry] == ("train", "fit", AIRFLOW_RUN_LABEL, retry, *FLUENTD_ENDS)


def test_a_misspelt_label_is_reported_as_not_tracked(
    exporter: Exporter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [job] = load("job.yaml")
    typo = copy.deepcopy(job)
    typo["metadata"]["name"] = "train-fit-typo"
    for meta in (typo["metadata"], typo["spec"]["template"]["metadata"]):
        meta["labels"] = {**meta["labels"]}
        meta["labels"]["mlobs.io/pipline"] = meta["labels"].pop(c.LABEL_PIPELINE)
    runs = [job_run(typo, 0), job_run(job, 0)]  # the good one after it: the watch is in order
    exporter.play(runs)
    wait_for(lambda: len(exporter.records) == 1, 20, "the well-labelled run")
    [pod] = names(runs[:1])
    sdk = sdk_of(runs, tmp_path, monkeypatch)
    assert agreement(runs, exporter.records, sdk) == [
        f"{pod}: not tracked: no run record (its mlobs labels: "
        "{'mlobs.io/step': 'fit', 'mlobs.io/run-id': 'train-20261122-1', 'mlobs.io/pipline': 'train'})"
    ]
    assert exporter.stats.watch_events["pods"] == 2, "the watch's label selector never delivered its pod"
    assert sdk[pod][0] != "train", "MLOBS_PIPELINE is empty: the SDK falls back to the script's name"


def test_an_attempt_the_sdk_names_otherwise_is_reported(
    exporter: Exporter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLOBS_ATTEMPT from Argo's {{retries}} splits each try in two: the doc says not to set it."""
    [wf] = load("argo_workflow.yaml")
    wf["spec"]["templates"][2]["container"]["env"] = [
        *wf["spec"]["templates"][2]["container"]["env"],
        {"name": c.ENV_ATTEMPT, "value": "0"},
    ]
    runs = pods_of((ip.argo_pod(wf, ARGO_NAME, "fit", 0), 0))
    exporter.play(runs)
    wait_for(lambda: len(exporter.records) == 1, 20, "the run record")
    [pod] = names(runs)
    sdk = sdk_of(runs, tmp_path, monkeypatch)
    assert agreement(runs, exporter.records, sdk) == [
        f"{pod}: the SDK names ('train', 'fit', '{ARGO_NAME}', '0'), "
        f"the exporter ('train', 'fit', '{ARGO_NAME}', '{pod}')"
    ]


# ---- the examples and the chart agree ------------------------------------------------------------------


@cache
def chart_env() -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in chart_step_env()}


def example_env(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in ip.step_container(pod)["env"]}


RUN_ID_SOURCES = {  # where each example's MLOBS_RUN_ID comes from, when not from the run-id label
    "cronjob.yaml": "metadata.labels['batch.kubernetes.io/job-name']",
    "kfp_pipeline.py": "metadata.name",
}


def test_every_example_gives_the_sdk_what_the_chart_gives_its_own_steps(
    kfp_ir: list[dict[str, Any]], airflow_pods: dict[tuple[str, int], dict[str, Any]]
) -> None:
    chart = chart_env()
    service = next(
        d
        for d in core(None).docs
        if d["kind"] == "Service" and d["metadata"]["name"] == chart[c.ENV_FLUENTD_HOST]["value"]
    )
    assert [p["port"] for p in service["spec"]["ports"] if p["name"] == "forward"] == [c.DEFAULT_FLUENTD_PORT]
    for example in EXAMPLE_FILES:
        pod = scenario(example, kfp_ir, airflow_pods)[0].attempts[0].pod
        env = example_env(pod)
        extra = {"KFP_RUN_ID"} if example == "kfp_pipeline.py" else set()
        assert set(env) == set(chart) | extra, example
        for name, entry in chart.items():
            if name == c.ENV_FLUENTD_HOST:  # the same Service, from the step's own namespace
                assert env[name] == {"name": name, "value": f"{entry['value']}.{RELEASE_NS}.svc"}, example
            elif name == c.ENV_RUN_ID and example in RUN_ID_SOURCES:
                assert env[name] == from_pod(name, RUN_ID_SOURCES[example]), example
            else:
                assert env[name] == entry, (example, name)


def test_fluentd_admits_the_example_pods_once_their_namespace_is_a_client_namespace(
    kfp_ir: list[dict[str, Any]], airflow_pods: dict[tuple[str, int], dict[str, Any]]
) -> None:
    default = core(None)
    listed = core(None, json.dumps({"networkPolicy": {"clientNamespaces": list(CLIENT_NAMESPACES)}}))
    for example in EXAMPLE_FILES:
        meta = scenario(example, kfp_ir, airflow_pods)[0].attempts[0].pod["metadata"]
        pod = Pod(f"Pod/{meta['name']}", meta["namespace"], meta["labels"], ip="10.244.7.7")
        for stack, admitted in ((default, False), (listed, True)):
            flow = Flow(
                "forward", Source(pod.name, pod.ip, pod), stack.pod(FLUENTD), c.DEFAULT_FLUENTD_PORT, example
            )
            assert admits(stack.policies, flow) is admitted, (example, admitted)


def test_a_secret_left_in_the_release_namespace_keeps_the_step_from_starting() -> None:
    [job] = load("job.yaml")
    pod = ip.job_pod(job, 0)
    chart_only = {(RELEASE_NS, "mlobs-fluentd-forward"): {"shared-key": SHARED_KEY}}
    with pytest.raises(
        LookupError, match=r"^MLOBS_FLUENTD_SHARED_KEY: Secret ml/mlobs-fluentd-forward with key"
    ):
        ip.step_env(pod, chart_only)
