"""Drift benchmark: profiling at scale, side by side with Evidently's drift preset, and log_features.

Each part runs in a fresh worker process (``--worker KIND``), so each one's peak RSS is its own.
Peak RSS growth is the peak resident set (``VmHWM``) during the part over the resident set just
before it: the peak is reset (``/proc/self/clear_refs``) once the part's input data is in memory,
so neither the interpreter, the imports nor the data count, and only what the part itself holds
or allocates on the way does.

* **profile**: ``--rows`` rows of 20 numeric features, ``--chunk`` rows at a time: one
  ``Profile.update`` per chunk, a numpy array per column, the chunk refilled in place with new
  normal draws (drawing is not timed).  Rows a second, and the peak growth after the first chunk
  and after the last one: the same when memory does not depend on the row count.
* **side by side** at ``--compare-rows`` rows of 25 columns: 20 numeric (5 shifted by 0.5sd, one by
  0.05sd) and 5 categorical (2 strongly changed, 1 mildly), reference and current of the same size,
  built from the same seed as pandas DataFrames in each worker.  mlobs: ``Profile.from_frame`` of
  both and ``drift.compare``.  Evidently: ``Report([DataDriftPreset()], include_tests=True).run``
  (its verdict is a test that fails on drift).  Seconds, peak growth, the ratio, and the columns
  where the two verdicts agree.
* **log_features**: ``--calls`` calls of ``ServiceRecorder.log_features`` with 10 numeric features,
  on a client with the local store (no Fluentd), timed in blocks of 100 calls: nanoseconds a call
  (median block and mean), and the rows the background thread profiled or dropped (counted).

    python -m bench.drift_bench [--rows 10000000] [--chunk 1000000] [--compare-rows 1000000]
                                [--calls 200000] [--no-evidently] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline_sdk import Client, drift
from pipeline_sdk.drift.serving import BATCH_ROWS
from pipeline_sdk.service import ServiceRecorder

ROOT = Path(__file__).resolve().parents[1]
NUMERIC = 20  # numeric features (profile and side by side)
CATEGORICAL = 5  # categorical features (side by side)
SHIFTED = 5  # numeric features whose mean moves by 0.5 sd in the current data
SLIGHTLY_SHIFTED = 5  # the index of the one that moves by 0.05 sd
STRONGLY_CHANGED = 2  # categorical features whose shares are reversed
MILDLY_CHANGED = 2  # the index of the one whose shares move a little
LOGGED_FEATURES = 10  # features a log_features call carries
BLOCK = 100  # log_features calls timed together
SEED = 20261201
EVIDENTLY_METHODS = {  # Evidently's method names and ours
    "K-S p_value": "ks",
    "Wasserstein distance (normed)": "wasserstein",
    "chi-square p_value": "chisquare",
    "Jensen-Shannon distance": "jensenshannon",
    "Z-test p_value": "z",
    "PSI": "psi",
}
SPEEDUP_GOAL = 50.0  # mlobs profile + compare against Evidently's preset, times
CALL_GOAL_NS = 2000.0  # log_features, per call
MIB = 2**20


# ---- memory ----------------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            found = re.search(rf"^{field}:\s+(\d+) kB", fh.read(), re.M)
    except OSError:
        return None
    return int(found.group(1)) if found else None


class PeakGrowth:
    """Peak resident set growth from now on (Linux's VmHWM, reset; else ``ru_maxrss``)."""

    def __init__(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # resets VmHWM to the current resident set
            self.reset = True
        except OSError:
            self.reset = False
        self.start = (
            _status_kib("VmRSS") if self.reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        )

    def bytes(self) -> int:
        peak = _status_kib("VmHWM") if self.reset else None
        if peak is None:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return max(0, peak - (self.start or 0)) * 1024


# ---- the workers -----------------------------------------------------------------------------


def profile_worker(rows: int, chunk: int) -> dict[str, Any]:
    rng = np.random.default_rng(SEED)
    data = np.empty((NUMERIC, min(chunk, rows)))
    rng.standard_normal(out=data)
    drift.Profile.from_columns({f"x{i}": data[i, :BLOCK] for i in range(NUMERIC)})  # code paged in
    profile = drift.Profile()
    growth = PeakGrowth()
    seconds, done, first_chunk = 0.0, 0, 0
    while done < rows:
        n = min(chunk, rows - done)
        if done:
            rng.standard_normal(out=data)
        columns = {f"x{i}": data[i, :n] for i in range(NUMERIC)}
        began = time.perf_counter()
        profile.update(columns)
        seconds += time.perf_counter() - began
        done += n
        if not first_chunk:
            first_chunk = growth.bytes()
    assert profile.rows == rows
    return {
        "rows": rows,
        "chunk": chunk,
        "seconds": seconds,
        "first_chunk_growth": first_chunk,
        "growth": growth.bytes(),
        "profile_bytes": len(profile.to_bytes()),
    }


def frames(rows: int) -> tuple[Any, Any]:
    """The side-by-side data: reference and current DataFrames of ``rows`` rows each."""
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]  # only in the workers

    rng = np.random.default_rng(SEED)
    categories = np.array(["a", "b", "c", "d", "e", "f"])
    shares = np.array([0.35, 0.25, 0.15, 0.12, 0.08, 0.05])
    mild = np.array([0.33, 0.26, 0.16, 0.12, 0.08, 0.05])
    ref: dict[str, Any] = {}
    cur: dict[str, Any] = {}
    for i in range(NUMERIC):
        mean, sd = 10.0 * i, 1.0 + i / 10
        shift = 0.5 if i < SHIFTED else 0.05 if i == SLIGHTLY_SHIFTED else 0.0
        ref[f"num{i}"] = rng.normal(mean, sd, rows)
        cur[f"num{i}"] = rng.normal(mean + shift * sd, sd, rows)
    for i in range(CATEGORICAL):
        now = shares[::-1].copy() if i < STRONGLY_CHANGED else mild if i == MILDLY_CHANGED else shares
        ref[f"cat{i}"] = rng.choice(categories, rows, p=shares).astype(object)
        cur[f"cat{i}"] = rng.choice(categories, rows, p=now).astype(object)
    return pd.DataFrame(ref), pd.DataFrame(cur)


def mlobs_worker(rows: int) -> dict[str, Any]:
    ref, cur = frames(rows)
    warm = drift.Profile.from_frame(frames(BLOCK)[0])
    drift.compare(warm, warm)  # imports what compare needs (scipy), as Evidently is imported first
    growth = PeakGrowth()
    began = time.perf_counter()
    baseline, current = drift.Profile.from_frame(ref), drift.Profile.from_frame(cur)
    profiled = time.perf_counter()
    report = drift.compare(baseline, current)
    ended = time.perf_counter()
    return {
        "seconds": ended - began,
        "compare_seconds": ended - profiled,
        "growth": growth.bytes(),
        "verdicts": {name: [r.test, r.statistic, r.drifted] for name, r in report.features.items()},
    }


def evidently_worker(rows: int) -> dict[str, Any]:
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently's usage telemetry, off
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import evidently  # type: ignore[import-untyped, unused-ignore]  # the bench extra
        from evidently import presets  # type: ignore[import-untyped, unused-ignore]

    ref, cur = frames(rows)
    definition = evidently.DataDefinition(
        numerical_columns=[c for c in ref.columns if c.startswith("num")],
        categorical_columns=[c for c in ref.columns if c.startswith("cat")],
    )
    report = evidently.Report([presets.DataDriftPreset()], include_tests=True)
    growth = PeakGrowth()
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = report.run(
            evidently.Dataset.from_pandas(cur, data_definition=definition),
            evidently.Dataset.from_pandas(ref, data_definition=definition),
        )
    seconds = time.perf_counter() - began
    result = snapshot.dict()
    values = {
        m["config"]["column"]: (m["config"]["method"], float(m["value"]))
        for m in result["metrics"]
        if m["config"]["type"].endswith("ValueDrift")
    }
    failed = {
        t["metric_config"]["params"]["column"]: t["status"] == "FAIL"
        for t in result["tests"]
        if "column" in t["metric_config"]["params"]
    }
    return {
        "version": evidently.__version__,
        "seconds": seconds,
        "growth": growth.bytes(),
        "verdicts": {
            name: [EVIDENTLY_METHODS.get(method, method), value, failed[name]]
            for name, (method, value) in values.items()
        },
    }


def log_features_worker(calls: int) -> dict[str, Any]:
    """``calls`` calls twice: in a tight loop, then paced (each batch waits until it was profiled)."""
    rng = np.random.default_rng(SEED)
    rows = [
        {f"f{j}": float(v) for j, v in enumerate(values)}
        for values in rng.normal(0, 1, (BATCH_ROWS, LOGGED_FEATURES))
    ]
    clock = time.perf_counter_ns
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mlobs-drift-bench-") as home:
        client = Client(home=Path(home))
        for mode in ("tight", "paced"):
            recorder = ServiceRecorder(client, f"bench-{mode}", key=b"b" * 32, profile_interval=3600)
            log_features = recorder.log_features
            log_features("churn", 1, rows[0])  # starts the profiler's thread: not the steady cost
            stats = recorder.profile_stats  # final once close() has flushed
            blocks: list[float] = []
            waited = 0
            growth = PeakGrowth()
            for start in range(1, calls - calls % BLOCK + 1, BLOCK):
                t0 = clock()
                for i in range(start, start + BLOCK):
                    log_features("churn", 1, rows[i % BATCH_ROWS])
                blocks.append((clock() - t0) / BLOCK)
                if mode == "paced" and (start + BLOCK) % BATCH_ROWS < BLOCK:  # a batch was queued
                    t0 = clock()
                    while stats.rows < (start + BLOCK) // BATCH_ROWS * BATCH_ROWS:
                        time.sleep(0.0002)
                    waited += clock() - t0
            peak = growth.bytes()
            recorder.close()
            timed = len(blocks) * BLOCK
            result[mode] = {
                "calls": timed,
                "median_ns": statistics.median(blocks),
                "mean_ns": statistics.fmean(blocks),
                "max_block_ns": max(blocks),
                "growth": peak,
                "rows": stats.rows,
                "lost_rows": stats.lost_rows,
                "profiler_ns_per_row": waited / max(1, stats.rows - stats.rows % BATCH_ROWS),
            }
        client.close()
    return result


WORKERS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "profile": lambda a: profile_worker(a.rows, a.chunk),
    "mlobs": lambda a: mlobs_worker(a.compare_rows),
    "evidently": lambda a: evidently_worker(a.compare_rows),
    "log-features": lambda a: log_features_worker(a.calls),
}


def run_worker(kind: str, args: argparse.Namespace, chunk: int = 1) -> dict[str, Any]:
    """``kind`` in a fresh process; its one JSON line."""
    argv = [
        sys.executable,
        "-m",
        "bench.drift_bench",
        "--worker",
        kind,
        f"--rows={args.rows}",
        f"--chunk={chunk}",
        f"--compare-rows={args.compare_rows}",
        f"--calls={args.calls}",
    ]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"drift bench worker {kind} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected whole numbers separated by commas, got {text!r}"
        ) from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected numbers of at least 1, got {text!r}")
    return sizes


# ---- the report ------------------------------------------------------------------------------


Verdicts = dict[str, list[Any]]  # column -> [test, statistic, drifted]


def agreement(ours: Verdicts, theirs: Verdicts) -> tuple[list[str], bool]:
    """Lines that say where the two verdicts agree, and whether they agree on every column."""
    equal = [name for name in ours if name in theirs and ours[name][2] == theirs[name][2]]
    same_test = [name for name in ours if name in theirs and ours[name][0] == theirs[name][0]]
    drifted = sorted(name for name in ours if ours[name][2])
    lines = [
        f"verdicts equal on {len(equal)} of {len(ours)} columns, the same test on {len(same_test)}; "
        f"drifted ({len(drifted)}): {', '.join(drifted)}"
    ]
    for name in ours:
        if name not in equal:
            lines.append(f"  {name}: mlobs {ours[name]}, Evidently {theirs.get(name)}")
    return lines, len(equal) == len(ours) == len(theirs)


def mib(n: int) -> str:
    return f"{n / MIB:,.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows profiled in chunks")
    parser.add_argument(
        "--chunks", type=_sizes, default=[1_000_000, 65_536], help="rows per chunk, one run each (comma list)"
    )
    parser.add_argument("--chunk", type=int, default=1, help=argparse.SUPPRESS)  # a worker's one chunk
    parser.add_argument("--compare-rows", type=int, default=1_000_000, help="rows of each side by side")
    parser.add_argument("--calls", type=int, default=200_000, help="log_features calls timed")
    parser.add_argument("--no-evidently", action="store_true")
    parser.add_argument(
        "--quick", action="store_true", help="a tenth of the default sizes (a busy machine, a first look)"
    )
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name, least in (("rows", 1), ("chunk", 1), ("compare_rows", 2), ("calls", BLOCK)):
        if getattr(args, name) < least:
            parser.error(
                f"argument --{name.replace('_', '-')}: must be at least {least}, got {getattr(args, name)}"
            )
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return 0
    if args.quick:
        args.rows, args.chunks = args.rows // 10, [max(1, chunk // 10) for chunk in args.chunks]
        args.compare_rows, args.calls = args.compare_rows // 10, args.calls // 10

    print(f"\ndrift: profiling {args.rows:,} rows x {NUMERIC} numeric features in chunks (Profile.update)")
    print(
        "| rows a chunk | rows | seconds | rows a second | peak RSS growth, 1st chunk | at the end | size |"
    )
    print("|---|---|---|---|---|---|---|")
    for chunk in args.chunks:
        prof = run_worker("profile", args, chunk)
        rate = prof["rows"] / prof["seconds"]
        print(
            f"| {chunk:,} | {prof['rows']:,} | {prof['seconds']:.3f} | {rate:,.0f} | "
            f"{mib(prof['first_chunk_growth'])} | {mib(prof['growth'])} | {prof['profile_bytes']:,} B |"
        )

    n = args.compare_rows
    print(
        f"\ndrift: side by side, reference and current of {n:,} rows x {NUMERIC + CATEGORICAL} columns "
        f"({SHIFTED} numeric shifted by 0.5 sd, 1 by 0.05 sd; {STRONGLY_CHANGED} categorical strongly "
        "changed, 1 mildly)"
    )
    ours = run_worker("mlobs", args)
    theirs = None
    if not args.no_evidently:
        if importlib.util.find_spec("evidently") is None:
            print("evidently is not installed (`make bench` installs it); skipping its row", file=sys.stderr)
        else:
            theirs = run_worker("evidently", args)
    print("| contender | seconds | peak RSS growth | x mlobs |")
    print("|---|---|---|---|")
    print(f"| mlobs: profile both + compare | {ours['seconds']:.2f} | {mib(ours['growth'])} | 1 |")
    print(f"| &nbsp;&nbsp;of which compare | {ours['compare_seconds']:.3f} | | |")
    failed = 0
    if theirs is not None:
        ratio = theirs["seconds"] / ours["seconds"]
        print(
            f"| Evidently {theirs['version']} DataDriftPreset | {theirs['seconds']:.2f} | "
            f"{mib(theirs['growth'])} | {ratio:.1f} |"
        )
        lines, agreed = agreement(ours["verdicts"], theirs["verdicts"])
        print("\n" + "\n".join(lines))
        verdict = "within" if ratio >= SPEEDUP_GOAL else "short of"
        print(f"mlobs is {ratio:.1f}x faster than Evidently, {verdict} the {SPEEDUP_GOAL:g}x goal")
        failed = int(not agreed)

    print(f"\ndrift: ServiceRecorder.log_features, {LOGGED_FEATURES} features a call, local store")
    logged = run_worker("log-features", args)
    tight, paced = logged["tight"], logged["paced"]
    print("| caller | calls | ns a call (median block) | mean | slowest block | rows profiled | dropped |")
    print("|---|---|---|---|---|---|---|")
    for label, m in (
        ("tight loop", tight),
        (f"paced (each {BATCH_ROWS}-row batch profiled before the next)", paced),
    ):
        print(
            f"| {label} | {m['calls']:,} | {m['median_ns']:,.0f} | {m['mean_ns']:,.0f} | "
            f"{m['max_block_ns']:,.0f} | {m['rows']:,} | {m['lost_rows']:,} |"
        )
    per_row = paced["profiler_ns_per_row"]
    thread = (
        f"about {per_row / 1000:.1f} us a row ({1e9 / per_row:,.0f} rows/s)" if per_row else "not waited for"
    )
    growth = mib(max(tight["growth"], paced["growth"]))
    print(f"the profiler's thread: {thread}; peak RSS growth {growth}")
    verdict = "within" if tight["median_ns"] <= CALL_GOAL_NS else "over"
    print(f"log_features: {tight['median_ns']:,.0f} ns a call, {verdict} the {CALL_GOAL_NS:,.0f} ns goal")
    return failed


if __name__ == "__main__":
    sys.exit(main())
