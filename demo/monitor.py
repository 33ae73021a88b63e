"""``python -m demo.monitor``: the drift monitor run of ``make demo``, once its data is there.

It waits (polling every ``--interval`` seconds, up to ``--wait``) until the training run's
baseline profile and at least ``--min-rows`` rows of the model's serving profiles in the window
are stored, then runs a ``drift.Monitor`` capture: the report becomes a run of pipeline
``drift`` (step ``MLOBS_STEP``, else ``demo-drift``) and its gauges go to the Pushgateway, where
the drift alert reads them.  It prints the per-feature table and the verdict, and exits 0
whether or not the data drifted (finding drift is what the demo is for, not a failure); 1 when
the data never arrived, naming what is missing.

The chart's ``monitors:`` CronJobs run ``mlobs drift check --capture`` on a schedule, when the
data is long there; this one starts with the traffic it checks, hence the wait.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING

from pipeline_sdk import contract as c

from ._cli import positive_float, positive_int, setup_logging
from .data import BASELINE, FEATURES, SERVED

if TYPE_CHECKING:
    from pipeline_sdk.read import ReadClient

MONITOR = "demo-drift"  # the step of its runs when MLOBS_STEP is not set
# How often it says it runs (pushed with the results): a day, so that MLDriftMonitorNotRunning, which
# fires after twice that, stays quiet after a one-off make demo.
SCHEDULE_S = 86400.0
DEFAULT_FEATURES = ("tenure_months", "monthly_charges")  # one shifted by make demo, one not


def features_arg(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FEATURES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"{text!r} is invalid: must be comma-separated features of {', '.join(FEATURES)}"
        )
    return names


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m demo.monitor", description=__doc__.splitlines()[0])
    p.add_argument(
        "--baseline", required=True, help=f"RUN:NAME of the baseline profile (e.g. demo-train-1:{BASELINE})"
    )
    p.add_argument("--model", default=next(iter(SERVED)), choices=sorted(SERVED), help="the model checked")
    p.add_argument(
        "--features",
        type=features_arg,
        default=list(DEFAULT_FEATURES),
        help=f"comma-separated features to compare (default {','.join(DEFAULT_FEATURES)})",
    )
    p.add_argument("--since", default="15m", help="start of the serving window, a duration ago (default 15m)")
    p.add_argument(
        "--min-rows",
        type=positive_int,
        default=200,
        help="serving rows the window must hold before the check (default 200)",
    )
    p.add_argument(
        "--wait", type=positive_float, default=300.0, help="seconds to wait for the data (default 300)"
    )
    p.add_argument("--interval", type=positive_float, default=2.0, help="seconds between polls (default 2)")
    p.add_argument("--pushgateway", help=f"where the results are pushed (default: {c.ENV_PUSHGATEWAY_URL})")
    p.add_argument(
        "--schedule-seconds",
        type=positive_float,
        default=SCHEDULE_S,
        help=f"how often this monitor runs, pushed for MLDriftMonitorNotRunning (default {SCHEDULE_S:g})",
    )
    return p


def wait_for_data(client: ReadClient, args: argparse.Namespace, run_id: str, name: str) -> str | None:
    """None once the baseline and ``--min-rows`` serving rows are stored; else why not, at the deadline."""
    from pipeline_sdk.read import ReadError  # noqa: PLC0415 - the read API, imported when run

    deadline = time.monotonic() + args.wait
    shown = ""
    while True:
        try:
            client.profile(run_id, name)
            rows = client.serving_profile(args.model, since=args.since).rows
            why = "" if rows >= args.min_rows else f"{rows} serving rows of {args.model} so far"
        except ReadError as exc:  # not stored yet (the run, its profile, the serving ones), or unreachable
            why = str(exc)
        if not why:
            return None
        if time.monotonic() >= deadline:
            return why
        if why != shown:
            print(f"monitor: waiting: {why}", flush=True)
            shown = why
        time.sleep(min(args.interval, max(0.0, deadline - time.monotonic())))


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    from pipeline_sdk.drift.monitor import Monitor, parse_baseline  # noqa: PLC0415 - the drift extra
    from pipeline_sdk.read import ReadClient  # noqa: PLC0415 - as above

    try:
        run_id, name = parse_baseline("--baseline", args.baseline)
    except ValueError as exc:
        cli.error(str(exc))
    setup_logging()
    with ReadClient() as client:
        missing = wait_for_data(client, args, run_id, name)
        if missing is not None:
            print(f"monitor: no data to check after {args.wait:g} s: {missing}", file=sys.stderr)
            return 1
        monitor = Monitor(
            model=args.model,
            baseline=(run_id, name),
            features=args.features,
            client=client,
            name=os.environ.get(c.ENV_STEP) or MONITOR,
            schedule_seconds=args.schedule_seconds,
        )
        monitor.snapshot(since=args.since)
        report = monitor.capture(args.pushgateway)
    for row in report.rows():
        drifted = "drifted" if row["drifted"] else "no drift"
        print(
            f"monitor: {row['feature']}: {row['test']} {float(row['statistic']):.4f}"  # type: ignore[arg-type]
            f" (threshold {row['threshold']}): {drifted}",
            flush=True,
        )
    verdict = "dataset drift" if report.dataset_drift else "no dataset drift"
    print(
        f"monitor: {len(report.drifted)} of {len(report.features)} features drifted against {args.baseline}"
        f" over the last {args.since}: {verdict}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
