"""bench/system_bench.py runs and prints its tables (the figures themselves are for make bench)."""

from __future__ import annotations

import re
import threading
import time

import pytest

from bench import system_bench


def test_the_benchmark_prints_a_row_per_interval_and_the_live_sampler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert system_bench.main(["--no-mlflow", "--samples", "20", "--seconds", "0.3"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(
        r"^\| mlobs SystemSampler \| (10|0\.1) s \| ([0-9.]+) \| ([0-9.]+) % \| 1\.0 \|$", out, re.M
    )
    assert [interval for interval, _, _ in rows] == ["10", "0.1"]
    for interval, ms, share in rows:  # the share of a core is the cost over the interval
        assert float(share) == pytest.approx(float(ms) / 1000 / float(interval) * 100, abs=0.001)
    [live] = re.findall(r"^\| mlobs SystemSampler \| (\d+) \| [0-9.]+ \| [0-9.]+ % \|$", out, re.M)
    assert 1 <= int(live) <= 4  # 0.3 s at 0.1 s
    assert "MLflow" not in out
    assert re.search(r"^mlobs: at most [0-9.]+ ms of CPU per sample, (within|over) the 1 ms goal$", out, re.M)


def test_a_live_thread_cpu_clock_counts_its_own_work_only() -> None:
    busy_done, release = threading.Event(), threading.Event()

    def busy() -> None:
        began = time.thread_time()
        while time.thread_time() - began < 0.05:
            pass
        busy_done.set()
        release.wait(5)

    worker = threading.Thread(target=busy)
    worker.start()
    assert busy_done.wait(5)
    spent = system_bench.thread_cpu(worker)
    release.set()
    worker.join()
    assert 0.05 <= spent < 0.1  # its own 50 ms, not this thread's
