"""Every upstream version is pinned in exactly one place, and everything else reads it from there.

The pins are read from their homes (versions.env and the files it names: the umbrella's
Chart.yaml, kubeVersion, kind-config.yaml, the Dockerfiles, the chart's Mailpit image,
tests/js/package.json), never written out here.  Then every file git tracks is searched for
each pinned version, also as ``v1.2.3`` and, for ``x.y.0``, as ``x.y``; a version found outside
its home and the generated files listed below is a copy that can go stale, and the test names
the file and the line.  The check is run on a planted copy, so it is shown to fail.

Python packages have their home in constraints.txt (a venv of its own may have its own
constraints-<name>.txt): an exact ``name==version`` anywhere else is refused.  A Python
package's version in prose is not searched for: there are some 140 of them, most short.

The readers of versions.env (the Makefile, ensure-prometheus.sh) are checked here too.  (One
concern, the pins, so one file a little over 400 lines.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

VERSIONS_ENV = "versions.env"
CONSTRAINTS = "constraints.txt"

# Files that may hold pinned versions because a tool writes them from a home: path -> why.
GENERATED = {
    "tests/js/package-lock.json": "npm's lock of tests/js/package.json",
}
# Generated sections of hand-written files: path -> (first line, last line) of the section.
GENERATED_SECTIONS = {
    "charts/mlobs-core/README.md": ("<!-- values:begin", "<!-- values:end -->"),
    "charts/mlobs/README.md": ("<!-- values:begin", "<!-- values:end -->"),
}
# Copies that must stay, each for a reason, and a test that holds it equal to its home.
KEPT_COPIES = {  # (path, what is pinned)
    # Helm checks the kubeVersion of the chart being installed, not of its dependencies, so the
    # umbrella states it too; test_chart.py checks that the two are the same.
    ("charts/mlobs/Chart.yaml", "oldest Kubernetes"),
}
# Exact Python pins (name==version) live in constraints.txt, and a venv of its own may have its
# own constraints-<name>.txt (is_constraints).
# Copies in files that other changes are moving to read their pin from its home: allowed here
# until then, and each entry is removed with that change.
# Exact pins outside a constraints file, until their owners turn them into ranges: path -> names.
PENDING_EXACT: dict[str, set[str]] = {}
PENDING: dict[str, set[str]] = {  # path -> what it may still copy
}


# Pins with more than one home, until their owners make it one: what -> its homes.
PENDING_HOMES = {
    # Both images start from the same Python image; one build argument read from versions.env
    # by the image builds would make it one pin.
    "python image": {"exporters/Dockerfile", "demo/Dockerfile"},
}


@dataclass(frozen=True)
class Pin:
    what: str  # what is pinned, e.g. "KIND_MIN" or "kube-prometheus-stack chart"
    version: str  # as written in its home, e.g. "0.4.0" or "v2.6.1-debian-3.1"
    home: str  # the file it lives in, relative to the repository


@dataclass(frozen=True)
class Copy:
    path: str
    line: int
    pin: Pin
    written: str  # as found, e.g. "v0.30"

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.pin.what} {self.written} (pinned in {self.pin.home})"


def _read(path: str) -> str:
    return (ROOT / path).read_text()


def _image_pins(path: str) -> Iterator[Pin]:
    for image in re.findall(r"^FROM\s+(\S+)", _read(path), re.M):
        name, _, tag = image.partition("@")[0].rpartition(":")
        yield Pin(f"{name} image", tag, path)


def pins() -> list[Pin]:
    """Every pinned upstream version, read from its home."""
    found = [
        Pin(key, value, VERSIONS_ENV)
        for key, value in re.findall(r"^([A-Z][A-Z0-9_]*)=(\S+)$", _read(VERSIONS_ENV), re.M)
    ]
    umbrella = yaml.safe_load(_read("charts/mlobs/Chart.yaml"))
    found += [
        Pin(f"{d['name']} chart", d["version"], "charts/mlobs/Chart.yaml")
        for d in umbrella["dependencies"]
        if not d["repository"].startswith("file://")
    ]
    core = yaml.safe_load(_read("charts/mlobs-core/Chart.yaml"))
    found.append(Pin("oldest Kubernetes", _kube_min(core["kubeVersion"]), "charts/mlobs-core/Chart.yaml"))
    kind = yaml.safe_load(_read("kind-config.yaml"))
    for node in kind["nodes"]:
        name, _, digest = node["image"].partition("@")
        found += [
            Pin("kind node image", name.rpartition(":")[2], "kind-config.yaml"),
            Pin("kind node image digest", digest, "kind-config.yaml"),
        ]
    for dockerfile in ("fluentd/Dockerfile", "exporters/Dockerfile", "demo/Dockerfile"):
        found += _image_pins(dockerfile)
    found += [
        Pin(f"{gem} gem", version, "fluentd/Dockerfile")
        for gem, version in re.findall(
            r"fluent-gem install [^\n]*?(\S+) -v (\S+)", _read("fluentd/Dockerfile")
        )
    ]
    values = yaml.safe_load(_read("charts/mlobs-core/values.yaml"))
    found += [
        Pin(f"{image['repository']} image", image["tag"], "charts/mlobs-core/values.yaml")
        for image in values["images"].values()
        if image["tag"] != "dev"  # our own images, built by make up
    ]
    package = json.loads(_read("tests/js/package.json"))
    found += [
        Pin(f"{name} npm package", version, "tests/js/package.json")
        for name, version in package["dependencies"].items()
    ]
    return found


def _kube_min(constraint: str) -> str:
    found = re.fullmatch(r">=\s*(\d+\.\d+\.\d+)(?:-0)?", constraint)
    assert found, f"kubeVersion {constraint!r} is not a lower bound"
    return found[1]


def spellings(version: str) -> dict[str, bool]:
    """How a version may be written elsewhere -> whether that spelling is short.

    As pinned, without or with a ``v``, the plain ``x.y.z`` of a longer tag, and ``x.y`` for
    ``x.y.0``.  A short spelling (``x.y``) is too common to count alone ("0.25 s"): it counts
    only on a line that also names what is pinned.
    """
    core = version.removeprefix("v")
    found = {core: False}
    if plain := re.match(r"\d+\.\d+\.\d+", core):
        found.setdefault(plain[0], False)  # 2.6.1 of v2.6.1-debian-3.1
    if number := re.fullmatch(r"(\d+\.\d+)\.0", core):
        found[number[1]] = True
    return found


def keyword(pin: Pin) -> str:
    """The word a line names the pinned thing by: "kind" for KIND_MIN, "fluentd" for fluent/fluentd."""
    if pin.home == VERSIONS_ENV:
        return pin.what.split("_")[0].lower()
    word = pin.what.split()[-1 if pin.what.startswith("oldest ") else 0]
    return word.split("/")[-1].lower()


def _without_generated_sections(path: str, text: str) -> str:
    if path not in GENERATED_SECTIONS:
        return text
    begin, end = GENERATED_SECTIONS[path]
    out, inside = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith(begin):
            inside = True
        out.append("\n" if inside else line)  # keep the line numbers
        if line.startswith(end):
            inside = False
    return "".join(out)


def is_constraints(path: str) -> bool:
    """constraints.txt, or the constraints-<name>.txt of a venv of its own (its exact pins)."""
    return re.fullmatch(r"(?:.*/)?constraints(?:-[\w.-]+)?\.txt", path) is not None


def copies(files: Iterable[tuple[str, str]], all_pins: list[Pin]) -> list[Copy]:
    """``path:line: <what> <version> (pinned in <home>)`` for each pinned version outside its home.

    A spelling shared by several pins (two pins may have the same version)
    may appear in the home, or a kept copy, of any of them.
    """
    by_spelling: dict[str, list[tuple[Pin, bool]]] = {}
    allowed: dict[str, set[str]] = {}  # spelling -> the files it may appear in
    for pin in all_pins:
        kept = {path for path, what in KEPT_COPIES if what == pin.what}
        for spelling, short in spellings(pin.version).items():
            by_spelling.setdefault(spelling, []).append((pin, short))
            allowed.setdefault(spelling, set()).update({pin.home, *kept})
    alternatives = "|".join(re.escape(s) for s in sorted(by_spelling, key=len, reverse=True))
    # Not inside a longer version or name: "1.4.0" is not in "21.4.0", "x-1.4.0-y" or "1.4.0.4";
    # "-" may precede it after a non-word ("${KIND_MIN:-0.4.0}"), not after a word ("debian-3.1").
    pattern = re.compile(rf"(?<![\w.+])(?<!\w-)v?({alternatives})(?![\w+]|\.\d)")
    found = set()
    for path, written in files:
        if is_constraints(path):
            continue  # Python pins only, name==version (a gem may share a version with a wheel)
        text = _without_generated_sections(path, written)
        lines = text.splitlines()
        for match in pattern.finditer(text):
            if path in allowed[match[1]]:
                continue
            number = text.count("\n", 0, match.start()) + 1
            line = lines[number - 1].lower()
            for pin, short in by_spelling[match[1]]:
                if not short or keyword(pin) in line:
                    found.add(Copy(path, number, pin, match[0]))
    return sorted(found, key=str)


def tracked_files(root: Path = ROOT) -> Iterator[tuple[str, str]]:
    """``(path, text)`` of every text file git tracks under ``root``, but the generated ones."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    for path in sorted(listed.decode().split("\0")):
        if not path or path in GENERATED or not (root / path).is_file():
            continue
        try:
            yield path, (root / path).read_text()
        except UnicodeDecodeError:
            continue  # not text


def several_homes(all_pins: list[Pin]) -> dict[str, set[str]]:
    """What is pinned in more than one file -> those files."""
    homes: dict[str, set[str]] = {}
    for pin in all_pins:
        homes.setdefault(pin.what, set()).add(pin.home)
    return {what: found for what, found in homes.items() if len(found) > 1}


def test_each_pin_has_one_home() -> None:
    assert several_homes(pins()) == PENDING_HOMES
    planted = [*pins(), Pin("kube-prometheus-stack chart", "1.2.3", "docs/x.yaml")]
    assert several_homes(planted) == {
        **PENDING_HOMES,
        "kube-prometheus-stack chart": {"charts/mlobs/Chart.yaml", "docs/x.yaml"},
    }


def test_the_pins_are_read_from_their_homes() -> None:
    found = {(p.what, p.home) for p in pins()}
    assert len(found) == len(pins()), "each pin is read once"
    for what in (
        "KIND_MIN",
        "HELM_MIN",
        "PROMETHEUS_MIN",
        "ALERTMANAGER_MIN",
        "kube-prometheus-stack chart",
        "influxdb2 chart",
        "oldest Kubernetes",
        "kind node image",
        "kind node image digest",
        "fluent/fluentd image",
        "fluent-plugin-influxdb-v2 gem",
        "fluent-plugin-prometheus gem",
        "prometheus-client gem",
        "fluent-plugin-concat gem",  # the node forwarders'
        "fluent-plugin-kubernetes_metadata_filter gem",
        "kubeclient gem",  # a dependency the filter leaves open, pinned too
        "axllent/mailpit image",
        "@grafana/schema npm package",
        "@influxdata/flux-lsp-browser npm package",
        "typescript npm package",
    ):
        assert what in {w for w, _ in found}, what
    for pin in pins():
        assert re.search(r"\d+\.\d+|sha256:[0-9a-f]{64}", pin.version), pin


def test_every_pinned_version_is_written_once() -> None:
    found = copies(tracked_files(), pins())
    assert [str(c) for c in found if c.pin.what not in PENDING.get(c.path, set())] == []


def test_a_planted_copy_is_found_with_its_line(tmp_path: Path) -> None:
    all_pins = pins()
    chart = next(p for p in all_pins if p.what == "kube-prometheus-stack chart")
    kind = next(p for p in all_pins if p.what == "KIND_MIN")
    short = kind.version.rsplit(".", 1)[0]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.md").write_text(
        f"# notes\nkube-prometheus-stack {chart.version} here\nkind >= {short} or later\n"
    )
    (tmp_path / "up.sh").write_text(f"KIND_MIN=${{KIND_MIN:-{kind.version}}}\n")
    (tmp_path / "untracked.md").write_text(f"kind {kind.version}\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "docs/notes.md", "up.sh"], cwd=tmp_path, check=True)
    assert [str(c) for c in copies(tracked_files(tmp_path), all_pins)] == [
        f"docs/notes.md:2: kube-prometheus-stack chart {chart.version} (pinned in charts/mlobs/Chart.yaml)",
        f"docs/notes.md:3: KIND_MIN {short} (pinned in versions.env)",
        f"up.sh:1: KIND_MIN {kind.version} (pinned in versions.env)",
    ]
    # In its home, or in a longer version or name that only contains it, it is no copy.
    assert copies([("charts/mlobs/Chart.yaml", f"version: {chart.version}\n")], all_pins) == []
    assert copies([("examples/constraints-x.txt", f"some-wheel=={chart.version}\n")], all_pins) == []
    text = (
        f"x==1{chart.version} {chart.version}1 {chart.version}.4 debian-{chart.version} v{chart.version}b\n"
    )
    assert copies([("x.txt", text)], all_pins) == []


def test_a_generated_section_may_hold_pins() -> None:
    mailpit = next(p for p in pins() if p.what == "axllent/mailpit image")
    version, readme = mailpit.version, "charts/mlobs-core/README.md"
    text = f"intro\n<!-- values:begin -->\n| tag | {version} |\n<!-- values:end -->\nafter {version}\n"
    assert [str(c) for c in copies([(readme, text)], pins())] == [
        f"{readme}:5: axllent/mailpit image {version} (pinned in charts/mlobs-core/values.yaml)"
    ]


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("0.4.0", {"0.4.0": False, "0.4": True}),
        ("v2.6.1-debian-3.1", {"2.6.1-debian-3.1": False, "2.6.1": False}),
        ("77.1.9", {"77.1.9": False}),
        ("v3.3.3", {"3.3.3": False}),
        ("v4.40.0", {"4.40.0": False, "4.40": True}),
    ],
)
def test_spellings_of_a_version(version: str, expected: dict[str, bool]) -> None:
    assert spellings(version) == expected


def test_a_short_spelling_counts_only_beside_the_name_of_what_is_pinned() -> None:
    kind = next(p for p in pins() if p.what == "KIND_MIN")
    short = kind.version.rsplit(".", 1)[0]
    text = f"timeout {short} s\nkind {short} or later\nKind v{short}\n"
    assert [str(c) for c in copies([("a.md", text)], [kind])] == [
        f"a.md:2: KIND_MIN {short} (pinned in versions.env)",
        f"a.md:3: KIND_MIN v{short} (pinned in versions.env)",
    ]
    assert {keyword(p) for p in pins() if p.home == VERSIONS_ENV} == {
        "kind",
        "helm",
        "prometheus",
        "alertmanager",
    }
    assert keyword(next(p for p in pins() if p.what == "oldest Kubernetes")) == "kubernetes"
    assert keyword(next(p for p in pins() if p.what == "fluent/fluentd image")) == "fluentd"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("constraints.txt", True),
        ("examples/instrument/constraints-kfp.txt", True),
        ("requirements.txt", False),
        ("docs/constraints.md", False),
        ("constraints-kfp.txt.bak", False),
    ],
)
def test_which_files_hold_exact_python_pins(path: str, expected: bool) -> None:
    assert is_constraints(path) is expected


def test_python_packages_are_pinned_only_in_constraints() -> None:
    names = {n.lower() for n in re.findall(r"^([A-Za-z0-9_.-]+)==", _read(CONSTRAINTS), re.M)}
    assert len(names) > 100
    exact = re.compile(r"(?<![\w.-])([A-Za-z0-9_.-]+)==\d")
    found = [
        f"{path}: {m[0]}"
        for path, text in tracked_files()
        if not is_constraints(path)
        for m in exact.finditer(text)
        if m[1].lower() in names and m[1].lower() not in PENDING_EXACT.get(path, set())
    ]
    assert found == []
    some = sorted(names)[0]
    planted = f"pip install '{some.upper()}==1.0' x==1 a-{some}==2"
    assert [m[1] for m in exact.finditer(planted) if m[1].lower() in names] == [some.upper()]


# ---- the readers ---------------------------------------------------------------------------------------


def _env_pins() -> dict[str, str]:
    return {p.what: p.version for p in pins() if p.home == VERSIONS_ENV}


def test_the_makefile_reads_versions_env() -> None:
    env = _env_pins()
    names = sorted(env)
    show = "show-versions: ; @echo " + " ".join(f"{n}=$({n})" for n in names)
    run = subprocess.run(
        ["make", "--no-print-directory", f"--eval={show}", "show-versions"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout == " ".join(f"{n}={env[n]}" for n in names) + "\n"
    assert {"KIND_MIN", "HELM_MIN", "PROMETHEUS_MIN", "ALERTMANAGER_MIN"} <= set(names)


def _stub_tools(directory: Path, prometheus: str, alertmanager: str) -> dict[str, str]:
    directory.mkdir()
    for tool, version in (
        ("promtool", prometheus),
        ("prometheus", prometheus),
        ("prometheus-alertmanager", alertmanager),
        ("amtool", alertmanager),
    ):
        stub = directory / tool
        stub.write_text(f'#!/bin/sh\necho "{tool}, version {version}+ds (branch: test)"\n')
        stub.chmod(0o755)
    return {**os.environ, "PATH": f"{directory}:{os.environ['PATH']}"}


def _older(version: str) -> str:
    major, minor, patch = (int(n) for n in version.split("."))
    return f"{major}.{minor - 1}.9" if patch == 0 else f"{major}.{minor}.{patch - 1}"


def test_ensure_prometheus_checks_the_minimums_of_versions_env(tmp_path: Path) -> None:
    env = _env_pins()
    script = str(ROOT / "scripts" / "ensure-prometheus.sh")
    at_min = _stub_tools(tmp_path / "at", env["PROMETHEUS_MIN"], env["ALERTMANAGER_MIN"])
    run = subprocess.run([script], env=at_min, capture_output=True, text=True, check=False)
    assert (run.returncode, run.stderr) == (0, "")
    old_prometheus = _older(env["PROMETHEUS_MIN"])
    old = _stub_tools(tmp_path / "old", old_prometheus, env["ALERTMANAGER_MIN"])
    run = subprocess.run([script], env=old, capture_output=True, text=True, check=False)
    assert run.returncode == 1
    assert run.stderr == (
        "ensure-prometheus: too old (versions.env sets the minimums):\n"
        f"  promtool {old_prometheus} < {env['PROMETHEUS_MIN']}\n"
        f"  prometheus {old_prometheus} < {env['PROMETHEUS_MIN']}\n"
    )
