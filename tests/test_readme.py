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
    """As written, then again in the same session (a notebook cell run twice): two attempts, no merge."""
    example = readme_example()
    twice = f"exec(compile({example!r}, 'cell', 'exec'))\nexec(compile({example!r}, 'cell', 'exec'))\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOBS_")}
    env["MLOBS_HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        [sys.executable, "-c", twice],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Record a run, with nothing running") :]
    printed = re.search(r"It prints:\n\n```text\n(.*?)```", section, re.DOTALL)
    assert printed, "the README lost the example's output"
    first = printed.group(1).splitlines()
    second = [first[0].replace("attempt 1", "attempt 2"), *first[1:]]
    assert done.stdout.splitlines() == first + second  # as the README says, then attempt 2, unmerged
    [said] = [line for line in done.stderr.splitlines() if "already has" in line]  # once
    assert "'lr-0.01'" in said and "attempt 2" in said


def read_section() -> str:
    text = (ROOT / "README.md").read_text()
    return text[text.index("## Read runs back") : text.index("## Model APIs")]


def test_readme_read_back_example_and_cli_session(tmp_path: Path) -> None:
    section = read_section()
    example = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    session = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert example and session, "the README lost its read-back example or CLI session"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOBS_")}
    env["MLOBS_HOME"] = str(tmp_path / "home")
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # the installed `mlobs`
    done = subprocess.run(
        [sys.executable, "-c", example.group(1)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "{'lr': 0.1}" in done.stdout and "5 points" in done.stdout
    commands = [line for line in session.group(1).splitlines() if line.startswith("mlobs ")]
    assert len(commands) == 7
    outputs = {}
    for command in commands:
        ran = subprocess.run(
            command, shell=True, capture_output=True, text=True, cwd=tmp_path, env=env, check=False
        )
        assert ran.returncode == 0, f"{command}: {ran.stderr}"
        outputs[command] = ran.stdout
    shown = re.search(r"\$ (mlobs runs compare[^\n]*)\n(.*?)```", section, re.DOTALL)
    assert shown, "the README lost its sample output"
    expected = [line.split() for line in shown.group(2).splitlines()]
    got = [line.split() for line in outputs[shown.group(1)].splitlines()]
    duration = expected[0].index("duration_ms")  # the one column that differs from run to run
    assert [row[:duration] + row[duration + 1 :] for row in got] == [
        row[:duration] + row[duration + 1 :] for row in expected
    ]


def install_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Install the SDK") : text.index("## Quick start")]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block, "the README lost its install lines"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_install_line_installs_what_the_examples_import(tmp_path: Path) -> None:
    """The user's first install line, in a fresh venv, gives `import pipeline_sdk` and `mlobs`."""
    first = install_lines()[0]
    assert first == "pip install -e ."
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    args = first.split()[2:]  # after "pip install"
    subprocess.run(
        [*pip, "install", "-c", str(ROOT / "constraints.txt"), *args],
        cwd=ROOT,
        check=True,
        timeout=600,
        capture_output=True,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOBS_")}
    env["MLOBS_HOME"] = str(tmp_path / "home")
    probe = "import pipeline_sdk, importlib.metadata as m; print(m.version('mlobs-pipeline-sdk'))"
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    version = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import pipeline_sdk; print(pipeline_sdk.__version__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert done.stdout == version
    assert (venv / "bin" / "mlobs").exists()
