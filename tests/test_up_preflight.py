"""`make up`'s preflight: nothing is created before it passes, and each failure says what to do.

Run on the laptops of tests/support/up_laptop.py; the host-port checks meet real sockets.  A check that
passes is run through `make preflight`, which stops after the preflight.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.up_laptop import Laptop, make_vars, node_version


@pytest.fixture
def laptop(tmp_path: Path) -> Laptop:
    return Laptop(tmp_path)


@pytest.fixture
def repo_vars(laptop: Laptop) -> dict[str, str]:
    return make_vars(laptop.repo, "KIND_MIN", "HELM_MIN")


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
