"""The docs keep their promises: every Python example runs as written, and every relative link resolves.

**Examples.** Every ```python block of every Markdown file in the repository either runs or says
why not, with an HTML comment as the last line before its fence::

    <!-- not-run: needs a cluster -->

The runnable blocks of one file run in order in one fresh interpreter, as a reader would run
them in a notebook (a block may use what an earlier block of the same page defined), with no
``MLOBS_*`` settings but a temporary ``MLOBS_HOME``, in a temporary directory, and without the
network: a connection to anything but the loopback is refused.  A failing block is reported
as ``file:line`` of the document.  Examples in README.md and pipeline_sdk/README.md also use only
the SDK's public names: what ``pipeline_sdk`` and ``pipeline_sdk.read`` export in ``__all__``.

**Links.** Every relative link (``[text](path)``, ``[text](path#anchor)``, ``[text](#anchor)``,
reference definitions) resolves to a file or folder inside the repository, and an anchor names a
heading of the Markdown file it points to, spelt as GitHub spells heading anchors.

Over 400 lines, one concern: what the docs promise, read with one Markdown reader (fences,
markers, headings, links) that both halves and tests/test_readme.py share, with a failing case
beside each check.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.conftest import ROOT

# Folders that hold no docs of ours: tools' caches, installed packages, build output.
PRUNED = {
    ".git",
    ".venv",
    "node_modules",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
    ".bench",
}
PUBLIC_DOCS = ("README.md", "pipeline_sdk/README.md")  # their examples import public names only
PUBLIC_MODULES = ("pipeline_sdk", "pipeline_sdk.read")
BLOCK_TIMEOUT = 120  # seconds for all the examples of one file

_FENCE = re.compile(r"^(?P<indent> {0,3}|\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
_NOT_RUN = re.compile(r"^\s*<!--\s*not-run:(?P<reason>.*?)-->\s*$")
_MARKER_LIKE = re.compile(r"<!--\s*not-run\b")
_PYTHON_INFO = {"python", "py", "python3"}
_HAS_PYTHON = re.compile(r"^\s*(?:`{3,}|~{3,})\s*(?:python3?|py)\b|not-run", re.IGNORECASE | re.MULTILINE)


def markdown_files(root: Path = ROOT) -> list[Path]:
    """Every Markdown file under ``root``, outside tool and package folders, in a stable order."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in PRUNED and not d.endswith(".egg-info"))
        found += [Path(folder) / f for f in sorted(files) if f.endswith(".md")]
    return found


# ---- code blocks --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A fenced code block: its language, first code line (1-based), code, and a not-run reason."""

    lang: str
    line: int
    code: str
    not_run: str | None


class DocError(AssertionError):
    """A Markdown file breaks a rule of this module (a bad marker, an unclosed fence)."""


def code_blocks(text: str, where: str = "<doc>") -> list[Block]:
    """The fenced blocks of a Markdown text, each with the not-run reason given just before it.

    Raises DocError for a marker with no reason, a marker that no Python block follows, and a
    fence that is never closed.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    marker: tuple[int, str] | None = None  # (line, reason) of a marker not yet used
    i = 0
    while i < len(lines):
        line = lines[i]
        opened = _FENCE.match(line)
        if opened is None:
            found = _NOT_RUN.match(line)
            if found is None and _MARKER_LIKE.search(line):
                raise DocError(
                    f"{where}:{i + 1}: a not-run marker must be a line of its own: {line.strip()!r}"
                )
            if found is not None:
                if marker is not None:
                    raise DocError(f"{where}:{marker[0]}: a not-run marker with no Python block after it")
                reason = found.group("reason").strip()
                if not reason:
                    raise DocError(f"{where}:{i + 1}: a not-run marker must say why: <!-- not-run: why -->")
                marker = (i + 1, reason)
            elif line.strip() and marker is not None:
                raise DocError(f"{where}:{marker[0]}: a not-run marker with no Python block after it")
            i += 1
            continue
        fence, indent = opened.group("fence"), len(opened.group("indent"))
        lang = opened.group("info").lower()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not re.match(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[j]):
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j].lstrip())
            j += 1
        if j == len(lines):
            raise DocError(f"{where}:{i + 1}: a code fence that is never closed")
        reason = None
        if marker is not None:
            if lang not in _PYTHON_INFO:
                raise DocError(f"{where}:{marker[0]}: a not-run marker with no Python block after it")
            reason = marker[1]
            marker = None
        blocks.append(Block(lang, i + 2, "\n".join(body) + "\n", reason))
        i = j + 1
    if marker is not None:
        raise DocError(f"{where}:{marker[0]}: a not-run marker with no Python block after it")
    return blocks


def python_blocks(text: str, where: str = "<doc>") -> list[Block]:
    return [b for b in code_blocks(text, where) if b.lang in _PYTHON_INFO]


# The runner: no network, then each block compiled under the document's name and line numbers.
_RUNNER = textwrap.dedent(
    """
    import json, socket, sys

    _LOOPBACK = {"127.0.0.1", "::1", "localhost"}
    _connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def _refuse(address):
        raise OSError(f"the docs' examples run without the network: {address!r} refused")

    def _is_remote(self, address):
        return self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in _LOOPBACK

    def connect(self, address):
        if _is_remote(self, address):
            _refuse(address)
        return _connect(self, address)

    def connect_ex(self, address):
        if _is_remote(self, address):
            _refuse(address)
        return _connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in _LOOPBACK and host is not None:
            _refuse(host)
        return _getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo

    where, blocks = sys.argv[1], json.load(open(sys.argv[2]))
    namespace = {"__name__": "__main__"}
    for line, code in blocks:
        print(f"--- {where}:{line}", file=sys.stderr, flush=True)
        exec(compile("\\n" * (line - 1) + code, where, "exec"), namespace)
    """
)


def example_env(tmp: Path) -> dict[str, str]:
    """The environment examples run in: no MLOBS_* setting but a private MLOBS_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOBS_")}
    env["MLOBS_HOME"] = str(tmp / "home")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the installed `mlobs`
    env["PYTHONPATH"] = str(ROOT)  # demo/ and the like, as from the clone
    return env


def run_examples(blocks: list[Block], where: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    """Run the runnable blocks in order in one fresh interpreter; its result."""
    tmp.mkdir(parents=True, exist_ok=True)
    listing = tmp / "blocks.json"
    listing.write_text(json.dumps([[b.line, b.code] for b in blocks if b.not_run is None]))
    return subprocess.run(
        [sys.executable, "-c", _RUNNER, where, str(listing)],
        capture_output=True,
        text=True,
        cwd=tmp,
        env=example_env(tmp),
        timeout=BLOCK_TIMEOUT,
        check=False,
    )


def failure(done: subprocess.CompletedProcess[str]) -> str | None:
    """None when every block ran, else the last block started and the error's last lines."""
    if done.returncode == 0:
        return None
    started = [line[4:] for line in done.stderr.splitlines() if line.startswith("--- ")]
    tail = "\n".join(done.stderr.splitlines()[-12:])
    return f"the example at {started[-1] if started else '?'} failed:\n{tail}"


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def has_python_or_error(doc: Path) -> bool:
    """Whether ``doc`` has a Python block, or breaks a rule that the test should report."""
    text = doc.read_text()
    if not _HAS_PYTHON.search(text):
        return False
    try:
        return bool(python_blocks(text))
    except DocError:
        return True


DOCS_WITH_PYTHON = [p for p in markdown_files() if has_python_or_error(p)]


@pytest.mark.parametrize("doc", DOCS_WITH_PYTHON, ids=rel)
def test_every_python_example_runs_or_says_why_not(doc: Path, tmp_path: Path) -> None:
    blocks = python_blocks(doc.read_text(), rel(doc))
    if all(b.not_run is not None for b in blocks):
        return
    done = run_examples(blocks, rel(doc), tmp_path)
    problem = failure(done)
    assert problem is None, problem


def test_every_example_of_the_public_docs_runs() -> None:
    """README.md and pipeline_sdk/README.md show only examples that run: none is taken on trust."""
    for name in PUBLIC_DOCS:
        blocks = python_blocks((ROOT / name).read_text(), name)
        assert blocks, f"{name} has no Python example"
        assert [b.line for b in blocks if b.not_run is not None] == [], f"{name}: examples marked not-run"


BROKEN = """# A page

Text.

```python
import pipeline_sdk

print("first block ran")
```

More text.

{marker}```python
with pipeline_sdk.run(pipeline="a pipeline", step="fit") as run:  # a space: not a label value
    run.log_metric("loss", 0.5)
```
"""


def test_an_unmarked_broken_example_is_caught_at_its_line(tmp_path: Path) -> None:
    blocks = python_blocks(BROKEN.format(marker=""), "page.md")
    assert [(b.line, b.not_run) for b in blocks] == [(6, None), (14, None)]
    done = run_examples(blocks, "page.md", tmp_path)
    problem = failure(done)
    assert problem is not None and problem.startswith("the example at page.md:14 failed:")
    assert 'File "page.md", line 14' in done.stderr  # the document's own line number
    assert "pipeline='a pipeline' is invalid" in done.stderr
    assert "first block ran" in done.stdout  # the blocks before it ran first, in one interpreter


def test_a_marked_example_is_not_run(tmp_path: Path) -> None:
    marked = BROKEN.format(marker="<!-- not-run: shows a mistake -->\n")
    blocks = python_blocks(marked, "page.md")
    assert [(b.line, b.not_run) for b in blocks] == [(6, None), (15, "shows a mistake")]
    done = run_examples(blocks, "page.md", tmp_path)
    assert failure(done) is None, done.stderr
    assert done.stdout == "first block ran\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<!-- not-run: -->\n```python\npass\n```\n", "page.md:1: a not-run marker must say why"),
        ("<!-- not-run:   -->\n\n```python\npass\n```\n", "page.md:1: a not-run marker must say why"),
        (
            "<!-- not-run: why -->\n\nSome text.\n\n```python\npass\n```\n",
            "page.md:1: a not-run marker with no",
        ),
        ("<!-- not-run: why -->\n```sh\nls\n```\n", "page.md:1: a not-run marker with no Python block"),
        ("text\n<!-- not-run: why -->\n", "page.md:2: a not-run marker with no Python block"),
        (
            "Text <!-- not-run: why --> here.\n```python\npass\n```\n",
            "page.md:1: a not-run marker must be a line",
        ),
        ("```python\npass\n", "page.md:1: a code fence that is never closed"),
    ],
)
def test_a_bad_marker_or_fence_is_an_error(text: str, message: str) -> None:
    with pytest.raises(DocError) as raised:
        code_blocks(text, "page.md")
    assert str(raised.value).startswith(message)


def test_blocks_in_lists_and_other_fences() -> None:
    text = "1. Step:\n\n   ```python\n   x = 1\n   ```\n\n````md\n```python\nnot a block\n```\n````\n"
    blocks = code_blocks(text)
    assert [(b.lang, b.line, b.code) for b in blocks] == [
        ("python", 4, "x = 1\n"),
        ("md", 8, "```python\nnot a block\n```\n"),
    ]


def test_examples_run_without_the_network(tmp_path: Path) -> None:
    code = (
        "import socket, urllib.request\n"
        "server = socket.create_server(('127.0.0.1', 0))\n"
        "socket.create_connection(server.getsockname()).close()  # the loopback: allowed\n"
        "print('loopback ok')\n"
        "urllib.request.urlopen('http://example.com/', timeout=5)\n"
    )
    done = run_examples([Block("python", 3, code, None)], "net.md", tmp_path)
    assert done.stdout == "loopback ok\n"
    assert "the docs' examples run without the network: 'example.com' refused" in done.stderr
    assert failure(done) is not None


def test_examples_run_in_a_private_home(tmp_path: Path) -> None:
    code = "import os\nprint(os.environ['MLOBS_HOME'], os.getcwd(), os.environ.get('MLOBS_FLUENTD_HOST'))\n"
    done = run_examples([Block("python", 1, code, None)], "home.md", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(tmp_path / "home"), str(tmp_path), "None"]


# ---- public names only --------------------------------------------------------------------------


def internal_names(code: str) -> list[str]:
    """What ``code`` reaches outside the SDK's public surface: modules, names and private attributes."""
    public = {name: set(importlib.import_module(name).__all__) for name in PUBLIC_MODULES}
    found = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            found += [
                a.name for a in node.names if a.name.startswith("pipeline_sdk") and a.name not in public
            ]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline_sdk"):
            module = node.module or ""
            if module not in public:
                found.append(module)
            else:
                found += [f"{module}.{a.name}" for a in node.names if a.name not in public[module]]
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("_") and not node.attr.startswith("__"):
                found.append(f".{node.attr}")
            elif (
                isinstance(node.value, ast.Name)
                and node.value.id == "pipeline_sdk"
                and node.attr not in {*public["pipeline_sdk"], "read"}
            ):
                found.append(f"pipeline_sdk.{node.attr}")
    return found


@pytest.mark.parametrize("name", PUBLIC_DOCS)
def test_the_public_docs_use_public_names_only(name: str) -> None:
    for block in python_blocks((ROOT / name).read_text(), name):
        assert internal_names(block.code) == [], f"{name}:{block.line}"


def test_an_internal_import_is_caught() -> None:
    code = (
        "import pipeline_sdk\n"
        "from pipeline_sdk.read import ReadClient, Rows\n"
        "from pipeline_sdk.local_store import LocalStore\n"
        "import pipeline_sdk.shipper\n"
        "from pipeline_sdk.read import NotThere\n"
        "run = pipeline_sdk.run\n"
        "path = run.client._transport\n"
        "writer = pipeline_sdk.recorder\n"
    )
    assert internal_names(code) == [
        "pipeline_sdk.local_store",
        "pipeline_sdk.shipper",
        "pipeline_sdk.read.NotThere",
        "._transport",
        "pipeline_sdk.recorder",
    ]


# ---- links --------------------------------------------------------------------------------------

_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'][^)]*[\"'])?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)=\"([^\"]+)\"", re.IGNORECASE)
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)


def prose_lines(text: str, blank_code: bool = True) -> Iterator[tuple[int, str]]:
    """(line number, line) of the text outside fenced code, with inline code spans blanked."""
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        opened = _FENCE.match(line)
        if fence is None and opened is not None:
            fence = opened.group("fence")
            continue
        if fence is not None:
            if re.match(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$", line):
                fence = None
            continue
        yield (
            number,
            re.sub(r"(`+)(?:(?!\1).)+?\1", lambda m: " " * len(m.group(0)), line) if blank_code else line,
        )


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text)  # HTML tags
    text = text.replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a Markdown text defines: its headings (repeats get -1, -2, ...) and <a name=...>."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(text, blank_code=False):
        found.update(_HTML_ANCHOR.findall(line))
        heading = _HEADING.match(line)
        if heading is None:
            continue
        base = slug(heading.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(text: str) -> list[tuple[int, str]]:
    """(line, target) of every link in a Markdown text's prose."""
    found = []
    for number, line in prose_lines(text):
        targets = _INLINE_LINK.findall(line) + _HTML_LINK.findall(line)
        reference = _REFERENCE.match(line)
        if reference:
            targets.append(reference.group(1))
        found += [(number, t) for t in targets if t]
    return found


def broken_links(doc: Path, root: Path = ROOT) -> list[str]:
    """The relative links of ``doc`` that name no file, or no anchor of the file they name."""
    text = doc.read_text()
    broken = []
    for number, target in links(text):
        if _SCHEME.match(target) or target.startswith("//"):
            continue  # a URL, mailto: and the like: not ours to resolve
        path_part, _, fragment = target.partition("#")
        where = f"{doc.relative_to(root)}:{number}: {target}"
        if path_part:
            base = root if path_part.startswith("/") else doc.parent
            resolved = (base / unquote(path_part.lstrip("/"))).resolve()
            if not resolved.is_relative_to(root.resolve()):
                broken.append(f"{where} (outside the repository)")
                continue
            if not resolved.exists():
                broken.append(f"{where} (no such file)")
                continue
        else:
            resolved = doc
        if fragment and resolved.suffix == ".md" and unquote(fragment) not in anchors(resolved.read_text()):
            broken.append(f"{where} (no heading with that anchor)")
    return broken


def test_every_relative_link_resolves() -> None:
    docs = markdown_files()
    assert ROOT / "README.md" in docs and ROOT / "docs" / "faults.md" in docs
    assert not any(part in PRUNED for doc in docs for part in doc.relative_to(ROOT).parts)
    broken = [link for doc in docs for link in broken_links(doc)]
    assert broken == [], "broken links:\n" + "\n".join(broken)


def test_a_broken_link_is_caught(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text("# Guide\n\n## Set it up\n\n## Set it up\n\ntext\n")
    (tmp_path / "tool").mkdir()
    page = tmp_path / "README.md"
    page.write_text(
        "# Page\n\n"
        "## The `run()` call: *what* it does\n\n"
        "See [the guide](docs/guide.md), [setup](docs/guide.md#set-it-up), "
        "[again](docs/guide.md#set-it-up-1), [the tool](tool/) and [here](#the-run-call-what-it-does).\n"
        "[missing](docs/missing.md) and [no anchor](docs/guide.md#set-up) and [self](#nowhere).\n"
        "[third](docs/guide.md#set-it-up-2), [out](../elsewhere.md), [web](https://example.com/x.md).\n"
        "`[in code](nothing.md)` is not a link.\n\n"
        "```md\n[in a fence](nothing.md)\n```\n\n"
        "[ref]: docs/gone.md\n"
        '<a href="tool/nothing.txt">html</a>\n'
    )
    assert broken_links(page, tmp_path) == [
        "README.md:6: docs/missing.md (no such file)",
        "README.md:6: docs/guide.md#set-up (no heading with that anchor)",
        "README.md:6: #nowhere (no heading with that anchor)",
        "README.md:7: docs/guide.md#set-it-up-2 (no heading with that anchor)",
        "README.md:7: ../elsewhere.md (outside the repository)",
        "README.md:14: docs/gone.md (no such file)",
        "README.md:15: tool/nothing.txt (no such file)",
    ]


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Quick start", "quick-start"),
        ("What your machine needs", "what-your-machine-needs"),
        ("`make up`, again and again", "make-up-again-and-again"),
        ("Read runs back (the CLI)", "read-runs-back-the-cli"),
        ("Settings: MLOBS_* variables", "settings-mlobs_-variables"),
        ("SDK → Fluentd → InfluxDB", "sdk--fluentd--influxdb"),
        ("[Linked](x.md) heading", "linked-heading"),
    ],
)
def test_anchors_are_spelt_as_github_spells_them(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor
