"""SDK benchmark: the caller's cost of logging a metric, side by side with the peers.

One interleaved run.  Each contender lives in a worker process of its own (so
no contender's background threads share a GIL with another's), and the rounds
go round-robin: in each round every worker in turn times a block of calls, so
machine noise lands on all of them alike.  During a turn every other worker
and receiver is paused (SIGSTOP), so a contender never pays for another's
background work on this small machine; before a turn the harness waits until
the contender's own receiver is idle.

Per contender, with the timer's own cost subtracted:

* median us/call over blocks of 100 calls (so batched work is amortised as the
  contender amortises it), and its ratio to the floor;
* p99.9 and max of single calls;
* for our SDK: the largest in-memory queue seen and the growth of the RSS.

Then the end-to-end throughput: events logged, delivered to a real Forward
receiver in another process, decoded there and acknowledged, with zero loss.

Contenders:
  floor           build the event, msgpack-pack it, send in batches of 100
  mlobs up        run.log_metric, fluent transport, receiver up
  mlobs down      ... receiver down (connection refused)
  mlobs hung      ... receiver reads but never acknowledges
  mlobs stalled   ... receiver accepts but never reads
  fluent-logger   FluentSender.emit (sync), receiver up
  mlflow          mlflow.log_metric, file store (MLFLOW_ALLOW_FILE_STORE=true)

Over 400 lines as one piece: each contender of the per-call table and the end-to-end run share
its harness (the same receiver, timing and report).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgpack
import psutil

from pipeline_sdk import Client, FluentTransport
from pipeline_sdk import contract as c
from pipeline_sdk.testing.forward_server import read_recorded

ROOT = Path(__file__).resolve().parents[1]
BLOCK = 100
CALLS = 100_000  # calls per round per contender (MLflow: MLFLOW_CALLS)
MLFLOW_CALLS = 400
clock = time.perf_counter_ns


# ---- receivers in their own processes -----------------------------------------------------


class Receiver:
    def __init__(self, workdir: Path, *args: str) -> None:
        self.out = workdir / f"recv-{time.monotonic_ns()}.bin"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline_sdk.testing.forward_server",
                "--port",
                "0",
                "--out",
                str(self.out),
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline().split()[1])
        self.ps = psutil.Process(self.proc.pid)

    def cpu(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def wait_idle(receivers: list[Receiver], quiet: float = 0.05, deadline: float = 30.0) -> None:
    """Poll until no receiver has used CPU for ``quiet`` seconds."""
    end = time.monotonic() + deadline
    last = [r.cpu() for r in receivers]
    quiet_since = time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.01)
        now = [r.cpu() for r in receivers]
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet:
            return


# ---- contenders (each built inside its worker process) -------------------------------------


def floor_contender(port: int) -> Callable[[int], None]:
    sock = socket.create_connection(("127.0.0.1", port))
    packer = msgpack.Packer(use_bin_type=True)
    event_time = struct.Struct(">II").pack
    ext = msgpack.ExtType
    batch: list[bytes] = []
    tag = c.LIST_METRIC.tag

    def call(i: int) -> None:
        t = time.time_ns()
        record = {
            c.TAG_RUN_ID: "bench-floor",
            c.TAG_PIPELINE: "bench",
            c.TAG_STEP: "floor",
            c.TAG_ATTEMPT: "1",
            c.TAG_NAME: "loss",
            c.FIELD_VALUE: i * 0.5,
            c.FIELD_INDEX: i,
        }
        batch.append(packer.pack([ext(0, event_time(*divmod(t, 1_000_000_000))), record]))
        if len(batch) == BLOCK:
            sock.sendall(packer.pack([tag, b"".join(batch)]))
            batch.clear()

    return call


def fluent_logger_contender(port: int) -> Callable[[int], None]:
    from fluent.sender import FluentSender

    sender = FluentSender("mlobs", host="127.0.0.1", port=port, nanosecond_precision=True)

    def call(i: int) -> None:
        sender.emit(
            "list_metric",
            {
                c.TAG_RUN_ID: "bench-fl",
                c.TAG_PIPELINE: "bench",
                c.TAG_STEP: "fluent-logger",
                c.TAG_ATTEMPT: "1",
                c.TAG_NAME: "loss",
                c.FIELD_VALUE: i * 0.5,
                c.FIELD_INDEX: i,
            },
        )

    return call


def mlflow_contender(workdir: Path) -> tuple[Callable[[int], None], str]:
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    import mlflow

    mlflow.set_tracking_uri((workdir / "mlruns").as_uri())
    mlflow.set_experiment("bench")
    mlflow.start_run()

    def call(i: int) -> None:
        mlflow.log_metric("loss", i * 0.5, step=i)

    return call, mlflow.__version__


@dataclass
class Contender:
    """One contender inside its worker: the call, and for our SDK its probes."""

    call: Callable[[int], None]
    version: str = ""
    client: Client | None = None
    probe: Callable[[], int] | None = None  # in-memory queue length
    up: bool = False  # its receiver acknowledges

    def after_round(self) -> None:
        if self.client is None:
            return
        if self.up:
            self.client.flush(60)  # nothing of ours left in flight during the next turn
        else:
            self.client.shipper.wait_spooled(60)


def build(kind: str, port: int, workdir: Path) -> Contender:
    if kind == "floor":
        return Contender(floor_contender(port))
    if kind == "fluent-logger":
        return Contender(fluent_logger_contender(port))
    if kind == "mlflow":
        call, version = mlflow_contender(workdir)
        return Contender(call, version)
    mode = kind.split("-", 1)[1]
    client = Client(FluentTransport("127.0.0.1", port, timeout=3.0), home=workdir / f"home-{mode}")
    log_metric = client.recorder("bench", mode, f"bench-{mode}").log_metric
    queue = client.shipper.queues[c.LIST_METRIC.tag]

    def call(i: int) -> None:
        log_metric("loss", i * 0.5, step=i)

    return Contender(call, client=client, probe=lambda: len(queue), up=mode == "up")


def worker(kind: str, port: int, workdir: Path) -> int:
    """Serve rounds on stdin/stdout: 'round <start> <calls>' -> 'done'; 'report' -> JSON."""
    contender = build(kind, port, workdir)
    call, probe = contender.call, contender.probe
    overhead = int(statistics.median(_timer_samples()))
    samples: list[int] = []
    queue_max = 0
    rss_growth = 0
    proc = psutil.Process()
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "round":
            start, calls = int(cmd[1]), int(cmd[2])
            rss0 = proc.memory_info().rss
            for i in range(start, start + calls):
                t0 = clock()
                call(i)
                samples.append(clock() - t0 - overhead)
                if probe is not None and i % 500 == 0:
                    queue_max = max(queue_max, probe())
            rss_growth = max(rss_growth, proc.memory_info().rss - rss0)
            contender.after_round()
            print("done", flush=True)
        elif cmd[0] == "report":
            extra = {"queue_max": queue_max if probe else None, "rss_growth": rss_growth}
            print(json.dumps(_summary(samples) | extra | {"version": contender.version}), flush=True)
            break
    if contender.client is not None:
        contender.client.close(timeout=0)
    return 0


def _timer_samples() -> list[int]:
    out = []
    for _ in range(20_000):
        t0 = clock()
        out.append(clock() - t0)
    return out


def _summary(samples: list[int]) -> dict[str, float | int]:
    blocks = [sum(samples[i : i + BLOCK]) / BLOCK for i in range(0, len(samples) - BLOCK + 1, BLOCK)]
    ordered = sorted(samples)
    return {
        "calls": len(samples),
        "median_us": statistics.median(blocks) / 1000,
        "p999_us": ordered[min(len(ordered) - 1, int(0.999 * len(ordered)))] / 1000,
        "max_us": ordered[-1] / 1000,
    }


# ---- the coordinator -----------------------------------------------------------------------


class Worker:
    def __init__(self, kind: str, label: str, port: int, workdir: Path, calls: int) -> None:
        self.kind, self.label, self.calls = kind, label, calls
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.sdk_bench",
                "--worker",
                kind,
                "--port",
                str(port),
                "--workdir",
                str(workdir),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self._expect("ready")

    def _expect(self, word: str) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(word) and not line.startswith("{"):
            raise RuntimeError(f"worker {self.kind}: expected {word!r}, got {line!r}")
        return line

    def round(self, r: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"round {r * self.calls} {self.calls}\n")
        self.proc.stdin.flush()
        self._expect("done")

    def report(self) -> dict[str, float | int | str | None]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("report\n")
        self.proc.stdin.flush()
        result: dict[str, float | int | str | None] = json.loads(self._expect("{"))
        self.proc.wait(60)
        return result


def end_to_end(workdir: Path, n: int) -> tuple[float, int, int]:
    receiver = Receiver(workdir)
    client = Client(FluentTransport("127.0.0.1", receiver.port), home=workdir / "e2e-home")
    rec = client.recorder("bench", "e2e", "bench-e2e")
    log_metric = rec.log_metric
    t0 = time.perf_counter()
    for i in range(n):
        log_metric("loss", i * 0.5, step=i)
    delivered = client.flush(timeout=300)
    elapsed = time.perf_counter() - t0
    client.close()
    receiver.stop()
    indices = set()
    total = 0
    for message in read_recorded(receiver.out):
        for _, record in message.entries:
            total += 1
            indices.add(record[c.FIELD_INDEX])
    if not delivered:
        raise RuntimeError("end-to-end flush timed out")
    return n / elapsed, len(indices), total


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    mem = psutil.virtual_memory().total / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}, msgpack {'.'.join(map(str, msgpack.version))}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--e2e-events", type=int, default=500_000)
    parser.add_argument("--no-mlflow", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.port, args.workdir)

    workdir = Path(tempfile.mkdtemp(prefix="mlobs-bench-"))
    print(
        f"mlobs SDK benchmark: {args.rounds} interleaved rounds of {CALLS} calls per contender "
        f"(MLflow {MLFLOW_CALLS}), one worker process each"
    )
    print(f"machine: {machine()}")
    receivers = {
        "floor": Receiver(workdir),
        "fluent-logger": Receiver(workdir),
        "mlobs-up": Receiver(workdir),
        "mlobs-hung": Receiver(workdir, "--no-ack"),
        "mlobs-stalled": Receiver(workdir, "--stalled"),
    }
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    plan = [
        ("floor", "floor (pack + send per 100)", receivers["floor"].port, CALLS),
        ("mlobs-up", "mlobs log_metric, receiver up", receivers["mlobs-up"].port, CALLS),
        ("mlobs-down", "mlobs log_metric, receiver down", refused.getsockname()[1], CALLS),
        ("mlobs-hung", "mlobs log_metric, receiver hung", receivers["mlobs-hung"].port, CALLS),
        ("mlobs-stalled", "mlobs log_metric, receiver stalled", receivers["mlobs-stalled"].port, CALLS),
        ("fluent-logger", "fluent-logger emit (sync)", receivers["fluent-logger"].port, CALLS),
    ]
    if not args.no_mlflow:
        try:
            import mlflow  # noqa: F401
        except ImportError:
            print("mlflow is not installed (`make bench` installs it); skipping its row", file=sys.stderr)
        else:
            plan.append(("mlflow", "mlflow log_metric (file store)", 0, MLFLOW_CALLS))
    workers = [Worker(kind, label, port, workdir, calls) for kind, label, port, calls in plan]
    everyone = [w.proc.pid for w in workers] + [r.proc.pid for r in receivers.values()]
    for r in range(args.rounds):
        for w in workers:
            own = receivers.get(w.kind)
            if own is not None:
                wait_idle([own])
            others = [pid for pid in everyone if pid not in (w.proc.pid, own and own.proc.pid)]
            for pid in others:
                os.kill(pid, signal.SIGSTOP)
            try:
                w.round(r)
            finally:
                for pid in others:
                    os.kill(pid, signal.SIGCONT)
        print(f"  round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    reports = [(w, w.report()) for w in workers]
    refused.close()
    for receiver in receivers.values():
        receiver.stop()

    floor = float(reports[0][1]["median_us"])  # type: ignore[arg-type]
    header = (
        "contender",
        "calls",
        "median us/call",
        "x floor",
        "p99.9 us",
        "max us",
        "queue max",
        "RSS growth",
    )
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for w, rep in reports:
        label = w.label + (f" {rep['version']}" if rep.get("version") else "")
        med = float(rep["median_us"])  # type: ignore[arg-type]
        qmax = "" if rep["queue_max"] is None else str(rep["queue_max"])
        rss = "" if rep["queue_max"] is None else f"{int(rep['rss_growth']) / 2**20:.1f} MiB"  # type: ignore[arg-type]
        print(
            f"| {label} | {rep['calls']} | {med:.2f} | {med / floor:.2f} | {float(rep['p999_us']):.1f} | "  # type: ignore[arg-type]
            f"{float(rep['max_us']):.0f} | {qmax} | {rss} |"
        )  # type: ignore[arg-type]

    print(f"\nend to end: logging {args.e2e_events} events ...", file=sys.stderr, flush=True)
    rate, distinct, total = end_to_end(workdir, args.e2e_events)
    loss = args.e2e_events - distinct
    print(
        f"\nend to end: {rate:,.0f} events/s logged, delivered, decoded and acknowledged; "
        f"{distinct}/{args.e2e_events} distinct events received ({loss} lost, {total - distinct} resent)"
    )
    shutil.rmtree(workdir, ignore_errors=True)
    return 0 if loss == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
