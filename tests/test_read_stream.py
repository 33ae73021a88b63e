"""Streaming: a long list metric is read in batches with bounded memory, from both backends.

Each read runs in a process of its own (``bench.read_bench probe``), which reports
its peak RSS after the first batch and at the end.  Holding the series whole costs
about 360 bytes a row, so the growth bound below is far under what loading the
rows would take.
"""

from __future__ import annotations

from pathlib import Path

from bench.read_bench import run_probe, start_fake, write_list_metric

# Writing the store takes ~35 us a point and reading ~17 us here, so the test reads 300,000 (held
# whole they would take ~108 MB, well over the bound); `make bench` streams 1M from both backends.
LOCAL_POINTS = 300_000
INFLUX_POINTS = 200_000  # influxdb-client parses ~50k rows/s here
GROWTH_MB = 40  # peak RSS growth allowed after the first batch (300k rows held: ~108 MB)


def test_a_long_list_metric_streams_from_the_local_store(tmp_path: Path) -> None:
    write_list_metric(tmp_path, LOCAL_POINTS)
    result = run_probe("--home", str(tmp_path))
    assert result["rows"] == LOCAL_POINTS and result["ordered"]
    assert result["rss_peak_mb"] - result["rss_first_batch_mb"] < GROWTH_MB, result


def test_a_long_list_metric_streams_from_influxdb() -> None:
    proc, url = start_fake(INFLUX_POINTS, "stream-token")
    try:
        result = run_probe("--influxdb", url, "--token", "stream-token")
    finally:
        proc.terminate()
        proc.wait(10)
    assert result["rows"] == INFLUX_POINTS and result["ordered"]
    assert result["rss_peak_mb"] - result["rss_first_batch_mb"] < GROWTH_MB, result
