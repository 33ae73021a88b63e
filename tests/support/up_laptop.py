"""What the tests of `make up` share: a laptop (a scratch clone, the stand-ins, their world) and runs on it.

A :class:`Laptop` copies the project's sources into a scratch git repository, puts real basic tools
(bash, git, sed, awk, ss...) and the stand-ins of tests/support/cluster_standins.py on its PATH, and runs
make targets there; the stand-ins log every call and keep the world (clusters, images, the release)
between runs.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.conftest import ROOT
from tests.support.cluster_standins import fresh_world

STANDINS = ROOT / "tests" / "support" / "cluster_standins.py"
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
OUR_WORKLOADS = {  # image key -> the workloads of the release that run that image
    "exporter": ("Deployment/mlobs-pipeline-exporter",),
    "fluentd": ("StatefulSet/mlobs-fluentd", "DaemonSet/mlobs-fluentd-forwarder"),  # both tiers
    "demo": ("Deployment/mlobs-model-api",),
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


@dataclass
class FirstRun:
    """A laptop after its first `make up`, the tags computed before it, and that run."""

    laptop: Laptop
    tags: dict[str, str]
    run: Run


def first_up(tmp: Path) -> FirstRun:
    """One `make up` on a fresh laptop in ``tmp``; tests that go on from there work on clones of it."""
    laptop = Laptop(tmp)
    tags = laptop.tags()
    return FirstRun(laptop, tags, laptop.up_ok())


def node_version() -> tuple[int, int]:
    """The Kubernetes version of the kind node image pinned in kind-config.yaml."""
    [node] = yaml.safe_load((ROOT / "kind-config.yaml").read_text())["nodes"]
    found = re.match(r"kindest/node:v(\d+)\.(\d+)\.", node["image"])
    assert found, node["image"]
    return int(found[1]), int(found[2])


def lib(repo: Path, script: str) -> str:
    return subprocess.run(
        ["bash", "-c", f"set -eu; . scripts/lib.sh; {script}"],
        capture_output=True,
        text=True,
        cwd=repo,
        check=True,
    ).stdout


def image_repos(laptop: Laptop) -> dict[str, str]:
    table = lib(laptop.repo, 'printf "%s\\n" "$MLOBS_IMAGES"')
    return {line.split()[0]: line.split()[1] for line in table.splitlines()}
