"""Copy what the chart packages into charts/mlobs-core/files/ (Helm reads only files inside a chart).

    python scripts/chart_files.py          # copy (make generate)
    python scripts/chart_files.py --check  # fail if a copy differs from its source

Sources: dashboards/json/*.json, alerting/*-rules.yaml, alerting/alertmanager.yaml,
alerting/templates/*.tmpl and fluentd/fluent.conf.  The copies are generated files:
edit the sources, then run `make generate`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = ROOT / "charts" / "mlobs-core" / "files"
SOURCES = {
    "dashboards": sorted((ROOT / "dashboards" / "json").glob("*.json")),
    "alerting": [*sorted((ROOT / "alerting").glob("*-rules.yaml")), ROOT / "alerting" / "alertmanager.yaml"],
    "alertmanager-templates": sorted((ROOT / "alerting" / "templates").glob("*.tmpl")),
    "fluentd": [ROOT / "fluentd" / "fluent.conf"],
}


def plan() -> dict[Path, Path]:
    return {
        FILES / folder / src.name: src for folder, srcs in SOURCES.items() for src in srcs if src.exists()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    copies = plan()
    stale = [p for p in FILES.rglob("*") if p.is_file() and p not in copies]
    drift = [
        str(dst.relative_to(ROOT))
        for dst, src in copies.items()
        if not dst.exists() or dst.read_bytes() != src.read_bytes()
    ]
    if args.check:
        if drift or stale:
            print(
                f"chart files out of date: {drift + [str(p) for p in stale]}; run `make generate`",
                file=sys.stderr,
            )
            return 1
        return 0
    for dst, src in copies.items():
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
    for path in stale:
        path.unlink()
    print(f"chart files: {len(copies)} copied into {FILES.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
