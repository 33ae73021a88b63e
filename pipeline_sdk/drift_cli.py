"""``mlobs drift``: check a model's serving data against a baseline, or profile a file.

    mlobs drift check --model churn --baseline train-42:train --since 1d   # exit 3 on dataset drift
    mlobs drift check ... --capture --pushgateway http://pushgateway:9091  # a run, pushed; exit 0
    mlobs drift profile data.csv                                           # a summary per column

A module of its own beside :mod:`pipeline_sdk.cli` (which registers it), so that ``mlobs`` starts
without the ``drift`` extra: numpy and the sketches are imported by the commands, not here.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
from pathlib import Path
from typing import Any, TextIO

from . import contract as c

DRIFT_EXIT = 3  # `mlobs drift check`'s exit status when the data set drifted (not with --capture)


def _threshold(text: str) -> tuple[str, float]:
    feature, sep, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not sep or not feature or not math.isfinite(number) or number <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be FEATURE=NUMBER, e.g. age=0.2")
    return feature, number


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a number of seconds above 0")
    return value


def add_drift_commands(groups: Any) -> None:
    """Add ``mlobs drift check`` and ``mlobs drift profile`` to the top parser's groups."""
    drift = groups.add_parser("drift", help="data drift: check a model against its baseline, profile a file")
    drift.set_defaults(usage_of=drift)
    commands = drift.add_subparsers(dest="command", metavar="COMMAND")
    p = commands.add_parser("check", help="compare a model's serving profiles with a baseline profile")
    p.add_argument("--model", required=True, help="the model whose serving profiles are compared")
    p.add_argument("--version", dest="model_version", help="its version (default: every version)")
    p.add_argument(
        "--baseline", required=True, help="RUN:NAME, the run and the name it logged the profile as"
    )
    p.add_argument("--since", default="1h", help="start of the window: a duration ago (1d) or a time")
    p.add_argument("--until", help="end of the window (default: now)")
    p.add_argument("--features", help="comma-separated features to compare (default: the baseline's)")
    p.add_argument(
        "--threshold",
        action="append",
        type=_threshold,
        default=[],
        metavar="FEATURE=NUMBER",
        help="a feature's threshold for its default test (repeat for more)",
    )
    p.add_argument(
        "--capture",
        action="store_true",
        help="record the report as a run of pipeline drift (then exit 0: the drift alert reports it)",
    )
    p.add_argument("--pushgateway", help=f"push the results here (default: {c.ENV_PUSHGATEWAY_URL})")
    p.add_argument(
        "--name", help=f"the monitor's name, its runs' step (default: {c.ENV_STEP}, else the model)"
    )
    p.add_argument(
        "--schedule-seconds", type=_seconds, help="how often the monitor runs (default: the window)"
    )
    p.set_defaults(handler=cmd_check)
    p = commands.add_parser("profile", help="profile a CSV (or Parquet) file and print a summary")
    p.add_argument("file", type=Path, help="a .csv file, or .parquet with pyarrow installed")
    p.set_defaults(handler=cmd_profile)


def cmd_check(client: Any, args: argparse.Namespace, out: TextIO) -> int:
    from .drift.monitor import Monitor  # noqa: PLC0415 - the drift extra

    monitor = Monitor(
        model=args.model,
        version=args.model_version,
        baseline=args.baseline,
        features=[f.strip() for f in args.features.split(",") if f.strip()] if args.features else None,
        thresholds=dict(args.threshold),
        client=client,
        name=args.name or os.environ.get(c.ENV_STEP) or None,
        schedule_seconds=args.schedule_seconds,
    )
    monitor.snapshot(since=args.since, until=args.until)
    report = monitor.capture(args.pushgateway) if args.capture or args.pushgateway else monitor.compare()
    out.write(f"{'feature':24} {'test':14} {'statistic':>10} {'threshold':>10}  drifted\n")
    for row in report.rows():
        statistic = float(row["statistic"])  # type: ignore[arg-type]
        out.write(
            f"{row['feature']!s:24} {row['test']!s:14} {statistic:10.4f} {row['threshold']!s:>10}  "
            f"{'yes' if row['drifted'] else 'no'}\n"
        )
    verdict = "drift" if report.dataset_drift else "no drift"
    out.write(
        f"{len(report.drifted)} of {len(report.features)} features drifted "
        f"(share {report.drifted_share:.2f}): {verdict}\n"
    )
    if args.capture or args.pushgateway:
        return 0  # captured: its alert is the drift email, so a monitor's Job must not fail as well
    return DRIFT_EXIT if report.dataset_drift else 0


def _read_table(path: Path) -> dict[str, list[Any]]:
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq  # type: ignore[import-untyped]  # noqa: PLC0415 - optional
        except ImportError:
            raise ImportError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
        table: dict[str, list[Any]] = pq.read_table(path).to_pydict()
        return table
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise ValueError(f"{path}: no header row")
        columns: dict[str, list[Any]] = {name: [] for name in reader.fieldnames}
        for row in reader:
            for name, values in columns.items():
                values.append(_cell(row.get(name)))
    return columns


def _cell(text: str | None) -> Any:
    """A CSV cell: empty is a null, a number is a number, anything else its text."""
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def cmd_profile(client: Any, args: argparse.Namespace, out: TextIO) -> int:
    from .drift.profile import Profile  # noqa: PLC0415 - the drift extra

    path: Path = args.file
    if not path.is_file():
        raise ValueError(f"file {str(path)!r} is not a file")
    profile = Profile.from_columns(_read_table(path))
    out.write(f"{path.name}: {profile.rows} rows, {len(profile.features)} features\n")
    for row in profile.summary():
        detail = (
            f"min {row['min']:.4g} max {row['max']:.4g} mean {row['mean']:.4g} std {row['std']:.4g}"
            if "mean" in row
            else f"{row.get('categories', 0)} categories, top {row.get('top', '')}"
        )
        out.write(
            f"{row['feature']!s:24} {row['type']!s:12} {row['count']:>8} {row['nulls']:>6} nulls  {detail}\n"
        )
    return 0
