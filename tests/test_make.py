"""The Makefile's own behaviour: help lists every target, cluster targets fail fast without one, and
make e2e installs and imports only what mlobs needs at run time."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT


def make(
    *args: str, path: str | None = None, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path} if path is not None else dict(os.environ)
    env.pop("MAKEFLAGS", None)
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), *args],
        input=input_text,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,  # a bound on a hang, not a timing assertion
        check=False,
    )


def documented_targets() -> list[str]:
    text = (ROOT / "Makefile").read_text()
    return re.findall(r"^([A-Za-z0-9_.-]+):[^\n#]*## ", text, flags=re.MULTILINE)


def test_help_lists_every_documented_target() -> None:
    targets = documented_targets()
    assert {"e2e", "up", "down", "demo", "test", "bench", "mutation"} <= set(targets)
    listed = re.findall(r"^  make (\S+)", make("help").stdout, flags=re.MULTILINE)
    assert listed == targets


def _bin_without_kubectl(tmp_path: Path) -> Path:
    """A PATH directory with what the scripts need, and no kubectl."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "env", "grep", "dirname", "make", "cat"):
        found = shutil.which(tool)
        assert found is not None, tool
        (bin_dir / tool).symlink_to(found)
    return bin_dir


def _kubectl_stub(bin_dir: Path, contexts: str, reachable: bool) -> None:
    stub = bin_dir / "kubectl"
    stub.write_text(
        "#!/usr/bin/env bash\n"
        'case "$*" in\n'
        f'  "config get-contexts -o name") printf "{contexts}" ;;\n'
        f"  *) exit {0 if reachable else 1} ;;\n"
        "esac\n"
    )
    stub.chmod(0o755)


@pytest.mark.parametrize("target", ["demo", "e2e"])
@pytest.mark.parametrize(
    ("kubectl", "why"),
    [
        (None, "kubectl is not installed"),
        (("docker-desktop\\n", True), "no kubectl context kind-mlobs"),
        (("kind-mlobs\\n", False), "the cluster behind context kind-mlobs does not answer"),
    ],
)
def test_without_a_cluster_it_says_run_make_up_first(
    tmp_path: Path, target: str, kubectl: tuple[str, bool] | None, why: str
) -> None:
    bin_dir = _bin_without_kubectl(tmp_path)
    if kubectl is not None:
        _kubectl_stub(bin_dir, *kubectl)
    done = make(target, path=str(bin_dir))
    assert done.returncode != 0
    assert f"{why}" in done.stderr and "run make up first" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


# ---- make e2e: the runtime dependencies only ------------------------------------------------------


def e2e_extras() -> set[str]:
    out = make("-s", "-f", "Makefile", "-f", "-", "print", input_text="print:\n\t@echo $(E2E_EXTRAS)\n")
    return set(out.stdout.split())


def runtime_closure(extras: set[str]) -> set[str]:
    """The distributions `pip install -e '.[extras]'` brings: mlobs and what it requires, recursively."""
    found: set[str] = set()
    todo = [("mlobs-pipeline-sdk", frozenset(extras))]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, wanted = todo.pop()
        if (canonicalize_name(name), wanted) in seen:
            continue
        seen.add((canonicalize_name(name), wanted))
        found.add(canonicalize_name(name))
        for text in metadata.distribution(name).requires or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in wanted or {""}):
                todo.append((req.name, frozenset(req.extras)))
    return found


IMPORTED = """
import json, runpy, sys
sys.path.insert(0, sys.argv[2])  # as `python scripts/e2e.py` does
before = set(sys.modules)
runpy.run_path(sys.argv[1], run_name="imported")
print(json.dumps(sorted({m.split(".")[0] for m in set(sys.modules) - before})))
"""


def foreign_imports(script: Path, allowed: set[str]) -> list[str]:
    """Top-level modules ``script`` imports that come from neither the stdlib nor ``allowed``."""
    done = subprocess.run(
        [sys.executable, "-I", "-c", IMPORTED, str(script), str(script.parent)],
        capture_output=True, text=True, check=True, timeout=60, cwd=script.parent,
    )  # fmt: skip
    owners = metadata.packages_distributions()
    foreign = []
    for module in json.loads(done.stdout):
        # cython_runtime: a module that Cython-built extensions (such as PyYAML's) register
        if module in sys.stdlib_module_names or module.startswith("_") or module == "cython_runtime":
            continue
        dists = {canonicalize_name(d) for d in owners.get(module, [])}
        if not dists & allowed:
            foreign.append(f"{module} ({', '.join(sorted(dists)) or 'no distribution'})")
    return foreign


def test_e2e_imports_only_what_its_install_brings() -> None:
    extras = e2e_extras()
    assert extras == {"influxdb"}
    allowed = runtime_closure(extras)
    assert {"mlobs-pipeline-sdk", "fluent-logger", "influxdb-client"} <= allowed
    assert not {"pytest", "pyyaml", "kubernetes", "grafanalib", "helm-python-sdk"} & allowed
    assert foreign_imports(ROOT / "scripts" / "e2e.py", allowed) == []


def test_the_import_check_names_a_test_only_package_and_a_local_module(tmp_path: Path) -> None:
    script = tmp_path / "check.py"
    (tmp_path / "helpers_here.py").write_text("VALUE = 1\n")
    script.write_text("import yaml\nimport helpers_here\nimport json\n")
    allowed = runtime_closure({"influxdb"})
    assert foreign_imports(script, allowed) == ["helpers_here (no distribution)", "yaml (pyyaml)"]


def test_the_e2e_install_has_no_test_extras(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    dry = make("-n", f"VENV={venv}", "e2e")
    pip = [line for line in dry.stdout.splitlines() if "pip install" in line]
    install = "-m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[influxdb]'"
    assert pip == [f"{venv}/bin/python {install}"], dry.stdout
    assert "scripts/cluster-env.sh" in dry.stdout and "[test" not in dry.stdout
