"""The README's promises hold: its examples print what it shows, and its facts match the files they come from.

The examples run as written, with no cluster, in a fresh ``MLOBS_HOME`` (tests/test_docs.py runs
every other Python block of the docs).  Here they are also held to their output: the first
example (twice, as a notebook cell run twice), the read-back session of the ``mlobs`` command and
the model-API session of pipeline_sdk/README.md.  The quick start's URLs are held to
kind-config.yaml, its memory figures to the chart's values, and "Where things are" to the
repository's folders.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.test_docs import example_env, failure, prose_lines, python_blocks, run_examples

README = ROOT / "README.md"
SDK_README = ROOT / "pipeline_sdk" / "README.md"
FIRST_EXAMPLE = "## Record a run, with nothing running"


def section(text: str, heading: str) -> str:
    """The text of ``heading``'s section, up to the next heading of its level or above (fences aside)."""
    level = len(heading.split(" ", maxsplit=1)[0])
    lines = text.splitlines(keepends=True)
    headings = [(n, line) for n, line in prose_lines(text, blank_code=False) if re.match(r"#{1,6} ", line)]
    [start] = [n for n, line in headings if line == heading]
    ends = [n for n, line in headings if n > start and len(line.split(" ", maxsplit=1)[0]) <= level]
    return "".join(lines[start - 1 : ends[0] - 1 if ends else None])


def fenced(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.DOTALL | re.MULTILINE)


def readme_example() -> str:
    blocks = fenced(section(README.read_text(), FIRST_EXAMPLE), "python")
    assert blocks, "the README lost its example"
    return blocks[0]


def run_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=example_env(tmp_path),
        timeout=120,
        check=False,
    )


def test_readme_example_runs_with_nothing_running(tmp_path: Path) -> None:
    """As written, then again in the same session (a notebook cell run twice): two attempts, no merge."""
    example = readme_example()
    twice = f"exec(compile({example!r}, 'cell', 'exec'))\nexec(compile({example!r}, 'cell', 'exec'))\n"
    done = run_python(twice, tmp_path)
    assert done.returncode == 0, done.stderr
    printed = re.search(
        r"It prints:\n\n```text\n(.*?)```", section(README.read_text(), FIRST_EXAMPLE), re.DOTALL
    )
    assert printed, "the README lost the example's output"
    first = printed.group(1).splitlines()
    assert len(first) == 2
    second = [first[0].replace("attempt 1", "attempt 2"), *first[1:]]
    assert done.stdout.splitlines() == first + second  # as the README says, then attempt 2, unmerged
    [said] = [line for line in done.stderr.splitlines() if "already has" in line]  # once
    assert "'lr-0.01'" in said and "attempt 2" in said


def test_the_first_example_is_ten_lines_that_end_by_reading_the_run_back() -> None:
    example = readme_example()
    code = [line for line in example.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(code) == 10
    statements = ast.parse(example).body
    assert isinstance(statements[2], ast.With)  # the run ...
    after = ast.unparse(ast.Module(body=statements[3:], type_ignores=[]))
    assert after.startswith("runs = ReadClient()")  # ... then reading it back
    assert "runs.run('lr-0.01')" in after and "runs.list_metrics('lr-0.01', 'loss')" in after


def test_read_back_example_and_cli_session(tmp_path: Path) -> None:
    """pipeline_sdk/README.md: the read-back example, then each `mlobs` command of its session."""
    read_back = section(SDK_README.read_text(), "## Read runs back")
    [example] = fenced(read_back, "python")
    session = fenced(read_back, "sh")[0]
    done = run_python(example, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "{'lr': 0.1}" in done.stdout and "5 points" in done.stdout
    commands = [line for line in session.splitlines() if line.startswith("mlobs ")]
    assert len(commands) == 7
    outputs = {}
    for command in commands:
        ran = subprocess.run(
            command,
            shell=True,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=example_env(tmp_path),
            check=False,
        )
        assert ran.returncode == 0, f"{command}: {ran.stderr}"
        outputs[command] = ran.stdout
    shown = re.search(r"\$ (mlobs runs compare[^\n]*)\n(.*?)```", read_back, re.DOTALL)
    assert shown, "pipeline_sdk/README.md lost its sample output"
    expected = [line.split() for line in shown.group(2).splitlines()]
    got = [line.split() for line in outputs[shown.group(1)].splitlines()]
    duration = expected[0].index("duration_ms")  # the one column that differs from run to run
    assert [row[:duration] + row[duration + 1 :] for row in got] == [
        row[:duration] + row[duration + 1 :] for row in expected
    ]


def test_model_api_examples_and_their_read_back(tmp_path: Path) -> None:
    """The Model APIs section: the apps, two requests through the test client, then what is read back."""
    model_apis = section(SDK_README.read_text(), "## Model APIs")
    blocks = python_blocks(model_apis, "pipeline_sdk/README.md#model-apis")
    assert len(blocks) == 4 and all(b.not_run is None for b in blocks)
    done = run_examples(blocks, "model-apis", tmp_path)
    assert failure(done) is None, failure(done)
    read_back = blocks[-1].code
    promised = re.findall(r"^print\(.*\)  # (.*)$", read_back, re.MULTILINE)
    assert len(promised) == 3
    assert done.stdout.splitlines() == promised
    session = fenced(model_apis, "sh")[-1]
    commands = [line for line in session.splitlines() if line.startswith("mlobs ")]
    assert len(commands) == 3
    printed = {}
    for command in commands:
        ran = subprocess.run(
            command,
            shell=True,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=example_env(tmp_path),
            check=False,
        )
        assert ran.returncode == 0, f"{command}: {ran.stderr}"
        printed[command] = ran.stdout.splitlines()
    listed, requests, predictions = printed.values()
    assert listed[0].split()[:3] == ["service", "requests", "server_errors"]
    assert listed[1].split()[:3] == ["churn-api", "2", "0"]
    assert requests == [  # no 5xx answer
        "time  endpoint  method  status_code  duration_ms  user",
        "(no requests of service churn-api match)",
    ]
    assert [row.split()[1:] for row in predictions[1:]] == [
        ["churn-xgb", "3", "0.12", "stay"],
        ["churn-xgb", "3", "0.87", "churn"],
    ]  # newest first


def install_lines() -> list[str]:
    block = fenced(section(README.read_text(), FIRST_EXAMPLE), "sh")
    assert block, "the README lost its install lines"
    return [line.split("#")[0].strip() for line in block[0].splitlines() if line.strip()]


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


# ---- the quick start's facts ---------------------------------------------------------------------


def readme_urls(text: str) -> dict[str, int]:
    """{service: port} of the quick start's "Where to look" table."""
    table = section(text, "### Where to look")
    return {
        m[0]: int(m[1]) for m in re.findall(r"^\| (\w+) \| http://localhost:(\d+) \|", table, re.MULTILINE)
    }


def kind_ports(text: str) -> dict[str, int]:
    """{service: hostPort} of kind-config.yaml, named by each mapping's comment."""
    return {m[1]: int(m[0]) for m in re.findall(r"hostPort: (\d+),[^}]*\}\s*# (\w+)", text)}


def test_the_urls_are_the_ports_kind_maps() -> None:
    urls = readme_urls(README.read_text())
    assert urls == kind_ports((ROOT / "kind-config.yaml").read_text())
    assert urls == {
        "Grafana": 3000,
        "Prometheus": 9090,
        "Alertmanager": 9093,
        "Mailpit": 8025,
        "InfluxDB": 8086,
    }
    needs = section(README.read_text(), "### What your machine needs")
    [ports] = [line for line in needs.splitlines() if line.startswith("| Ports |")]
    assert re.findall(r"\d{4}", ports) == [str(p) for p in urls.values()]


def test_a_wrong_url_is_caught() -> None:
    text = README.read_text().replace("http://localhost:9093", "http://localhost:9094")
    assert readme_urls(text)["Alertmanager"] == 9094
    assert readme_urls(text) != kind_ports((ROOT / "kind-config.yaml").read_text())


def _quantity(value: str) -> float:
    """MiB of a memory quantity, or cores of a CPU quantity."""
    units = {"Mi": 1.0, "Gi": 1024.0, "m": 0.001, "": 1.0}
    number, unit = re.fullmatch(r"([0-9.]+)(Mi|Gi|m|)", str(value)).groups()  # type: ignore[union-attr]
    return float(number) * units[unit]


def chart_resources(values: list[object]) -> dict[str, float]:
    """Sum of every ``resources`` block in the values files: requests and limits, memory (GiB) and CPU."""
    totals = {"requests.memory": 0.0, "limits.memory": 0.0, "requests.cpu": 0.0, "limits.cpu": 0.0}

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "monitorJob":  # drift monitors' CronJobs: none unless `monitors` names some
                    continue
                if key == "resources" and isinstance(value, dict):
                    for kind in ("requests", "limits"):
                        for what in ("memory", "cpu"):
                            totals[f"{kind}.{what}"] += _quantity(value[kind][what])
                else:
                    walk(value)

    for tree in values:
        walk(tree)
    return {k: v / 1024 if k.endswith("memory") else v for k, v in totals.items()}


def test_the_memory_needs_are_the_charts() -> None:
    """The release's requests and limits, as the README states them, are the values files' sum.

    Every container the release runs with resources of its own is set in these two files (the
    demo Jobs and the model API share ``demo.resources``; the Jobs run only with ``make demo``).
    """
    files = [ROOT / "charts" / "mlobs" / "values.yaml", ROOT / "charts" / "mlobs-core" / "values.yaml"]
    totals = chart_resources([yaml.safe_load(f.read_text()) for f in files])
    needs = section(README.read_text(), "### What your machine needs")
    requests, limits = re.search(r"requests about ([0-9.]+) GiB \(limits ([0-9.]+) GiB\)", needs).groups()  # type: ignore[union-attr]
    assert (float(requests), float(limits)) == (
        round(totals["requests.memory"], 1),
        round(totals["limits.memory"], 1),
    )
    assert (requests, limits) == ("1.5", "4.9")  # with the node forwarder (one node on kind)
    [cpu] = re.findall(r"the release requests ([0-9.]+) CPU", needs)
    assert float(cpu) == round(totals["requests.cpu"], 1) == 0.6


def test_a_changed_request_is_caught() -> None:
    tree = yaml.safe_load((ROOT / "charts" / "mlobs" / "values.yaml").read_text())
    core = yaml.safe_load((ROOT / "charts" / "mlobs-core" / "values.yaml").read_text())
    before = chart_resources([tree, core])
    tree["kube-prometheus-stack"]["prometheus"]["prometheusSpec"]["resources"]["requests"]["memory"] = "1Gi"
    after = chart_resources([tree, core])
    assert round(after["requests.memory"] - before["requests.memory"], 3) == 0.5
    assert round(after["requests.memory"], 1) != 1.5


def readme_dashboards(text: str) -> dict[str, str]:
    """{uid: title} of the README's dashboards table."""
    table = section(text, "## What you get")
    return {uid: title for title, uid in re.findall(r"^\| ([\w ]+) \(`([\w-]+)`\) \|", table, re.MULTILINE)}


def test_the_dashboards_table_is_the_dashboards() -> None:
    rendered = [json.loads(p.read_text()) for p in sorted((ROOT / "dashboards" / "json").glob("*.json"))]
    assert readme_dashboards(README.read_text()) == {
        d["uid"]: d["title"].removeprefix("mlobs / ") for d in rendered
    }
    assert len(rendered) == 6


def test_a_wrong_dashboard_uid_is_caught() -> None:
    text = README.read_text().replace("(`mlobs-run-view`)", "(`mlobs-run`)")
    assert "mlobs-run" in readme_dashboards(text) and "mlobs-run-view" not in readme_dashboards(text)


# ---- where things are ------------------------------------------------------------------------------


def top_level_folders() -> set[str]:
    """The repository's top-level folders that hold tracked files (hidden ones aside)."""
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return {path.split("/")[0] for path in listed.splitlines() if "/" in path and not path.startswith(".")}


def where_things_are(text: str) -> dict[str, str]:
    """{folder: link} of the README's "Where things are" table."""
    table = section(text, "## Where things are")
    return dict(re.findall(r"^\| \[(\w+)/\]\(([^)]+)\) \|", table, re.MULTILINE))


def test_where_things_are_links_a_readme_in_every_folder() -> None:
    table = where_things_are(README.read_text())
    assert set(table) == top_level_folders()
    assert table == {folder: f"{folder}/README.md" for folder in table}
    assert all((ROOT / link).is_file() for link in table.values())


@pytest.mark.parametrize("missing", ["bench", "tests"])
def test_a_folder_left_out_is_caught(missing: str) -> None:
    text = "\n".join(
        line for line in README.read_text().splitlines() if not line.startswith(f"| [{missing}/]")
    )
    assert missing not in where_things_are(text)
    assert set(where_things_are(text)) != top_level_folders()
