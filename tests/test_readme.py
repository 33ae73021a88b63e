"""The README's example runs as written, with no cluster, and shows where its data went."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Record a run, with nothing running") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "the README lost its example"
    return match.group(1)


def test_readme_example_runs_with_nothing_running(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOBS_")}
    env["MLOBS_HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        [sys.executable, "-c", readme_example()],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    db = tmp_path / "home" / "mlobs.db"
    expected = rf"run \S+ of train/fit went to the local store {re.escape(str(db))}"
    assert re.fullmatch(expected, lines[0]), lines[0]
    measurements = [line.split()[0] for line in lines[1:]]
    assert measurements[0] == "run" and measurements[-1] == "run"
    assert measurements.count("list_metric") == 3
    assert measurements.count("log") == 3
    assert {"param", "io", "metric"} <= set(measurements)
    assert "succeeded" in lines[-1]
