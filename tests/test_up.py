"""`make up`, run for real against stand-ins for docker, kind, helm, kubectl and curl.

Each test copies the project's sources into a scratch git repository and runs ``make up`` there
with a PATH of real basic tools (bash, git, sed, awk, ss...) and the stand-ins of
tests/cluster_standins.py, which log every call and keep a world (clusters, images, the release)
between runs.  Helm's part is the real Helm engine, so a rollout is a pod template that really
changed.  The host-port checks meet real sockets.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from tests.cluster_standins import fresh_world
from tests.conftest import ROOT

STANDINS = ROOT / "tests" / "cluster_standins.py"
COPIED = (
    "scripts",
    "charts",
    "alerting",
    "pipeline_sdk",
    "exporters",
    "demo",
    "fluentd",
    "kind-config.yaml",
    "pyproject.toml",
    "constraints.txt",
    "README.md",
    "Makefile",
    "versions.env",
    ".gitignore",
    ".dockerignore",
)
REAL_TOOLS = (
    "bash", "sh", "env", "make", "git", "sed", "awk", "grep", "sort", "head", "tail", "cut", "tr",
    "paste", "mktemp", "cp", "mv", "rm", "cat", "date", "sleep", "dirname", "basename", "base64",
    "find", "ss", "lsof", "od", "wc",
)  # fmt: skip
OUR_WORKLOADS = {
    "exporter": "Deployment/mlobs-pipeline-exporter",
    "fluentd": "StatefulSet/mlobs-fluentd",
    "demo": "Deployment/mlobs-model-api",
}
PORT_VARS = ("MLOBS_GRAFANA_PORT", "MLOBS_PROMETHEUS_PORT", "MLOBS_ALERTMANAGER_PORT", "MLOBS_MAILPIT_PORT",
             "MLOBS_INFLUXDB_PORT")  # fmt: skip
MUTATING = (  # calls that change the machine: none of them before the preflight passes
    ("kind", "create"),
    ("kind", "load"),
    ("docker", "build"),
    ("helm", "repo"),
    ("helm", "dependency", "update"),
    ("helm", "package"),
    ("helm", "upgrade"),
)


TAGS = '. scripts/lib.sh; while read -r k _ d; do echo "$k $(image_tag "$d")"; done <<<"$MLOBS_IMAGES"'


def make_vars(repo: Path, *names: str) -> dict[str, str]:
    """The Makefile's values of ``names``, as make itself evaluates them."""
    printer = "print:\n" + "".join(f"\t@echo {n}=$({n})\n" for n in names)
    out = subprocess.run(
        ["make", "-s", "--no-print-directory", "-f", "Makefile", "-f", "-", "print"],
        input=printer, capture_output=True, text=True, cwd=repo, check=True, timeout=30,
    ).stdout  # fmt: skip
    return dict(line.split("=", 1) for line in out.splitlines())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Run:
    code: int
    out: str
    err: str
    calls: list[list[str]]

    def of(self, *prefix: str) -> list[list[str]]:
        return [c for c in self.calls if c[: len(prefix)] == list(prefix)]

    def mutating(self) -> list[list[str]]:
        return [c for c in self.calls if any(c[: len(m)] == list(m) for m in MUTATING)]

    def helm_sets(self) -> dict[str, str]:
        [upgrade] = self.of("helm", "upgrade")
        return dict(v.split("=", 1) for f, v in itertools.pairwise(upgrade) if f == "--set-string")


class Laptop:
    """A scratch clone of the project, the stand-ins' world, and a way to run make targets."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.repo = tmp, tmp / "mlobs"
        listed = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "--", *COPIED],
            capture_output=True, text=True, cwd=ROOT, check=True,
        ).stdout.split()  # fmt: skip
        for rel in listed:
            if (ROOT / rel).is_file():
                (self.repo / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, self.repo / rel)
        self.git("init", "-q")
        self.git("add", "-A")
        self.git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "clone")
        self.bin = tmp / "bin"
        self.bin.mkdir()
        for tool in REAL_TOOLS:
            found = shutil.which(tool)
            if found is not None:
                (self.bin / tool).symlink_to(found)
        for tool in ("docker", "kind", "helm", "kubectl", "curl"):
            self.standin(tool)
        self.world_path, self.log = tmp / "world.json", tmp / "calls.jsonl"
        pins = make_vars(self.repo, "KIND_MIN", "HELM_MIN")
        major, minor = node_version()
        self.world = fresh_world(pins["KIND_MIN"], f"{major}.{minor}.1", pins["HELM_MIN"])
        self.ports = {var: free_port() for var in PORT_VARS}

    def clone(self, tmp: Path) -> Laptop:
        """Another laptop in ``tmp`` in the state this one is in now (its repository and world)."""
        other = Laptop.__new__(Laptop)
        other.tmp, other.repo, other.bin = tmp, tmp / "mlobs", tmp / "bin"
        shutil.copytree(self.repo, other.repo, symlinks=True)
        shutil.copytree(self.bin, other.bin, symlinks=True)
        other.world_path, other.log = tmp / "world.json", tmp / "calls.jsonl"
        other.world, other.ports = json.loads(json.dumps(self.world)), dict(self.ports)
        return other

    def git(self, *args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=self.repo, check=False)
        assert done.returncode == 0, f"git {args}: {done.stdout}{done.stderr}"
        return done.stdout

    def standin(self, tool: str) -> None:
        path = self.bin / tool
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STANDINS}" {tool} "$@"\n')
        path.chmod(0o755)

    def run(self, target: str = "up", **env: str) -> Run:
        return self.command(["make", "--no-print-directory", target], **env)

    def command(self, argv: list[str], **env: str) -> Run:
        """``argv`` in the clone, with the stand-ins first on PATH; the world is saved and reloaded."""
        self.world_path.write_text(json.dumps(self.world))
        self.log.write_text("")
        environ = {
            "PATH": str(self.bin),
            "HOME": str(self.tmp),
            "TMPDIR": str(self.tmp),
            "LC_ALL": "C",
            "MLOBS_STANDIN_WORLD": str(self.world_path),
            "MLOBS_STANDIN_LOG": str(self.log),
            "MLOBS_UP_POLL_INTERVAL": "0.02",
            "MLOBS_UP_READY_TIMEOUT": "30",
            **{var: str(port) for var, port in self.ports.items()},
            **env,
        }
        done = subprocess.run(
            argv, capture_output=True, text=True, cwd=self.repo, env=environ, timeout=180, check=False
        )
        self.world = json.loads(self.world_path.read_text())
        calls = [json.loads(line) for line in self.log.read_text().splitlines()]
        assert "not modelled" not in done.stderr, done.stderr  # a call the stand-ins do not know
        return Run(done.returncode, done.stdout, done.stderr, calls)

    def up_ok(self, **env: str) -> Run:
        run = self.run("up", **env)
        assert run.code == 0, run.err[-3000:]
        return run

    def tags(self) -> dict[str, str]:
        """Each image's tag as scripts/lib.sh computes it in the clone now."""
        out = subprocess.run(
            ["bash", "-c", TAGS],
            capture_output=True, text=True, cwd=self.repo, check=True,
        ).stdout  # fmt: skip
        return dict(line.split() for line in out.splitlines())


@pytest.fixture
def laptop(tmp_path: Path) -> Laptop:
    return Laptop(tmp_path)


@dataclass
class FirstRun:
    laptop: Laptop
    tags: dict[str, str]
    run: Run


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> FirstRun:
    """One `make up` on a fresh laptop; tests that go on from there work on a clone of it."""
    laptop = Laptop(tmp_path_factory.mktemp("first-run"))
    tags = laptop.tags()
    return FirstRun(laptop, tags, laptop.up_ok())


@pytest.fixture
def after_up(first_run: FirstRun, tmp_path: Path) -> Laptop:
    return first_run.laptop.clone(tmp_path)


@pytest.fixture
def repo_vars(laptop: Laptop) -> dict[str, str]:
    return make_vars(laptop.repo, "KIND_MIN", "HELM_MIN")


def node_version() -> tuple[int, int]:
    """The Kubernetes version of the kind node image pinned in kind-config.yaml."""
    [node] = yaml.safe_load((ROOT / "kind-config.yaml").read_text())["nodes"]
    found = re.match(r"kindest/node:v(\d+)\.(\d+)\.", node["image"])
    assert found, node["image"]
    return int(found[1]), int(found[2])


# ---- the first run, the second, a change -------------------------------------------------------------


def test_a_first_run_creates_the_cluster_builds_loads_and_installs_with_the_computed_tags(
    laptop: Laptop,
) -> None:
    tags = laptop.tags()
    run = laptop.up_ok()

    [create] = run.of("kind", "create", "cluster")
    assert create[create.index("--name") + 1] == "mlobs"
    config = laptop.world["clusters"]["mlobs"]["config"]
    mapped = {m["containerPort"]: m["hostPort"] for m in config["nodes"][0]["extraPortMappings"]}
    ports = laptop.ports
    assert mapped == {
        30300: ports["MLOBS_GRAFANA_PORT"], 30090: ports["MLOBS_PROMETHEUS_PORT"],
        30903: ports["MLOBS_ALERTMANAGER_PORT"], 30825: ports["MLOBS_MAILPIT_PORT"],
        30086: ports["MLOBS_INFLUXDB_PORT"],
    }  # fmt: skip
    pinned = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert config["nodes"][0]["image"] == pinned["nodes"][0]["image"]

    repos = {"exporter": "mlobs/pipeline-exporter", "fluentd": "mlobs/fluentd", "demo": "mlobs/demo"}
    refs = {key: f"{repos[key]}:{tags[key]}" for key in repos}
    assert [c[4] for c in run.of("docker", "build")] == list(refs.values())
    assert [c[3] for c in run.of("kind", "load")] == list(refs.values())
    assert all(re.fullmatch(r"[0-9a-f]{12}", t) for t in tags.values()), tags
    sets = run.helm_sets()
    for key, ref in refs.items():
        assert f"{sets[f'mlobs-core.images.{key}.repository']}:{sets[f'mlobs-core.images.{key}.tag']}" == ref
    assert sets["mlobs-core.alerting.grafanaUrl"] == f"http://localhost:{ports['MLOBS_GRAFANA_PORT']}"
    [upgrade] = run.of("helm", "upgrade")
    assert upgrade[upgrade.index("--kube-context") + 1] == "kind-mlobs"
    assert "--set" not in upgrade, "a hex tag of digits only would become a number"

    urls = sorted(c[4] for c in run.of("helm", "repo", "add"))
    chart = yaml.safe_load((ROOT / "charts/mlobs/Chart.yaml").read_text())
    assert urls == sorted(
        d["repository"] for d in chart["dependencies"] if d["repository"].startswith("https:")
    )
    assert len(run.of("helm", "dependency", "update")) == 1
    images = {c["image"] for w in laptop.world["workloads"].values() for c in w["spec"]["containers"]}
    assert set(refs.values()) <= images
    assert laptop.world["rollouts"] == []

    assert [c[-3] for c in run.of("kubectl", "--context", "kind-mlobs") if "rollout" in c] == [
        "statefulset/prometheus-mlobs-prometheus",
        "statefulset/alertmanager-mlobs-alertmanager",
    ]
    for kubectl in run.of("kubectl"):
        assert kubectl[:2] == ["kubectl", "--context"] or kubectl[1:3] in (
            ["version", "--client"],
            ["config", "get-contexts"],
        )
    phases = re.findall(r"^==> \[(\d)/6\] (\w+):", run.out, flags=re.MULTILINE)
    assert [p for _, p in phases] == ["preflight", "cluster", "images", "dependencies", "release", "ready"]
    assert (
        len(
            re.findall(
                r"^    \((preflight|cluster|images|dependencies|release|ready): \d+ s\)$", run.out, re.M
            )
        )
        == 6
    )
    assert f"Grafana       http://localhost:{ports['MLOBS_GRAFANA_PORT']}" in run.out
    assert laptop.git("status", "--porcelain") == "", "make up leaves the tree clean"


def test_a_second_run_with_no_change_builds_loads_and_rolls_out_nothing(laptop: Laptop) -> None:
    first = laptop.up_ok()
    second = laptop.up_ok()
    assert second.mutating() == [
        c for c in second.calls if c[:2] in (["helm", "package"], ["helm", "upgrade"])
    ]
    assert second.helm_sets() == first.helm_sets()
    assert laptop.world["release"]["revision"] == 2
    assert laptop.world["rollouts"] == []
    assert second.out.count("built before, already in the cluster") == 3
    assert "the pinned charts are in place" in second.out
    assert laptop.git("status", "--porcelain") == ""


CHANGES = [  # one after the other, each followed by make up
    ("exporters/pipeline_exporter/__main__.py", {"exporter"}),
    ("fluentd/fluent.conf", {"fluentd"}),  # also in the pod template's checksum: still one rollout
    ("demo/new_module.py", {"demo"}),  # a new file that is not committed yet: docker would COPY it
    ("pipeline_sdk/contract.py", {"exporter", "demo"}),  # both images install the SDK
]


def test_a_fluentd_statefulset_of_an_older_release_is_recreated_without_a_restart(after_up: Laptop) -> None:
    laptop = after_up
    assert laptop.world["service_names"]["StatefulSet/mlobs-fluentd"] == "mlobs-fluentd-headless"
    again = laptop.up_ok()
    assert [c for c in again.calls if "delete" in c] == []
    laptop.world["service_names"]["StatefulSet/mlobs-fluentd"] = "mlobs-fluentd"  # as before the change
    run = laptop.up_ok()
    [delete] = [c for c in run.calls if "delete" in c]
    assert delete[-3:] == ["statefulset", "mlobs-fluentd", "--cascade=orphan"]
    assert run.calls.index(delete) < run.calls.index(run.of("helm", "upgrade")[0])
    assert laptop.world["orphaned"] == ["mlobs-fluentd"] and laptop.world["rollouts"] == []
    assert laptop.world["service_names"]["StatefulSet/mlobs-fluentd"] == "mlobs-fluentd-headless"


def test_a_changed_source_rebuilds_and_rolls_out_exactly_its_workloads(after_up: Laptop) -> None:
    laptop, repos = after_up, _repos(after_up)
    for path, changed in CHANGES:
        before = laptop.tags()
        with (laptop.repo / path).open("a") as f:
            f.write("\n# a change\n")
        after = laptop.tags()
        assert {k for k in before if before[k] != after[k]} == changed, path
        laptop.world["rollouts"] = []
        run = laptop.up_ok()
        assert {c[4] for c in run.of("docker", "build")} == {f"{repos[k]}:{after[k]}" for k in changed}, path
        assert [c[3] for c in run.of("kind", "load")] == [
            f"{repos[k]}:{after[k]}" for k in repos if k in changed
        ]
        assert sorted(laptop.world["rollouts"]) == sorted(OUR_WORKLOADS[k] for k in changed), path
        assert run.of("kind", "create") == [] and run.of("helm", "dependency", "update") == []

    values = laptop.repo / "charts/mlobs-core/values.yaml"  # a chart change: no build, one rollout
    values.write_text(values.read_text().replace("finishedRunsMemory: 50000", "finishedRunsMemory: 40000"))
    laptop.world["rollouts"] = []
    run = laptop.up_ok()
    assert run.of("docker", "build") == [] and run.of("kind", "load") == []
    assert laptop.world["rollouts"] == ["Deployment/mlobs-pipeline-exporter"]


def _repos(laptop: Laptop) -> dict[str, str]:
    table = lib(laptop.repo, 'printf "%s\\n" "$MLOBS_IMAGES"')
    return {line.split()[0]: line.split()[1] for line in table.splitlines()}


def test_an_unrelated_or_ignored_file_keeps_every_tag(laptop: Laptop) -> None:
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
def test_a_copy_the_tag_cannot_cover_is_refused_by_name(laptop: Laptop, line: str, why: str) -> None:
    dockerfile = laptop.repo / "exporters/Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + line + "\n")
    done = subprocess.run(
        ["bash", "-c", "set -e; . scripts/lib.sh; image_tag exporters/Dockerfile"],
        capture_output=True, text=True, cwd=laptop.repo, check=False,
    )  # fmt: skip
    assert done.returncode == 1 and done.stdout == ""
    assert why in done.stderr and "exporters/Dockerfile" in done.stderr, done.stderr


# ---- preflight: nothing is created before it passes --------------------------------------------------


@pytest.fixture
def listener() -> Iterator[subprocess.Popen[str]]:
    code = "import socket, sys; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
    code += "print(s.getsockname()[1], flush=True); sys.stdin.read()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    yield proc
    proc.communicate("", timeout=10)


def test_a_taken_port_stops_before_anything_is_created_naming_its_holder(
    laptop: Laptop, listener: subprocess.Popen[str]
) -> None:
    assert listener.stdout is not None
    port = int(listener.stdout.readline())
    run = laptop.run(MLOBS_PROMETHEUS_PORT=str(port))
    assert run.code != 0 and run.mutating() == []
    assert f"port {port} (Prometheus) is taken" in run.err
    if shutil.which("ss") or shutil.which("lsof"):
        assert f"(pid {listener.pid})" in run.err and "python" in run.err, run.err
    assert f"MLOBS_PROMETHEUS_PORT={port + 1} make up" in run.err


def test_the_same_port_twice_is_refused(laptop: Laptop) -> None:
    run = laptop.run(MLOBS_MAILPIT_PORT=str(laptop.ports["MLOBS_GRAFANA_PORT"]))
    assert run.code != 0 and run.mutating() == []
    assert f"port {laptop.ports['MLOBS_GRAFANA_PORT']} is asked for twice: give MLOBS_MAILPIT_PORT" in run.err


@pytest.mark.parametrize("value", ["0", "65536", "30o0", "-1"])
def test_a_port_that_is_no_port_is_refused_by_its_variable(laptop: Laptop, value: str) -> None:
    run = laptop.run(MLOBS_INFLUXDB_PORT=value)
    assert run.code != 0 and run.mutating() == []
    assert f"MLOBS_INFLUXDB_PORT={value} is not a port number (1-65535)" in run.err


@pytest.mark.parametrize(("mib", "passes"), [(3499, False), (3500, True), (2048, False)])
def test_docker_memory_below_the_threshold_stops_with_what_to_do(
    laptop: Laptop, mib: int, passes: bool
) -> None:
    laptop.world["docker"]["mem_total"] = mib * 2**20 + (2**20 - 1 if not passes else 0)
    run = laptop.run("preflight" if passes else "up")
    if passes:
        assert run.code == 0, run.err
        assert f"docker   {mib} MiB of memory" in run.out
    else:
        assert run.code != 0 and run.mutating() == []
        assert f"Docker has {mib} MiB of memory; mlobs needs at least 3500 MiB" in run.err
        assert "give Docker 4 GiB or more" in run.err and "MLOBS_MIN_DOCKER_MEMORY_MIB" in run.err


def test_docker_not_running_stops_at_once(laptop: Laptop) -> None:
    laptop.world["docker"]["running"] = False
    run = laptop.run()
    assert run.code != 0 and run.mutating() == []
    assert "the Docker engine does not answer (docker info failed): start Docker and retry" in run.err


def _kubectl_cases() -> list[tuple[str, bool]]:
    major, minor = node_version()
    return [
        (f"{major}.{minor - 2}.9", False),
        (f"{major}.{minor - 1}.0", True),
        (f"{major}.{minor}.3", True),
        (f"{major}.{minor + 1}.0", True),
        (f"{major}.{minor + 2}.0", False),
    ]


@pytest.mark.parametrize(("version", "passes"), _kubectl_cases())
def test_kubectl_must_be_within_one_minor_version_of_the_pinned_node(
    laptop: Laptop, version: str, passes: bool
) -> None:
    laptop.world["versions"]["kubectl"] = f"Client Version: v{version}\nKustomize Version: v5.7.1"
    run = laptop.run("preflight" if passes else "up")
    major, minor = node_version()
    if passes:
        assert run.code == 0, run.err
        assert f"kubectl  {version} (the node runs Kubernetes {major}.{minor})" in run.out
    else:
        assert run.code != 0 and run.mutating() == []
        assert (
            f"kubectl {version} is outside the supported skew of the cluster's Kubernetes {major}.{minor}"
            in run.err
        )
        assert f"install kubectl {major}.{minor}" in run.err


def _below(version: str) -> str:
    major, minor, patch = (int(p) for p in version.split("."))
    return f"{major}.{minor}.{patch - 1}" if patch else f"{major}.{minor - 1}.99"


@pytest.mark.parametrize("tool", ["kind", "helm"])
@pytest.mark.parametrize("at_minimum", [True, False])
def test_kind_and_helm_older_than_their_minimum_stop(
    laptop: Laptop, repo_vars: dict[str, str], tool: str, at_minimum: bool
) -> None:
    minimum = repo_vars[f"{tool.upper()}_MIN"]
    version = minimum if at_minimum else _below(minimum)
    laptop.world["versions"][tool] = (
        f"kind v{version} go1.24.6 linux/amd64" if tool == "kind" else f"v{version}+gabc"
    )
    run = laptop.run()
    if at_minimum:
        assert run.code == 0, run.err
    else:
        assert run.code != 0 and run.mutating() == []
        assert f"{tool} {version} is too old (need >= {minimum})" in run.err


@pytest.mark.parametrize("tool", ["docker", "kind", "kubectl", "helm", "git", "curl"])
def test_a_missing_tool_is_named_with_where_to_get_it(laptop: Laptop, tool: str) -> None:
    (laptop.bin / tool).unlink()
    run = laptop.run()
    assert run.code != 0 and run.mutating() == []
    assert f"{tool} is not installed: " in run.err and ("https://" in run.err or "package manager" in run.err)


def test_an_existing_cluster_with_other_ports_is_not_silently_reused(after_up: Laptop) -> None:
    laptop = after_up
    other = free_port()
    run = laptop.run(MLOBS_GRAFANA_PORT=str(other))
    assert run.code != 0 and run.mutating() == []
    grafana = laptop.ports["MLOBS_GRAFANA_PORT"]
    assert f"the kind cluster 'mlobs' maps Grafana to port {grafana}, not {other}" in run.err
    assert "unset MLOBS_GRAFANA_PORT, or run make down and make up again" in run.err


# ---- ready means ready -------------------------------------------------------------------------------


def test_it_waits_for_what_the_operator_creates_after_helm_returns(after_up: Laptop) -> None:
    laptop = after_up
    laptop.world["polls"] = {}
    laptop.world["polls_before"] = {
        "statefulset:prometheus-mlobs-prometheus": 3,
        "statefulset:alertmanager-mlobs-alertmanager": 2,
        "rules": 4,
        "grafana": 2,
    }
    run = laptop.up_ok()
    polls = laptop.world["polls"]
    assert polls["statefulset:prometheus-mlobs-prometheus"] == 4
    assert polls["statefulset:alertmanager-mlobs-alertmanager"] == 3
    assert polls["rules"] == 5 and polls["grafana"] == 3
    groups = [g["name"] for p in sorted((ROOT / "alerting").glob("*-rules.yaml")) for g in
              yaml.safe_load(p.read_text())["groups"]]  # fmt: skip
    assert sorted(laptop.world["rule_groups"]) == sorted(groups)
    order = [line for line in run.out.splitlines() if line.startswith("    waiting for")]
    assert order == [
        "    waiting for Prometheus's StatefulSet prometheus-mlobs-prometheus",
        "    waiting for Alertmanager's StatefulSet alertmanager-mlobs-alertmanager",
        f"    waiting for Prometheus to load the rule groups {' '.join(groups)}",
        f"    waiting for Grafana at http://127.0.0.1:{laptop.ports['MLOBS_GRAFANA_PORT']}/api/health",
    ]


@pytest.mark.parametrize(
    ("never", "message"),
    [
        (
            "statefulset:prometheus-mlobs-prometheus",
            "Prometheus's StatefulSet prometheus-mlobs-prometheus: not within 2 s",
        ),
        ("rules", "Prometheus to load the rule groups"),
        ("grafana", "Grafana at http://127.0.0.1:"),
    ],
)
def test_it_gives_up_at_the_deadline_naming_what_it_waited_for(
    after_up: Laptop, never: str, message: str
) -> None:
    laptop = after_up
    laptop.world["polls"], laptop.world["polls_before"] = {}, {never: -1}
    run = laptop.run(MLOBS_UP_READY_TIMEOUT="2")
    assert run.code != 0
    assert message in run.err and "See: " in run.err, run.err
    assert laptop.world["polls"][never] >= 2


# ---- make demo and make down ---------------------------------------------------------------------------


def test_demo_jobs_get_a_fresh_random_suffix_and_the_deployed_image(after_up: Laptop) -> None:
    laptop = after_up
    runs = [laptop.run("demo") for _ in range(2)]
    assert [r.code for r in runs] == [0, 0], runs[-1].err
    jobs = laptop.world["jobs"]
    assert len(jobs) == len(set(jobs)) == 8
    suffixes = {re.fullmatch(r"demo-(?:train|diverge|oom|traffic)-([0-9a-f]{10})", j)[1] for j in jobs}  # type: ignore[index]
    assert len(suffixes) == 2
    for run in runs:
        [template] = run.of("helm", "template")
        assert "--values" in template and run.of("helm", "get", "values")
        assert [c[-3:] for c in run.of("kubectl") if "create" in c] == [["create", "-f", "-"]]
    deployed = {
        c["image"] for c in laptop.world["workloads"]["Deployment/mlobs-model-api"]["spec"]["containers"]
    }
    assert set(laptop.world["job_images"].values()) == deployed
    grafana = laptop.ports["MLOBS_GRAFANA_PORT"]
    assert f"http://localhost:{grafana}/d/mlobs-run-view/" in runs[0].out


def test_a_demo_job_name_that_exists_already_is_an_error_not_a_reuse(after_up: Laptop) -> None:
    laptop = after_up
    assert laptop.run("demo").code == 0
    laptop.world["polls"] = {}
    fixed = laptop.bin / "od"  # the same "random" bytes twice
    fixed.unlink()
    fixed.write_text("#!/bin/sh\necho ' 01 02 03 04 05'\n")
    fixed.chmod(0o755)
    first, second = laptop.run("demo"), laptop.run("demo")
    assert first.code == 0 and second.code != 0
    assert 'jobs.batch "demo-train-0102030405" already exists' in second.err


def test_down_deletes_the_cluster_and_says_so_when_there_is_none(after_up: Laptop) -> None:
    laptop = after_up
    deleted = laptop.run("down")
    assert deleted.code == 0 and deleted.of("kind", "delete", "cluster", "--name", "mlobs")
    assert laptop.world["clusters"] == {}
    again = laptop.run("down")
    assert again.code == 0 and again.of("kind", "delete") == []
    assert "make down: no kind cluster named mlobs" in again.out


def test_e2e_finds_the_ports_the_cluster_maps(after_up: Laptop, tmp_path: Path) -> None:
    mapped = after_up.world["clusters"]["mlobs"]["ports"]
    run = after_up.command(
        ["scripts/cluster-env.sh", "env"], MLOBS_GRAFANA_PORT="1", MLOBS_PROMETHEUS_URL="http://elsewhere:1"
    )
    urls = dict(line.split("=", 1) for line in run.out.splitlines() if re.match(r"MLOBS_\w+_URL=", line))
    assert urls == {
        "MLOBS_GRAFANA_URL": f"http://localhost:{mapped['30300']}",  # the cluster's, not the variable's
        "MLOBS_PROMETHEUS_URL": "http://elsewhere:1",  # set by the user: kept
        "MLOBS_ALERTMANAGER_URL": f"http://localhost:{mapped['30903']}",
        "MLOBS_MAILPIT_URL": f"http://localhost:{mapped['30825']}",
        "MLOBS_INFLUXDB_URL": f"http://localhost:{mapped['30086']}",
    }
    (tmp_path / "fresh").mkdir()
    no_cluster = Laptop(tmp_path / "fresh").command(
        ["scripts/cluster-env.sh", "env"], MLOBS_GRAFANA_PORT="3999"
    )
    assert "MLOBS_GRAFANA_URL=http://localhost:3999" in no_cluster.out.splitlines()


# ---- the pieces make up relies on --------------------------------------------------------------------


def lib(repo: Path, script: str) -> str:
    return subprocess.run(
        ["bash", "-c", f"set -eu; . scripts/lib.sh; {script}"],
        capture_output=True,
        text=True,
        cwd=repo,
        check=True,
    ).stdout


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
        if doc["kind"] in ("Deployment", "StatefulSet"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                users.setdefault(container["image"].split(":")[0], set()).add(
                    f"{doc['kind']}/{doc['metadata']['name']}"
                )
    assert {key: users[repo] for key, repo, _ in table} == {k: {w} for k, w in OUR_WORKLOADS.items()}


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
    assert first == again and len(first) == 4  # secrets are random on every render, pod templates are not
    for key, workload in OUR_WORKLOADS.items():
        changed = core_templates(**{**tags, key: "dddddddddddd"})
        assert [w for w in first if first[w] != changed[w]] == [workload]


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
    # kube-prometheus-stack and influxdb2 cannot be fetched here: the only finding allowed
    assert warnings == ["chart directory is missing these dependencies: kube-prometheus-stack,influxdb2"]
    notes = helm_python.Chart.load(umbrella).render({}, name="mlobs", namespace="ml")[
        "mlobs/templates/NOTES.txt"
    ]
    assert "kubectl -n ml get secret mlobs-grafana-admin" in notes
    assert "svc/mlobs-prometheus 9090:9090" in notes and "svc/mlobs-mailpit-ui 8025:8025" in notes
