"""run()'s system profile: its sampler's samples as events of the system stream, the summary on its end.

The main check runs a real child process that burns a known amount of CPU (in itself and in a
forked worker) and holds a known amount of memory, then reads the run back through the read API.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import pipeline_sdk
from pipeline_sdk import cgroup, config, logs
from pipeline_sdk import contract as c
from pipeline_sdk import system as s
from pipeline_sdk.client import Client
from pipeline_sdk.local_store import DB_NAME, LocalStore, Point
from pipeline_sdk.read import ReadClient
from pipeline_sdk.recorder import ActiveRun
from tests.conftest import ROOT, wait_for

ALLOCATE = 200 * 1024 * 1024  # bytes the child holds resident while it is sampled
BURN = 0.3  # CPU seconds the child burns, and then as many its forked worker

CHILD = textwrap.dedent(
    """
    import json, multiprocessing, resource, sys, time
    import pipeline_sdk

    allocate, burn_s = int(sys.argv[1]), float(sys.argv[2])

    def burn(seconds):
        began = time.process_time()
        while time.process_time() - began < seconds:
            pass

    if __name__ == "__main__":
        multiprocessing.set_start_method("fork")
        with pipeline_sdk.run(pipeline="p", step="s", run_id="profiled"):
            block = b"\\x01" * allocate  # written, so resident
            burn(burn_s)
            time.sleep(0.35)
            del block  # before the fork: a forked worker's pages would count in both processes
            worker = multiprocessing.Process(target=burn, args=(burn_s,))
            worker.start()
            worker.join()  # reaped: its CPU is the parent's children time
        own, reaped = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        with open("/proc/self/status") as status:
            hwm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
        cpu = own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime
        print(json.dumps({"cpu": cpu, "hwm": hwm}))
    """
)


def points(home: Path, measurement: str, run_id: str | None = None) -> list[Point]:
    store = LocalStore(home / DB_NAME)
    try:
        return list(store.points(measurement=measurement, run_id=run_id))
    finally:
        store.close()


def sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == s.THREAD_NAME]


def test_a_child_that_burns_cpu_and_holds_memory_shows_both(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOBS_")}
    env |= {c.ENV_HOME: str(home), c.ENV_SYSTEM_INTERVAL: "0.1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(ALLOCATE), str(BURN)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    child = json.loads(done.stdout)
    with ReadClient(home=home) as reader:
        samples = reader.system("profiled").to_list()
        summary = reader.run("profiled")["system"]
    assert summary is not None and summary["errors"] == 0
    assert summary["samples"] == len(samples) >= 5  # about 1 s at 0.1 s
    elapsed = [row["elapsed_seconds"] for row in samples]
    assert elapsed == sorted(elapsed) and len(set(elapsed)) == len(elapsed) and elapsed[0] > 0
    assert [row["time"] for row in samples] == sorted(row["time"] for row in samples)
    # memory: the block shows in the samples, and the summary's peak is the kernel's mark within 5 %
    assert max(row["rss_bytes"] for row in samples) >= ALLOCATE
    assert summary["peak_rss_bytes"] >= ALLOCATE
    assert abs(summary["peak_rss_bytes"] - child["hwm"]) <= 0.05 * child["hwm"]
    # CPU: both burns (the reaped worker's too), and no more than the process used in all
    assert summary["cpu_seconds"] >= 2 * BURN - 0.02  # cpu_times tick in 10 ms
    assert summary["cpu_seconds"] <= child["cpu"] + 0.02
    assert summary["cpu_seconds"] == samples[-1]["cpu_seconds"]  # the last sample is the summary's
    assert max(row["cpu_percent"] for row in samples) > 50  # a busy 0.1 s shows as most of a core
    assert summary["mean_cpu_percent"] > 0
    limits = cgroup.read_limits()  # the child ran in this machine's cgroup
    assert (summary["memory_limit_bytes"], summary["cpu_limit_cores"]) == (
        limits.memory_limit_bytes,
        limits.cpu_limit_cores,
    )


def test_the_samples_come_before_the_end_and_the_sampler_ends_with_the_run(home: Path) -> None:
    with pipeline_sdk.run(pipeline="p", step="s", run_id="order", system_interval=0.05) as run:
        wait_for(lambda: len(points(home, c.SYSTEM.measurement, "order")) >= 2, 10, "two samples")
        assert len(sampler_threads()) == 1
    assert sampler_threads() == []
    rows = points(home, c.SYSTEM.measurement, "order")
    [started, end] = points(home, c.RUN.measurement, "order")
    assert started.time_ns < min(r.time_ns for r in rows) and max(r.time_ns for r in rows) < end.time_ns
    system = run.system
    assert system is not None and system.samples == len(rows) and system.errors == 0
    assert end.fields[c.FIELD_SYSTEM_SAMPLES] == len(rows)
    assert {k: end.fields[k] for k in system.fields()} == system.fields()
    assert set(end.fields) == {c.FIELD_DURATION_MS, *system.fields()}
    assert {r.tags[c.TAG_RUN_ID] for r in rows} == {"order"} and all(c.TAG_GPU not in r.tags for r in rows)


def test_a_failed_run_carries_its_summary_too(home: Path) -> None:
    with (
        pytest.raises(KeyError),
        pipeline_sdk.run(pipeline="p", step="s", run_id="bad", system_interval=0.05),
    ):
        raise KeyError("x")
    [_, end] = points(home, c.RUN.measurement, "bad")
    assert end.tags[c.TAG_STATUS] == "failed" and end.fields[c.FIELD_ERROR_TYPE] == "KeyError"
    assert end.fields[c.FIELD_SYSTEM_SAMPLES] == 1 == len(points(home, c.SYSTEM.measurement, "bad"))


def test_interval_0_samples_nothing(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(c.ENV_SYSTEM_INTERVAL, "0")
    with pipeline_sdk.run(pipeline="p", step="s", run_id="off") as run:
        assert sampler_threads() == []
    assert run.system is None
    assert points(home, c.SYSTEM.measurement) == []
    [_, end] = points(home, c.RUN.measurement, "off")
    assert set(end.fields) == {c.FIELD_DURATION_MS}
    assert ReadClient(home=home).run("off")["system"] is None


def test_the_argument_wins_over_the_setting(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(c.ENV_SYSTEM_INTERVAL, "0")
    with pipeline_sdk.run(pipeline="p", step="s", run_id="on", system_interval=0.05) as on:
        wait_for(lambda: len(points(home, c.SYSTEM.measurement, "on")) >= 1, 10, "a sample")
    monkeypatch.setenv(c.ENV_SYSTEM_INTERVAL, "0.05")
    with pipeline_sdk.run(pipeline="p", step="s", run_id="off", system_interval=0) as off:
        pass
    assert on.system is not None and on.system.samples >= 2  # the one waited for, and the last
    assert off.system is None and points(home, c.SYSTEM.measurement, "off") == []


def test_the_default_is_10_seconds_and_a_run_takes_a_last_sample(home: Path) -> None:
    assert config.SYSTEM_INTERVAL.get({}) == 10.0 == c.DEFAULT_SYSTEM_INTERVAL
    with pipeline_sdk.run(pipeline="p", step="s", run_id="short") as run:
        pass
    assert run.system is not None and run.system.samples == 1  # the one stop() takes
    assert len(points(home, c.SYSTEM.measurement, "short")) == 1


def test_each_call_of_a_decorated_function_is_sampled(home: Path) -> None:
    @pipeline_sdk.run(pipeline="p", step="s", system_interval=0)
    def quiet() -> None:
        pass

    @pipeline_sdk.run(pipeline="p", step="s", system_interval=0.05)
    def sampled() -> None:
        pass

    quiet()
    sampled()
    sampled()
    rows = points(home, c.SYSTEM.measurement)
    assert len(rows) == 2 and len({r.tags[c.TAG_RUN_ID] for r in rows}) == 2


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ("10", TypeError, "system_interval must be a number of seconds, got str '10'"),
        (True, TypeError, "system_interval must be a number of seconds, got bool True"),
        (
            -1,
            ValueError,
            "system_interval=-1 is invalid: must be 0 (off) or a finite number of seconds from 0.05",
        ),
        (0.0499, ValueError, "system_interval=0.0499 is invalid: must be 0 (off)"),
        (float("nan"), ValueError, "system_interval=nan is invalid"),
        (float("inf"), ValueError, "system_interval=inf is invalid"),
    ],
)
def test_a_bad_interval_is_named_at_the_call(
    home: Path, value: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised:
        pipeline_sdk.run(pipeline="p", step="s", system_interval=value)  # type: ignore[arg-type]
    assert str(raised.value).startswith(message)
    assert not (home / DB_NAME).exists()  # refused before anything was recorded


def test_the_boundary_interval_is_taken(home: Path) -> None:
    with pipeline_sdk.run(pipeline="p", step="s", run_id="edge", system_interval=s.MIN_INTERVAL) as run:
        pass
    assert run.system is not None and run.system.samples == 1


def test_a_bad_setting_names_the_variable(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(c.ENV_SYSTEM_INTERVAL, "often")
    with pytest.raises(config.SettingError) as raised:
        pipeline_sdk.run(pipeline="p", step="s")
    assert str(raised.value) == (
        "environment variable MLOBS_SYSTEM_INTERVAL='often': must be 0 (off) or a number of seconds from 0.05"
    )


def test_a_failing_delivery_never_reaches_the_step_and_is_counted(
    home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[object] = []

    def broken(self: ActiveRun, sample: object) -> None:
        calls.append(sample)
        raise RuntimeError("queue gone")

    monkeypatch.setattr(ActiveRun, "record_system_sample", broken)
    with (
        caplog.at_level(logging.WARNING, logger=s.log.name),
        pipeline_sdk.run(pipeline="p", step="s", run_id="broken", system_interval=0.05) as run,
    ):
        wait_for(lambda: len(calls) >= 2, 10, "two failed deliveries")
    system = run.system
    assert system is not None and system.samples >= 3 and system.errors == system.samples
    [_, end] = points(home, c.RUN.measurement, "broken")
    assert (end.fields[c.FIELD_SYSTEM_SAMPLES], end.fields[c.FIELD_SYSTEM_ERRORS]) == (
        system.samples,
        system.samples,
    )
    assert points(home, c.SYSTEM.measurement) == []
    warnings = [r.getMessage() for r in caplog.records if r.name == s.log.name]
    assert len(warnings) == 1  # logged once; the rest counted
    assert "the callback on_sample failed (RuntimeError: queue gone)" in warnings[0]


def test_a_start_that_fails_leaves_no_sampler_running(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(rec: ActiveRun, level: int) -> None:
        raise OSError("no handler today")

    monkeypatch.setattr(logs, "capture", refuse)
    with (
        pytest.raises(OSError, match="no handler today"),
        pipeline_sdk.run(pipeline="p", step="s", system_interval=0.05),
    ):
        pass
    assert sampler_threads() == []


def test_gpu_rows_are_tagged_with_their_index(home: Path) -> None:
    client = Client()
    rec = client.recorder("p", "s", "gpus")
    rec.log_status(c.RunStatus.STARTED, {c.FIELD_HOST: "h"})
    gpu = {c.FIELD_GPU_UTILIZATION_PERCENT: 55.0, c.FIELD_GPU_MEMORY_TOTAL_BYTES: 16 << 30}
    rec.record_system_sample(
        {
            s.SAMPLE_TIME_NS: 1_800_000_000 * 10**9,
            c.FIELD_ELAPSED_SECONDS: 10.0,
            c.FIELD_CPU_PERCENT: 12.5,
            c.FIELD_RSS_BYTES: 1 << 30,
            s.SAMPLE_GPUS: [
                {c.TAG_GPU: "0", **gpu, c.FIELD_GPU_MEMORY_USED_BYTES: 1 << 30},
                {c.TAG_GPU: "1", **gpu, c.FIELD_GPU_MEMORY_USED_BYTES: 2 << 30},
            ],
        }
    )
    assert client.close(10)
    rows = sorted(points(home, c.SYSTEM.measurement, "gpus"), key=lambda r: r.tags.get(c.TAG_GPU, ""))
    assert [(r.time_ns, r.tags.get(c.TAG_GPU)) for r in rows] == [
        (1_800_000_000 * 10**9, None),
        (1_800_000_000 * 10**9, "0"),
        (1_800_000_000 * 10**9, "1"),
    ]
    assert rows[0].fields == {
        c.FIELD_ELAPSED_SECONDS: 10.0,
        c.FIELD_CPU_PERCENT: 12.5,
        c.FIELD_RSS_BYTES: 1 << 30,
    }
    assert rows[2].fields == {**gpu, c.FIELD_GPU_MEMORY_USED_BYTES: 2 << 30}
    with ReadClient(home=home) as reader:
        assert [
            (r[c.TAG_GPU], r[c.FIELD_GPU_MEMORY_USED_BYTES]) for r in reader.system("gpus", gpus=True)
        ] == [
            ("0", 1 << 30),
            ("1", 2 << 30),
        ]
        [process] = reader.system("gpus").to_list()
        assert (process[c.FIELD_CPU_PERCENT], process[c.FIELD_THREADS]) == (12.5, None)


def test_a_sample_says_when_it_was_taken_and_the_limits_it_ran_under() -> None:
    taken: list[s.Sample] = []
    limits = cgroup.Limits(version=2, memory_limit_bytes=4 << 30, cpu_limit_cores=1.5)
    sampler = s.SystemSampler(0.05, taken.append, limits=lambda: limits)
    sampler.start()
    wait_for(lambda: len(taken) >= 2, 10, "two samples")
    summary = sampler.stop()
    assert summary is not None and summary.memory_limit_bytes == 4 << 30
    elapsed = [sample[c.FIELD_ELAPSED_SECONDS] for sample in taken]
    assert 0 < elapsed[0] < elapsed[1] and elapsed == sorted(elapsed)
    assert elapsed[-1] == summary.wall_seconds  # the last sample closes the run's wall time
    assert {(x[c.FIELD_MEMORY_LIMIT_BYTES], x[c.FIELD_CPU_LIMIT_CORES]) for x in taken} == {(4 << 30, 1.5)}
    bare: list[s.Sample] = []
    unlimited = s.SystemSampler(0.05, bare.append, limits=lambda: cgroup.Limits(None, None, None))
    unlimited.start()
    unlimited.stop()
    [last] = bare
    assert c.FIELD_MEMORY_LIMIT_BYTES not in last and c.FIELD_CPU_LIMIT_CORES not in last
    assert set(last) - {s.SAMPLE_TIME_NS} <= set(c.SYSTEM.fields)
