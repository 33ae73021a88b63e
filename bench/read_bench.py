"""Read-back benchmark: stream a 1M-point list metric through both backends, with peak RSS.

For each backend a fresh process reads ``ReadClient.list_metrics(run, name)`` in
batches of 10,000 and reports the rows, the time, its peak RSS after the first
batch and at the end.  Holding the series whole would cost about 360 bytes a row
(360 MB for 1M, measured); streaming keeps the growth to a few MB.

* local store: the points are written through the store's own write path
  (PackedForward entries, as the SDK's local transport delivers them);
* InfluxDB: ``pipeline_sdk/testing/influx_fake.py`` serves the series as annotated CSV, streamed,
  and influxdb-client parses it as it arrives (InfluxDB itself cannot run here).

    python -m bench.read_bench [--points 1000000]
    python -m bench.read_bench probe --home DIR | --influxdb URL --token T  (one reading process)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline_sdk import contract as c
from pipeline_sdk.encoding import pack_entry
from pipeline_sdk.local_store import DB_NAME, LocalStore

RUN_ID, NAME = "bench-run", "loss"  # the series (tests/influx_fake.synthetic_list_metric serves the same)
START_NS = 1_795_000_000 * 10**9
BATCH = 10_000
ROOT = Path(__file__).resolve().parents[1]


def write_list_metric(home: Path, points: int) -> None:
    """``points`` values of one list metric, plus the run's started event, into ``home``'s store."""
    store = LocalStore(home / DB_NAME)
    identity = {c.TAG_RUN_ID: RUN_ID, c.TAG_PIPELINE: "bench", c.TAG_STEP: "fit", c.TAG_ATTEMPT: "1"}
    started = {**identity, c.TAG_STATUS: "started", c.FIELD_HOST: "bench"}
    store.write_entries(c.RUN.tag, pack_entry(START_NS - 1, started))
    tagged = {**identity, c.TAG_NAME: NAME}
    for first in range(0, points, 50_000):
        blob = b"".join(
            pack_entry(START_NS + i * 1000, {**tagged, c.FIELD_VALUE: 1.0 / (i + 1), c.FIELD_INDEX: i})
            for i in range(first, min(first + 50_000, points))
        )
        store.write_entries(c.LIST_METRIC.tag, blob)
    store.close()


def _max_rss_mb() -> float:
    """This process's peak RSS: VmHWM (ru_maxrss would carry over the parent's from before exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    kib = 1024 if sys.platform != "darwin" else 1024**2  # macOS reports bytes
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kib


def probe(argv: list[str]) -> int:
    """Read the series in batches; print one JSON line: rows, seconds, RSS after one batch and at the end."""
    parser = argparse.ArgumentParser(prog="python -m bench.read_bench probe")
    parser.add_argument("--home", type=Path)
    parser.add_argument("--influxdb")
    parser.add_argument("--token", default="")
    args = parser.parse_args(argv)
    from pipeline_sdk.read import ReadClient

    if args.influxdb:
        from pipeline_sdk.read.influx import InfluxBackend

        client = ReadClient(
            InfluxBackend(args.influxdb, args.token, c.INFLUXDB_ORG, c.INFLUXDB_BUCKET, timeout_s=600)
        )
    else:
        client = ReadClient(home=args.home)
    started = time.perf_counter()
    batches = client.list_metrics(RUN_ID, NAME).batches(BATCH)
    first = next(batches)
    after_first = _max_rss_mb()
    rows, expected, ordered = len(first), len(first), all(r["step"] == i for i, r in enumerate(first))
    for batch in batches:
        ordered = ordered and batch[0]["step"] == expected and batch[-1]["step"] == expected + len(batch) - 1
        rows += len(batch)
        expected += len(batch)
    result = {
        "rows": rows,
        "ordered": ordered,
        "seconds": round(time.perf_counter() - started, 2),
        "rss_first_batch_mb": round(after_first, 1),
        "rss_peak_mb": round(_max_rss_mb(), 1),
    }
    print(json.dumps(result), flush=True)
    return 0


def run_probe(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.read_bench", "probe", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"probe failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def start_fake(points: int, token: str) -> tuple[subprocess.Popen[str], str]:
    """pipeline_sdk/testing/influx_fake.py serving the synthetic series, in a process of its own."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline_sdk.testing.influx_fake",
            *("--synthetic", str(points), "--token", token),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("LISTENING "):
        proc.kill()
        raise RuntimeError(f"the InfluxDB stand-in did not start: {line!r}")
    return proc, line.split()[1]


def main(argv: list[str]) -> int:
    if argv[:1] == ["probe"]:
        return probe(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench.read_bench")
    parser.add_argument("--points", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    print(f"\n== read-back: a {args.points:,}-point list metric, streamed in batches of {BATCH:,}")
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="mlobs-read-bench-") as tmp:
        print("   writing the local store ...", flush=True)
        write_list_metric(Path(tmp), args.points)
        print("   reading it back ...", flush=True)
        results["local store"] = run_probe("--home", tmp)
    proc, url = start_fake(args.points, "bench-token")
    try:
        print("   reading it from the InfluxDB stand-in ...", flush=True)
        results["InfluxDB (stand-in)"] = run_probe("--influxdb", url, "--token", "bench-token")
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"   {'backend':<22}{'rows':>10}{'seconds':>9}{'rows/s':>10}{'RSS 1st batch':>15}{'peak RSS':>10}")
    failed = 0
    for name, r in results.items():
        growth = r["rss_peak_mb"] - r["rss_first_batch_mb"]
        print(
            f"   {name:<22}{r['rows']:>10,}{r['seconds']:>9}{r['rows'] / r['seconds']:>10,.0f}"
            f"{r['rss_first_batch_mb']:>12.1f} MB{r['rss_peak_mb']:>7.1f} MB  (+{growth:.1f} MB)"
        )
        if r["rows"] != args.points or not r["ordered"]:
            print(f"   !! {name}: {r['rows']} rows, ordered={r['ordered']}")
            failed = 1
    held = args.points * 360 / 1e6
    print(f"   holding the series whole would take about {held:,.0f} MB more (about 360 bytes a row)")
    return failed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
