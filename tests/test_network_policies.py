"""The chart's NetworkPolicies, held against every flow of the rendered stack.

kind enforces NetworkPolicies (kindnet), so a policy that cuts a flow breaks `make up` where no
other test looks.  The flows are therefore derived from the rendered objects, never listed:

  scrape      Prometheus -> every ServiceMonitor its CR selects -> the Services the monitor
              selects -> the endpoint's port -> the target port of the Services' pods
  alerting    Prometheus -> the Alertmanager Services of its CR's spec.alerting
  datasource  Grafana -> the URL of every datasource in the ConfigMaps its sidecar loads
  smtp        Alertmanager -> the smarthosts of its configuration Secret
  forward     every pod template with MLOBS_FLUENTD_HOST/PORT -> that Service (the SDK)
  relay       every pod template with MLOBS_AGGREGATOR_HOST -> that Service's forward port (the
              node forwarders, fluentd/forwarder.conf)
  url         every pod template -> each Service an env value or argument names in a URL
  nodeport    on kind, the laptop -> each NodePort that kind-config.yaml maps to localhost
  probe       the kubelet on the node -> each httpGet / tcpSocket probe

Prometheus and Alertmanager pods are made by prometheus-operator, so they are modelled from their
CRs with the labels the operator (v0.93) gives them: app.kubernetes.io/name (prometheus,
alertmanager), app.kubernetes.io/managed-by, app.kubernetes.io/instance and prometheus /
operator.prometheus.io/name or alertmanager (the CR's name), plus spec.podMetadata.labels.

Every flow is then evaluated against the rendered policies by :func:`admits`, written from the
NetworkPolicy semantics: a pod selected by no Ingress policy admits everything; otherwise some
rule of some selecting policy must match the port (by number, range, or name resolved against the
destination pod's container ports and protocol; no ports: every port) and the source (no `from`:
every source; ipBlock with except; podSelector alone: the policy's namespace; namespaceSelector
on the namespace's labels, kubernetes.io/metadata.name included).  Pods get addresses in kind's
pod CIDR, and an ipBlock matches them too, as kindnet's implementation does.

The mlobs-core layer renders with helm-python-sdk and always runs.  The umbrella layer needs the
upstream charts assembled by shared/tools/upstream-render (MLOBS_UPSTREAM_CHARTS, by default
/tmp/upstream-charts); without them it is skipped, saying so.  Cohesive over 400 lines: one
evaluator, one derivation, the checks that use them.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from fluentd import forwarder
from pipeline_sdk import contract as c
from tests.conftest import ROOT

CORE, UMBRELLA = ROOT / "charts" / "mlobs-core", ROOT / "charts" / "mlobs"
RELEASE = NAMESPACE = "mlobs"
RENDER_TOOL = Path(
    os.environ.get("MLOBS_UPSTREAM_RENDER", ROOT.parent / "shared/tools/upstream-render/render.py")
)
UPSTREAM_CHARTS = Path(os.environ.get("MLOBS_UPSTREAM_CHARTS", "/tmp/upstream-charts"))
POD_CIDR = ipaddress.ip_network("10.244.0.0/16")  # kind's default pod subnet
NODE_IP = "172.18.0.2"  # the kind node on Docker's first user network: the kubelet's source
# The laptop's connections to a NodePort: docker-proxy connects from the Docker network's gateway,
# which is what kindnet sees (it filters in POSTROUTING before kube-proxy's SNAT); an implementation
# that filters after SNAT sees the node's own address instead.
LAPTOP = {"the Docker gateway (before SNAT)": "172.18.0.1", "the node's address (after SNAT)": NODE_IP}
OUTSIDE_IP = "203.0.113.7"  # a documentation address: the internet


# ---- the model ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    name: str  # "Kind/workload"
    namespace: str
    labels: dict[str, str] = field(hash=False)
    ports: tuple[tuple[str, int, str], ...] = ()  # (name, containerPort, protocol)
    probes: tuple[str | int, ...] = ()  # the port of each httpGet / tcpSocket probe
    ip: str = ""
    env: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    container_env: dict[str, dict[str, str]] = field(default_factory=dict, hash=False, compare=False)
    words: tuple[str, ...] = ()  # command, args and env values, for URLs

    def port(self, ref: str | int) -> int:
        if isinstance(ref, int):
            return ref
        found = [number for name, number, _ in self.ports if name == ref]
        assert found, f"{self.name} has no container port named {ref!r}"
        return found[0]


@dataclass(frozen=True)
class Source:
    name: str
    ip: str
    pod: Pod | None = None  # None: not a pod (the node, the laptop)
    node: bool = False  # traffic the node itself originates (the kubelet)


@dataclass(frozen=True)
class Flow:
    kind: str
    source: Source
    dst: Pod
    port: int
    via: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.source.name} -> {self.dst.name}:{self.port} ({self.via})"


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Label-selector semantics: matchLabels and matchExpressions, all of them; {} selects all."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _policy_types(spec: dict[str, Any]) -> list[str]:
    return spec.get("policyTypes") or ["Ingress", *(["Egress"] if spec.get("egress") else [])]


def _port_matches(ports: list[dict[str, Any]] | None, dst: Pod, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        ref = p.get("port")
        if ref is None:
            return True
        if isinstance(ref, int) and ref <= port <= p.get("endPort", ref):
            return True
        if isinstance(ref, str) and (ref, port, protocol) in dst.ports:
            return True
    return False


def _peer_matches(peer: dict[str, Any], policy_ns: str, src: Source) -> bool:
    if "ipBlock" in peer:
        ip = ipaddress.ip_address(src.ip)
        block = peer["ipBlock"]
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(e) for e in block.get("except") or []
        )
    if src.pod is None:
        return False  # pod and namespace selectors select pods only
    ns_selector = peer.get("namespaceSelector")
    if ns_selector is None:
        in_namespace = src.pod.namespace == policy_ns
    else:
        in_namespace = selects(ns_selector, {"kubernetes.io/metadata.name": src.pod.namespace})
    return in_namespace and selects(peer.get("podSelector") or {}, src.pod.labels)


def admits(policies: Iterable[dict[str, Any]], flow: Flow, node_bypass: bool = True) -> bool:
    """Whether the ingress policies let ``flow`` in; ``node_bypass``: kindnet's node exemption."""
    if flow.source.node and node_bypass:
        return True  # kindnet accepts what the node's root user (the kubelet) sends: `meta skuid 0`
    selecting = [
        p
        for p in policies
        if p["metadata"].get("namespace", NAMESPACE) == flow.dst.namespace
        and "Ingress" in _policy_types(p["spec"])
        and selects(p["spec"].get("podSelector") or {}, flow.dst.labels)
    ]
    if not selecting:
        return True
    return any(
        _port_matches(rule.get("ports"), flow.dst, flow.port, "TCP")
        and (
            not rule.get("from")
            or any(
                _peer_matches(peer, p["metadata"].get("namespace", NAMESPACE), flow.source)
                for peer in rule["from"]
            )
        )
        for p in selecting
        for rule in p["spec"].get("ingress") or []
    )


# ---- the pods and the flows of a rendered chart ------------------------------------------------------------

OPERATOR_PODS = {  # CR kind -> (app.kubernetes.io/name, CR-name label, container ports)
    "Prometheus": ("prometheus", ("prometheus", "operator.prometheus.io/name"), 9090),
    "Alertmanager": ("alertmanager", ("alertmanager",), 9093),
}
URL = re.compile(r"\bhttps?://([a-z0-9.-]+)(?::(\d+))?")


def ns_of(doc: dict[str, Any]) -> str:
    return doc["metadata"].get("namespace") or NAMESPACE


def _pod_of(doc: dict[str, Any], ip: str) -> Pod:
    template = (
        doc["spec"]["jobTemplate"]["spec"]["template"]
        if doc["kind"] == "CronJob"
        else doc["spec"]["template"]
    )
    spec = template["spec"]
    containers = [*spec.get("initContainers", []), *spec["containers"]]
    ports = tuple(
        (p.get("name", ""), p["containerPort"], p.get("protocol", "TCP"))
        for k in spec["containers"]
        for p in k.get("ports", [])
    )
    probes = tuple(
        (probe.get("httpGet") or probe.get("tcpSocket"))["port"]
        for k in spec["containers"]
        for kind in ("livenessProbe", "readinessProbe", "startupProbe")
        if (probe := k.get(kind)) and (probe.get("httpGet") or probe.get("tcpSocket"))
    )
    env = {e["name"]: str(e["value"]) for k in containers for e in k.get("env", []) if "value" in e}
    words = tuple(
        str(w) for k in containers for w in [*k.get("command", []), *k.get("args", []), *env.values()]
    )
    labels = template.get("metadata", {}).get("labels") or {}
    per_container = {
        k["name"]: {e["name"]: str(e["value"]) for e in k.get("env", []) if "value" in e} for k in containers
    }
    name = f"{doc['kind']}/{doc['metadata']['name']}"
    return Pod(name, ns_of(doc), dict(labels), ports, probes, ip, env, per_container, words)


def pods_of(docs: list[dict[str, Any]]) -> list[Pod]:
    pods: list[Pod] = []
    for doc in docs:
        ip = str(POD_CIDR[len(pods) + 10])
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"):
            if not doc["spec"].get("template", {}).get("spec", {}).get("hostNetwork"):
                pods.append(_pod_of(doc, ip))
        elif doc["kind"] in OPERATOR_PODS:
            app, name_labels, port = OPERATOR_PODS[doc["kind"]]
            name = doc["metadata"]["name"]
            labels = {**((doc["spec"].get("podMetadata") or {}).get("labels") or {})}
            labels |= {"app.kubernetes.io/name": app, "app.kubernetes.io/managed-by": "prometheus-operator"}
            labels |= {"app.kubernetes.io/instance": name, **dict.fromkeys(name_labels, name)}
            ports = ((doc["spec"].get("portName") or "web", port, "TCP"), ("reloader-web", 8080, "TCP"))
            pods.append(Pod(f"{doc['kind']}/{name}", ns_of(doc), labels, ports, (), ip))
    return pods


class Stack:
    """The rendered objects, their pods and the flows between them."""

    def __init__(self, docs: list[dict[str, Any]], kind_nodeports: dict[int, int] | None = None) -> None:
        self.docs, self.pods = docs, pods_of(docs)
        self.policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
        self.services = {(d["metadata"]["name"], ns_of(d)): d for d in docs if d["kind"] == "Service"}
        self.kind_nodeports = kind_nodeports or {}
        self.unresolved: set[str] = set()  # flows whose destination the chart does not render

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def source(self, pod: Pod) -> Source:
        return Source(pod.name, pod.ip, pod)

    def crs(self, kind: str) -> list[tuple[dict[str, Any], Source]]:
        return [
            (d, self.source(next(p for p in self.pods if p.name == f"{kind}/{d['metadata']['name']}")))
            for d in self.of(kind)
        ]

    def to_service(
        self, kind: str, src: Source, where: tuple[str, str], port: str | int, via: str
    ) -> Iterator[Flow]:
        """Flows to the pods behind the Service ``where`` (name, namespace) on its ``port``."""
        service = self.services.get(where)
        if service is None or not service["spec"].get("selector"):
            self.unresolved.add(f"{kind}: {via}")
            return
        [sp] = [p for p in service["spec"]["ports"] if port in (p.get("name"), p["port"])]
        backends = [
            p
            for p in self.pods
            if p.namespace == where[1] and selects({"matchLabels": service["spec"]["selector"]}, p.labels)
        ]
        if not backends:  # pods the chart does not render, or host-network pods (no policy applies)
            self.unresolved.add(f"{kind}: {via}")
        for pod in backends:
            yield Flow(kind, src, pod, pod.port(sp.get("targetPort", sp["port"])), via)

    def to_host(self, kind: str, src: Source, host: str, port: int, via: str) -> Iterator[Flow]:
        name, _, rest = host.partition(".")
        ns = rest.split(".")[0] if rest else src.pod.namespace if src.pod else NAMESPACE
        if name in ("localhost", "127") or (name, ns) not in self.services:
            self.unresolved.add(f"{kind}: {via}")
            return
        yield from self.to_service(kind, src, (name, ns), port, via)

    def flows(self) -> list[Flow]:
        return [
            *self.scrapes(),
            *self.alerting(),
            *self.datasources(),
            *self.smtp(),
            *self.sdk_and_urls(),
            *self.nodeports(),
            *self.probes(),
        ]

    def scrapes(self) -> Iterator[Flow]:
        for prom, src in self.crs("Prometheus"):
            sm_selector, sm_ns = (
                prom["spec"].get("serviceMonitorSelector"),
                prom["spec"].get("serviceMonitorNamespaceSelector"),
            )
            for sm in self.of("ServiceMonitor"):
                if sm_selector is None or not selects(sm_selector, sm["metadata"].get("labels") or {}):
                    continue
                if (sm_ns is None and ns_of(sm) != ns_of(prom)) or (
                    sm_ns is not None and not selects(sm_ns, {"kubernetes.io/metadata.name": ns_of(sm)})
                ):
                    continue
                ns_sel = sm["spec"].get("namespaceSelector") or {}
                namespaces = ns_sel.get("matchNames") or [ns_of(sm)]
                matched = [
                    s
                    for (name, ns), s in self.services.items()
                    if ns in namespaces and selects(sm["spec"]["selector"], s["metadata"].get("labels") or {})
                ]
                if not matched:
                    self.unresolved.add(f"scrape: ServiceMonitor {sm['metadata']['name']}")
                for service in matched:
                    for endpoint in sm["spec"]["endpoints"]:
                        via = f"ServiceMonitor {sm['metadata']['name']}"
                        where = (service["metadata"]["name"], ns_of(service))
                        yield from self.to_service("scrape", src, where, endpoint["port"], via)

    def alerting(self) -> Iterator[Flow]:
        for prom, src in self.crs("Prometheus"):
            for am in (prom["spec"].get("alerting") or {}).get("alertmanagers", []):
                where = (am["name"], am.get("namespace", ns_of(prom)))
                yield from self.to_service("alerting", src, where, am["port"], f"spec.alerting {am['name']}")

    def datasources(self) -> Iterator[Flow]:
        for grafana in self.pods:  # the pods with a datasource sidecar (the grafana chart's)
            sidecars = [env for name, env in grafana.container_env.items() if name.endswith("datasources")]
            if not sidecars or "LABEL" not in sidecars[0]:
                continue
            env = sidecars[0]
            for cm in self.of("ConfigMap"):
                if (cm["metadata"].get("labels") or {}).get(env["LABEL"]) != env.get("LABEL_VALUE"):
                    continue
                for text in cm["data"].values():
                    for ds in yaml.safe_load(text).get("datasources", []):
                        host, port = URL.match(ds["url"]).groups()  # type: ignore[union-attr]
                        via = f"datasource {ds['name']} {ds['url']}"
                        yield from self.to_host(
                            "datasource", self.source(grafana), host, int(port or 80), via
                        )

    def smtp(self) -> Iterator[Flow]:
        secrets = {d["metadata"]["name"]: d for d in self.of("Secret")}
        for am, src in self.crs("Alertmanager"):
            config = yaml.safe_load(secrets[am["spec"]["configSecret"]]["stringData"]["alertmanager.yaml"])
            hosts = {config["global"]["smtp_smarthost"]} | {
                e["smarthost"]
                for r in config["receivers"]
                for e in r.get("email_configs", [])
                if "smarthost" in e
            }
            for smarthost in sorted(hosts):
                host, port = smarthost.rsplit(":", 1)
                yield from self.to_host("smtp", src, host, int(port), f"smarthost {smarthost}")

    def sdk_and_urls(self) -> Iterator[Flow]:
        for pod in self.pods:
            host = pod.env.get(c.ENV_FLUENTD_HOST)
            if host:
                port = int(pod.env.get(c.ENV_FLUENTD_PORT, c.DEFAULT_FLUENTD_PORT))
                yield from self.to_host(
                    "forward", self.source(pod), host, port, f"{c.ENV_FLUENTD_HOST}={host}"
                )
            if aggregators := pod.env.get(forwarder.AGGREGATOR_HOST_VAR):
                via = f"{forwarder.AGGREGATOR_HOST_VAR}={aggregators}"
                yield from self.to_host("relay", self.source(pod), aggregators, c.DEFAULT_FLUENTD_PORT, via)
            for word in pod.words:
                for host, port in URL.findall(word):
                    yield from self.to_host("url", self.source(pod), host, int(port or 80), word)

    def nodeports(self) -> Iterator[Flow]:
        for (name, ns), service in self.services.items():
            for sp in service["spec"]["ports"] if service["spec"].get("type") == "NodePort" else []:
                if sp.get("nodePort") in self.kind_nodeports:
                    for what, ip in LAPTOP.items():
                        src = Source(f"the laptop via {what}", ip)
                        via = f"localhost:{self.kind_nodeports[sp['nodePort']]} -> NodePort {sp['nodePort']}"
                        yield from self.to_service("nodeport", src, (name, ns), sp["port"], via)

    def probes(self) -> Iterator[Flow]:
        kubelet = Source("the kubelet", NODE_IP, node=True)
        for pod in self.pods:
            for ref in pod.probes:
                yield Flow("probe", kubelet, pod, pod.port(ref), f"probe on {ref}")

    def cut(self, flows: Iterable[Flow], node_bypass: bool = True) -> list[str]:
        return sorted({str(f) for f in flows if not admits(self.policies, f, node_bypass)})

    def pod(self, name: str) -> Pod:
        return next(p for p in self.pods if p.name == name)


def kind_nodeports() -> dict[int, int]:
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    return {
        m["containerPort"]: m["hostPort"] for n in config["nodes"] for m in n.get("extraPortMappings", [])
    }


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of values: maps merge, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = (
            merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


@cache
def core(scenario: str | None, extra: str = "{}") -> Stack:
    """mlobs-core alone, rendered by Helm's engine with a ci/ scenario and more values (YAML)."""
    values = yaml.safe_load((CORE / "ci" / scenario).read_text()) if scenario else {}
    out = helm_python.Chart.load(CORE).render(
        merged(values, yaml.safe_load(extra)), name=RELEASE, namespace=NAMESPACE, is_install=True
    )
    return Stack([d for text in out.values() for d in yaml.safe_load_all(text) if d])


@cache
def umbrella(values: tuple[str, ...], kind: bool) -> Stack:
    """The umbrella with the real upstream charts (shared/tools/upstream-render).

    ``values``: files of charts/mlobs (-f), ``key=value`` (--set) or ``json:key=value`` (--set-json).
    ``kind``: the laptop reaches the NodePorts of kind-config.yaml.
    """
    if not (UPSTREAM_CHARTS / "kube-prometheus-stack" / "Chart.yaml").exists() or not RENDER_TOOL.exists():
        pytest.skip(
            f"the upstream charts are not assembled in {UPSTREAM_CHARTS}: run "
            "shared/tools/upstream-render/assemble.sh MIRROR_DIR /tmp/upstream-charts (README there), "
            "or set MLOBS_UPSTREAM_CHARTS"
        )
    args: list[str] = []
    for v in values:
        if v.endswith(".yaml"):
            args += ["-f", str(UMBRELLA / v)]
        else:
            args += ["--set-json", v.removeprefix("json:")] if v.startswith("json:") else ["--set", v]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rendered.yaml"
        cmd = [sys.executable, str(RENDER_TOOL), str(UMBRELLA), *args, "--charts", str(UPSTREAM_CHARTS)]
        cmd += ["--name", RELEASE, "-n", NAMESPACE, "-o", str(out), "--monitoring-apis", "--skip-tests"]
        run = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        docs = [d for d in yaml.safe_load_all(out.read_text()) if d]
    return Stack(docs, kind_nodeports() if kind else None)


KIND = ("values.yaml", "mlobs-core.demo.runSuffix=ci1")  # what make up and make demo render
PRODUCTION = ("values.yaml", "ci/02-production-values.yaml")


# ---- the evaluator follows the NetworkPolicy semantics -----------------------------------------------------


def netpol(
    pod_selector: dict[str, Any], ingress: list[dict[str, Any]] | None, ns: str = NAMESPACE, **spec: Any
) -> dict[str, Any]:
    body = {"podSelector": pod_selector, **({"ingress": ingress} if ingress is not None else {}), **spec}
    return {"kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": ns}, "spec": body}


DST = Pod(
    "Deployment/dst", NAMESPACE, {"app": "dst"}, (("http", 8080, "TCP"), ("dns", 53, "UDP")), ip="10.244.0.2"
)
OTHER_DST = Pod("Deployment/other", NAMESPACE, {"app": "dst"}, (("http", 9090, "TCP"),), ip="10.244.0.3")
FRONT = Pod("Deployment/front", NAMESPACE, {"app": "front", "tier": "web"}, ip="10.244.0.4")
FRONT_ELSEWHERE = Pod("Deployment/front", "elsewhere", {"app": "front", "tier": "web"}, ip="10.244.1.4")
ONLY_DST = {"matchLabels": {"app": "dst"}}


def to(dst: Pod, port: int, src: Pod | Source = FRONT) -> Flow:
    source = src if isinstance(src, Source) else Source(src.name, src.ip, src)
    return Flow("test", source, dst, port, "test")


def rule(ports: list[Any] | None, peers: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {
        **({"ports": ports} if ports is not None else {}),
        **({"from": peers} if peers is not None else {}),
    }


FRONT_PEER = {"podSelector": {"matchLabels": {"app": "front"}}}
ELSEWHERE = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "elsewhere"}}}
P8080, RANGE, HTTP, DNS = (
    [{"port": 8080}],
    [{"port": 8080, "endPort": 8082}],
    [{"port": "http"}],
    [{"port": "dns"}],
)
LAPTOP_SRC, INTERNET = Source("laptop", "172.17.0.9"), Source("web", OUTSIDE_IP)


def only(*rules: dict[str, Any]) -> list[dict[str, Any]]:
    """One policy selecting DST with these ingress rules."""
    return [netpol(ONLY_DST, list(rules))]


def tier(op: str, *values: str) -> dict[str, Any]:
    expression = {"key": "tier", "operator": op, **({"values": list(values)} if values else {})}
    return {"podSelector": {"matchExpressions": [expression]}}


def block(cidr: str, *excepts: str) -> dict[str, Any]:
    return {"ipBlock": {"cidr": cidr, **({"except": list(excepts)} if excepts else {})}}


SEMANTICS = [  # (what, policies, flow, admitted)
    ("no policy selects the pod", [netpol({"matchLabels": {"app": "x"}}, [])], to(DST, 8080), True),
    ("a policy of another namespace", [netpol(ONLY_DST, [], ns="elsewhere")], to(DST, 8080), True),
    ("selected, no rules: deny all", only(), to(DST, 8080), False),
    ("an empty podSelector selects all", [netpol({}, [])], to(DST, 8080), False),
    ("Egress only: ingress open", [netpol(ONLY_DST, [], policyTypes=["Egress"])], to(DST, 8080), True),
    ("a rule without from: any source", only(rule(P8080, None)), to(DST, 8080, INTERNET), True),
    ("from: [] is any source too", only(rule(P8080, [])), to(DST, 8080, INTERNET), True),
    ("a rule without ports: any port", only(rule(None, [FRONT_PEER])), to(DST, 1), True),
    ("another port", only(rule(P8080, None)), to(DST, 8081), False),
    ("endPort: n-1", only(rule(RANGE, None)), to(DST, 8079), False),
    ("endPort: n", only(rule(RANGE, None)), to(DST, 8082), True),
    ("endPort: n+1", only(rule(RANGE, None)), to(DST, 8083), False),
    ("a named port resolves on the pod", only(rule(HTTP, None)), to(DST, 8080), True),
    ("a named port is another number elsewhere", only(rule(HTTP, None)), to(OTHER_DST, 8080), False),
    ("a named port, its own number", only(rule(HTTP, None)), to(OTHER_DST, 9090), True),
    ("a named port of another protocol", only(rule(DNS, None)), to(DST, 53), False),
    ("podSelector alone: own namespace", only(rule(None, [FRONT_PEER])), to(DST, 8080), True),
    (
        "podSelector alone: not elsewhere",
        only(rule(None, [FRONT_PEER])),
        to(DST, 8080, FRONT_ELSEWHERE),
        False,
    ),
    ("namespaceSelector by name", only(rule(None, [ELSEWHERE])), to(DST, 8080, FRONT_ELSEWHERE), True),
    ("namespaceSelector by name: not ours", only(rule(None, [ELSEWHERE])), to(DST, 8080), False),
    (
        "namespaceSelector {}: all",
        only(rule(None, [{"namespaceSelector": {}}])),
        to(DST, 80, FRONT_ELSEWHERE),
        True,
    ),
    (
        "both selectors in one peer: AND",
        only(rule(None, [{**FRONT_PEER, **ELSEWHERE}])),
        to(DST, 8080),
        False,
    ),
    ("two peers: OR", only(rule(None, [FRONT_PEER, ELSEWHERE])), to(DST, 8080), True),
    ("Exists", only(rule(None, [tier("Exists")])), to(DST, 8080), True),
    ("DoesNotExist", only(rule(None, [tier("DoesNotExist")])), to(DST, 8080), False),
    ("In", only(rule(None, [tier("In", "db", "web")])), to(DST, 8080), True),
    ("NotIn", only(rule(None, [tier("NotIn", "web")])), to(DST, 8080), False),
    ("ipBlock", only(rule(None, [block("172.16.0.0/12", "172.18.0.0/24")])), to(DST, 80, LAPTOP_SRC), True),
    (
        "ipBlock except",
        only(rule(None, [block("172.16.0.0/12", "172.17.0.0/24")])),
        to(DST, 80, LAPTOP_SRC),
        False,
    ),
    ("ipBlock outside", only(rule(None, [block("172.16.0.0/12")])), to(DST, 80, INTERNET), False),
    ("ipBlock matches a pod's address", only(rule(None, [block("10.244.0.0/16")])), to(DST, 80), True),
    (
        "selectors never match an address",
        only(rule(None, [{"namespaceSelector": {}}])),
        to(DST, 80, LAPTOP_SRC),
        False,
    ),
]


@pytest.mark.parametrize(
    ("policies", "flow", "expected"), [s[1:] for s in SEMANTICS], ids=[s[0] for s in SEMANTICS]
)
def test_the_evaluator_follows_the_networkpolicy_semantics(
    policies: list[dict[str, Any]], flow: Flow, expected: bool
) -> None:
    assert admits(policies, flow) is expected


def test_node_traffic_bypasses_kindnet_but_not_a_strict_plugin() -> None:
    kubelet = to(DST, 8080, Source("the kubelet", NODE_IP, node=True))
    deny_all = [netpol(ONLY_DST, [])]
    assert admits(deny_all, kubelet) is True
    assert admits(deny_all, kubelet, node_bypass=False) is False
    node_rule = [netpol(ONLY_DST, [rule(None, [{"ipBlock": {"cidr": f"{NODE_IP}/32"}}])])]
    assert admits(node_rule, kubelet, node_bypass=False) is True


# ---- mlobs-core alone (always) -----------------------------------------------------------------------------

FLUENTD, INFLUXDB = "StatefulSet/mlobs-fluentd", "StatefulSet/mlobs-influxdb2"
FORWARDER = "DaemonSet/mlobs-fluentd-forwarder"  # the node forwarders: the SDK's first hop
EXPORTER, MAILPIT = "Deployment/mlobs-pipeline-exporter", "Deployment/mlobs-mailpit"
SCENARIOS = [None, *sorted(p.name for p in (CORE / "ci").glob("*-values.yaml"))]


def stranger(ns: str = NAMESPACE, **labels: str) -> Source:
    pod = Pod(f"Pod/stranger-in-{ns}", ns, labels or {"app": "notebook"}, ip="10.244.9.9")
    return Source(pod.name, pod.ip, pod)


def flow_to(stack: Stack, src: Source, dst: str, port: int) -> Flow:
    return Flow("probe-of-the-test", src, stack.pod(dst), port, "test")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s or "defaults")
def test_every_flow_of_mlobs_core_is_admitted(scenario: str | None) -> None:
    stack = core(scenario)
    flows = stack.flows()
    assert stack.cut(flows) == []
    forward = sorted(f.source.name for f in flows if f.kind == "forward")
    if scenario == "01-kind-demo-values.yaml":
        assert forward == sorted(
            [
                "Deployment/mlobs-model-api",
                EXPORTER,
                "Job/demo-diverge-ci1",
                "Job/demo-drift-ci1",
                "Job/demo-oom-ci1",
                "Job/demo-train-ci1",
            ]
        )
    else:
        assert forward == [EXPORTER]
    assert {f.dst.name for f in flows if f.kind == "forward"} == {FORWARDER}, "the SDK's first hop"
    relays = [str(f) for f in flows if f.kind == "relay"]
    assert relays == [f"relay: {FORWARDER} -> {FLUENTD}:24224 (MLOBS_AGGREGATOR_HOST=mlobs-fluentd-headless)"]


@pytest.mark.parametrize("first_hop", [FORWARDER, FLUENTD], ids=["forwarders", "aggregators"])
def test_the_first_hop_admits_only_the_sdk_pods_and_the_exporter(first_hop: str) -> None:
    """The forwarders by default; the aggregators when there are no forwarders (one tier)."""
    one_tier = '{"fluentd": {"forwarder": {"enabled": false}}}' if first_hop == FLUENTD else "{}"
    stack = core(None, one_tier)
    assert not admits(stack.policies, flow_to(stack, stranger(), first_hop, 24224))
    for label in (c.LABEL_PIPELINE, c.LABEL_SERVICE):
        assert admits(stack.policies, flow_to(stack, stranger(**{label: "x"}), first_hop, 24224))
        assert not admits(
            stack.policies, flow_to(stack, stranger("ml-train", **{label: "x"}), first_hop, 24224)
        )
        assert not admits(stack.policies, flow_to(stack, stranger(**{label: "x"}), first_hop, 24231)), (
            "metrics: Prometheus only"
        )
    spread = core("04-network-policies-values.yaml", one_tier)  # clientNamespaces: ml-train, ml-serve
    assert admits(
        spread.policies, flow_to(spread, stranger("ml-serve", **{c.LABEL_PIPELINE: "x"}), first_hop, 24224)
    )
    assert not admits(spread.policies, flow_to(spread, stranger(**{c.LABEL_PIPELINE: "x"}), first_hop, 24224))
    everywhere = core(None, '{"networkPolicy": {"allNamespaces": true}}')
    assert admits(
        everywhere.policies,
        flow_to(everywhere, stranger("any-ns", **{c.LABEL_SERVICE: "x"}), FORWARDER, 24224),
    )
    assert not admits(everywhere.policies, flow_to(everywhere, stranger("any-ns"), FORWARDER, 24224))


def test_with_forwarders_the_aggregators_admit_only_them() -> None:
    stack = core("01-kind-demo-values.yaml")
    for pod in stack.pods:
        assert admits(stack.policies, flow_to(stack, stack.source(pod), FLUENTD, 24224)) is (
            pod.name == FORWARDER
        ), pod.name
    for labels in ({c.LABEL_PIPELINE: "x"}, {c.LABEL_SERVICE: "x"}, {}):
        assert not admits(stack.policies, flow_to(stack, stranger(**labels), FLUENTD, 24224)), labels


@pytest.mark.parametrize("scenario", [None, "01-kind-demo-values.yaml"], ids=["defaults", "kind"])
def test_no_pod_of_mlobs_core_reaches_what_it_should_not(scenario: str | None) -> None:
    stack = core(scenario)
    pods = [stack.source(p) for p in stack.pods] + [stranger(), stranger(**{c.LABEL_PIPELINE: "x"})]
    for src in [*pods, Source("the internet", OUTSIDE_IP)]:
        for dst, port in (
            (EXPORTER, 8080),
            (FLUENTD, 24231),
            (MAILPIT, 1025),
        ):  # Prometheus, Alertmanager only
            assert not admits(stack.policies, flow_to(stack, src, dst, port)), f"{src.name} -> {dst}:{port}"
        assert not admits(stack.policies, flow_to(stack, src, MAILPIT, 8025)), f"{src.name} -> Mailpit's UI"
    laptop = [
        admits(stack.policies, flow_to(stack, Source(w, ip), MAILPIT, 8025)) for w, ip in LAPTOP.items()
    ]
    assert laptop == [scenario is not None] * 2  # only the kind values open the UI to the laptop


def test_kubelet_probes_pass_kindnet_and_probe_from_serves_a_strict_plugin() -> None:
    stack = core("01-kind-demo-values.yaml")
    probes = [f for f in stack.flows() if f.kind == "probe"]
    assert stack.cut(probes) == []
    assert stack.cut(probes, node_bypass=False) == [
        f"probe: the kubelet -> {FORWARDER}:24224 (probe on forward)",
        f"probe: the kubelet -> {FORWARDER}:24231 (probe on http-metrics)",
        f"probe: the kubelet -> {EXPORTER}:8080 (probe on http-metrics)",
        f"probe: the kubelet -> {FLUENTD}:24224 (probe on forward)",
        f"probe: the kubelet -> {FLUENTD}:24231 (probe on http-metrics)",
    ]  # Mailpit's probe is admitted there by uiFrom, which holds the node's network
    opened = core(
        "01-kind-demo-values.yaml",
        f'{{"networkPolicy": {{"probeFrom": [{{"ipBlock": {{"cidr": "{NODE_IP}/32"}}}}]}}}}',
    )
    assert opened.cut([f for f in opened.flows() if f.kind == "probe"], node_bypass=False) == []


def without_peer(stack: Stack, policy: str, keep: Any) -> Stack:
    broken = copy.deepcopy(stack.docs)
    for doc in broken:
        if doc["kind"] == "NetworkPolicy" and doc["metadata"]["name"] == policy:
            for r in doc["spec"]["ingress"]:
                r["from"] = [p for p in r["from"] if keep(p)]
            # a rule left with `from: []` would admit every source: the rule goes
            doc["spec"]["ingress"] = [r for r in doc["spec"]["ingress"] if r["from"]]
    return Stack(broken, stack.kind_nodeports)


def test_a_cut_flow_is_named() -> None:
    stack = core("01-kind-demo-values.yaml")
    broken = without_peer(stack, "mlobs-fluentd-forwarder", lambda p: "pipeline-exporter" not in str(p))
    assert broken.cut(broken.flows()) == [
        f"forward: {EXPORTER} -> {FORWARDER}:24224 (MLOBS_FLUENTD_HOST=mlobs-fluentd-forwarder)"
    ]
    cut_relay = without_peer(stack, "mlobs-fluentd", lambda p: "fluentd-forwarder" not in str(p))
    assert cut_relay.cut(cut_relay.flows()) == [
        f"relay: {FORWARDER} -> {FLUENTD}:24224 (MLOBS_AGGREGATOR_HOST=mlobs-fluentd-headless)"
    ]


# ---- the umbrella, with the real upstream charts -----------------------------------------------------------

PUSHGATEWAY = "Deployment/mlobs-pushgateway"
DEMO_MONITOR = "Job/demo-drift-ci1"  # make demo's drift monitor run
POLICED = (FORWARDER, FLUENTD, INFLUXDB, EXPORTER, MAILPIT, PUSHGATEWAY)
PROMETHEUS, ALERTMANAGER, GRAFANA = (
    "Prometheus/mlobs-prometheus",
    "Alertmanager/mlobs-alertmanager",
    "Deployment/mlobs-grafana",
)
KIND_FLOWS_IN = {
    f"scrape: {PROMETHEUS} -> {EXPORTER}:8080 (ServiceMonitor mlobs-pipeline-exporter)",
    f"scrape: {PROMETHEUS} -> {FLUENTD}:24231 (ServiceMonitor mlobs-fluentd)",
    f"scrape: {PROMETHEUS} -> {FORWARDER}:24231 (ServiceMonitor mlobs-fluentd-forwarder)",
    f"relay: {FORWARDER} -> {FLUENTD}:24224 (MLOBS_AGGREGATOR_HOST=mlobs-fluentd-headless)",
    f"scrape: {PROMETHEUS} -> {INFLUXDB}:8086 (ServiceMonitor mlobs-influxdb)",
    f"scrape: {PROMETHEUS} -> {PUSHGATEWAY}:9091 (ServiceMonitor mlobs-pushgateway)",
    f"datasource: {GRAFANA} -> {INFLUXDB}:8086 (datasource InfluxDB (mlobs) http://mlobs-influxdb2:80)",
    f"smtp: {ALERTMANAGER} -> {MAILPIT}:1025 (smarthost mlobs-mailpit:1025)",
    f"url: {FLUENTD} -> {INFLUXDB}:8086 (http://mlobs-influxdb2:80)",
    *(
        f"forward: {src} -> {FORWARDER}:24224 (MLOBS_FLUENTD_HOST=mlobs-fluentd-forwarder)"
        for src in (
            "Deployment/mlobs-model-api",
            EXPORTER,
            "Job/demo-train-ci1",
            "Job/demo-diverge-ci1",
            "Job/demo-oom-ci1",
            DEMO_MONITOR,
        )
    ),
    # The demo's drift monitor run reads the baseline and serving profiles, and pushes its results.
    f"url: {DEMO_MONITOR} -> {PUSHGATEWAY}:9091 (http://mlobs-pushgateway:9091)",
    f"url: {DEMO_MONITOR} -> {INFLUXDB}:8086 (http://mlobs-influxdb2:80)",
    *(
        f"nodeport: the laptop via {what} -> {dst}:{port} (localhost:{host} -> NodePort {node})"
        for what in LAPTOP
        for dst, port, host, node in ((INFLUXDB, 8086, 8086, 30086), (MAILPIT, 8025, 8025, 30825))
    ),
}


def flows_into(stack: Stack, names: Iterable[str], kinds: Iterable[str] = ("probe",)) -> set[str]:
    return {str(f) for f in stack.flows() if f.dst.name in names and f.kind not in kinds}


def test_every_flow_of_the_kind_stack_is_admitted() -> None:
    stack = umbrella(KIND, kind=True)
    assert stack.cut(stack.flows()) == []
    assert flows_into(stack, POLICED) == KIND_FLOWS_IN
    assert stack.unresolved == {  # what the chart does not render: the cluster's own endpoints
        "scrape: ServiceMonitor mlobs-apiserver",
        "scrape: ServiceMonitor mlobs-kubelet",
        "scrape: ServiceMonitor mlobs-coredns",
        "scrape: ServiceMonitor mlobs-prometheus-node-exporter",  # host network: no policy applies
        "url: http://localhost:3000/api/admin/provisioning/datasources/reload",
    }


def test_every_flow_of_the_production_stack_is_admitted() -> None:
    stack = umbrella(PRODUCTION, kind=False)
    assert stack.cut(stack.flows()) == []
    kept = {
        f
        for f in KIND_FLOWS_IN
        if "demo" not in f and "model-api" not in f and "nodeport" not in f and MAILPIT not in f
    }
    assert flows_into(stack, POLICED) == kept
    assert not any(p.name == MAILPIT for p in stack.pods)


@pytest.mark.parametrize("values", [KIND, PRODUCTION], ids=["kind", "production"])
def test_no_pod_reaches_influxdb_but_its_own_clients(values: tuple[str, ...]) -> None:
    stack = umbrella(values, kind=values is KIND)
    clients = {FLUENTD, GRAFANA, PROMETHEUS} | ({DEMO_MONITOR} if values is KIND else set())
    for pod in stack.pods:
        assert admits(stack.policies, flow_to(stack, stack.source(pod), INFLUXDB, 8086)) is (
            pod.name in clients
        ), pod.name
    for src in (stranger(), stranger(**{c.LABEL_PIPELINE: "x"}), Source("the internet", OUTSIDE_IP)):
        assert not admits(stack.policies, flow_to(stack, src, INFLUXDB, 8086)), src.name
    laptop = [Source(what, ip) for what, ip in LAPTOP.items()]
    assert [admits(stack.policies, flow_to(stack, s, INFLUXDB, 8086)) for s in laptop] == [values is KIND] * 2
    for first_hop in (FORWARDER, FLUENTD):
        assert not admits(stack.policies, flow_to(stack, stack.source(stack.pod(GRAFANA)), first_hop, 24224))
        assert not admits(stack.policies, flow_to(stack, stranger(), first_hop, 24224))


def test_kubelet_probes_of_the_stack_either_way() -> None:
    stack = umbrella(KIND, kind=True)
    probes = [f for f in stack.flows() if f.kind == "probe"]
    assert {f.dst.name for f in probes} >= {FORWARDER, FLUENTD, INFLUXDB, EXPORTER, MAILPIT}
    assert stack.cut(probes) == []
    assert stack.cut(probes, node_bypass=False) == [
        f"probe: the kubelet -> {FORWARDER}:24224 (probe on forward)",
        f"probe: the kubelet -> {FORWARDER}:24231 (probe on http-metrics)",
        f"probe: the kubelet -> {EXPORTER}:8080 (probe on http-metrics)",
        f"probe: the kubelet -> {PUSHGATEWAY}:9091 (probe on 9091)",
        f"probe: the kubelet -> {FLUENTD}:24224 (probe on forward)",
        f"probe: the kubelet -> {FLUENTD}:24231 (probe on http-metrics)",
    ]
    node = f'json:mlobs-core.networkPolicy.probeFrom=[{{"ipBlock":{{"cidr":"{NODE_IP}/32"}}}}]'
    strict = umbrella((*KIND, node), kind=True)
    assert strict.cut(strict.flows(), node_bypass=False) == []


def test_removing_prometheus_from_the_exporter_policy_names_the_cut_flow() -> None:
    stack = umbrella(KIND, kind=True)
    broken = without_peer(stack, "mlobs-pipeline-exporter", lambda p: "prometheus" not in str(p))
    assert broken.cut(broken.flows()) == [
        f"scrape: {PROMETHEUS} -> {EXPORTER}:8080 (ServiceMonitor mlobs-pipeline-exporter)"
    ]


# ---- the drift monitors: they read InfluxDB, record through Fluentd, push to the Pushgateway ---------------

MONITOR = "CronJob/mlobs-monitor-churn"
MONITORS = (
    *KIND,
    'json:mlobs-core.monitors=[{"name": "churn", "model": "churn-logreg", "baseline": "demo-train-ci1:train",'
    ' "schedule": "@hourly"}]',
)
MONITOR_FLOWS = {
    f"url: {MONITOR} -> {PUSHGATEWAY}:9091 (http://mlobs-pushgateway:9091)",
    f"url: {MONITOR} -> {INFLUXDB}:8086 (http://mlobs-influxdb2:80)",
    f"forward: {MONITOR} -> {FORWARDER}:24224 (MLOBS_FLUENTD_HOST=mlobs-fluentd-forwarder)",
}


def test_every_flow_of_a_drift_monitor_is_admitted() -> None:
    stack = umbrella(MONITORS, kind=True)
    assert stack.cut(stack.flows()) == []
    assert flows_into(stack, POLICED) == KIND_FLOWS_IN | MONITOR_FLOWS


def test_the_pushgateway_admits_only_the_monitors_and_prometheus() -> None:
    stack = umbrella(MONITORS, kind=True)
    allowed = {MONITOR, DEMO_MONITOR, PROMETHEUS}
    for pod in stack.pods:
        assert admits(stack.policies, flow_to(stack, stack.source(pod), PUSHGATEWAY, 9091)) is (
            pod.name in allowed
        ), pod.name
    for src in (stranger(), stranger(**{c.LABEL_PIPELINE: "drift"}), Source("the internet", OUTSIDE_IP)):
        assert not admits(stack.policies, flow_to(stack, src, PUSHGATEWAY, 9091)), src.name
    for what, ip in LAPTOP.items():
        assert not admits(stack.policies, flow_to(stack, Source(what, ip), PUSHGATEWAY, 9091)), what


def test_influxdb_admits_a_monitor_only_when_there_is_one() -> None:
    with_monitor, without = umbrella(MONITORS, kind=True), umbrella(KIND, kind=True)
    monitor = with_monitor.source(with_monitor.pod(MONITOR))
    assert admits(with_monitor.policies, flow_to(with_monitor, monitor, INFLUXDB, 8086))
    assert not admits(without.policies, flow_to(without, monitor, INFLUXDB, 8086))


def test_removing_the_monitors_from_the_pushgateway_policy_names_the_cut_flow() -> None:
    stack = umbrella(MONITORS, kind=True)
    broken = without_peer(stack, "mlobs-pushgateway", lambda p: "drift-monitor" not in str(p))
    assert broken.cut(broken.flows()) == [
        f"url: {MONITOR} -> {PUSHGATEWAY}:9091 (http://mlobs-pushgateway:9091)",
        f"url: {DEMO_MONITOR} -> {PUSHGATEWAY}:9091 (http://mlobs-pushgateway:9091)",
    ]


def test_without_the_demo_monitor_policy_its_influxdb_flow_is_cut() -> None:
    stack = umbrella(KIND, kind=True)
    docs = [
        d
        for d in stack.docs
        if not (d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "mlobs-demo-monitor")
    ]
    broken = Stack(docs, stack.kind_nodeports)
    assert broken.cut(broken.flows()) == [
        f"url: {DEMO_MONITOR} -> {INFLUXDB}:8086 (http://mlobs-influxdb2:80)"
    ]
