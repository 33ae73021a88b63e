"""What the system sampler costs, side by side with MLflow's system-metrics monitor.

Both sample from a thread of the process they watch, so their cost is CPU time of that
process.  The benchmark process has four idle children, as a training step with data-loader
workers has, and measures two ways:

* **per sample**: ``pipeline_sdk.system.sample_cost`` (the sampler's reading, with the
  children listed as often as the sampler lists them at that interval: every sample at 10 s,
  every tenth at 0.1 s) against what MLflow's ``SystemMetricsMonitor`` does for each sample
  in its loop (``collect_metrics()``; then ``get_run()`` to see whether the run still runs,
  ``aggregate_metrics()`` and ``publish_metrics()`` into a file store), each repeated
  ``--samples`` times and timed with ``time.process_time``;
* **live, at 0.1 s**: each sampler's own thread running for ``--seconds`` seconds, its CPU
  read from the thread's CPU clock (``time.pthread_getcpuclockid``), over the samples it took.

MLflow samples the machine (``psutil.cpu_percent()``, memory, disk, network), not the process:
its work does not depend on the interval, nor on the children.

    python -m bench.system_bench [--samples 2000] [--seconds 4] [--no-mlflow]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from pipeline_sdk import procfs, system

INTERVALS = (10.0, 0.1)  # the default interval, and the fastest the issue asks to be cheap at
CHILDREN = 4  # idle child processes of the benchmark process (data-loader workers)
GOAL_MS = 1.0  # CPU per sample the sampler is meant to stay under


def thread_cpu(thread: threading.Thread) -> float:
    """CPU seconds a live thread has used so far."""
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


class MlflowMonitor:
    """MLflow's SystemMetricsMonitor on a run of a file store under ``workdir``."""

    def __init__(self, workdir: Path, interval: float) -> None:
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        import mlflow
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
        from mlflow.tracking.client import MlflowClient

        self.version = mlflow.__version__
        mlflow.set_tracking_uri((workdir / "mlruns").as_uri())
        mlflow.set_experiment("system-bench")
        self.run = mlflow.start_run(log_system_metrics=False)
        self.uri = mlflow.get_tracking_uri()
        self.client_of: Callable[[str], Any] = MlflowClient
        self.monitor = SystemMetricsMonitor(self.run.info.run_id, sampling_interval=interval)

    def one_sample(self) -> None:
        """What the monitor's loop does for one sample, but its wait (samples_before_logging=1)."""
        self.monitor.collect_metrics()
        self.client_of(self.uri).get_run(self.run.info.run_id)
        self.monitor.publish_metrics(self.monitor.aggregate_metrics())

    def per_sample(self, samples: int) -> float:
        began = time.process_time()
        for _ in range(samples):
            self.one_sample()
        self.monitor.mlflow_logger.flush()
        return (time.process_time() - began) / samples

    def collect_only(self, samples: int) -> float:
        """Its readings alone (``collect_metrics()``), without the rest of its loop."""
        began = time.process_time()
        for _ in range(samples):
            self.monitor.collect_metrics()
        cost = (time.process_time() - began) / samples
        self.monitor.aggregate_metrics()
        for monitor in self.monitor.monitors:
            monitor.clear_metrics()
        return cost

    def live(self, seconds: float) -> tuple[float, int]:
        """(CPU seconds of the monitor's thread, samples it took) over ``seconds`` of running."""
        start_step = self.monitor._logging_step
        self.monitor.start()
        thread = self.monitor._process
        assert thread is not None
        time.sleep(seconds)
        cpu = thread_cpu(thread)
        samples = self.monitor._logging_step - start_step
        self.monitor.finish()
        return cpu, samples

    def close(self) -> None:
        import mlflow

        mlflow.end_run()


def mlobs_live(interval: float, seconds: float) -> tuple[float, int]:
    """(CPU seconds of the sampler's thread, samples it took) over ``seconds`` of running."""
    sampler = system.SystemSampler(interval, lambda sample: None)
    sampler.start()
    [thread] = [t for t in threading.enumerate() if t.name == system.THREAD_NAME]
    time.sleep(seconds)
    cpu = thread_cpu(thread)
    samples = sampler.samples
    sampler.stop()
    return cpu, samples


def row(label: str, interval: float, cost: float, mlobs_cost: float) -> str:
    share = 100 * cost / interval
    return f"| {label} | {interval:g} s | {cost * 1000:.3f} | {share:.3f} % | {cost / mlobs_cost:.1f} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=2000, help="samples timed per contender and interval")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds each live sampler runs at 0.1 s")
    parser.add_argument("--no-mlflow", action="store_true")
    args = parser.parse_args(argv)
    children = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"]) for _ in range(CHILDREN)
    ]
    workdir = Path(tempfile.mkdtemp(prefix="mlobs-system-bench-"))
    try:
        mlflow = None
        if not args.no_mlflow:
            try:
                mlflow = MlflowMonitor(workdir, INTERVALS[-1])
            except ImportError:
                print(
                    "mlflow is not installed (`make bench` installs it); skipping its rows", file=sys.stderr
                )
        ours = {interval: system.sample_cost(args.samples, interval) for interval in INTERVALS}
        theirs = mlflow.per_sample(max(1, args.samples // 10)) if mlflow is not None else None
        readings = mlflow.collect_only(args.samples) if mlflow is not None else None
        print(f"\nsystem sampler: CPU per sample of this process and its {CHILDREN} children")
        print("| sampler | interval | ms CPU per sample | of one core | x mlobs |")
        print("|---|---|---|---|---|")
        for interval in INTERVALS:
            print(row("mlobs SystemSampler", interval, ours[interval], ours[interval]))
            if theirs is not None and readings is not None and mlflow is not None:
                print(row(f"MLflow {mlflow.version} SystemMetricsMonitor", interval, theirs, ours[interval]))
                print(row("  of which collect_metrics()", interval, readings, ours[interval]))
        cpu, samples = mlobs_live(INTERVALS[-1], args.seconds)
        live = [("mlobs SystemSampler", cpu, samples)]
        if mlflow is not None:
            live.append((f"MLflow {mlflow.version} SystemMetricsMonitor", *mlflow.live(args.seconds)))
            mlflow.close()
        print(f"\nlive, at {INTERVALS[-1]:g} s for {args.seconds:g} s: each sampler's own thread")
        print("| sampler | samples | ms CPU per sample | of one core |")
        print("|---|---|---|---|")
        for label, used, taken in live:
            per_sample = 1000 * used / max(taken, 1)
            print(f"| {label} | {taken} | {per_sample:.3f} | {100 * used / args.seconds:.2f} % |")
    finally:
        for child in children:
            child.kill()
            child.wait()
    worst = max(ours.values()) * 1000
    verdict = "within" if worst <= GOAL_MS else "over"
    print(f"\nmlobs: at most {worst:.3f} ms of CPU per sample, {verdict} the {GOAL_MS:g} ms goal")
    how = "the kernel's children lists" if procfs.has_children_lists() else "every process's stat file, read"
    print(f"({len(psutil.pids())} processes here; a process's descendants are listed from {how})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
