"""The pieces `make up` relies on: scripts/lib.sh's tables and image tags, and what the chart does
with the tags, Helm's files and the umbrella's lint (the real Helm engine throughout)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from tests.conftest import ROOT
from tests.support.up_laptop import OUR_WORKLOADS, PORT_VARS, Laptop, lib, node_version

# ---- scripts/lib.sh -----------------------------------------------------------------------------------


def test_an_unrelated_or_ignored_file_keeps_every_tag(tmp_path: Path) -> None:
    laptop = Laptop(tmp_path)
    before = laptop.tags()
    (laptop.repo / "exporters/pipeline_exporter/__pycache__").mkdir(exist_ok=True)
    (laptop.repo / "exporters/pipeline_exporter/__pycache__/x.cpython-311.pyc").write_bytes(b"\0")
    (laptop.repo / "charts/NOTES.md").write_text("not an input of any image\n")
    kind_config = laptop.repo / "kind-config.yaml"
    kind_config.write_text(kind_config.read_text() + "# a comment\n")
    assert laptop.tags() == before


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("COPY exporters/*.py /x/", "has a wildcard"),
        ('COPY ["exporters", "/x"]', "JSON form"),
        ("ADD https://example.invalid/x.tgz /x/", "ADD of a URL"),
        ("COPY missing-dir /x/", "'missing-dir' does not exist"),
    ],
)
def test_a_copy_the_tag_cannot_cover_is_refused_by_name(tmp_path: Path, line: str, why: str) -> None:
    laptop = Laptop(tmp_path)
    dockerfile = laptop.repo / "exporters/Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + line + "\n")
    done = subprocess.run(
        ["bash", "-c", "set -e; . scripts/lib.sh; image_tag exporters/Dockerfile"],
        capture_output=True, text=True, cwd=laptop.repo, check=False,
    )  # fmt: skip
    assert done.returncode == 1 and done.stdout == ""
    assert why in done.stderr and "exporters/Dockerfile" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("kind\nmlobs\nother", True),
        ("mlobs", True),
        ("mlobs-dev\nxmlobs", False),
        ("", False),
        ("mlo", False),
    ],
)
def test_has_line_matches_a_whole_line_only(text: str, found: bool) -> None:
    done = subprocess.run(
        ["bash", "-c", '. scripts/lib.sh; has_line "$1" mlobs', "-", text], cwd=ROOT, check=False, timeout=10
    )
    assert done.returncode == (0 if found else 1)


def test_the_port_table_covers_every_mapping_of_kind_config_and_the_node_ports() -> None:
    table = [line.split() for line in lib(ROOT, 'printf "%s\\n" "$MLOBS_PORTS"').splitlines()]
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    mappings = {m["containerPort"]: m["hostPort"] for n in config["nodes"] for m in n["extraPortMappings"]}
    assert {int(row[3]) for row in table} == set(mappings)
    assert [row[2] for row in table] == list(PORT_VARS)
    for key, _, _, container in table:
        assert lib(ROOT, f"host_port {key}").strip() == str(mappings[int(container)])
    umbrella = (ROOT / "charts/mlobs/values.yaml").read_text()
    node_ports = {int(p) for p in re.findall(r"nodePort: (\d+)", umbrella)}
    core = yaml.safe_load((ROOT / "charts/mlobs-core/values.yaml").read_text())
    assert node_ports | {core["mailpit"]["nodePort"]} == set(mappings)


def test_the_image_table_covers_every_dockerfile_and_the_chart_values() -> None:
    table = [line.split() for line in lib(ROOT, 'printf "%s\\n" "$MLOBS_IMAGES"').splitlines()]
    dockerfiles = subprocess.run(
        ["git", "ls-files", "*Dockerfile"], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    assert sorted(row[2] for row in table) == sorted(dockerfiles.split())
    images = yaml.safe_load((ROOT / "charts/mlobs-core/values.yaml").read_text())["images"]
    assert {row[0]: row[1] for row in table} == {
        k: v["repository"] for k, v in images.items() if k != "mailpit"
    }
    values = yaml.safe_load((ROOT / "charts/mlobs/ci/01-kind-values.yaml").read_text())
    rendered = helm_python.Chart.load(ROOT / "charts/mlobs-core").render(
        values["mlobs-core"], name="mlobs", namespace="mlobs", is_install=True
    )
    users: dict[str, set[str]] = {}
    for doc in (d for text in rendered.values() for d in yaml.safe_load_all(text) if d):
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            pod = doc["spec"]["template"]["spec"]
            for container in pod.get("initContainers", []) + pod["containers"]:
                users.setdefault(container["image"].split(":")[0], set()).add(
                    f"{doc['kind']}/{doc['metadata']['name']}"
                )
    assert {key: users[repo] for key, repo, _ in table} == {k: set(w) for k, w in OUR_WORKLOADS.items()}


def core_templates(**tags: str) -> dict[str, Any]:
    values: dict[str, Any] = {"demo": {"enabled": True}, "images": {k: {"tag": t} for k, t in tags.items()}}
    rendered = helm_python.Chart.load(ROOT / "charts/mlobs-core").render(
        values, name="mlobs", namespace="mlobs", is_install=False, is_upgrade=True
    )
    docs = [d for text in rendered.values() for d in yaml.safe_load_all(text) if d]
    return {
        f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]
        for d in docs
        if "template" in d.get("spec", {})
    }


def test_only_a_changed_tag_changes_a_pod_template() -> None:
    tags = {"exporter": "aaaaaaaaaaaa", "fluentd": "bbbbbbbbbbbb", "demo": "cccccccccccc"}
    first, again = core_templates(**tags), core_templates(**tags)
    assert first == again and len(first) == 5  # secrets are random on every render, pod templates are not
    assert sorted(first) == sorted(
        [*(w for ws in OUR_WORKLOADS.values() for w in ws), "Deployment/mlobs-mailpit"]
    )
    for key, workloads in OUR_WORKLOADS.items():
        changed = core_templates(**{**tags, key: "dddddddddddd"})
        assert sorted(w for w in first if first[w] != changed[w]) == sorted(workloads), key


def test_helm_would_read_a_digit_only_tag_as_a_number_so_tags_go_through_set_string() -> None:
    assert helm_python.parse_set_string("images.demo.tag=123456789012") == {
        "images": {"demo": {"tag": 123456789012}}
    }
    assert helm_python.parse_set_string_values("images.demo.tag=123456789012") == {
        "images": {"demo": {"tag": "123456789012"}}
    }
    result = helm_python.lint(
        ROOT / "charts/mlobs-core", {"images": {"demo": {"repository": "x", "tag": 123}}}, strict=True
    )
    assert result["errors"], "the schema refuses a number as a tag"


def test_fluentd_s_statefulset_is_governed_by_a_headless_service_that_no_monitor_scrapes() -> None:
    rendered = helm_python.Chart.load(ROOT / "charts/mlobs-core").render({}, name="mlobs", namespace="mlobs")
    docs = [d for text in rendered.values() for d in yaml.safe_load_all(text) if d]
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    [sts] = [d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "mlobs-fluentd"]
    governing = services[sts["spec"]["serviceName"]]
    assert governing["spec"]["clusterIP"] == "None"
    assert governing["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    assert services["mlobs-fluentd"]["spec"].get("clusterIP") is None, (
        "the SDK's Service keeps its cluster IP"
    )
    [monitor] = [
        d for d in docs if d["kind"] == "ServiceMonitor" and d["metadata"]["name"] == "mlobs-fluentd"
    ]
    wanted = monitor["spec"]["selector"]["matchLabels"]
    scraped = [n for n, svc in services.items() if wanted.items() <= svc["metadata"]["labels"].items()]
    assert scraped == ["mlobs-fluentd"], "each Fluentd pod is scraped once"


# ---- what Helm writes, and the umbrella's lint ---------------------------------------------------------


def scratch_charts(tmp: Path, remote: bool) -> Path:
    """Both charts copied into ``tmp``; without ``remote``, the umbrella keeps its file:// dependency only."""
    for name in ("mlobs", "mlobs-core"):
        shutil.copytree(
            ROOT / "charts" / name, tmp / "charts" / name, ignore=shutil.ignore_patterns("charts")
        )
    umbrella = tmp / "charts" / "mlobs"
    if not remote:
        chart = yaml.safe_load((umbrella / "Chart.yaml").read_text())
        chart["dependencies"] = [d for d in chart["dependencies"] if d["repository"].startswith("file://")]
        (umbrella / "Chart.yaml").write_text(yaml.safe_dump(chart))
    return umbrella


def ignored(paths: list[str]) -> list[str]:
    """Those of ``paths`` (relative to the repository) that the repository's .gitignore leaves out."""
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"], input="\n".join(paths) + "\n",
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    return done.stdout.split()


def test_gitignore_covers_every_path_helm_writes_into_the_umbrella(tmp_path: Path) -> None:
    umbrella = scratch_charts(tmp_path, remote=False)
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    helm_python.dependency_update(umbrella)  # the real Helm: the lock and our chart packaged
    helm_python.package(tmp_path / "charts/mlobs-core", destination=umbrella / "charts")
    written = sorted(
        str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file() and p not in before
    )
    assert written == ["charts/mlobs/Chart.lock", "charts/mlobs/charts/mlobs-core-0.1.0.tgz"]
    pins = yaml.safe_load((ROOT / "charts/mlobs/Chart.yaml").read_text())["dependencies"]
    downloads = [f"charts/mlobs/charts/{d['name']}-{d['version']}.tgz" for d in pins]
    temporary = [
        downloads[0].replace("charts/mlobs/charts/", "charts/mlobs/tmpcharts-1234567/")
    ]  # Helm's own
    assert ignored(written + downloads + temporary) == written + downloads + temporary
    kept = ["charts/mlobs/Chart.yaml", "charts/mlobs/values.yaml", "charts/mlobs/templates/NOTES.txt"]
    assert ignored(kept) == []


def test_the_umbrella_lints_without_warnings(tmp_path: Path) -> None:
    umbrella = scratch_charts(tmp_path, remote=True)
    (umbrella / "charts").mkdir()
    helm_python.package(tmp_path / "charts/mlobs-core", destination=umbrella / "charts")
    result = helm_python.lint(umbrella, {}, strict=True, kube_version="v{}.{}.0".format(*node_version()))
    warnings = [m["error"] for m in result["messages"] if m["severity"] >= 2]
    # the upstream charts cannot be fetched here: the only finding allowed
    missing = "kube-prometheus-stack,influxdb2,prometheus-pushgateway"
    assert warnings == [f"chart directory is missing these dependencies: {missing}"]
    notes = helm_python.Chart.load(umbrella).render({}, name="mlobs", namespace="ml")[
        "mlobs/templates/NOTES.txt"
    ]
    assert "kubectl -n ml get secret mlobs-grafana-admin" in notes
    assert "svc/mlobs-prometheus 9090:9090" in notes and "svc/mlobs-mailpit-ui 8025:8025" in notes
