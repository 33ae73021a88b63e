"""``mlobs``: read runs and model APIs back from the terminal.

    mlobs runs list [--pipeline P] [--step S] [--run RUN] [--status failed] [--since 7d] [--limit 20]
    mlobs runs show RUN [--step S] [--attempt N]
    mlobs runs compare RUN RUN... [--sort METRIC|peak_memory] [--agg last|min|max|...] [--desc] [--system]
    mlobs runs artifacts RUN [--step S] [--attempt N]
    mlobs runs logs RUN [--step S] [--attempt N] [--since 1h] [--until ...] [--level WARNING] [--limit 100]
    mlobs runs metrics RUN [--step S] [--attempt N] [--list NAME]
    mlobs services list [--since 1d]
    mlobs services requests NAME [--endpoint E] [--status 5xx] [--since 1h] [--limit 100] [--descending]
    mlobs services predictions NAME [--model M] [--version V] [--since 1h] [--limit 100]

It reads what the SDK reads: InfluxDB when MLOBS_INFLUXDB_URL (and MLOBS_INFLUXDB_TOKEN)
are set, else the local store under MLOBS_HOME (~/.mlobs).  Output is a table, or
with ``--json`` one JSON object per line (a single object for ``runs show``).

A RUN is a run id, a unique start of one, or ``latest`` (the newest run).  A step
run is (run id, step, attempt): each command reads the latest attempt unless given
``--attempt`` (its number, 1 the earliest, or its key), and a run id that several
steps share needs ``--step`` wherever one step run is meant.  Text is shown as
:mod:`pipeline_sdk.read.terminal` says: control characters escaped, times in UTC.
Error messages mask credentials of URLs (``https://***@host``).

One concern past 400 lines: every command's handler and arguments, a few lines each.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from ._version import __version__
from .cgroup import format_bytes
from .config import SettingError
from .drift_cli import add_drift_commands
from .read import AGGREGATIONS, ALL_ATTEMPTS, LEVELS, RUN_STATUSES, AmbiguousRun, ReadClient, ReadError, Rows
from .read.resources import describe_system
from .read.runs import RUN_SORTS
from .read.services import PREDICTION_COLUMNS, REQUEST_COLUMNS, SERVICE_COLUMNS
from .read.steps import ATTEMPT_COLUMNS
from .read.terminal import (
    LOG_TIME,
    to_json,
    visible,
    visible_lines,
    write_pairs,
    write_section,
    write_table,
    write_text_block,
)
from .redact import redact

TRACEBACK_LINES = 40  # lines of a failed run's traceback `runs show` prints (its end); --json has all
LIST_COLUMNS = (
    "run_id",
    "pipeline",
    "step",
    "attempt",
    "status",
    "reason",
    "started",
    "duration_ms",
    "error",
)
STEP_COLUMNS = ("step", "attempt", "status", "reason", "started", "ended", "duration_ms", "error")
_SHOWN_APART = ("params", "inputs", "outputs", "attempts", "traceback", "steps", "system")  # not as they are
ARTIFACT_TABLE = ("name", "size", "files", "sha256", "stored", "uri")
SHA256_SHOWN = 12  # hex digits of an artifact's sha256 its table shows (--json has them all)


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


def _step_run(args: argparse.Namespace) -> dict[str, Any]:
    return {"step": args.step, "attempt": args.attempt}


# ---- runs ----------------------------------------------------------------------------------------------


def cmd_list(client: ReadClient, args: argparse.Namespace, out: TextIO) -> int:
    rows = client.runs(
        pipeline=args.pipeline,
        step=args.step,
        status=args.status,
        since=args.since,
        until=args.until,
        limit=args.limit,
        run_id=args.run,
        sort=args.sort,
    )
    count = write_rows(rows, args, out, LIST_COLUMNS)
    if not args.json and count == 0:
        out.write(f"(no runs in {visible(client.describe())})\n")
    return 0


def cmd_show(client: ReadClient, args: argparse.Namespace, out: TextIO) -> int:
    run = client.run(client.resolve_run_id(args.run), **_step_run(args))
    if args.json:
        out.write(to_json(run) + "\n")
        return 0
    pairs = [(k, v) for k, v in run.items() if k not in _SHOWN_APART]
    if run.get("system") is not None:  # what its system sampler saw, in words
        pairs.append(("system", describe_system(run["system"])))
    write_pairs(pairs, out)
    if "steps" in run:  # an execution of several steps
        write_section("steps (mlobs runs show RUN --step STEP for one)", run["steps"], STEP_COLUMNS, out)
        return 0
    params = [{"name": k, "value": v} for k, v in run["params"].items()]
    write_section("params", params, ("name", "value"), out)
    write_section("inputs", run["inputs"], ("name", "value", "source", "time"), out)
    write_section("outputs", run["outputs"], ("name", "value", "destination", "time"), out)
    write_section("attempts", run["attempts"], [k for k in ATTEMPT_COLUMNS if k != "error"], out)
    if run.get("traceback"):
        write_text_block("traceback", run["traceback"], TRACEBACK_LINES, out)
    return 0


def cmd_compare(client: ReadClient, args: argparse.Namespace, out: TextIO) -> int:
    runs = [client.resolve_run_id(r) for r in args.runs]
    rows = client.compare(
        runs, agg=args.agg, sort=args.sort, descending=args.descending, system=args.system, **_step_run(args)
    )
    if args.json:
        write_rows(rows, args, out)
        return 0
    table = rows.to_list()
    first_attempts = all(row.get("attempt") in (None, 1) for row in table)
    write_table(table, [col for col in rows.columns if col != "attempt" or not first_attempts], out)
    out.write(f"(list metrics: {args.agg} value of each run)\n")
    return 0


def cmd_artifacts(client: ReadClient, args: argparse.Namespace, out: TextIO) -> int:
    run_id = client.resolve_run_id(args.run)
    rows = client.artifacts(run_id, **_step_run(args))
    if args.json:
        write_rows(rows, args, out)
        return 0
    table = (
        {
            "name": row["name"],
            "size": format_bytes(row["size_bytes"]) if row["size_bytes"] is not None else None,
            "files": len(row["files"]) if row["files"] is not None else None,
            "sha256": row["sha256"][:SHA256_SHOWN] if row["sha256"] is not None else None,
            "stored": "yes" if row["stored"] else "no",
            "uri": row["uri"],
        }
        for row in rows
    )
    if write_table(table, ARTIFACT_TABLE, out, whole=("uri",)) == 0:
        out.write(f"(run {visible(run_id)} recorded no artifacts)\n")
    else:
        out.write(f"(sha256: its first {SHA256_SHOWN} hex digits; --json has it whole)\n")
    return 0


def cmd_logs(client: ReadClient, args: argparse.Namespace, out: TextIO) -> int:
    run_id = client.resolve_run_id(args.run)
    rows = client.logs(
        run_id, since=args.since, until=args.until, level=args.level, limit=args.limit, **_step_run(args)
    )
    if args.json:
        write_rows(rows, args, out)
        return 0
    count = 0
    for row in rows:
        stamp = row["time"].strftime(LOG_TIME)
        extra = f"  {to_json(row['extra'])}" if row["extra"] else ""
        level, logger = visible(str(row["level"])), visible(row["logger"])
        out.write(f"{stamp} {level:<8} {logger}: {visible_lines(row['message'])}{extra}\n")
        count += 1
    if count == 0:
        out.write(f"(no log records of run {visible(run_id)} match)\n")
    return 0


def cmd_metrics(client: ReadClient, args: argparse.Namespace, out: TextIO) -> int:
    run_id = client.resolve_run_id(args.run)
    if args.list:
        points = iter(client.list_metrics(run_id, args.list, **_step_run(args)))
        first = next(points, None)
        if first is None:  # an empty series is a mistyped name, more often than not: say which exist
            names = [row["name"] for row in client.list_metric_names(run_id, **_step_run(args))]
            raise ReadError(
                f"run {run_id} has no list metric {args.list!r}; "
                + (f"its list metrics: {', '.join(names)}" if names else "it has no list metrics")
            )
        series = itertools.chain((first,), points)
        if args.json:
            for row in series:
                out.write(to_json(row) + "\n")
        else:
            write_table(series, ("step", "value", "time"), out)
        return 0
    simple, lists = (
        client.metrics(run_id, **_step_run(args)),
        client.list_metric_names(run_id, **_step_run(args)),
    )
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


# ---- services ------------------------------------------------------------------------------------------


def cmd_services(client: ReadClient, args: argparse.Namespace, out: TextIO) -> int:
    count = write_rows(client.services(since=args.since, until=args.until), args, out, SERVICE_COLUMNS)
    if not args.json and count == 0:
        out.write(f"(no model-API requests or predictions in {visible(client.describe())})\n")
    return 0


def cmd_requests(client: ReadClient, args: argparse.Namespace, out: TextIO) -> int:
    rows = client.requests(
        args.service,
        since=args.since,
        until=args.until,
        endpoint=args.endpoint,
        method=args.method,
        status=int(args.status) if args.status and args.status.isdigit() else args.status,
        limit=args.limit,
        descending=args.descending,
    )
    if write_rows(rows, args, out, REQUEST_COLUMNS) == 0 and not args.json:
        out.write(f"(no requests of service {visible(args.service)} match)\n")
    return 0


def cmd_predictions(client: ReadClient, args: argparse.Namespace, out: TextIO) -> int:
    rows = client.predictions(
        args.service,
        since=args.since,
        until=args.until,
        model=args.model,
        version=args.version,
        limit=args.limit,
        descending=args.descending,
    )
    if write_rows(rows, args, out, PREDICTION_COLUMNS) == 0 and not args.json:
        out.write(f"(no predictions of service {visible(args.service)} match)\n")
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


def _attempt(text: str) -> int | str:
    """An attempt's number (digits: 1 the earliest) or, any other text, its key."""
    return int(text) if text.isdigit() else text


TIME_HELP = "an ISO 8601 time (2026-11-22T10:00:00Z; UTC when it names no zone) or a duration ago (2h, 7d)"
ATTEMPT_HELP = "an attempt's number (1 the earliest; default the latest) or its key"


def _runs_commands(sub: Any) -> None:
    def command(name: str, help_text: str, *, run: bool = True) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="one JSON object per line, for scripts")
        if run:
            p.add_argument("run", metavar="RUN", help="a run id, a unique start of one, or latest")
            p.add_argument("--step", help="the step, when several steps share the run id")
            p.add_argument("--attempt", type=_attempt, metavar="N", help=ATTEMPT_HELP)
        return p

    p = command("list", "step runs, newest first, each at its latest attempt", run=False)
    p.add_argument("--pipeline")
    p.add_argument("--step")
    p.add_argument("--run", metavar="RUN_ID", help="the step runs of this run id only")
    p.add_argument("--status", choices=RUN_STATUSES)
    p.add_argument("--since", help=f"runs started at or after: {TIME_HELP}")
    p.add_argument("--until", help=f"runs started before: {TIME_HELP}")
    p.add_argument("--limit", type=_positive, default=20, help="at most this many (default 20)")
    p.add_argument(
        "--sort", choices=RUN_SORTS, default="started", help="newest first (default), or by run id"
    )
    p.set_defaults(handler=cmd_list)

    p = command("show", "one step run: status, times, params, inputs, outputs, attempts; or an execution")
    p.set_defaults(handler=cmd_show)

    p = command("compare", "runs side by side: params, metrics, list metrics reduced", run=False)
    p.add_argument("runs", metavar="RUN", nargs="+", help="run ids (or unique starts of them)")
    p.add_argument("--step", help="the step to compare in each run")
    p.add_argument(
        "--attempt",
        type=_attempt,
        metavar="N",
        help=f"{ATTEMPT_HELP}, in each run; {ALL_ATTEMPTS} for every one",
    )
    p.add_argument(
        "--sort",
        metavar="METRIC",
        help="sort by this column (a metric, list metric or param name; peak_memory: the peak RSS)",
    )
    p.add_argument(
        "--agg", choices=AGGREGATIONS, default="last", help="how list metrics reduce (default last)"
    )
    p.add_argument("--descending", "--desc", dest="descending", action="store_true", help="sort descending")
    p.add_argument(
        "--system",
        action="store_true",
        help="also what each run used: CPU seconds, mean CPU, peak RSS, limit",
    )
    p.set_defaults(handler=cmd_compare)

    p = command("logs", "a step run's log records, oldest first")
    p.add_argument("--since", help=TIME_HELP)
    p.add_argument("--until", help=TIME_HELP)
    p.add_argument("--level", type=str.upper, choices=LEVELS, help="this level and above")
    p.add_argument("--limit", type=_positive, help="at most this many records")
    p.set_defaults(handler=cmd_logs)

    p = command("artifacts", "a step run's artifacts: name, size, sha256, whether stored, URI")
    p.set_defaults(handler=cmd_artifacts)

    p = command("metrics", "a step run's metrics, or one list metric's series")
    p.add_argument("--list", metavar="NAME", help="print the series of this list metric (streamed)")
    p.set_defaults(handler=cmd_metrics)


def _services_commands(sub: Any) -> None:
    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="one JSON object per line, for scripts")
        p.add_argument("--since", help=TIME_HELP)
        p.add_argument("--until", help=TIME_HELP)
        return p

    p = command("list", "model APIs: requests, 5xx answers, models and predictions, when last seen")
    p.set_defaults(handler=cmd_services)

    p = command("requests", "a model API's requests, oldest first")
    p.add_argument("service", metavar="NAME", help="the service name")
    p.add_argument("--endpoint", help="a route template, e.g. /predict/{model}")
    p.add_argument("--method", type=str.upper, help="an HTTP method")
    p.add_argument("--status", help="a status class (5xx) or an exact code (503)")
    p.add_argument("--limit", type=_positive, help="at most this many")
    p.add_argument("--descending", "--desc", dest="descending", action="store_true", help="newest first")
    p.set_defaults(handler=cmd_requests)

    p = command("predictions", "a model API's predictions, oldest first")
    p.add_argument("service", metavar="NAME", help="the service name")
    p.add_argument("--model")
    p.add_argument("--version", help="a model version")
    p.add_argument("--limit", type=_positive, help="at most this many")
    p.add_argument("--descending", "--desc", dest="descending", action="store_true", help="newest first")
    p.set_defaults(handler=cmd_predictions)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="mlobs",
        description="Read ML pipeline runs and model APIs back from InfluxDB (MLOBS_INFLUXDB_URL) "
        "or the local store.",
    )
    top.add_argument("--version", action="version", version=f"mlobs {__version__}")
    top.add_argument(
        "--home", help="read the local store in this directory (default: MLOBS_HOME or ~/.mlobs)"
    )
    top.set_defaults(usage_of=top)
    groups = top.add_subparsers(dest="group", metavar="{runs,services,drift}")
    runs = groups.add_parser("runs", help="list, show, compare runs; their logs and metrics")
    runs.set_defaults(usage_of=runs)
    _runs_commands(runs.add_subparsers(dest="command", metavar="COMMAND"))
    services = groups.add_parser("services", help="model APIs: list them, their requests and predictions")
    services.set_defaults(usage_of=services)
    _services_commands(services.add_subparsers(dest="command", metavar="COMMAND"))
    add_drift_commands(groups)
    return top


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = parser().parse_args(argv)
    out = out if out is not None else sys.stdout
    if getattr(args, "handler", None) is None:  # `mlobs` or `mlobs runs` alone: what there is to run
        args.usage_of.print_help(out)
        return 0
    try:
        with ReadClient(home=args.home) as client:
            code: int = args.handler(client, args, out)
            return code
    except AmbiguousRun as exc:
        sys.stderr.write(f"mlobs: error: {visible(exc.hint('--step'))}\n")
        return 1
    except (ReadError, SettingError, ValueError, TypeError, ImportError) as exc:
        sys.stderr.write(f"mlobs: error: {visible(redact(str(exc)))}\n")
        return 1
    except BrokenPipeError:  # `mlobs ... | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
