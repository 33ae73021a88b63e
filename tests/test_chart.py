"""The chart, with the real Helm engine (helm-python-sdk) and the Kubernetes schemas.

mlobs-core (our templates) is linted strictly and rendered for its defaults and every
ci/*-values.yaml; every rendered object of a built-in kind validates strictly against the
schemas of the lowest and highest Kubernetes versions the chart supports; and the rendered
output is held to the project's rules (dashboards, rules, Alertmanager, secrets, security,
monitoring labels).  The umbrella is rendered against the real upstream charts by hand
(shared/tools/upstream-render, see the README).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from pipeline_sdk import contract as c
from tests.conftest import ROOT

CORE = ROOT / "charts" / "mlobs-core"
UMBRELLA = ROOT / "charts" / "mlobs"


def _kube_versions() -> tuple[str, str]:
    """The oldest Kubernetes the chart supports (its kubeVersion) and the one kind-config.yaml runs."""
    oldest = yaml.safe_load((CORE / "Chart.yaml").read_text())["kubeVersion"]
    [node] = yaml.safe_load((ROOT / "kind-config.yaml").read_text())["nodes"]
    return oldest.removeprefix(">=").removesuffix("-0"), node["image"].split("@")[0].rpartition(":v")[2]


KUBE_VERSIONS = _kube_versions()
SCENARIOS = [None, *sorted(p.name for p in (CORE / "ci").glob("*-values.yaml"))]
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}  # CRDs: not in the Kubernetes schemas
RELEASE, NAMESPACE = "mlobs", "mlobs"


def scenario_values(name: str | None) -> dict[str, Any]:
    return yaml.safe_load((CORE / "ci" / name).read_text()) if name else {}


@cache
def rendered(name: str | None) -> tuple[dict[str, Any], ...]:
    chart = helm_python.Chart.load(CORE)
    out = chart.render(scenario_values(name), name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = [d for text in out.values() for d in yaml.safe_load_all(text) if d]
    return tuple(docs)


def objects(name: str | None, kind: str) -> list[dict[str, Any]]:
    return [d for d in rendered(name) if d["kind"] == kind]


def render_values(values: dict[str, Any]) -> list[dict[str, Any]]:
    """mlobs-core rendered with ``values`` (not cached: every call renders afresh)."""
    out = helm_python.Chart.load(CORE).render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [d for text in out.values() for d in yaml.safe_load_all(text) if d]


def named(docs: list[dict[str, Any]] | tuple[dict[str, Any], ...], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def env_of(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for c in spec["containers"] for e in c.get("env", [])}


def pod_specs(name: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in rendered(name):
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]
        elif doc["kind"] == "CronJob":
            template = doc["spec"]["jobTemplate"]["spec"]["template"]
            yield f"CronJob/{doc['metadata']['name']}", template["spec"]


# ---- lint and schemas ------------------------------------------------------------------------


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s or "defaults")
def test_strict_lint(scenario: str | None, kube: str) -> None:
    result = helm_python.lint(CORE, scenario_values(scenario), strict=True, kube_version=f"v{kube}")
    assert result["errors"] == []
    assert [m for m in result["messages"] if m["severity"] > 1] == []


def test_the_values_schema_rejects_a_typo() -> None:
    result = helm_python.lint(CORE, {"exporter": {"enabeld": True}}, strict=True)
    assert any("enabeld" in e for e in result["errors"])
    result = helm_python.lint(CORE, {"images": {"demo": {"repository": "x", "tag": "latest"}}}, strict=True)
    assert result["errors"], "an unpinned image tag is refused"


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s or "defaults")
def test_rendered_objects_validate_against_the_kubernetes_schemas(scenario: str | None, kube: str) -> None:
    checked = 0
    for doc in rendered(scenario):
        if doc["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, kube, strict=True)
        checked += 1
    assert checked >= 10


def test_schema_validation_can_fail() -> None:
    deployment = json.loads(json.dumps(objects(None, "Deployment")[0]))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[0], strict=True)


# ---- what the chart must contain ----------------------------------------------------------------


def test_every_dashboard_has_its_configmap() -> None:
    configmaps = {
        key: value
        for cm in objects(None, "ConfigMap")
        if cm["metadata"]["labels"].get("grafana_dashboard") == "1"
        for key, value in cm["data"].items()
    }
    dashboards = {p.name: p.read_text() for p in (ROOT / "dashboards" / "json").glob("*.json")}
    assert set(configmaps) == set(dashboards)
    for name, text in dashboards.items():
        assert json.loads(configmaps[name]) == json.loads(text)


def test_every_rule_file_has_its_prometheusrule() -> None:
    rules = {r["metadata"]["name"]: r for r in objects(None, "PrometheusRule")}
    for path in sorted((ROOT / "alerting").glob("*-rules.yaml")):
        rule = rules[f"{RELEASE}-{path.stem}"]
        source = yaml.safe_load(path.read_text())["groups"]
        for group in source:  # alerting.runbookBaseUrl is empty by default: no runbook link
            for source_rule in group["rules"]:
                source_rule.get("annotations", {}).pop("runbook_url", None)
        assert [g["name"] for g in rule["spec"]["groups"]] == [g["name"] for g in source]
        assert [g["rules"] for g in rule["spec"]["groups"]] == [g["rules"] for g in source]


def test_monitoring_objects_carry_the_label_prometheus_selects() -> None:
    for kind in ("ServiceMonitor", "PrometheusRule"):
        for obj in objects(None, kind):
            assert obj["metadata"]["labels"].get("release") == RELEASE, obj["metadata"]["name"]
    monitors = objects("01-kind-demo-values.yaml", "ServiceMonitor")
    jobs = {m["spec"].get("jobLabel") for m in monitors}
    assert jobs == {"mlobs.io/scrape-job", None}
    from pipeline_sdk import contract as c

    # InfluxDB's Service is the influxdb2 chart's: its job name comes from a relabeling instead.
    [influx] = [m for m in monitors if "jobLabel" not in m["spec"]]
    assert influx["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "influxdb2",
        "app.kubernetes.io/instance": RELEASE,
    }
    [endpoint] = influx["spec"]["endpoints"]
    assert endpoint["relabelings"] == [
        {"action": "replace", "targetLabel": "job", "replacement": c.PROM_JOB_INFLUXDB}
    ]

    services = {
        s["metadata"]["labels"].get("mlobs.io/scrape-job")
        for s in objects("01-kind-demo-values.yaml", "Service")
    }
    assert {c.PROM_JOB_EXPORTER, c.PROM_JOB_FLUENTD, c.PROM_JOB_MODEL_API} <= services


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s or "defaults")
def test_alertmanager_config_has_email_and_passes_amtool(scenario: str | None, tmp_path: Path) -> None:
    [secret] = [
        s for s in objects(scenario, "Secret") if s["metadata"]["name"] == f"{RELEASE}-alertmanager-config"
    ]
    data = secret["stringData"]
    config = yaml.safe_load(data["alertmanager.yaml"])
    receivers = {r["name"]: r for r in config["receivers"]}
    assert "null" in receivers
    emails = [e for r in receivers.values() for e in r.get("email_configs", [])]
    assert emails and all(
        e["to"]
        == scenario_values(scenario).get("alerting", {}).get("email", {}).get("to", "ml-team@mlobs.local")
        for e in emails
    )
    assert "smtp_auth_password" not in config["global"]
    for name, text in data.items():
        (tmp_path / name).write_text(text)
    config["templates"] = [str(tmp_path / "*.tmpl")]
    (tmp_path / "alertmanager.yaml").write_text(yaml.safe_dump(config))
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool is not installed: `make test` installs it")
    run = subprocess.run(
        [amtool, "check-config", str(tmp_path / "alertmanager.yaml")],
        check=False,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 templates" in run.stdout  # one glob, matching both files
    assert {"email.tmpl", "grafana-url.tmpl"} <= set(data)


def test_production_smtp_password_comes_from_a_mounted_secret() -> None:
    [secret] = [
        s for s in objects("02-production-values.yaml", "Secret") if "alertmanager" in s["metadata"]["name"]
    ]
    config = yaml.safe_load(secret["stringData"]["alertmanager.yaml"])
    assert config["global"]["smtp_auth_password_file"] == "/etc/alertmanager/secrets/mlobs-smtp/password"
    assert config["global"]["smtp_require_tls"] is True


def literal_strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from literal_strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from literal_strings(value)
    elif isinstance(node, str) and len(node) >= 4:
        yield node


CREDENTIAL_WORDS = ("password", "token", "key")  # a Secret entry whose name has one holds a credential


def secret_problems(docs: tuple[dict[str, Any], ...], values_texts: list[Any]) -> list[str]:
    """Secrets whose credential-like entries are literals of the values (or well-known weak ones)."""
    literals = {s for v in values_texts for s in literal_strings(v)} | {
        "admin",
        "password",
        "changeme",
        "prom-operator",
    }
    problems = []
    for doc in docs:
        if doc["kind"] != "Secret":
            continue
        entries = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
        entries.update(doc.get("stringData") or {})
        for key, value in entries.items():
            if any(w in key for w in CREDENTIAL_WORDS) and value in literals:
                problems.append(f"{doc['metadata']['name']}/{key} holds a literal credential")
            if "smtp_auth_password:" in value:
                problems.append(f"{doc['metadata']['name']}/{key} holds an SMTP password")
    return problems


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s or "defaults")
def test_no_secret_holds_a_literal_credential(scenario: str | None) -> None:
    values = [
        yaml.safe_load((CORE / "values.yaml").read_text()),
        scenario_values(scenario),
        yaml.safe_load((UMBRELLA / "values.yaml").read_text()),
    ]
    assert secret_problems(rendered(scenario), values) == []
    generated = [s for s in objects(scenario, "Secret") if s.get("data")]
    for secret in generated:
        for key, value in secret["data"].items():
            if any(w in key for w in CREDENTIAL_WORDS):
                assert len(base64.b64decode(value)) >= 32, f"{secret['metadata']['name']}/{key} is short"


def test_the_secret_check_can_fail() -> None:
    leaked = {
        "kind": "Secret",
        "metadata": {"name": "x"},
        "data": {"admin-password": base64.b64encode(b"hunter22").decode()},
    }
    assert secret_problems((leaked,), [{"grafana": {"password": "hunter22"}}]) == [
        "x/admin-password holds a literal credential"
    ]
    leaked_key = {"kind": "Secret", "metadata": {"name": "y"}, "stringData": {"shared-key": "changeme"}}
    assert secret_problems((leaked_key,), []) == ["y/shared-key holds a literal credential"]


# The one container that runs as root: it hands the node forwarders' hostPath (created by the
# kubelet, root's) to their user, with CHOWN and FOWNER only (tests/test_chart_fluentd.py pins it).
ROOT_BY_DESIGN = {f"DaemonSet/{RELEASE}-fluentd-forwarder/buffer-owner"}


def container_problems(name: str, spec: dict[str, Any]) -> list[str]:
    problems = []
    pod = spec.get("securityContext") or {}
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        sc = {**pod, **(container.get("securityContext") or {})}
        where = f"{name}/{container['name']}"
        if (not sc.get("runAsNonRoot") or sc.get("runAsUser") == 0) and where not in ROOT_BY_DESIGN:
            problems.append(f"{where} may run as root")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where} allows privilege escalation")
        limits = (container.get("resources") or {}).get("limits") or {}
        requests = (container.get("resources") or {}).get("requests") or {}
        if not {"cpu", "memory"} <= set(limits) or not {"cpu", "memory"} <= set(requests):
            problems.append(f"{where} lacks cpu/memory requests or limits")
    return problems


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s or "defaults")
def test_every_container_is_non_root_with_limits(scenario: str | None) -> None:
    specs = list(pod_specs(scenario))
    assert len(specs) >= 2
    assert [p for name, spec in specs for p in container_problems(name, spec)] == []


def test_the_container_check_can_fail() -> None:
    spec = {"containers": [{"name": "c", "resources": {"limits": {"cpu": "1"}}}]}
    assert container_problems("Deployment/x", spec) == [
        "Deployment/x/c may run as root",
        "Deployment/x/c allows privilege escalation",
        "Deployment/x/c lacks cpu/memory requests or limits",
    ]


def test_exporter_rbac_is_least_privilege() -> None:
    for scenario, kind in ((None, "ClusterRole"), ("03-namespaced-values.yaml", "Role")):
        # the node forwarders' ClusterRole is checked in tests/test_chart_fluentd.py
        roles = [
            r for r in objects(scenario, kind) if not r["metadata"]["name"].endswith("-fluentd-forwarder")
        ]
        assert roles, kind
        for role in roles:
            assert role["rules"] == [
                {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list", "watch"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
            ]
    assert {r["metadata"]["namespace"] for r in objects("03-namespaced-values.yaml", "Role")} == {
        "ml-train",
        "ml-serve",
    }
    assert [r["metadata"]["name"] for r in objects("03-namespaced-values.yaml", "ClusterRole")] == [
        f"{RELEASE}-fluentd-forwarder"
    ]
    assert [r["metadata"]["name"] for r in objects(None, "Role")] == [], "no Lease rights without election"
    docs = render_values({"exporter": {"replicas": 2, "leaderElection": {"enabled": True}}})
    lease = [d for d in docs if d["kind"] == "Role"]
    assert [(r["metadata"]["name"], r["metadata"]["namespace"]) for r in lease] == [
        (f"{RELEASE}-pipeline-exporter-lease", NAMESPACE)
    ]
    assert lease[0]["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["mlobs-pipeline-exporter"],
            "verbs": ["get", "update"],
        },
    ]
    [deployment] = [
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("exporter")
    ]
    assert (deployment["spec"]["replicas"], deployment["spec"]["strategy"]["type"]) == (2, "RollingUpdate")
    with pytest.raises(
        helm_python.HelmRenderError, match=r"exporter\.replicas > 1 needs exporter\.leaderElection\.enabled"
    ):
        render_values({"exporter": {"replicas": 2}})


def test_demo_jobs_get_their_run_identity_from_their_labels() -> None:
    jobs = [
        j
        for j in objects("01-kind-demo-values.yaml", "Job")
        if "mlobs.io/pipeline" in j["metadata"]["labels"]
    ]
    assert {j["metadata"]["labels"]["mlobs.io/pipeline"] for j in jobs} == {
        "demo-train",
        "demo-diverge",
        "demo-oom",
        "drift",  # the demo's drift monitor run: pipeline drift, like every monitor's
    }
    for job in jobs:
        env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert (
            env["MLOBS_RUN_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['mlobs.io/run-id']"
        )
        assert job["spec"]["template"]["metadata"]["labels"] == job["metadata"]["labels"]
    [oom] = [j for j in jobs if j["metadata"]["labels"]["mlobs.io/pipeline"] == "demo-oom"]
    assert oom["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "64Mi"


# ---- the keys of the Forward protocol and of the user hash ------------------------------------------

FORWARD_SECRET, USER_HASH_SECRET = f"{RELEASE}-fluentd-forward", f"{RELEASE}-user-hash"


def secret_ref(env: dict[str, dict[str, Any]], name: str) -> dict[str, Any] | None:
    ref = env.get(name, {}).get("valueFrom", {}).get("secretKeyRef")
    return dict(ref) if ref is not None else None


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s or "defaults")
def test_fluentd_and_every_sdk_pod_read_one_shared_key(scenario: str | None) -> None:
    from pipeline_sdk import contract as c

    existing = scenario_values(scenario).get("secrets", {}).get("fluentdSharedKey")
    expected = {"name": existing or FORWARD_SECRET, "key": "shared-key"}
    sdk_pods = {n for n, spec in pod_specs(scenario) if c.ENV_FLUENTD_HOST in env_of(spec)}
    for name, spec in pod_specs(scenario):
        env = env_of(spec)
        if name in sdk_pods or name in ("StatefulSet/mlobs-fluentd", "DaemonSet/mlobs-fluentd-forwarder"):
            assert secret_ref(env, c.ENV_FLUENTD_SHARED_KEY) == expected, name
            assert "value" not in env[c.ENV_FLUENTD_SHARED_KEY], name
        else:
            assert c.ENV_FLUENTD_SHARED_KEY not in env, f"{name} does not run the SDK"
    if scenario == "01-kind-demo-values.yaml":
        assert sdk_pods == {
            "Deployment/mlobs-pipeline-exporter",
            "Deployment/mlobs-model-api",
            "Job/demo-train-ci1",
            "Job/demo-diverge-ci1",
            "Job/demo-oom-ci1",
            "Job/demo-drift-ci1",
        }
    secrets = named(rendered(scenario), "Secret")
    assert (FORWARD_SECRET in secrets) is not bool(existing)


def test_the_generated_keys_are_long_random_and_kept() -> None:
    secrets = named(rendered(None), "Secret")
    for name, key in ((FORWARD_SECRET, "shared-key"), (USER_HASH_SECRET, "user-hash-key")):
        secret = secrets[name]
        assert list(secret["data"]) == [key]
        assert len(base64.b64decode(secret["data"][key])) == 32
        assert secret["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    # No cluster, no lookup: every render makes a new key (docs/secrets.md: use existing Secrets
    # with helm template and GitOps tools).
    first, second = (
        named(render_values({}), "Secret")[FORWARD_SECRET]["data"]["shared-key"] for _ in range(2)
    )
    assert first != second


def test_the_model_api_gets_the_user_hash_key() -> None:
    from pipeline_sdk import contract as c

    for values, secret in (
        ({"demo": {"enabled": True}}, USER_HASH_SECRET),
        ({"demo": {"enabled": True}, "secrets": {"userHashKey": "team-user-hash"}}, "team-user-hash"),
    ):
        docs = render_values(values)
        spec = named(docs, "Deployment")[f"{RELEASE}-model-api"]["spec"]["template"]["spec"]
        assert secret_ref(env_of(spec), c.ENV_USER_HASH_KEY) == {"name": secret, "key": "user-hash-key"}
        assert (USER_HASH_SECRET in named(docs, "Secret")) is (secret == USER_HASH_SECRET)
        others = [
            n
            for n, s in named(docs, "Deployment").items()
            if c.ENV_USER_HASH_KEY in env_of(s["spec"]["template"]["spec"])
        ]
        assert others == [f"{RELEASE}-model-api"]


def test_existing_secrets_replace_every_generated_one() -> None:
    docs = render_values(
        {
            "secrets": {
                "grafanaAdmin": "a",
                "influxdb": "b",
                "fluentdSharedKey": "c",
                "userHashKey": "d",
            }
        }
    )
    generated = [n for n, s in named(docs, "Secret").items() if s.get("data")]
    assert generated == []


# ---- Mailpit's UI, NetworkPolicies --------------------------------------------------------------------


def test_mailpit_ui_is_a_node_port_only_in_the_kind_values() -> None:
    for scenario, kind_values in ((None, False), ("01-kind-demo-values.yaml", True)):
        services = named(rendered(scenario), "Service")
        smtp, ui = services[f"{RELEASE}-mailpit"], services[f"{RELEASE}-mailpit-ui"]
        assert smtp["spec"]["type"] == "ClusterIP"
        assert smtp["spec"]["ports"] == [{"name": "smtp", "port": 1025, "targetPort": "smtp"}]
        assert ui["spec"]["type"] == ("NodePort" if kind_values else "ClusterIP")
        [port] = ui["spec"]["ports"]
        assert (port["port"], port["targetPort"], port.get("nodePort")) == (
            8025,
            "http",
            30825 if kind_values else None,
        )
    umbrella = yaml.safe_load((UMBRELLA / "values.yaml").read_text())
    assert umbrella["mlobs-core"]["mailpit"]["uiServiceType"] == "NodePort"
    kind = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    mapped = {m["containerPort"]: m["hostPort"] for n in kind["nodes"] for m in n["extraPortMappings"]}
    assert mapped[30825] == 8025


POLICIES = {
    f"{RELEASE}-{name}"
    for name in ("fluentd", "fluentd-forwarder", "influxdb", "pipeline-exporter", "mailpit", "pushgateway")
}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s or "defaults")
def test_network_policies_are_on_by_default_and_ingress_only(scenario: str | None) -> None:
    policies = named(rendered(scenario), "NetworkPolicy")
    expected = set(POLICIES)
    if scenario_values(scenario).get("mailpit", {}).get("enabled") is False:
        expected.discard(f"{RELEASE}-mailpit")
    if scenario_values(scenario).get("demo", {}).get("enabled"):
        expected.add(f"{RELEASE}-demo-monitor")  # the demo's monitor run reads InfluxDB
    assert set(policies) == expected
    for name, policy in policies.items():
        assert policy["spec"]["policyTypes"] == ["Ingress"], name
        assert "egress" not in policy["spec"], name
        for rule in policy["spec"]["ingress"]:
            assert rule.get("from"), f"{name}: a rule without sources admits everyone"
            assert rule.get("ports"), f"{name}: a rule without ports admits every port"


def test_network_policies_switch_off_and_follow_the_components() -> None:
    assert named(render_values({"networkPolicy": {"enabled": False}}), "NetworkPolicy") == {}
    off = {
        "exporter": {"enabled": False},
        "fluentd": {"enabled": False},
        "mailpit": {"enabled": False},
        "networkPolicy": {"influxdb": {"enabled": False}, "pushgateway": {"enabled": False}},
    }
    assert named(render_values(off), "NetworkPolicy") == {}
    with pytest.raises(helm_python.HelmRenderError, match="set allNamespaces or clientNamespaces, not both"):
        render_values({"networkPolicy": {"allNamespaces": True, "clientNamespaces": ["ml"]}})


# ---- generated copies, pins, the umbrella ------------------------------------------------------------


def test_chart_files_are_in_step_with_their_sources() -> None:
    run = subprocess.run(
        ["python", "scripts/chart_files.py", "--check"], check=False, capture_output=True, text=True, cwd=ROOT
    )
    assert run.returncode == 0, run.stderr


def test_kind_config_pins_its_node_image() -> None:
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    for node in config["nodes"]:
        image = node["image"]
        assert "@sha256:" in image and ":v1." in image, image
    ports = {m["hostPort"] for node in config["nodes"] for m in node.get("extraPortMappings", [])}
    assert ports == {3000, 9090, 9093, 8025, 8086}


def test_umbrella_pins_its_upstream_charts() -> None:
    chart = yaml.safe_load((UMBRELLA / "Chart.yaml").read_text())
    core = yaml.safe_load((CORE / "Chart.yaml").read_text())
    pins = {d["name"]: d["version"] for d in chart["dependencies"]}
    assert set(pins) == {"kube-prometheus-stack", "influxdb2", "prometheus-pushgateway", "mlobs-core"}
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", v) for v in pins.values()), f"exact versions only: {pins}"
    assert pins["mlobs-core"] == core["version"]
    # Helm checks only the installed chart's own kubeVersion: the umbrella states mlobs-core's.
    assert chart["kubeVersion"] == core["kubeVersion"]
    oldest, kind = (tuple(int(n) for n in v.split(".")) for v in KUBE_VERSIONS)
    assert len(oldest) == len(kind) == 3 and oldest <= kind, KUBE_VERSIONS
    values = yaml.safe_load((UMBRELLA / "values.yaml").read_text())
    assert values["kube-prometheus-stack"]["fullnameOverride"] == "mlobs"  # it truncates names to 26
    assert values["kube-prometheus-stack"]["grafana"]["sidecar"]["datasources"]["uid"] == "mlobs-prometheus"


# Durations the exporter reads (pipeline_sdk.durations' grammar), and those Prometheus reads.
SDK_DURATION_KEYS = {"max_duration", "success_window", "imagePullGrace", "idleExpiry"}
PROMETHEUS_DURATION_KEYS = {"scrapeInterval", "ruleInterval"}
PROMETHEUS_DURATION = "^([0-9]+y)?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?$"


def _patterns(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    if isinstance(node, dict):
        if isinstance(node.get("pattern"), str):
            yield path, node["pattern"]
        for key, value in node.items():
            yield from _patterns(value, (*path, key))


def test_schema_durations_are_the_grammar_of_whoever_reads_them() -> None:
    from pipeline_sdk import durations

    schema = json.loads((ROOT / "charts/mlobs-core/values.schema.json").read_text())
    found = dict(_patterns(schema))
    sdk = {path: p for path, p in found.items() if path[-1] in SDK_DURATION_KEYS}
    prom = {path: p for path, p in found.items() if path[-1] in PROMETHEUS_DURATION_KEYS}
    assert (len(sdk), len(prom)) == (8, 3)
    assert set(sdk.values()) == {f"^(?:{durations.PATTERN})$"}
    assert set(prom.values()) == {PROMETHEUS_DURATION}
    for text in ("2w", "1h30m", "1.5d", "90s"):
        assert re.fullmatch(durations.PATTERN, text), text
    assert re.fullmatch(PROMETHEUS_DURATION, "1.5d") is None  # Prometheus has no fractions
    assert re.fullmatch(PROMETHEUS_DURATION, "1h30m")


def sdk_pods_without_fallback(docs: list[dict[str, Any]]) -> list[str]:
    """Containers of SDK pods (labelled with a pipeline or a service) that keep no last log lines."""
    missing = []
    for doc in docs:
        if doc["kind"] not in ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"):
            continue
        template = (
            doc["spec"]["template"]
            if doc["kind"] != "CronJob"
            else doc["spec"]["jobTemplate"]["spec"]["template"]
        )
        labels = (template.get("metadata") or {}).get("labels") or {}
        if not {c.LABEL_PIPELINE, c.LABEL_SERVICE} & set(labels):
            continue
        for container in template["spec"]["containers"]:
            if container.get("terminationMessagePolicy") != "FallbackToLogsOnError":
                missing.append(f"{doc['kind']}/{doc['metadata']['name']}/{container['name']}")
    return missing


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s or "defaults")
def test_sdk_pods_fall_back_to_their_logs_for_the_failure_message(scenario: str | None) -> None:
    docs = list(rendered(scenario))
    assert sdk_pods_without_fallback(docs) == []


def test_the_fallback_check_can_fail() -> None:
    pod = {"metadata": {"labels": {c.LABEL_PIPELINE: "p"}}, "spec": {"containers": [{"name": "step"}]}}
    job = {"kind": "Job", "metadata": {"name": "j"}, "spec": {"template": pod}}
    assert sdk_pods_without_fallback([job]) == ["Job/j/step"]


def umbrella_checks(overrides: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    """charts/mlobs/templates/checks.yaml rendered alone with the umbrella's values and ``overrides``."""
    chart = tmp_path / "mlobs"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: mlobs\nversion: 0.0.0\n")
    shutil.copy(ROOT / "charts/mlobs/templates/checks.yaml", chart / "templates/checks.yaml")
    values = yaml.safe_load((ROOT / "charts/mlobs/values.yaml").read_text())
    for path, value in overrides.items():
        *parents, key = path.split(".")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
        node[key] = value
    out: dict[str, str] = helm_python.Chart.load(chart).render(values, name="mlobs", namespace="mlobs")
    return out


def test_influxdb_org_and_bucket_are_one_value(tmp_path: Path) -> None:
    values = yaml.safe_load((ROOT / "charts/mlobs/values.yaml").read_text())
    influx, admin = values["mlobs-core"]["fluentd"]["influxdb"], values["influxdb2"]["adminUser"]
    assert (influx["org"], influx["bucket"]) == (admin["organization"], admin["bucket"]) == ("mlobs", "mlobs")
    text = (ROOT / "charts/mlobs/values.yaml").read_text()
    assert text.count("&influxdbOrg mlobs") == text.count("&influxdbBucket mlobs") == 1  # written once
    assert [v.strip() for v in umbrella_checks({}, tmp_path).values()] == [""]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "influxdb2.adminUser.bucket",
            'mlobs-core.fluentd.influxdb.bucket is "mlobs" but influxdb2.adminUser.bucket',
        ),
        (
            "mlobs-core.fluentd.influxdb.org",
            'mlobs-core.fluentd.influxdb.org is "other" but influxdb2.adminUser',
        ),
    ],
)
def test_an_override_of_one_side_stops_the_install(override: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=re.escape(message)):
        umbrella_checks({override: "other"}, tmp_path)
