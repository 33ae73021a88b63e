"""docs/instrument.md's examples as runs: what mlobs makes of the pods each one makes.

The Kubeflow example is compiled by kfp with kfp-kubernetes, and the Airflow example's
KubernetesPodOperator tasks build their pods, each in a venv of its own (tests/support/instrument_build.py).
Then the pods of every example (tests/support/instrument_pods.py: what the Job, CronJob, Argo, Kubeflow or
Airflow controller makes of it) go through the fake Kubernetes API to the exporter's real watchers
and tracker (tests/support/instrument_runs.py), for an execution whose retried step fails once and then
succeeds.  Each test pins the runs, run ids and attempts the doc says that comes out as, and what
the SDK, started with the environment Kubernetes would give each pod, names: the same pipeline,
step, run id and attempt, and Fluentd's address and key.  The run records are read back with the
SDK's own events through the read API.  A misspelt label is reported as not tracked, an attempt the
SDK names otherwise as a disagreement; the examples' env is the chart's, and Fluentd's
NetworkPolicy admits their pods once their namespace is listed.

Cohesive over 400 lines: one page's examples, each through the same checks.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from pipeline_sdk import contract as c
from pipeline_sdk.read import ReadClient
from tests.conftest import wait_for
from tests.support import instrument_pods as ip
from tests.support.instrument_runs import (
    ARGO_NAME,
    CLIENT_NAMESPACES,
    FLUENTD_ENDS,
    KFP_NS,
    KFP_RUN,
    RELEASE_NS,
    SECRETS,
    T0,
    Exporter,
    agreement,
    airflow_pods,
    compiled_kfp,
    job_run,
    load,
    names,
    pods_of,
    scenario,
    sdk_of,
    track,
)
from tests.test_chart import KUBE_VERSIONS
from tests.test_instrument import EXAMPLE_FILES
from tests.test_job_retries import chart_step_env
from tests.test_network_policies import FORWARDER, Flow, Pod, Source, admits, core

AIRFLOW_RUN_LABEL = "scheduled__2026-11-22T0300000000-88313bebb"  # the provider's label-safe run id
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def kfp_ir(tmp_path_factory: pytest.TempPathFactory) -> list[Obj]:
    return compiled_kfp(tmp_path_factory.mktemp("kfp"))


@pytest.fixture(scope="module")
def airflow_built(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[tuple[str, int], Obj], dict[str, int]]:
    return airflow_pods(tmp_path_factory.mktemp("airflow"))


@pytest.fixture
def airflow(airflow_built: tuple[dict[tuple[str, int], Obj], dict[str, int]]) -> dict[tuple[str, int], Obj]:
    """(task, try) -> the pod the provider builds for that try."""
    return airflow_built[0]


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    running = Exporter()
    yield running
    running.close()


# ---- the frameworks build them -------------------------------------------------------------------------


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
            {"name": c.ENV_FLUENTD_HOST, "value": "mlobs-fluentd-forwarder.mlobs.svc"},
            {"name": c.ENV_FLUENTD_PORT, "value": str(c.DEFAULT_FLUENTD_PORT)},
            {"name": c.ENV_HOME, "value": "/tmp/mlobs"},
        ]
    tasks = pipeline["root"]["dag"]["tasks"]
    assert {t: body["cachingOptions"] for t, body in tasks.items()} == {"prepare": {}, "fit": {}}, "no cache"
    assert tasks["fit"]["retryPolicy"]["maxRetryCount"] == 2 and "retryPolicy" not in tasks["prepare"]


def test_the_airflow_tasks_build_pods_with_the_labels_and_env(
    airflow_built: tuple[dict[tuple[str, int], Obj], dict[str, int]],
) -> None:
    airflow, retries = airflow_built
    assert retries == {"prepare": 0, "fit": 2}
    assert sorted(airflow) == [("fit", 1), ("fit", 2), ("prepare", 1), ("prepare", 2)]
    for (task, try_number), pod in airflow.items():
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
    names = {pod["metadata"]["name"] for pod in airflow.values()}
    assert len(names) == 4, "each try is a pod of its own name"


# ---- what mlobs makes of them ----------------------------------------------------------------------


def read(home: Path, run_id: str, step: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """What the read API shows: each step run listed (run id, step, latest attempt, its key, status),
    and the attempts of (run_id, step) (number, key, status, reason, error)."""
    with ReadClient(home=home) as reader:
        listed = [
            (r["run_id"], r["step"], r["attempt"], r["attempt_key"], r["status"]) for r in reader.runs()
        ]
        shown = reader.run(run_id, step=step)["attempts"]
    return sorted(listed), [(a["attempt"], a["key"], a["status"], a["reason"], a["error"]) for a in shown]


FAILED, OK = ("failed", "Error", "RuntimeError: bad shard"), ("succeeded", "Completed", None)
ONE_FAILED_POD = {"Error": 1}  # mlobs_pipeline_pod_failures_total: the try that failed


def test_a_retried_job_is_one_run_with_an_attempt_per_pod(
    exporter: Exporter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = scenario("job.yaml")
    first, retry = names(runs)
    assert runs[0].job is not None and runs[0].job["spec"]["backoffLimit"] == 2
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
    assert exporter.counted("train", "fit") == ({("succeeded", "Completed"): 1}, ONE_FAILED_POD)
    assert read(tmp_path, "train-20261122-1", "fit") == (
        [("train-20261122-1", "fit", 2, retry, "succeeded")],
        [(1, first, *FAILED), (2, retry, *OK)],
    )


def test_each_scheduled_run_of_the_cronjob_has_the_jobs_name_as_run_id(
    exporter: Exporter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = scenario("cronjob.yaml")
    once, first, retry = names(runs)
    assert runs[1].job is not None and runs[1].job["spec"]["backoffLimit"] == 1
    tracked, sdk = track(runs, exporter, tmp_path, monkeypatch)
    day1, day2 = f"score-nightly-{int(T0 // 60)}", f"score-nightly-{int(T0 // 60) + 1440}"
    assert tracked == [
        (day1, "score", "batch-score", "ml", "succeeded", ((once, "succeeded", None),)),
        (day2, "score", "batch-score", "ml", "succeeded", ((first, "failed", 1), (retry, "succeeded", None))),
    ]
    assert sdk[first][2:4] == (day2, first)
    assert exporter.counted("score", "batch-score") == ({("succeeded", "Completed"): 2}, ONE_FAILED_POD)
    assert read(tmp_path, day2, "batch-score") == (
        [(day1, "batch-score", 1, once, "succeeded"), (day2, "batch-score", 2, retry, "succeeded")],
        [(1, first, *FAILED), (2, retry, *OK)],
    )


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
    each_try = {("failed", "Error"): 1, ("succeeded", "Completed"): 1}  # each try counts as a run
    assert exporter.counted("train", "fit") == (each_try, ONE_FAILED_POD)
    assert read(tmp_path, ARGO_NAME, "fit") == (
        [(ARGO_NAME, "fit", 2, retry, "succeeded"), (ARGO_NAME, "prepare", 1, prepare, "succeeded")],
        [(1, first, *FAILED), (2, retry, *OK)],
    ), "one step run, an attempt per try"


def test_each_kfp_task_pod_is_a_run_named_by_the_pod(
    kfp_ir: list[dict[str, Any]], exporter: Exporter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = scenario("kfp_pipeline.py", kfp_ir=kfp_ir)
    prepare, first, retry = names(runs)
    tracked, sdk = track(runs, exporter, tmp_path, monkeypatch)
    ns = KFP_NS
    assert tracked == sorted(
        [
            (prepare, "train", "prepare", ns, "succeeded", ((prepare, "succeeded", None),)),
            (first, "train", "fit", ns, "failed", ((first, "failed", 1),)),
            (retry, "train", "fit", ns, "succeeded", ((retry, "succeeded", None),)),
        ]
    )
    assert sdk[retry] == ("train", "fit", retry, retry, *FLUENTD_ENDS)
    assert ip.step_env(runs[0].attempts[0].pod, SECRETS)["KFP_RUN_ID"] == KFP_RUN, "the step logs it"
    each_try = {("failed", "Error"): 1, ("succeeded", "Completed"): 1}
    assert exporter.counted("train", "fit") == (each_try, ONE_FAILED_POD)
    listed, shown = read(tmp_path, retry, "fit")
    assert (listed, shown) == (
        sorted(
            [
                (p, s, 1, p, st)
                for p, s, st in (
                    (prepare, "prepare", "succeeded"),
                    (first, "fit", "failed"),
                    (retry, "fit", "succeeded"),
                )
            ]
        ),
        [(1, retry, *OK)],
    ), "a retried task is a new run"


def test_each_airflow_try_is_a_run_record_of_its_own_under_airflows_run_id(
    airflow: dict[tuple[str, int], Obj],
    exporter: Exporter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs = scenario("airflow_dag.py", airflow=airflow)
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
    each_try = {("failed", "Error"): 1, ("succeeded", "Completed"): 1}
    assert exporter.counted("train", "fit") == (each_try, ONE_FAILED_POD)
    run = AIRFLOW_RUN_LABEL
    assert read(tmp_path, run, "fit") == (
        [(run, "fit", 2, retry, "succeeded"), (run, "prepare", 1, prepare, "succeeded")],
        [(1, first, *FAILED), (2, retry, *OK)],
    )


@pytest.mark.xfail(
    strict=True,
    reason="the exporter takes a pod's first container's image, and Argo's (and so Kubeflow's) first "
    "container is its own wait container: the run record names argoexec, not the step's image",
)
def test_an_argo_pods_run_record_names_the_steps_image(exporter: Exporter) -> None:
    runs = scenario("argo_workflow.yaml")[:1]
    exporter.play(runs)
    wait_for(lambda: len(exporter.records) == 1, 20, "the run record")
    [record] = exporter.records
    assert ip.step_container(runs[0].attempts[0].pod)["image"] == "registry.example.com/ml/train:1.0"
    assert (record.image, record.per_attempt[0].image) == ("registry.example.com/ml/train:1.0",) * 2


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
    kfp_ir: list[dict[str, Any]], airflow: dict[tuple[str, int], Obj]
) -> None:
    chart = chart_env()
    service = next(
        d
        for d in core(None).docs
        if d["kind"] == "Service" and d["metadata"]["name"] == chart[c.ENV_FLUENTD_HOST]["value"]
    )
    assert [p["port"] for p in service["spec"]["ports"] if p["name"] == "forward"] == [c.DEFAULT_FLUENTD_PORT]
    for example in EXAMPLE_FILES:
        pod = scenario(example, kfp_ir, airflow)[0].attempts[0].pod
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
    kfp_ir: list[dict[str, Any]], airflow: dict[tuple[str, int], Obj]
) -> None:
    default = core(None)
    listed = core(None, json.dumps({"networkPolicy": {"clientNamespaces": list(CLIENT_NAMESPACES)}}))
    for example in EXAMPLE_FILES:
        meta = scenario(example, kfp_ir, airflow)[0].attempts[0].pod["metadata"]
        pod = Pod(f"Pod/{meta['name']}", meta["namespace"], meta["labels"], ip="10.244.7.7")
        for stack, admitted in ((default, False), (listed, True)):
            flow = Flow(
                "forward",
                Source(pod.name, pod.ip, pod),
                stack.pod(FORWARDER),
                c.DEFAULT_FLUENTD_PORT,
                example,
            )
            assert admits(stack.policies, flow) is admitted, (example, admitted)
