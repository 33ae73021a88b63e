"""The umbrella's production values and its Thanos example, rendered with the real upstream charts.

The umbrella is rendered by shared/tools/upstream-render (the real kube-prometheus-stack at its pin,
influxdb2 and our mlobs-core, Helm's own engine), with ``--check-keys``: Helm ignores a misspelt
values key without a word, and the tool lists every key the charts' defaults lack.  Without the
assembled upstream charts (MLOBS_UPSTREAM_CHARTS, by default /tmp/upstream-charts) these tests are
skipped, saying so.

Checked, each by a checker that is also shown failing:
  - the production values add no key that a chart ignores (kube-prometheus-stack's HA keys
    included), and a misspelt HA key is reported;
  - the HA topology of the rendered objects: an HA pair of Prometheus with the replica external
    label the operator drops from alerts, three Alertmanagers, disruption budgets that select the
    pods the operator makes, three Fluentd aggregators, two exporters electing a leader;
  - the Prometheus and Alertmanager CRs against the pinned CRDs' schemas, with unknown fields
    refused (``--check-keys`` cannot see below ``thanos``, whose default is an empty map, so a
    misspelt key there reaches the CR, where the schema catches it);
  - the Thanos example: a sidecar with its object storage read from an existing Secret, the
    discovery Service for Thanos Query, and no credential in the example or in the render;
  - the alerting rules put no per-replica value into an alert's labels, so the two replicas'
    copies of an alert are equal once the operator drops the replica label;
  - live: two real Prometheus replicas load the chart's rules and each send their copy of a firing
    alert to a real Alertmanager, which holds one alert; without the operator's labeldrop it holds
    two, told apart by the replica label alone.  The operator cannot run here, so the two
    Prometheus configurations carry the parts of its configuration this rests on (external
    labels, alert relabeling), as prometheus-operator v0.93 writes them.

Cohesive over 400 lines: one subject, the HA install, with the render and the checkers it needs.
"""

from __future__ import annotations

import base64
import copy
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import helm_python
import jsonschema  # type: ignore[import-untyped]  # kubernetes-validate's own dependency
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from pipeline_sdk import contract as c
from tests.conftest import ROOT, wait_for
from tests.support.live_stack import Service, alertmanager, have_binaries, prometheus
from tests.test_chart import KUBE_VERSIONS
from tests.test_network_policies import CORE, RENDER_TOOL, UMBRELLA, UPSTREAM_CHARTS, pods_of, selects

RELEASE = NAMESPACE = "mlobs"
PRODUCTION = "ci/02-production-values.yaml"
THANOS = "examples/thanos-values.yaml"
REPLICA_LABEL = "prometheus_replica"  # the operator's default, and what Thanos Query is told to dedup on
CRDS = UPSTREAM_CHARTS / "kube-prometheus-stack" / "charts" / "crds" / "crds"
CRD_FILES = {  # the operator's kinds the umbrella renders, and their CRD files (crd-<plural>.yaml)
    "Prometheus": "prometheuses",
    "Alertmanager": "alertmanagers",
    "ServiceMonitor": "servicemonitors",
    "PrometheusRule": "prometheusrules",
}
HA_KEYS = (  # kube-prometheus-stack's keys the production values set for HA
    "prometheus.prometheusSpec.replicas",
    "prometheus.prometheusSpec.replicaExternalLabelName",
    "prometheus.podDisruptionBudget.enabled",
    "prometheus.podDisruptionBudget.minAvailable",
    "alertmanager.alertmanagerSpec.replicas",
    "alertmanager.podDisruptionBudget.enabled",
    "alertmanager.podDisruptionBudget.minAvailable",
)


@dataclass(frozen=True)
class Render:
    docs: tuple[dict[str, Any], ...]
    findings: tuple[str, ...]  # --check-keys: "<dotted key>  [chart ...: <verdict>]"

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        [doc] = [d for d in self.of(kind) if d["metadata"]["name"] == name]
        return doc

    def keys(self) -> set[str]:
        return {f.split()[0] for f in self.findings}


def check_keys_findings(stderr: str) -> tuple[str, ...]:
    """The lines render.py prints under its --check-keys heading ("(none)": no line)."""
    lines = stderr.splitlines()
    start = lines.index("== values keys not present in chart defaults") + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("== "))
    return tuple(line.strip() for line in lines[start:end] if line.strip() != "(none)")


@cache
def render(*values: str) -> Render:
    """The umbrella with values.yaml, then files of charts/mlobs (-f) or ``json:key=value`` (--set-json)."""
    if not (UPSTREAM_CHARTS / "kube-prometheus-stack" / "Chart.yaml").exists() or not RENDER_TOOL.exists():
        pytest.skip(
            f"the upstream charts are not assembled in {UPSTREAM_CHARTS}: run "
            "shared/tools/upstream-render/assemble.sh MIRROR_DIR /tmp/upstream-charts (README there), "
            "or set MLOBS_UPSTREAM_CHARTS"
        )
    args = ["-f", str(UMBRELLA / "values.yaml")]
    for v in values:
        args += (
            ["--set-json", v.removeprefix("json:")] if v.startswith("json:") else ["-f", str(UMBRELLA / v)]
        )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rendered.yaml"
        cmd = [sys.executable, str(RENDER_TOOL), str(UMBRELLA), *args, "--charts", str(UPSTREAM_CHARTS)]
        cmd += ["--name", RELEASE, "-n", NAMESPACE, "-o", str(out), "--monitoring-apis", "--skip-tests"]
        run = subprocess.run([*cmd, "--check-keys"], capture_output=True, text=True, check=False)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        docs = tuple(d for d in yaml.safe_load_all(out.read_text()) if d)
    return Render(docs, check_keys_findings(run.stderr))


def added_findings(*values: str) -> list[str]:
    """What --check-keys reports for ``values`` beyond what it reports for values.yaml alone."""
    return sorted(set(render(*values).findings) - set(render().findings))


# ---- --check-keys ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("files", [(PRODUCTION,), (PRODUCTION, THANOS)], ids=["production", "thanos"])
def test_no_key_of_the_production_values_is_ignored(files: tuple[str, ...]) -> None:
    assert added_findings(*files) == []
    set_here = {f"kube-prometheus-stack.{k}" for k in HA_KEYS}
    assert set_here.isdisjoint(render(*files).keys())
    production = yaml.safe_load((UMBRELLA / PRODUCTION).read_text())["kube-prometheus-stack"]
    for key in HA_KEYS:  # each HA key is really in the file, so the check above covered it
        node = production
        for part in key.split("."):
            node = node[part]
        assert node is not None, key


def test_check_keys_reports_a_misspelt_ha_key() -> None:
    typos = (
        "json:kube-prometheus-stack.prometheus.prometheusSpec.replica=2",
        "json:kube-prometheus-stack.alertmanager.alertmanagerSpec.replicaz=3",
    )
    verdict = (
        "[chart kube-prometheus-stack: not in its defaults; never read by its templates -> SILENTLY IGNORED]"
    )
    assert added_findings(PRODUCTION, *typos) == [
        f"kube-prometheus-stack.alertmanager.alertmanagerSpec.replicaz  {verdict}",
        f"kube-prometheus-stack.prometheus.prometheusSpec.replica  {verdict}",
    ]


def test_check_keys_findings_are_read_from_the_tools_report() -> None:
    heading = "== values keys not present in chart defaults"
    report = f"== summary: 3 objects\n{heading}\n  a.b  [x]\n  c  [y]\n== timing: 1s"
    assert check_keys_findings(report) == ("a.b  [x]", "c  [y]")
    assert check_keys_findings(f"{heading}\n  (none)\n== timing") == ()
    with pytest.raises(ValueError, match="is not in list"):  # no report: an error, never "no findings"
        check_keys_findings("== summary: 3 objects\n== timing: 1s")


# ---- the HA topology --------------------------------------------------------------------------------------


def ha_problems(r: Render) -> list[str]:
    """What keeps the rendered stack from surviving the loss of any one pod, as sentences."""
    problems: list[str] = []
    [prom] = r.of("Prometheus")
    spec, name = prom["spec"], prom["metadata"]["name"]
    if (spec.get("replicas") or 1) < 2:
        problems.append(f"Prometheus {name}: {spec.get('replicas') or 1} replica, not an HA pair")
    if spec.get("replicaExternalLabelName") != REPLICA_LABEL:
        problems.append(
            f"Prometheus {name}: replicaExternalLabelName is {spec.get('replicaExternalLabelName')!r}, not "
            f"{REPLICA_LABEL!r} (the label the operator drops from alerts and Thanos deduplicates on)"
        )
    if REPLICA_LABEL in (spec.get("externalLabels") or {}):
        problems.append(
            f"Prometheus {name}: externalLabels sets {REPLICA_LABEL} to one value for both replicas"
        )
    [am] = r.of("Alertmanager")
    if (am["spec"].get("replicas") or 1) < 3:
        problems.append(
            f"Alertmanager {am['metadata']['name']}: {am['spec'].get('replicas') or 1} replicas, not 3"
        )
    for cr in (prom, am):
        terms = (cr["spec"].get("affinity") or {}).get("podAntiAffinity", {})
        spread = terms.get("preferredDuringSchedulingIgnoredDuringExecution") or []
        if not any(t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname" for t in spread):
            problems.append(f"{cr['kind']} {cr['metadata']['name']}: its replicas may share a node")
    pods = {p.name: p for p in pods_of(list(r.docs))}
    budgets = {d["metadata"]["name"]: d for d in r.of("PodDisruptionBudget")}
    for cr, keep in ((prom, 1), (am, 2)):
        pod = pods[f"{cr['kind']}/{cr['metadata']['name']}"]
        covering = [b for b in budgets.values() if selects(b["spec"]["selector"], pod.labels)]
        if [b["spec"].get("minAvailable") for b in covering] != [keep]:
            problems.append(
                f"{pod.name}: disruption budgets {[b['metadata']['name'] for b in covering]}, "
                f"not one keeping {keep} pod(s)"
            )
    [fluentd] = [d for d in r.of("StatefulSet") if d["metadata"]["name"] == f"{RELEASE}-fluentd"]
    if fluentd["spec"]["replicas"] < 3:
        problems.append(f"StatefulSet {RELEASE}-fluentd: {fluentd['spec']['replicas']} aggregator(s), not 3")
    exporter = r.one("Deployment", f"{RELEASE}-pipeline-exporter")
    leases = [d for d in r.of("Role") if d["metadata"]["name"] == f"{RELEASE}-pipeline-exporter-lease"]
    if exporter["spec"]["replicas"] < 2 or not leases:
        problems.append(
            f"Deployment {RELEASE}-pipeline-exporter: {exporter['spec']['replicas']} replica(s), "
            f"{'with' if leases else 'without'} leader election"
        )
    return problems


def test_the_production_stack_survives_the_loss_of_any_one_pod() -> None:
    r = render(PRODUCTION)
    assert ha_problems(r) == []
    prom = r.one("Prometheus", f"{RELEASE}-prometheus")["spec"]
    am = r.one("Alertmanager", f"{RELEASE}-alertmanager")["spec"]
    assert (prom["replicas"], prom["replicaExternalLabelName"], am["replicas"]) == (2, REPLICA_LABEL, 3)
    assert prom["shards"] == 1  # 2 pods: one shard of two replicas, each with every series
    assert [a["name"] for a in prom["alerting"]["alertmanagers"]] == [f"{RELEASE}-alertmanager"]
    budgets = {b["metadata"]["name"]: b["spec"]["minAvailable"] for b in r.of("PodDisruptionBudget")}
    assert (budgets[f"{RELEASE}-prometheus"], budgets[f"{RELEASE}-alertmanager"]) == (1, 2)
    exporter = r.one("Deployment", f"{RELEASE}-pipeline-exporter")["spec"]
    assert (exporter["replicas"], r.one("StatefulSet", f"{RELEASE}-fluentd")["spec"]["replicas"]) == (2, 3)


def test_production_forwarders_buffer_10_gib_and_run_on_gpu_nodes_too() -> None:
    """Each node's forwarder: a larger buffer than kind's 2 GiB, and the GPU nodes' taint tolerated."""
    for values, buffer in ((PRODUCTION,), "10g"), ((), "2g"):
        pod = render(*values).one("DaemonSet", f"{RELEASE}-fluentd-forwarder")["spec"]["template"]["spec"]
        [fluentd] = [k for k in pod["containers"] if k["name"] == "fluentd"]
        env = {e["name"]: e.get("value") for e in fluentd["env"]}
        assert env["MLOBS_FORWARDER_BUFFER_LIMIT"] == buffer
        gpu = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        assert pod.get("tolerations", []) == ([gpu] if values else [])


def test_the_kind_stack_is_reported_as_running_everything_once() -> None:
    assert ha_problems(render()) == [
        "Prometheus mlobs-prometheus: 1 replica, not an HA pair",
        "Prometheus mlobs-prometheus: replicaExternalLabelName is None, not 'prometheus_replica' "
        "(the label the operator drops from alerts and Thanos deduplicates on)",
        "Alertmanager mlobs-alertmanager: 1 replicas, not 3",
        "Prometheus/mlobs-prometheus: disruption budgets [], not one keeping 1 pod(s)",
        "Alertmanager/mlobs-alertmanager: disruption budgets [], not one keeping 2 pod(s)",
        "StatefulSet mlobs-fluentd: 1 aggregator(s), not 3",
        "Deployment mlobs-pipeline-exporter: 1 replica(s), without leader election",
    ]


def test_a_cleared_replica_label_and_one_replica_too_few_are_reported() -> None:
    r = render(
        PRODUCTION,
        "json:kube-prometheus-stack.prometheus.prometheusSpec.replicaExternalLabelNameClear=true",
        "json:kube-prometheus-stack.alertmanager.alertmanagerSpec.replicas=2",
        'json:kube-prometheus-stack.prometheus.prometheusSpec.externalLabels={"prometheus_replica": "a"}',
        'json:kube-prometheus-stack.alertmanager.alertmanagerSpec.podAntiAffinity=""',
    )
    assert ha_problems(r) == [
        "Prometheus mlobs-prometheus: replicaExternalLabelName is '', not 'prometheus_replica' "
        "(the label the operator drops from alerts and Thanos deduplicates on)",
        "Prometheus mlobs-prometheus: externalLabels sets prometheus_replica to one value for both replicas",
        "Alertmanager mlobs-alertmanager: 2 replicas, not 3",
        "Alertmanager mlobs-alertmanager: its replicas may share a node",
    ]


# ---- the CRs against the pinned CRDs, unknown fields refused ----------------------------------------------


def strict(schema: Any) -> Any:
    """An OpenAPI schema of a CRD that refuses unknown fields, as the API server prunes them."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    preserve = out.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


@cache
def crd_validator(kind: str) -> jsonschema.Draft202012Validator:
    crd = yaml.safe_load((CRDS / f"crd-{CRD_FILES[kind]}.yaml").read_text())
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft202012Validator(strict(version["schema"]["openAPIV3Schema"]))


def cr_errors(doc: dict[str, Any]) -> list[str]:
    errors = crd_validator(doc["kind"]).iter_errors(doc)
    return sorted(f"{doc['kind']} {'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


@pytest.mark.parametrize(
    "files", [(), (PRODUCTION,), (PRODUCTION, THANOS)], ids=["kind", "production", "thanos"]
)
def test_the_prometheus_and_alertmanager_crs_match_the_pinned_crds(files: tuple[str, ...]) -> None:
    r = render(*files)
    crs = [*r.of("Prometheus"), *r.of("Alertmanager")]
    assert [d["kind"] for d in crs] == ["Prometheus", "Alertmanager"]
    assert [e for d in crs for e in cr_errors(d)] == []


def test_every_object_of_the_thanos_and_production_render_validates() -> None:
    """Built-in kinds strictly against the Kubernetes schemas the chart supports, the rest the CRDs."""
    docs = render(PRODUCTION, THANOS).docs
    builtin = [d for d in docs if d["kind"] not in CRD_FILES]
    assert len(builtin) + sum(d["kind"] in CRD_FILES for d in docs) == len(docs)
    for kube in KUBE_VERSIONS:
        for doc in builtin:
            kubernetes_validate.validate(doc, kube, strict=True)
    assert [e for d in docs if d["kind"] in CRD_FILES for e in cr_errors(d)] == []
    kinds = {d["kind"] for d in builtin}
    assert {"PodDisruptionBudget", "StatefulSet", "Deployment", "DaemonSet", "Service"} <= kinds


def test_a_rendered_object_with_an_unknown_field_is_refused() -> None:
    docs = render(PRODUCTION, THANOS).docs
    pdb = copy.deepcopy(next(d for d in docs if d["kind"] == "PodDisruptionBudget"))
    pdb["spec"]["minAvaliable"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pdb, KUBE_VERSIONS[0], strict=True)
    monitor = copy.deepcopy(next(d for d in docs if d["kind"] == "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    assert cr_errors(monitor) == [
        "ServiceMonitor spec.endpoints.0: Additional properties are not allowed ('intervall' was unexpected)"
    ]


def test_a_misspelt_thanos_key_passes_check_keys_but_not_the_crd() -> None:
    typo = 'json:kube-prometheus-stack.prometheus.prometheusSpec.thanos.objectStorageConfg={"name": "x"}'
    assert added_findings(PRODUCTION, THANOS, typo) == []  # below thanos: {}, --check-keys is blind
    [prom] = render(PRODUCTION, THANOS, typo).of("Prometheus")
    assert cr_errors(prom) == [
        "Prometheus spec.thanos: Additional properties are not allowed ('objectStorageConfg' was unexpected)"
    ]


# ---- the Thanos example ----------------------------------------------------------------------------------


def credentials_in(r: Render) -> list[str]:
    """Secrets the chart renders from an object storage configuration given in values."""
    return [
        f"Secret {d['metadata']['name']}: {key}"
        for d in r.of("Secret")
        for key, value in (d.get("data") or {}).items()
        if key == "object-storage-configs.yaml"
        or "secret_key" in base64.b64decode(value).decode(errors="replace")
    ]


def walk(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*path, str(k)), v
            yield from walk(v, (*path, str(k)))


def test_the_thanos_example_runs_a_sidecar_with_its_bucket_from_a_secret() -> None:
    r = render(PRODUCTION, THANOS)
    prom = r.one("Prometheus", f"{RELEASE}-prometheus")["spec"]
    assert prom["thanos"] == {"objectStorageConfig": {"name": "mlobs-thanos-objstore", "key": "objstore.yml"}}
    assert (prom["replicas"], prom["replicaExternalLabelName"], prom["retention"]) == (2, REPLICA_LABEL, "3d")
    discovery = r.one("Service", f"{RELEASE}-thanos-discovery")["spec"]
    assert discovery["clusterIP"] == "None"
    assert [(p["name"], p["port"]) for p in discovery["ports"]] == [("grpc", 10901), ("http", 10902)]
    assert credentials_in(r) == []
    assert "thanos" not in render(PRODUCTION).one("Prometheus", f"{RELEASE}-prometheus")["spec"]  # opt-in


def test_the_thanos_example_holds_no_credential() -> None:
    example = yaml.safe_load((UMBRELLA / THANOS).read_text())
    keys = {path[-1] for path, _ in walk(example)}
    assert keys.isdisjoint({"secret", "access_key", "secret_key", "password", "token"}), keys
    storage = example["kube-prometheus-stack"]["prometheus"]["prometheusSpec"]["thanos"][
        "objectStorageConfig"
    ]
    assert storage == {"existingSecret": {"name": "mlobs-thanos-objstore", "key": "objstore.yml"}}


def test_object_storage_credentials_in_values_are_reported() -> None:
    inline = (
        "json:kube-prometheus-stack.prometheus.prometheusSpec.thanos.objectStorageConfig="
        '{"secret": {"type": "S3", "config": {"bucket": "b", "access_key": "AKIA1", "secret_key": "x"}}}'
    )
    r = render(PRODUCTION, inline)
    assert credentials_in(r) == ["Secret mlobs-prometheus: object-storage-configs.yaml"]
    assert r.one("Prometheus", f"{RELEASE}-prometheus")["spec"]["thanos"] == {
        "objectStorageConfig": {"key": "object-storage-configs.yaml", "name": "mlobs-prometheus"}
    }


# ---- the alerting rules: equal copies from both replicas ---------------------------------------------------

PER_REPLICA = ("$value", ".Value", "$externalLabels", ".ExternalLabels", REPLICA_LABEL)


def per_replica_labels(rule: dict[str, Any]) -> list[str]:
    """Labels of an alerting rule whose value can differ between the two replicas' copies of its alert.

    Both replicas scrape the same targets, so an expression's own labels are equal; what differs is
    each replica's external labels and the instant it evaluates at (so the value it sees).
    """
    found = []
    for key, value in (rule.get("labels") or {}).items():
        if key == REPLICA_LABEL or any(word in str(value) for word in PER_REPLICA):
            found.append(f"{rule['alert']}: label {key}={value!r}")
    for key, value in (rule.get("annotations") or {}).items():
        if "$externalLabels" in str(value) or ".ExternalLabels" in str(value):
            found.append(f"{rule['alert']}: annotation {key} names an external label")
    return found


def alerting_rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in sorted((ROOT / "alerting").glob("*-rules.yaml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def rendered_alerting_rules(r: Render, ours: bool) -> list[dict[str, Any]]:
    return [
        rule
        for doc in r.of("PrometheusRule")
        if (doc["metadata"]["labels"].get("app.kubernetes.io/part-of") == "mlobs") is ours
        for group in doc["spec"]["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def test_no_alerting_rule_puts_a_per_replica_value_into_its_alert() -> None:
    rules, r = alerting_rules(), render(PRODUCTION)
    assert len(rules) == 15
    assert sorted(a["alert"] for a in rendered_alerting_rules(r, ours=True)) == sorted(
        a["alert"] for a in rules
    )
    upstream = rendered_alerting_rules(r, ours=False)  # kube-prometheus-stack's defaultRules
    assert len(upstream) == 134
    assert [f for rule in [*rules, *upstream] for f in per_replica_labels(rule)] == []


def test_per_replica_values_in_a_rule_are_reported() -> None:
    rule = copy.deepcopy(alerting_rules()[0])
    rule["labels"] |= {"replica": "{{ $externalLabels.prometheus_replica }}", "seen": "{{ $value }}"}
    rule["labels"][REPLICA_LABEL] = "a"
    rule["annotations"]["summary"] = "from {{ $externalLabels.prometheus_replica }}"
    assert per_replica_labels(rule) == [
        f"{rule['alert']}: label replica='{{{{ $externalLabels.prometheus_replica }}}}'",
        f"{rule['alert']}: label seen='{{{{ $value }}}}'",
        f"{rule['alert']}: label {REPLICA_LABEL}='a'",
        f"{rule['alert']}: annotation summary names an external label",
    ]


# ---- live: two real Prometheus, one real Alertmanager -----------------------------------------------------

OPERATOR_ALERT_RELABEL = [{"action": "labeldrop", "regex": REPLICA_LABEL}]  # what the operator writes


class ErroringFluentd:
    """A /metrics endpoint standing in for Fluentd's: its InfluxDB output's error counter grows per scrape."""

    def __init__(self) -> None:
        self.errors = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.errors += 1
                name = c.PROM_FLUENTD_OUTPUT_ERRORS
                body = (
                    f"# TYPE {name} counter\n"
                    f'{name}{{plugin_id="out_influxdb",type="influxdb2"}} {outer.errors}\n'
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.target = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def chart_rule_files(tmp: Path) -> list[str]:
    """mlobs-core's PrometheusRules (Helm's engine, from alerting/), evaluated every second."""
    out = helm_python.Chart.load(CORE).render({}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    files = []
    for doc in (d for text in out.values() for d in yaml.safe_load_all(text) if d):
        if doc["kind"] == "PrometheusRule":
            groups = [{**g, "interval": "1s"} for g in doc["spec"]["groups"]]
            path = tmp / f"{doc['metadata']['name']}.yaml"
            path.write_text(yaml.safe_dump({"groups": groups}))
            files.append(str(path))
    assert len(files) == len(list((ROOT / "alerting").glob("*-rules.yaml")))
    return files


def replica_config(
    workdir: Path, ordinal: int, *, drop: bool, am_port: int, fluentd: str, rules: list[str]
) -> Path:
    """The parts of the operator's Prometheus configuration that HA alerting rests on.

    External labels prometheus=<namespace>/<name> and prometheus_replica=<pod name>, and, unless
    ``drop`` is False, the labeldrop of the replica label from alerts (prometheus-operator v0.93).
    The Fluentd target carries the namespace and pod labels the ServiceMonitor's relabeling adds.
    """
    pod = f"prometheus-{RELEASE}-prometheus-{ordinal}"
    alerting: dict[str, Any] = {
        "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}],
    }
    if drop:
        alerting["alert_relabel_configs"] = OPERATOR_ALERT_RELABEL
    config = {
        "global": {
            "scrape_interval": "1s",
            "evaluation_interval": "1s",
            "external_labels": {"prometheus": f"{NAMESPACE}/{RELEASE}-prometheus", REPLICA_LABEL: pod},
        },
        "rule_files": rules,
        "alerting": alerting,
        "scrape_configs": [
            {
                "job_name": c.PROM_JOB_FLUENTD,
                "static_configs": [
                    {"targets": [fluentd], "labels": {"namespace": NAMESPACE, "pod": f"{RELEASE}-fluentd-0"}}
                ],
            }
        ],
    }
    workdir.mkdir()
    path = workdir / "prometheus.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def counted(service: Service, metric: str) -> float:
    """The sum of a counter's series on a server's own /metrics."""
    with urllib.request.urlopen(service.url + "/metrics", timeout=10) as resp:
        lines = resp.read().decode().splitlines()
    return sum(float(line.split()[-1]) for line in lines if line.startswith((metric + " ", metric + "{")))


@pytest.mark.skipif(
    not have_binaries(), reason="Prometheus/Alertmanager not installed: `make test` installs them"
)
@pytest.mark.parametrize("drop", [True, False], ids=["replica-label-dropped", "replica-label-kept"])
def test_two_prometheus_replicas_make_one_alert_in_alertmanager(tmp_path: Path, drop: bool) -> None:
    am_config = tmp_path / "alertmanager.yaml"
    am_config.write_text(yaml.safe_dump({"route": {"receiver": "none"}, "receivers": [{"name": "none"}]}))
    fluentd, services = ErroringFluentd(), []
    try:
        am = alertmanager(am_config, tmp_path)
        services.append(am)
        rules = chart_rule_files(tmp_path)
        for i in (0, 1):
            workdir = tmp_path / f"replica-{i}"
            config = replica_config(
                workdir, i, drop=drop, am_port=am.port, fluentd=fluentd.target, rules=rules
            )
            services.append(prometheus(config, config.parent))
        replicas = services[1:]
        wait_for(
            lambda: all(counted(p, "prometheus_notifications_sent_total") >= 1 for p in replicas),
            30,
            "both replicas to send the alert",
        )
        assert counted(am, "alertmanager_alerts_received_total") >= 2  # a copy from each

        def firing() -> list[dict[str, Any]]:
            alerts: list[dict[str, Any]] = am.get_json("/api/v2/alerts")
            return sorted((a["labels"] for a in alerts), key=lambda labels: labels.get(REPLICA_LABEL, ""))

        expected = {
            "alertname": "FluentdOutputErrors",
            "namespace": NAMESPACE,
            "pod": f"{RELEASE}-fluentd-0",
            "plugin_id": "out_influxdb",
            "prometheus": f"{NAMESPACE}/{RELEASE}-prometheus",
            "severity": "warning",
            "stack": "mlobs",
        }
        if drop:
            assert firing() == [expected]
        else:  # one copy per replica, told apart by the replica label alone: two notifications
            wait_for(lambda: len(firing()) == 2, 10, "both copies in Alertmanager")
            assert firing() == [
                expected | {REPLICA_LABEL: f"prometheus-{RELEASE}-prometheus-{i}"} for i in (0, 1)
            ]
    finally:
        for service in services:
            service.stop()
        fluentd.close()
