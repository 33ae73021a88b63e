"""The Makefile's own behaviour: help lists every target, and cluster targets fail fast without one."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT


def make(*args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path} if path is not None else dict(os.environ)
    env.pop("MAKEFLAGS", None)
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), *args],
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
