"""Render every ``dashboards/<name>.dashboard.py`` to ``dashboards/json/<name>.json``.

    python -m dashboards.generate          # write the JSON (make generate)
    python -m dashboards.generate --check  # fail if the committed JSON differs

Keys are sorted and indented, so a diff shows what changed.  Each file starts
with a ``__generated`` key naming its source.
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
from pathlib import Path
from typing import Any

from grafanalib._gen import DashboardEncoder

from .builders import dashboard_uid

HERE = Path(__file__).resolve().parent
OUT = HERE / "json"
SUFFIX = ".dashboard.py"


def sources() -> list[Path]:
    return sorted(HERE.glob("*" + SUFFIX))


def stem(source: Path) -> str:
    return source.name.removesuffix(SUFFIX)


def render(source: Path) -> str:
    """The JSON text of one dashboard source."""
    namespace = runpy.run_path(str(source))
    board = namespace.get("dashboard")
    if board is None:
        raise SystemExit(f"{source}: defines no `dashboard`")
    data: dict[str, Any] = json.loads(json.dumps(board.to_json_data(), cls=DashboardEncoder))
    expected_uid = dashboard_uid(stem(source))
    if data.get("uid") != expected_uid:
        raise SystemExit(f"{source}: uid {data.get('uid')!r}, expected {expected_uid!r} (from the file name)")
    data["__generated"] = f"from dashboards/{source.name}; do not edit, run `make generate`"
    return json.dumps(data, sort_keys=True, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="compare with the committed JSON instead")
    args = parser.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    drift = []
    expected = set()
    for source in sources():
        target = OUT / f"{stem(source)}.json"
        expected.add(target.name)
        text = render(source)
        if args.check:
            if not target.exists() or target.read_text() != text:
                drift.append(target.name)
        else:
            target.write_text(text)
            print(f"dashboards: {source.name} -> {target.relative_to(HERE.parent)}")
    stale = sorted(p.name for p in OUT.glob("*.json") if p.name not in expected)
    if args.check and (drift or stale):
        print(f"dashboards out of date: {drift + stale}; run `make generate` and commit", file=sys.stderr)
        return 1
    for name in stale:
        (OUT / name).unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
