"""Write each chart's values table into its README from the ``# --`` comments of its values.yaml.

    python scripts/values_readme.py          # write the tables (make generate)
    python scripts/values_readme.py --check  # fail if a table is out of date or a key has no comment

The table has helm-docs' format (Key | Type | Default | Description), so a reader who knows
helm-docs' READMEs finds what they expect, and helm-docs' comment syntax:

- ``# -- text`` in the comment block right above a key describes it; the ``#`` lines after it,
  up to the key, continue the text.  ``# -- (type) text`` names the type instead of the value's.
- A described map is one row, its whole default as JSON; a described key inside it is a row of
  its own too.  Keys are sorted as helm-docs sorts them (alphanumerically).
- Every key must be described, itself or by a map around it: a key that is not is reported,
  with its line, and nothing is written.

The table goes between the README's ``<!-- values:begin ... -->`` and ``<!-- values:end -->``
lines; the rest of the README is written by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHARTS = (ROOT / "charts" / "mlobs-core", ROOT / "charts" / "mlobs")
END = "<!-- values:end -->"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[^\s#\-][^:#]*?|\"[^\"]+\"|'[^']+'):(?:\s+(?P<rest>.*))?$")
_DESCRIBED = re.compile(r"^\s*# -- ?(?P<text>.*)$")
_TYPED = re.compile(r"^\((?P<type>[^)]+)\)\s*(?P<text>.*)$")


def begin(chart: Path) -> str:
    return (
        f"<!-- values:begin: generated from {chart.relative_to(ROOT).as_posix()}/values.yaml "
        "by `make generate`; do not edit -->"
    )


@dataclass(frozen=True)
class Comment:
    line: int  # of the key, 1-based
    text: str  # the description, "" when the key has no `# --` comment
    type: str | None  # a `(type)` the comment names


class ValuesError(ValueError):
    """values.yaml has keys without a description."""


def comments(text: str) -> dict[tuple[str, ...], Comment]:
    """Every key path of a values file -> its line and ``# --`` description.

    Reads the block-style YAML that values files are written in: one ``key:`` per line, nested by
    indentation; list items and flow collections are values, never keys.
    """
    found: dict[tuple[str, ...], Comment] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the maps around the current line
    block: list[str] = []  # the comment lines right above the current line
    scalar_indent: int | None = None  # inside a `|` or `>` block scalar deeper than this
    for number, line in enumerate(text.splitlines(), 1):
        indent = len(line) - len(line.lstrip(" "))
        if scalar_indent is not None:
            if not line.strip() or indent > scalar_indent:
                continue
            scalar_indent = None
        stripped = line.strip()
        if not stripped:
            block = []
            continue
        if stripped.startswith("#"):
            block.append(stripped)
            continue
        key = _KEY.match(line)
        if key is None:  # a list item or a continued value
            block = []
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        name = key["key"].strip("\"'")
        path = (*(k for _, k in stack), name)
        found[path] = _comment(number, block)
        stack.append((indent, name))
        rest = (key["rest"] or "").split(" #")[0].strip()
        if rest[:1] in ("|", ">"):
            scalar_indent = indent
        block = []
    return found


def _comment(number: int, block: list[str]) -> Comment:
    for i, line in enumerate(block):
        described = _DESCRIBED.match(line)
        if described:
            parts = [described["text"], *(re.sub(r"^#\s?", "", rest) for rest in block[i + 1 :])]
            text = " ".join(p.strip() for p in parts if p.strip())
            typed = _TYPED.match(text)
            if typed:
                return Comment(number, typed["text"], typed["type"])
            return Comment(number, text, None)
    return Comment(number, "", None)


def _leaves(values: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(values, dict) and values:
        return [leaf for key, value in values.items() for leaf in _leaves(value, (*path, str(key)))]
    return [path]


def _type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "string"


def _lookup(values: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        values = values[key]
    return values


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(values_text: str, where: str = "values.yaml") -> str:
    """The values table of one values file, in helm-docs' format."""
    values = yaml.safe_load(values_text) or {}
    described = comments(values_text)
    missing, unread = [], []
    for leaf in _leaves(values):
        # A flow collection ({cpu: 50m}) has no lines of its own: its key's line places it.
        placed = [leaf[:n] for n in range(len(leaf), 0, -1) if leaf[:n] in described]
        if not placed:
            unread.append(".".join(leaf))
        elif not any(described[p].text for p in placed):
            key = placed[0]
            line = described[key].line
            missing.append(f"{where}:{line}: {'.'.join(key)} has no `# --` comment, nor has a map around it")
    if unread:
        missing.append(f"{where}: keys this reader cannot place (write them one per line): {unread}")
    if missing:
        raise ValuesError("\n".join(dict.fromkeys(missing)))  # a flow map's leaves share its line
    rows = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for path in sorted((p for p, c in described.items() if c.text), key=".".join):
        comment, value = described[path], _lookup(values, path)
        cells = (
            ".".join(path),
            comment.type or _type(value),
            f"`{json.dumps(value, sort_keys=True, separators=(',', ':'))}`",
            comment.text,
        )
        rows.append("| " + " | ".join(map(_cell, cells)) + " |")
    return "\n".join(rows) + "\n"


def render(readme: str, chart: Path) -> str:
    """``readme`` with the table between its markers written afresh from the chart's values.yaml."""
    lines = readme.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith("<!-- values:begin")]
    ends = [i for i, line in enumerate(lines) if line.rstrip("\n") == END]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise ValuesError(
            f"{chart.name}/README.md: needs one `<!-- values:begin -->` line, then one `{END}` line"
        )
    where = f"{chart.relative_to(ROOT).as_posix()}/values.yaml"
    body = table((chart / "values.yaml").read_text(), where)
    return "".join(lines[: starts[0]]) + begin(chart) + "\n" + body + "".join(lines[ends[0] :])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="fail if a README differs instead")
    args = parser.parse_args(argv)
    stale = []
    for chart in CHARTS:
        readme = chart / "README.md"
        text = readme.read_text()
        try:
            expected = render(text, chart)
        except ValuesError as exc:
            sys.stderr.write(f"{exc}\n")
            return 1
        if text != expected:
            stale.append(readme)
            if not args.check:
                readme.write_text(expected)
    if args.check and stale:
        names = [str(p.relative_to(ROOT)) for p in stale]
        sys.stderr.write(f"values tables out of date: {names}; run `make generate`\n")
        return 1
    if not args.check:
        sys.stdout.write(f"values tables: {len(CHARTS)} READMEs, {len(stale)} written\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
