r"""``mlobs``: read runs back from the terminal.

    mlobs runs list [--pipeline P] [--step S] [--status failed] [--since 7d] [--limit 20]
    mlobs runs show RUN
    mlobs runs compare RUN RUN... [--sort METRIC] [--agg last|first|min|max|mean] [--desc]
    mlobs runs logs RUN [--since 1h] [--until ...] [--level WARNING] [--limit 100]
    mlobs runs metrics RUN [--list NAME]

It reads what the SDK reads: InfluxDB when MLOBS_INFLUXDB_URL (and MLOBS_INFLUXDB_TOKEN)
are set, else the local store under MLOBS_HOME (~/.mlobs).  Output is a table, or
with ``--json`` one JSON object per line (a single object for ``runs show``).

What is read back was written by code the reader does not control, so nothing
reaches the terminal as a control character.  Tables, log lines and error
messages show C0 and C1 controls, DEL, line and paragraph separators and bidi
controls escaped (``\x1b``, ``\x9b``, ``\r``, ``\u202e``); a log message's line
breaks (a traceback) start continuation lines indented by four spaces, so no
message can pose as another record.  ``--json`` stays exact: JSON escapes C0
itself, and DEL, C1 and the rest are written as ``\u`` escapes, which decode to
the same text.  Error messages mask credentials of URLs (``https://***@host``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from .config import SettingError
from .read import AGGREGATIONS, LEVELS, RUN_STATUSES, ReadClient, ReadError, Rows
from .redact import redact

TABLE_BATCH = 1000  # rows whose widths set a streamed table's columns
CELL_MAX = 60  # characters of a table cell; longer text is cut with an ellipsis
CONTINUATION = "    "  # starts each further line of a multi-line log message

# What a terminal acts on or reorders rather than shows: C0, DEL, C1, the line and paragraph
# separators, and the bidi controls (U+061C, U+200E-F, U+202A-E, U+2066-9).
_UNSAFE_OTHER = "\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSAFE_RE = re.compile(f"[\x00-\x1f{_UNSAFE_OTHER}]")
_UNSAFE_BUT_NEWLINE_RE = re.compile(f"[\x00-\x09\x0b-\x1f{_UNSAFE_OTHER}]")
_SHORT_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


# ---- formatting ----------------------------------------------------------------------------------------


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    short = _SHORT_ESCAPES.get(ch)
    if short is not None:
        return short
    return f"\\x{ord(ch):02x}" if ord(ch) <= 0xFF else f"\\u{ord(ch):04x}"


def visible(text: str) -> str:
    """``text`` with every character a terminal would act on shown as an escape (``\\x1b``, ``\\n``)."""
    return _UNSAFE_RE.sub(_escape, text)


def visible_lines(text: str) -> str:
    """As :func:`visible`, but a line break stays one, the next line indented by CONTINUATION."""
    return _UNSAFE_BUT_NEWLINE_RE.sub(_escape, text).replace("\n", "\n" + CONTINUATION)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def to_json(value: Any) -> str:
    """JSON of ``value``, non-ASCII text as it is but for the characters a terminal acts on.

    json escapes C0 itself; DEL, C1 and the rest of ``_UNSAFE_OTHER`` can only occur
    in its strings, where a ``\\u`` escape decodes to the same character.
    """
    text = json.dumps(value, default=_json_default, ensure_ascii=False, allow_nan=False)
    return _UNSAFE_RE.sub(_json_escape, text)


def cell(value: Any) -> str:
    """A value as a table cell: times in UTC to the second, floats to 6 significant digits."""
    if value is None:
        text = "-"
    elif isinstance(value, datetime):
        text = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    elif isinstance(value, float):
        text = "nan" if math.isnan(value) else f"{value:.6g}"
    elif isinstance(value, dict | list):
        text = to_json(value)
    else:
        text = visible(str(value))
    return text if len(text) <= CELL_MAX else text[: CELL_MAX - 1] + "…"


def write_table(rows: Iterable[dict[str, Any]], columns: Sequence[str], out: TextIO) -> int:
    """Print rows as aligned columns, streaming: the first batch of rows sets the widths."""
    it = iter(rows)
    count = 0
    while True:
        batch = [next(it, None) for _ in range(TABLE_BATCH)]
        batch_rows = [r for r in batch if r is not None]
        if count == 0:
            heads = [visible(col) for col in columns]
            widths = [len(head) for head in heads]
            cells = [[cell(r.get(col)) for col in columns] for r in batch_rows]
            for line in cells:
                widths = [max(w, len(v)) for w, v in zip(widths, line, strict=True)]
            out.write("  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip() + "\n")
        else:
            cells = [[cell(r.get(col)) for col in columns] for r in batch_rows]
        for line in cells:
            out.write("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() + "\n")
        count += len(batch_rows)
        if len(batch_rows) < TABLE_BATCH:
            return count


def write_rows(
    rows: Rows, args: argparse.Namespace, out: TextIO, columns: Sequence[str] | None = None
) -> int:
    if args.json:
        count = 0
        for row in rows:
            out.write(to_json(row) + "\n")
            count += 1
        return count
    return write_table(rows, columns or rows.columns, out)


# ---- commands ------------------------------------------------------------------------------------------


def cmd_list(client: ReadClient, args: argparse.Namespace, out: TextIO) -> int:
    rows = client.runs(
        pipeline=args.pipeline,
        step=args.step,
        status=args.status,
        since=args.since,
        until=args.until,
        limit=args.limit,
    )
    columns = ("run_id", "pipeline", "step", "status", "reason", "started", "duration_ms", "error")
    count = write_rows(rows, args, out, columns)
    if not args.json and count == 0:
        out.write(f"(no runs in {visible(client.describe())})\n")
    return 0


def cmd_show(client: ReadClient, args: argparse.Namespace, out: TextIO) -> int:
    run = client.run(args.run)
    if args.json:
        out.write(to_json(run) + "\n")
        return 0
    scalars = {k: v for k, v in run.items() if k not in ("params", "inputs", "outputs")}
    width = max(len(k) for k in scalars)
    for key, value in scalars.items():
        if value is not None:
            out.write(f"{key.ljust(width)}  {cell(value) if key != 'error' else visible(value)}\n")
    for title, items, columns in (
        ("params", [{"name": k, "value": v} for k, v in run["params"].items()], ("name", "value")),
        ("inputs", run["inputs"], ("name", "value", "source", "time")),
        ("outputs", run["outputs"], ("name", "value", "destination", "time")),
    ):
        out.write(f"\n{title}:\n")
        if items:
            write_table(items, columns, out)
        else:
            out.write("(none)\n")
    return 0


def cmd_compare(client: ReadClient, args: argparse.Namespace, out: TextIO) -> int:
    rows = client.compare(args.runs, agg=args.agg, sort=args.sort, descending=args.desc)
    write_rows(rows, args, out)
    if not args.json:
        out.write(f"(list metrics: {args.agg} value of each run)\n")
    return 0


def cmd_logs(client: ReadClient, args: argparse.Namespace, out: TextIO) -> int:
    rows = client.logs(args.run, since=args.since, until=args.until, level=args.level, limit=args.limit)
    if args.json:
        write_rows(rows, args, out)
        return 0
    count = 0
    for row in rows:
        stamp = row["time"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        extra = f"  {to_json(row['extra'])}" if row["extra"] else ""
        level, logger = visible(str(row["level"])), visible(row["logger"])
        out.write(f"{stamp} {level:<8} {logger}: {visible_lines(row['message'])}{extra}\n")
        count += 1
    if count == 0:
        out.write(f"(no log records of run {visible(args.run)} match)\n")
    return 0


def cmd_metrics(client: ReadClient, args: argparse.Namespace, out: TextIO) -> int:
    if args.list:
        points = iter(client.list_metrics(args.run, args.list))
        first = next(points, None)
        if first is None:  # an empty series is a mistyped name, more often than not: say which exist
            names = [row["name"] for row in client.list_metric_names(args.run)]
            raise ReadError(
                f"run {args.run} has no list metric {args.list!r}; "
                + (f"its list metrics: {', '.join(names)}" if names else "it has no list metrics")
            )
        series = itertools.chain((first,), points)
        if args.json:
            for row in series:
                out.write(to_json(row) + "\n")
        else:
            write_table(series, ("step", "value", "time"), out)
        return 0
    simple, lists = client.metrics(args.run), client.list_metric_names(args.run)
    if args.json:
        for row in simple:
            out.write(to_json({"kind": "metric", **row}) + "\n")
        for row in lists:
            out.write(to_json({"kind": "list_metric", **row}) + "\n")
        return 0
    out.write("metrics:\n")
    if write_table(simple, ("name", "value", "time"), out) == 0:
        out.write("(none)\n")
    out.write("\nlist metrics (mlobs runs metrics RUN --list NAME for the series):\n")
    if write_table(lists, lists.columns, out) == 0:
        out.write("(none)\n")
    return 0


# ---- the parser -----------------------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is invalid: must be 1 or more")
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="mlobs",
        description="Read ML pipeline runs back from InfluxDB (MLOBS_INFLUXDB_URL) or the local store.",
    )
    top.add_argument(
        "--home", help="read the local store in this directory (default: MLOBS_HOME or ~/.mlobs)"
    )
    groups = top.add_subparsers(dest="group", required=True, metavar="runs")
    runs = groups.add_parser("runs", help="list, show, compare runs; their logs and metrics")
    sub = runs.add_subparsers(dest="command", required=True, metavar="COMMAND")
    time_help = (
        "an ISO 8601 time (2026-11-22T10:00:00Z; UTC when it names no zone) "
        "or a duration before now (30m, 2h, 7d)"
    )

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="one JSON object per line, for scripts")
        return p

    p = command("list", "runs, newest first")
    p.add_argument("--pipeline")
    p.add_argument("--step")
    p.add_argument("--status", choices=RUN_STATUSES)
    p.add_argument("--since", help=f"runs started at or after: {time_help}")
    p.add_argument("--until", help=f"runs started before: {time_help}")
    p.add_argument("--limit", type=_positive, default=20, help="at most this many (default 20)")
    p.set_defaults(handler=cmd_list)

    p = command("show", "one run: status, times, params, inputs and outputs")
    p.add_argument("run", metavar="RUN", help="the run id")
    p.set_defaults(handler=cmd_show)

    p = command("compare", "runs side by side: params, metrics, list metrics reduced")
    p.add_argument("runs", metavar="RUN", nargs="+", help="run ids")
    p.add_argument(
        "--sort", metavar="METRIC", help="sort by this column (a metric, list metric or param name)"
    )
    p.add_argument(
        "--agg", choices=AGGREGATIONS, default="last", help="how list metrics reduce (default last)"
    )
    p.add_argument("--desc", action="store_true", help="sort descending")
    p.set_defaults(handler=cmd_compare)

    p = command("logs", "a run's log records, oldest first")
    p.add_argument("run", metavar="RUN", help="the run id")
    p.add_argument("--since", help=time_help)
    p.add_argument("--until", help=time_help)
    p.add_argument("--level", type=str.upper, choices=LEVELS, help="this level and above")
    p.add_argument("--limit", type=_positive, help="at most this many records")
    p.set_defaults(handler=cmd_logs)

    p = command("metrics", "a run's metrics, or one list metric's series")
    p.add_argument("run", metavar="RUN", help="the run id")
    p.add_argument("--list", metavar="NAME", help="print the series of this list metric (streamed)")
    p.set_defaults(handler=cmd_metrics)
    return top


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = parser().parse_args(argv)
    out = out if out is not None else sys.stdout
    try:
        with ReadClient(home=args.home) as client:
            code: int = args.handler(client, args, out)
            return code
    except (ReadError, SettingError, ValueError, TypeError, ImportError) as exc:
        sys.stderr.write(f"mlobs: error: {visible(redact(str(exc)))}\n")
        return 1
    except BrokenPipeError:  # `mlobs ... | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
