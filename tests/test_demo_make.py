"""`make demo` (scripts/demo.sh) on a laptop of stand-ins: the drift monitor run is part of it.

The laptop is tests/support/up_laptop.py's: a scratch clone after one `make up`, with the stand-ins
of tests/support/cluster_standins.py for helm and kubectl (helm template renders the real chart).
Here a thin shim in front of the kubectl stand-in also keeps what `kubectl create -f -` was given,
and can make one Job's wait time out, as a monitor run that never completes would.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from demo import monitor, traffic
from demo.data import BASELINE, FEATURES

from .support.up_laptop import STANDINS, FirstRun, Laptop, first_up


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> FirstRun:
    return first_up(tmp_path_factory.mktemp("demo-first-run"))


def shimmed(first_run: FirstRun, tmp_path: Path, stuck: str = "") -> Laptop:
    """A clone whose kubectl keeps the created objects in created.yaml; a wait on job/``stuck`` times out."""
    laptop = first_run.laptop.clone(tmp_path)
    shim = laptop.bin / "kubectl"
    shim.unlink()
    tee = shutil.which("tee")  # not among the laptop's tools: the shim's own
    shim.write_text(
        "#!/bin/sh\n"
        f'standin() {{ "{sys.executable}" "{STANDINS}" kubectl "$@"; }}\n'
        'case " $* " in\n'
        f'  *" create -f - "*) "{tee}" -a "{tmp_path}/created.yaml" | standin "$@"; exit $? ;;\n'
        + (
            f'  *" wait "*"job/{stuck}-"*)\n'
            f'    echo "error: timed out waiting for the condition on jobs/{stuck}-x" >&2; exit 1 ;;\n'
            if stuck
            else ""
        )
        + "esac\n"
        'standin "$@"\n'
    )
    shim.chmod(0o755)
    return laptop


def created(tmp_path: Path) -> dict[str, Any]:
    docs = yaml.safe_load_all((tmp_path / "created.yaml").read_text())
    return {d["metadata"]["name"]: d for d in docs if d}


def command(job: dict[str, Any]) -> list[str]:
    [container] = job["spec"]["template"]["spec"]["containers"]
    return list(container["command"])


def after(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_make_demo_runs_a_drift_monitor_on_the_shifted_traffic(first_run: FirstRun, tmp_path: Path) -> None:
    laptop = shimmed(first_run, tmp_path)
    run = laptop.run("demo")
    assert run.code == 0, run.err
    jobs = created(tmp_path)
    [suffix] = {re.fullmatch(r"demo-\w+-([0-9a-f]{10})", name)[1] for name in jobs}  # type: ignore[index]
    assert sorted(jobs) == [f"demo-{j}-{suffix}" for j in ("diverge", "drift", "oom", "traffic", "train")]
    waits = [
        (c[c.index("wait") + 1], [a for a in c if a.startswith("job/")])
        for c in run.of("kubectl")
        if "wait" in c
    ]
    assert waits == [
        ("--for=condition=complete", [f"job/demo-train-{suffix}", f"job/demo-traffic-{suffix}"]),
        ("--for=condition=failed", [f"job/demo-diverge-{suffix}", f"job/demo-oom-{suffix}"]),
        ("--for=condition=complete", [f"job/demo-drift-{suffix}"]),  # last: it checks the traffic's data
    ]
    # the traffic shifts one feature, and the monitor compares it (and one other) with demo-train's baseline
    shift = traffic.shift_arg(after(command(jobs[f"demo-traffic-{suffix}"]), "--shift"))
    watched = command(jobs[f"demo-drift-{suffix}"])
    assert watched[:3] == ["python", "-m", "demo.monitor"]
    args = monitor.parser().parse_args(watched[3:])
    assert args.baseline == f"demo-train-{suffix}:{BASELINE}"
    assert shift.feature in args.features and len(args.features) == 2 and set(args.features) <= set(FEATURES)
    assert (shift.feature, shift.sigmas) == ("tenure_months", 2.0)
    assert args.pushgateway == "http://mlobs-pushgateway:9091"
    labels = jobs[f"demo-drift-{suffix}"]["spec"]["template"]["metadata"]["labels"]
    assert labels["mlobs.io/run-id"] == f"demo-drift-{suffix}"
    assert (labels["mlobs.io/pipeline"], labels["mlobs.io/step"]) == ("drift", monitor.MONITOR)
    assert "the drift email" in run.out
    assert f"logs job/demo-drift-{suffix}" in run.out
    assert "/d/mlobs-model-drift/?var-model=churn-logreg&var-version=1" in run.out


def test_make_demo_fails_when_the_monitor_run_does_not_complete(first_run: FirstRun, tmp_path: Path) -> None:
    laptop = shimmed(first_run, tmp_path, stuck="demo-drift")
    run = laptop.run("demo")
    assert run.code != 0
    assert "timed out waiting for the condition on jobs/demo-drift-x" in run.err
    assert "==> done." not in run.out
    assert "==> waiting for the drift monitor run" in run.out
