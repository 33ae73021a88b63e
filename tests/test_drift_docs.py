"""docs/drift.md's example runs as written, in a directory of its own, and prints what the page shows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

PAGE = ROOT / "docs" / "drift.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.DOTALL)


def shown_output() -> str:
    match = re.search(r"It prints a table like this.*?```text\n(.*?)```", PAGE.read_text(), re.DOTALL)
    assert match, "docs/drift.md lost the output of its example"
    return match.group(1)


def masked(text: str) -> list[str]:
    """Lines with the sketches' statistics (0.497) masked: they vary a little from run to run."""
    return [re.sub(r"\d+\.\d{3}", "#.###", line) for line in text.splitlines()]


def run_block(code: str, cwd: Path) -> str:
    """What ``code`` prints, run in ``cwd`` with no MLOBS_ setting of this machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOBS_")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_drift_page_example_runs_as_written(tmp_path: Path) -> None:
    blocks = python_blocks()
    assert len(blocks) == 2
    printed = masked(run_block(blocks[0], tmp_path))
    assert printed[:-1] == masked(shown_output())
    assert re.fullmatch(r"[\d,]+ bytes, 1 chunk\(s\)", printed[-1]), printed[-1]
    assert list(tmp_path.iterdir()) == []  # the example writes no file


def test_the_monitoring_example_runs_as_written_and_prints_what_the_page_shows(tmp_path: Path) -> None:
    match = re.search(
        r"```python\n(?:(?!```).)*?drift\.Monitor.*?```\n\nIt prints:\n\n```text\n(.*?)```",
        PAGE.read_text(),
        re.DOTALL,
    )
    assert match, "docs/drift.md lost the output of its monitoring example"
    assert run_block(python_blocks()[1], tmp_path) == match.group(1)
    assert match.group(1).splitlines()[0] == "drifted: ['age']"
    assert list(tmp_path.iterdir()) == []  # its store was a temporary directory
