"""Exporter benchmark: replay 100k recorded watch events (10k runs) through the real exporter.

The recording is built from the ``kubernetes`` client's model classes (the
scenarios of pipeline_sdk/testing/kube_objects.py: most runs succeed, some are OOM-killed,
exhaust their retries or are evicted), written as JSON lines, and streamed by the
fake API server, in a process of its own, to the exporter, also in a process of
its own, over HTTP.  Measured on the exporter process only:

* CPU seconds from the replay's start until every run is counted;
* its RSS at the end;
* the time of a ``/metrics`` scrape afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

from pipeline_sdk import contract as c
from pipeline_sdk.testing import kube_objects as k

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_795_000_000.0


def record(path: Path, runs: int, seed: int = 7) -> int:
    """Write the recording; returns the number of events."""
    rng = random.Random(seed)
    kinds = [k.succeeding] * 16 + [k.oom_killed, k.backoff_limit, k.evicted, k.deadline_exceeded]
    events = 0
    with open(path, "w") as fh:
        for i in range(runs):
            run = k.RunSpec(f"pipeline-{i % 40}", f"step-{i % 5}", f"run-{i:06d}", backoff_limit=1)
            start = T0 + i * 7.0
            scenario = rng.choice(kinds)
            steps = scenario(run, start, start + rng.uniform(30, 3600))[:9]
            while len(steps) < 9:  # MODIFIED repeats, as a real cluster sends (status, labels...)
                steps.append(steps[-1])
            last_job = next(obj for resource, _, obj in reversed(steps) if resource == "jobs")
            steps.append(("jobs", "delete", last_job))  # the TTL controller cleans up: 10 events a run
            for resource, action, obj in steps:
                kind = "DELETED" if action == "delete" else "MODIFIED"
                fh.write(json.dumps({"resource": resource, "type": kind, "object": obj}) + "\n")
                events += 1
    return events


def total_runs(text: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == c.PROM_RUNS_TOTAL
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10_000)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="mlobs-exporter-bench-"))
    recording = work / "watch-events.jsonl"
    print(f"exporter benchmark: recording {args.runs} runs ...", file=sys.stderr, flush=True)
    events = record(recording, args.runs)

    fake = subprocess.Popen(
        [sys.executable, "-m", "pipeline_sdk.testing.kube_fake", "--replay", str(recording)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert fake.stdout is not None and fake.stdin is not None
    api = f"http://127.0.0.1:{fake.stdout.readline().split()[1]}"
    env = {key: v for key, v in os.environ.items() if not key.startswith("MLOBS_")}
    env["MLOBS_HOME"] = str(work / "home")  # run records go to the local store here
    exporter = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporters.pipeline_exporter",
            "--api-server",
            api,
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert exporter.stdout is not None
    url = "http://" + exporter.stdout.readline().rsplit(" ", 1)[1].strip()
    proc = psutil.Process(exporter.pid)

    def get(path: str) -> str:
        with urllib.request.urlopen(url + path, timeout=30) as resp:
            return resp.read().decode()

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            get("/readyz")
            break
        except OSError:
            time.sleep(0.05)
    cpu0 = sum(proc.cpu_times()[:2])
    wall0 = time.perf_counter()
    fake.stdin.write("replay\n")
    fake.stdin.flush()
    counted = 0.0
    deadline = time.monotonic() + 600
    while counted < args.runs and time.monotonic() < deadline:
        time.sleep(0.5)
        counted = total_runs(get("/metrics"))
    cpu = sum(proc.cpu_times()[:2]) - cpu0
    wall = time.perf_counter() - wall0
    rss = proc.memory_info().rss
    scrapes = []
    for _ in range(20):
        t0 = time.perf_counter()
        body = get("/metrics")
        scrapes.append((time.perf_counter() - t0) * 1000)
    series = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
    exporter.terminate()
    exporter.wait(30)
    fake.stdin.close()
    fake.wait(30)

    print("\n| exporter: replay of recorded watch events | figure |")
    print("|---|---|")
    print(f"| events replayed ({args.runs} runs, 40 pipelines x 5 steps) | {events} |")
    print(f"| runs counted | {counted:.0f} of {args.runs} |")
    print(f"| exporter CPU for the replay | {cpu:.2f} s ({cpu / max(wall, 1e-9):.2f} of a core) |")
    print(f"| wall time of the replay | {wall:.2f} s |")
    print(f"| exporter RSS after the replay | {rss / 2**20:.0f} MB |")
    median = statistics.median(scrapes)
    print(f"| /metrics scrape, median of 20 ({series} series) | {median:.1f} ms |")
    print(f"| /metrics scrape, max of 20 | {max(scrapes):.1f} ms |")
    ok = counted >= args.runs
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
