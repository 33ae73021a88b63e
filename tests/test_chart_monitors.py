"""The drift monitors of mlobs-core's values: one CronJob each, the SDK's environment, the command
line of `mlobs drift check`, and the schema that refuses a bad entry, naming it."""

from __future__ import annotations

import copy
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from pipeline_sdk import contract as c
from tests.test_chart import CORE, CUSTOM_KINDS, KUBE_VERSIONS, NAMESPACE, RELEASE, container_problems

CHURN = {
    "name": "churn",
    "model": "churn-logreg",
    "version": "1",
    "baseline": "demo-train-ab12:train",
    "schedule": "0 * * * *",
    "features": ["tenure_months", "monthly_spend"],
    "thresholds": {"tenure_months": 0.2, "monthly_spend": 0.15},
}
NIGHTLY = {"name": "nightly", "model": "fraud", "baseline": "fit-7:validation", "schedule": "30 2 * * *"}
TWO = {"monitors": [CHURN, NIGHTLY]}
TM = "/monitors/0/thresholds/tenure_months"


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    out = helm_python.Chart.load(CORE).render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [d for text in out.values() for d in yaml.safe_load_all(text) if d]


def cronjobs(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in render(values) if d["kind"] == "CronJob"}


def container(cronjob: dict[str, Any]) -> dict[str, Any]:
    [k] = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return dict(k)


def refs(env: dict[str, dict[str, Any]], kind: str) -> dict[str, Any]:
    return {n: v["valueFrom"][kind] for n, v in env.items() if kind in v.get("valueFrom", {})}


def env(cronjob: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(cronjob)["env"]}


def monitor(**changes: Any) -> dict[str, Any]:
    return {"monitors": [{**CHURN, **changes}]}


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
def test_two_monitors_render_two_valid_cronjobs(kube: str) -> None:
    docs = render(TWO)
    jobs = [d for d in docs if d["kind"] == "CronJob"]
    assert [j["metadata"]["name"] for j in jobs] == ["mlobs-monitor-churn", "mlobs-monitor-nightly"]
    checked = 0
    for doc in docs:
        if doc["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(doc, kube, strict=True)
            checked += 1
    assert checked == len(render({})) - sum(d["kind"] in CUSTOM_KINDS for d in render({})) + 2


def test_no_monitor_no_cronjob() -> None:
    assert cronjobs({}) == {}


def test_the_command_line_is_the_monitor_entry() -> None:
    jobs = cronjobs(TWO)
    assert container(jobs["mlobs-monitor-churn"])["command"] == [
        "mlobs", "drift", "check",
        "--model", "churn-logreg", "--version", "1",
        "--baseline", "demo-train-ab12:train",
        "--since", "2h",
        "--features", "tenure_months,monthly_spend",
        "--threshold", "monthly_spend=0.15", "--threshold", "tenure_months=0.2",
        "--capture", "--schedule-seconds", "3600", "--pushgateway", "http://mlobs-pushgateway:9091",
    ]  # fmt: skip
    assert container(jobs["mlobs-monitor-nightly"])["command"] == [
        "mlobs", "drift", "check", "--model", "fraud", "--baseline", "fit-7:validation", "--since", "2d",
        "--capture", "--schedule-seconds", "86400", "--pushgateway", "http://mlobs-pushgateway:9091",
    ]  # fmt: skip
    other = cronjobs({**monitor(since="45m"), "pushgateway": {"url": "http://pgw.ops:9091"}})
    command = container(other["mlobs-monitor-churn"])["command"]
    assert command[command.index("--since") + 1] == "45m"
    assert command[-2:] == ["--pushgateway", "http://pgw.ops:9091"]


@pytest.mark.parametrize(
    ("schedule", "since", "seconds"),
    [
        ("@hourly", "2h", 3600),
        ("@daily", "2d", 86400),
        ("@midnight", "2d", 86400),
        ("@weekly", "2w", 604800),
        ("* * * * *", "2m", 60),
        ("*/15 * * * *", "30m", 900),
        ("5 * * * *", "2h", 3600),
        ("0 */6 * * *", "12h", 21600),
        ("30 2 * * *", "2d", 86400),
        ("0 3 * * 1", "2w", 604800),
    ],
)
def test_the_window_is_twice_the_schedule(schedule: str, since: str, seconds: int) -> None:
    """And the schedule is pushed, so MLDriftMonitorNotRunning waits twice it, not twice the window."""
    command = container(cronjobs(monitor(schedule=schedule))["mlobs-monitor-churn"])["command"]
    assert command[command.index("--since") + 1] == since
    assert command[command.index("--schedule-seconds") + 1] == str(seconds)
    given = container(cronjobs(monitor(schedule=schedule, since="3h"))["mlobs-monitor-churn"])["command"]
    assert given[given.index("--schedule-seconds") + 1] == str(seconds)  # a window of its own: same schedule


@pytest.mark.parametrize("schedule", ["0 9-17 * * *", "0 0 1 * *", "@monthly", "0,30 * * * *"])
def test_a_schedule_without_a_fixed_interval_asks_for_since(schedule: str) -> None:
    with pytest.raises(Exception, match=r"monitors\[0\] \(churn\): set since: the schedule") as error:
        render(monitor(schedule=schedule))
    assert schedule in str(error.value)
    command = container(cronjobs(monitor(schedule=schedule, since="1d"))["mlobs-monitor-churn"])["command"]
    assert command[command.index("--since") + 1] == "1d"
    assert "--schedule-seconds" not in command  # no fixed interval: the monitor takes its window's length


def test_the_job_is_a_run_of_pipeline_drift_with_the_sdk_environment() -> None:
    job = cronjobs(TWO)["mlobs-monitor-churn"]
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    assert job["spec"]["startingDeadlineSeconds"] == 300
    assert job["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 900
    assert job["spec"]["jobTemplate"]["spec"]["backoffLimit"] == 0
    labels = job["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert (labels[c.LABEL_PIPELINE], labels[c.LABEL_STEP]) == ("drift", "churn")
    assert c.LABEL_RUN_ID not in labels  # the run id is the Job's name, as the exporter's
    k = container(job)
    assert k["image"] == "mlobs/demo:dev"
    assert k["terminationMessagePolicy"] == "FallbackToLogsOnError"
    e = env(job)
    field = {
        n: v["valueFrom"]["fieldRef"]["fieldPath"]
        for n, v in e.items()
        if "fieldRef" in v.get("valueFrom", {})
    }
    assert field == {
        c.ENV_PIPELINE: f"metadata.labels['{c.LABEL_PIPELINE}']",
        c.ENV_STEP: f"metadata.labels['{c.LABEL_STEP}']",
        c.ENV_RUN_ID: "metadata.labels['batch.kubernetes.io/job-name']",
        c.ENV_POD_NAME: "metadata.name",
    }
    values = {n: v["value"] for n, v in e.items() if "value" in v}
    assert values == {
        c.ENV_FLUENTD_HOST: "mlobs-fluentd-forwarder",  # the node-local forwarder: the first hop
        c.ENV_FLUENTD_PORT: "24224",
        "MLOBS_HOME": "/tmp/mlobs",
        c.ENV_INFLUXDB_URL: "http://mlobs-influxdb2:80",
        c.ENV_INFLUXDB_ORG: "mlobs",
        c.ENV_INFLUXDB_BUCKET: "mlobs",
    }
    secrets = {
        n: v["valueFrom"]["secretKeyRef"] for n, v in e.items() if "secretKeyRef" in v.get("valueFrom", {})
    }
    assert secrets == {
        c.ENV_FLUENTD_SHARED_KEY: {"name": "mlobs-fluentd-forward", "key": "shared-key"},
        c.ENV_INFLUXDB_TOKEN: {"name": "mlobs-influxdb-auth", "key": "admin-token"},
    }
    existing = cronjobs({**TWO, "secrets": {"influxdb": "team-influx"}})["mlobs-monitor-churn"]
    assert env(existing)[c.ENV_INFLUXDB_TOKEN]["valueFrom"]["secretKeyRef"]["name"] == "team-influx"


def test_every_monitor_container_is_non_root_with_limits() -> None:
    for name, job in cronjobs(TWO).items():
        spec = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        assert container_problems(f"CronJob/{name}", spec) == []
    broken = copy.deepcopy(cronjobs(TWO)["mlobs-monitor-churn"])
    spec = broken["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    del spec["containers"][0]["resources"]["limits"]
    assert container_problems("CronJob/x", spec) == ["CronJob/x/monitor lacks cpu/memory requests or limits"]


@pytest.mark.parametrize(
    ("change", "where", "why"),
    [
        ({"name": "Churn_1"}, "/monitors/0/name", "does not match pattern"),
        ({"name": "x" * 39}, "/monitors/0/name", "maxLength: got 39, want 38"),
        ({"baseline": "demo-train-ab12"}, "/monitors/0/baseline", "does not match pattern"),
        ({"schedule": "hourly"}, "/monitors/0/schedule", "does not match pattern"),
        ({"schedule": "0 * * *"}, "/monitors/0/schedule", "does not match pattern"),
        ({"since": "2 hours"}, "/monitors/0/since", "does not match pattern"),
        (
            {"thresholds": {"tenure_months": "high"}},
            "/monitors/0/thresholds/tenure_months",
            "got string, want number",
        ),
        (
            {"thresholds": {"tenure_months": 0}},
            "/monitors/0/thresholds/tenure_months",
            "exclusiveMinimum: got 0",
        ),
        ({"features": ["a,b"]}, "/monitors/0/features/0", "does not match pattern"),
        ({"sched": "@hourly"}, "/monitors/0", "additional properties 'sched' not allowed"),
    ],
)
def test_a_bad_monitor_is_refused_naming_the_key(change: dict[str, Any], where: str, why: str) -> None:
    with pytest.raises(helm_python.errors.HelmValuesError) as error:
        render(monitor(**change))
    message = str(error.value)
    assert f"at '{where}'" in message, message
    assert why in message, message


@pytest.mark.parametrize("missing", ["name", "model", "baseline", "schedule"])
def test_a_monitor_without_a_required_key_is_refused(missing: str) -> None:
    entry = {k: v for k, v in CHURN.items() if k != missing}
    with pytest.raises(helm_python.errors.HelmValuesError, match=f"missing property '{missing}'"):
        render({"monitors": [entry]})


def test_a_name_too_long_for_a_cronjob_is_refused() -> None:
    render({"monitors": [{**CHURN, "name": "x" * 38}]})  # 14 + 38 = 52: the limit
    values = {"monitors": [{**CHURN, "name": "x" * 38}]}
    out = helm_python.Chart.load(CORE)
    with pytest.raises(Exception, match=r"monitors\[0\]\.name: the CronJob name .* over Kubernetes' 52"):
        out.render(values, name="mlobs2", namespace=NAMESPACE, is_install=True)
