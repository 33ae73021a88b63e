"""Write what the chart packages into charts/mlobs-core/files/ (Helm reads only files inside a chart).

    python scripts/chart_files.py          # write the copies (make generate)
    python scripts/chart_files.py --check  # fail if a copy differs from what its source gives

Sources: dashboards/json/*.json, alerting/*-rules.yaml, alerting/alertmanager.yaml,
alerting/templates/*.tmpl, fluentd/fluent.conf and fluentd/forwarder.conf.  Each copy is its
source under a header saying where it comes from (and, for a rule file, where its tests are),
in the comment syntax of its format: ``#`` for YAML and the Fluentd files, ``{{/* */}}`` for
Alertmanager's Go templates.  A dashboard is copied byte for byte: JSON has no comment, and
each dashboard already carries a ``__generated`` key naming its source.  Edit the sources, then
run `make generate`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = ROOT / "charts" / "mlobs-core" / "files"
ALERTING = ROOT / "alerting"
SOURCES = {
    "dashboards": sorted((ROOT / "dashboards" / "json").glob("*.json")),
    "alerting": [*sorted(ALERTING.glob("*-rules.yaml")), ALERTING / "alertmanager.yaml"],
    "alertmanager-templates": sorted((ALERTING / "templates").glob("*.tmpl")),
    "fluentd": [ROOT / "fluentd" / "fluent.conf", ROOT / "fluentd" / "forwarder.conf"],
}
COMMENT = {  # suffix -> how a line comment is written in that format
    ".yaml": "# {}\n",
    ".conf": "# {}\n",
    ".tmpl": "{{{{/* {} */}}}}\n",
}
VERBATIM = {".json"}  # formats without comments: copied as they are


def header(src: Path) -> str:
    """The first lines of ``src``'s copy: where it comes from, and where its tests are."""
    source = src.relative_to(ROOT).as_posix()
    notes = [f"generated from {source} by `make generate`; do not edit"]
    tests = src.with_name(src.stem + "-test.yaml")
    if src.parent == ALERTING and tests.exists():
        notes.append(f"its promtool tests: {tests.relative_to(ROOT).as_posix()}, beside its source")
    return "".join(COMMENT[src.suffix].format(note) for note in notes)


def content(src: Path) -> bytes:
    """What the copy of ``src`` holds."""
    if src.suffix in VERBATIM:
        return src.read_bytes()
    if src.suffix not in COMMENT:
        raise ValueError(f"{src}: no comment syntax known for {src.suffix!r} files (add one to COMMENT)")
    return header(src).encode() + src.read_bytes()


def plan() -> dict[Path, Path]:
    """Each copy in the chart -> its source."""
    return {
        FILES / folder / src.name: src for folder, srcs in SOURCES.items() for src in srcs if src.exists()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    copies = {dst: content(src) for dst, src in plan().items()}
    # Only the folders of copies are ours to prune; others (files/influxdb-tasks/) are the chart's own.
    stale = sorted(
        p for folder in SOURCES for p in (FILES / folder).rglob("*") if p.is_file() and p not in copies
    )
    drift = [dst for dst, data in copies.items() if not dst.exists() or dst.read_bytes() != data]
    if args.check:
        if drift or stale:
            names = [os.path.relpath(p, ROOT) for p in drift + stale]
            print(f"chart files out of date: {names}; run `make generate`", file=sys.stderr)
            return 1
        return 0
    for dst in drift:
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(copies[dst])
    for path in stale:
        path.unlink()
    print(f"chart files: {len(copies)} in {os.path.relpath(FILES, ROOT)}, {len(drift)} written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
