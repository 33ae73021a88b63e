"""The chart's two Fluentd tiers, rendered with the real Helm engine and checked object by object.

The node forwarders (a DaemonSet with its node-local Service, RBAC for the metadata filter and a
hostPath buffer) and the aggregators (the StatefulSet with a PodDisruptionBudget and
anti-affinity).  tests/test_chart.py validates every object against the Kubernetes schemas;
this file pins what the tiers rely on, and each check is shown to fail on a broken object.
"""

from __future__ import annotations

import copy
from typing import Any

import helm_python
import kubernetes_validate
import pytest

from fluentd import forwarder, generate
from pipeline_sdk import contract as c
from tests.test_chart import KUBE_VERSIONS, NAMESPACE, RELEASE, env_of, named, render_values, rendered

FWD, AGG = f"{RELEASE}-fluentd-forwarder", f"{RELEASE}-fluentd"


def _daemonset(docs: Any) -> dict[str, Any]:
    return dict(named(docs, "DaemonSet")[FWD])


def hostpath_problems(daemonset: dict[str, Any]) -> list[str]:
    """The forwarder reads /var/log read-only and writes only its buffer directory, as its own user."""
    spec = daemonset["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    found = []
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        for mount in container.get("volumeMounts", []):
            host = volumes[mount["name"]].get("hostPath")
            if host is None:
                continue
            if host["path"] == "/var/log" and not mount.get("readOnly"):
                found.append(f"{container['name']}: /var/log is mounted writable")
            elif host["path"] != "/var/log" and mount["mountPath"] != forwarder.BUFFER_ROOT:
                found.append(f"{container['name']}: hostPath {host['path']} at {mount['mountPath']}")
    [main] = spec["containers"]
    sc = main["securityContext"]
    if (sc.get("runAsNonRoot"), sc.get("runAsUser"), sc.get("readOnlyRootFilesystem")) != (True, 999, True):
        found.append("the forwarder must run as 999, non-root, with a read-only root")
    for init in spec.get("initContainers", []):
        isc = init["securityContext"]
        if isc.get("capabilities") != {"drop": ["ALL"], "add": ["CHOWN", "FOWNER"]}:
            found.append(f"{init['name']}: capabilities beyond CHOWN and FOWNER")
        if isc.get("allowPrivilegeEscalation") is not False or not isc.get("readOnlyRootFilesystem"):
            found.append(f"{init['name']}: escalation or a writable root")
    return found


def test_the_forwarder_daemonset() -> None:
    docs = rendered(None)
    ds = _daemonset(docs)
    spec = ds["spec"]["template"]["spec"]
    assert hostpath_problems(ds) == []
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["buffer"]["hostPath"] == {
        "path": f"/var/lib/mlobs-forwarder/{RELEASE}",
        "type": "DirectoryOrCreate",
    }
    assert volumes["varlog"]["hostPath"] == {"path": "/var/log", "type": "Directory"}
    assert spec["securityContext"]["supplementalGroups"] == [0]  # containerd's log files: root:root 0640
    [init] = spec["initContainers"]
    assert init["command"] == ["sh", "-c", "chown 999:999 /fluentd/buffer && chmod 0700 /fluentd/buffer"]
    assert (init["securityContext"]["runAsUser"], init["resources"]["limits"]) == (
        0,
        {"cpu": "100m", "memory": "32Mi"},
    )
    [main] = spec["containers"]
    env = env_of(spec)
    assert env["FLUENTD_CONF"]["value"] == "forwarder.conf"
    assert env[forwarder.AGGREGATOR_HOST_VAR]["value"] == f"{AGG}-headless"
    assert f"{AGG}-headless" in named(docs, "Service")
    assert env[forwarder.BUFFER_LIMIT_VAR]["value"] == "2g"
    assert env["K8S_NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env[c.ENV_FLUENTD_SHARED_KEY]["valueFrom"]["secretKeyRef"] == {
        "name": f"{RELEASE}-fluentd-forward",
        "key": "shared-key",
    }
    assert main["resources"] == {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"cpu": "500m", "memory": "384Mi"},
    }
    assert spec["serviceAccountName"] == FWD and spec["automountServiceAccountToken"] is True
    config = named(docs, "ConfigMap")[FWD]["data"]["forwarder.conf"]
    header = "# generated from fluentd/forwarder.conf by `make generate`; do not edit\n"
    assert config == header + generate.FORWARDER_CONF.read_text()


@pytest.mark.parametrize(("size", "limit"), [("2Gi", "2g"), ("512Mi", "512m"), ("20Gi", "20g")])
def test_the_buffer_size_is_fluentds_total_limit_size(size: str, limit: str) -> None:
    docs = render_values({"fluentd": {"forwarder": {"bufferSize": size}}})
    assert env_of(_daemonset(docs)["spec"]["template"]["spec"])[forwarder.BUFFER_LIMIT_VAR]["value"] == limit


@pytest.mark.parametrize(
    ("size", "refused"), [("63Mi", True), ("64Mi", False), ("65Mi", False), ("1Gi", False)]
)
def test_a_buffer_smaller_than_a_few_chunks_is_refused(size: str, refused: bool) -> None:
    values = {"fluentd": {"forwarder": {"bufferSize": size}}}
    if refused:
        with pytest.raises(
            helm_python.HelmRenderError, match=f"fluentd.forwarder.bufferSize {size} is below 64Mi"
        ):
            render_values(values)
    else:
        assert env_of(_daemonset(render_values(values))["spec"]["template"]["spec"])[
            forwarder.BUFFER_LIMIT_VAR
        ]


@pytest.mark.parametrize("size", ["2GB", "2g", "0Gi", "1.5Gi", ""])
def test_the_schema_refuses_a_buffer_size_fluentd_would_misread(size: str) -> None:
    result = helm_python.lint(
        "charts/mlobs-core", {"fluentd": {"forwarder": {"bufferSize": size}}}, strict=True
    )
    assert any("bufferSize" in e for e in result["errors"]), result["errors"]


def test_the_node_local_service_is_the_sdks_address() -> None:
    docs = rendered("01-kind-demo-values.yaml")
    service = named(docs, "Service")[FWD]
    assert service["spec"]["internalTrafficPolicy"] == "Local"
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [
        ("forward", 24224),
        ("http-metrics", 24231),
    ]
    hosts = {
        d["metadata"]["name"]: env_of(t["spec"])[c.ENV_FLUENTD_HOST]["value"]
        for d in docs
        if d["kind"] in ("Deployment", "Job")
        and c.ENV_FLUENTD_HOST in env_of((t := d["spec"]["template"])["spec"])
    }
    assert len(hosts) >= 4 and set(hosts.values()) == {FWD}, hosts
    one_tier = render_values({"fluentd": {"forwarder": {"enabled": False}}, "demo": {"enabled": True}})
    assert FWD not in named(one_tier, "DaemonSet")
    spec = named(one_tier, "Deployment")[f"{RELEASE}-model-api"]["spec"]["template"]["spec"]
    assert env_of(spec)[c.ENV_FLUENTD_HOST]["value"] == AGG


def test_the_metadata_filter_reads_pods_and_namespaces_only() -> None:
    docs = rendered(None)
    role = named(docs, "ClusterRole")[FWD]
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["get", "list", "watch"]}
    ]
    binding = named(docs, "ClusterRoleBinding")[FWD]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": FWD}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FWD, "namespace": NAMESPACE}]
    assert named(docs, "ServiceAccount")[FWD]["automountServiceAccountToken"] is False  # only its pods get it


def test_the_aggregators_have_a_budget_and_spread() -> None:
    docs = rendered("02-production-values.yaml")
    sts = named(docs, "StatefulSet")[AGG]
    pdb = named(docs, "PodDisruptionBudget")[AGG]
    assert pdb["spec"] == {
        "minAvailable": 2,  # of 3: one at a time may go
        "selector": {"matchLabels": sts["spec"]["selector"]["matchLabels"]},
    }
    assert (
        named(rendered(None), "PodDisruptionBudget")[AGG]["spec"]["minAvailable"] == 0
    )  # kind's one: drainable
    [term] = sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
    for kube in KUBE_VERSIONS:
        kubernetes_validate.validate(pdb, kube, strict=True)


def test_without_prepare_host_path_no_container_runs_as_root() -> None:
    docs = render_values({"fluentd": {"forwarder": {"prepareHostPath": False}}})
    spec = _daemonset(docs)["spec"]["template"]["spec"]
    assert "initContainers" not in spec
    roots = [
        (d["metadata"]["name"], k["name"])
        for d in rendered(None)
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet")
        for k in [
            *d["spec"]["template"]["spec"].get("initContainers", []),
            *d["spec"]["template"]["spec"]["containers"],
        ]
        if (k.get("securityContext") or {}).get("runAsUser") == 0
    ]
    assert roots == [(FWD, "buffer-owner")], "the one root container of the chart"


BROKEN = {  # how the DaemonSet is broken -> what the check says
    "writable /var/log": "/var/log is mounted writable",
    "root forwarder": "must run as 999",
    "more capabilities": "capabilities beyond CHOWN and FOWNER",
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_the_hostpath_check_can_fail(name: str) -> None:
    ds = copy.deepcopy(_daemonset(rendered(None)))
    spec = ds["spec"]["template"]["spec"]
    if name == "writable /var/log":
        [mount] = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "varlog"]
        mount.pop("readOnly")
    elif name == "root forwarder":
        spec["containers"][0]["securityContext"]["runAsUser"] = 0
    else:
        spec["initContainers"][0]["securityContext"]["capabilities"]["add"].append("DAC_OVERRIDE")
    assert [p for p in hostpath_problems(ds) if BROKEN[name] in p], hostpath_problems(ds)
