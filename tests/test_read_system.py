"""Reading back what runs used and produced: system samples and summaries, artifacts; the CLI's output.

The data set is written through the SDK's own calls (a recorder's lifecycle events with the
summary fields, its system samples, log_artifact) into a local store; the same store is served
by the InfluxDB stand-in, and both backends must answer alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline_sdk import contract as c
from pipeline_sdk import system as s
from pipeline_sdk.client import Client
from pipeline_sdk.read import ReadClient, RunNotFound
from pipeline_sdk.read.compare import SYSTEM_NAMES
from pipeline_sdk.read.influx import InfluxBackend
from pipeline_sdk.read.resources import SYSTEM_COLUMNS, describe_system
from pipeline_sdk.testing.influx_fake import InfluxServer, serve_store

T0 = 1_800_000_000 * 10**9  # 2027-01-15T08:00:00Z
GIB = 1 << 30
BIG = {  # what run "big"'s end event says it used
    c.FIELD_SYSTEM_SAMPLES: 12,
    c.FIELD_SYSTEM_ERRORS: 0,
    c.FIELD_CPU_SECONDS: 12.34,
    c.FIELD_MEAN_CPU_PERCENT: 85.2,
    c.FIELD_PEAK_RSS_BYTES: 3328599654,  # 3.1 GiB
    c.FIELD_MEMORY_LIMIT_BYTES: 4 * GIB,
    c.FIELD_CPU_LIMIT_CORES: 2.0,
}
SMALL = {
    c.FIELD_SYSTEM_SAMPLES: 1,
    c.FIELD_SYSTEM_ERRORS: 2,
    c.FIELD_CPU_SECONDS: 0.5,
    c.FIELD_MEAN_CPU_PERCENT: 4.6,
    c.FIELD_PEAK_RSS_BYTES: 512 << 20,
}
WEIGHTS = b"\x07" * 3000
CONFIG = b'{"lr": 0.1}'


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record(home: Path, made: Path) -> None:
    """Runs big (profiled, in a 4 GiB container, with artifacts), small (profiled) and plain (neither)."""
    (made / "ckpt").mkdir(parents=True)
    (made / "ckpt" / "weights.bin").write_bytes(WEIGHTS)
    (made / "config.json").write_bytes(CONFIG)
    client = Client(home=home)
    for n, (run_id, used) in enumerate((("big", BIG), ("small", SMALL), ("plain", {}))):
        start = T0 + n * 60 * 10**9
        rec = client.recorder("train", "fit", run_id)
        rec.log_status(c.RunStatus.STARTED, {c.FIELD_HOST: "node-1"}, time_ns=start)
        if run_id == "big":
            for i in (1, 2):
                sample = {
                    s.SAMPLE_TIME_NS: start + i * 10 * 10**9,
                    c.FIELD_ELAPSED_SECONDS: 10.0 * i,
                    c.FIELD_CPU_PERCENT: 80.0 + i,
                    c.FIELD_CPU_SECONDS: 8.0 * i,
                    c.FIELD_RSS_BYTES: i * GIB,
                    c.FIELD_PEAK_RSS_BYTES: i * GIB,
                    c.FIELD_THREADS: 9,
                    c.FIELD_PROCESSES: 3,
                    c.FIELD_MEMORY_LIMIT_BYTES: 4 * GIB,
                }
                rec.record_system_sample(sample)
            rec.log_artifact(made / "config.json")
            rec.log_artifact(made / "ckpt", "checkpoint")
            rec.log_artifact("gs://models/big/final.pt")
            rec.close_artifacts(10)
        fields = {c.FIELD_DURATION_MS: 30_000.0, **used}
        rec.log_status(c.RunStatus.SUCCEEDED, fields, time_ns=start + 30 * 10**9)
    assert client.close(10)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("read-system")
    record(root / "home", root / "made")
    return root / "home"


@pytest.fixture(scope="module")
def made(home: Path) -> Path:
    return home.parent / "made"


@pytest.fixture
def influx(home: Path) -> Iterator[ReadClient]:
    server: InfluxServer = serve_store(home, "t")
    client = ReadClient(InfluxBackend(server.url, "t", c.INFLUXDB_ORG, c.INFLUXDB_BUCKET), home=home)
    yield client
    client.close()
    server.close()


# ---- the summary ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("summary", "words"),
    [
        (
            {"samples": 12, "errors": 0, "cpu_seconds": 12.34, "mean_cpu_percent": 85.2}
            | {"peak_rss_bytes": 3328599654, "memory_limit_bytes": 4 * GIB, "cpu_limit_cores": 2.0},
            "peak 3.1 GiB of a 4 GiB limit; 12.3 CPU seconds, mean 85% of one core (limit 2 cores); "
            "12 samples",
        ),
        (
            {
                "samples": 1,
                "errors": 2,
                "cpu_seconds": 0.5,
                "mean_cpu_percent": 4.6,
                "peak_rss_bytes": 512 << 20,
            },
            "peak 512 MiB, no memory limit; 0.5 CPU seconds, mean 5% of one core; "
            "1 sample, 2 failed readings",
        ),
        ({"samples": 0, "errors": 1, "cpu_seconds": 0.0}, "0.0 CPU seconds; 0 samples, 1 failed reading"),
    ],
)
def test_a_summary_in_words(summary: dict[str, Any], words: str) -> None:
    assert describe_system(summary) == words  # the words of the run's own Summary.describe()


def test_run_has_the_summary_of_its_end_event(home: Path) -> None:
    with ReadClient(home=home) as reader:
        assert reader.run("big")["system"] == {
            "samples": 12,
            "errors": 0,
            "cpu_seconds": 12.34,
            "mean_cpu_percent": 85.2,
            "peak_rss_bytes": 3328599654,
            "memory_limit_bytes": 4 * GIB,
            "cpu_limit_cores": 2.0,
        }
        assert reader.run("small")["system"] == {
            "samples": 1,
            "errors": 2,
            "cpu_seconds": 0.5,
            "mean_cpu_percent": 4.6,
            "peak_rss_bytes": 512 << 20,
            "memory_limit_bytes": None,
            "cpu_limit_cores": None,
        }
        assert reader.run("plain")["system"] is None


def test_system_gives_the_samples_as_rows(home: Path) -> None:
    with ReadClient(home=home) as reader:
        rows = reader.system("big")
        assert rows.columns == SYSTEM_COLUMNS
        found = rows.to_list()
        assert reader.system("plain").to_list() == [] == reader.system("big", gpus=True).to_list()
        with pytest.raises(RunNotFound, match=r"^run 'nope' not found in the local store"):
            reader.system("nope")
        with pytest.raises(TypeError, match=r"^gpus must be a bool, got str$"):
            reader.system("big", gpus="yes")  # type: ignore[arg-type]
    assert [(r["time"].isoformat(), r["elapsed_seconds"], r["rss_bytes"]) for r in found] == [
        ("2027-01-15T08:00:10+00:00", 10.0, GIB),
        ("2027-01-15T08:00:20+00:00", 20.0, 2 * GIB),
    ]
    assert found[1] == found[1] | {
        c.FIELD_CPU_PERCENT: 82.0,
        c.FIELD_CPU_SECONDS: 16.0,
        c.FIELD_THREADS: 9,
        c.FIELD_PROCESSES: 3,
        c.FIELD_MEMORY_LIMIT_BYTES: 4 * GIB,
        c.FIELD_READ_BYTES: None,  # not in the sample: None, as a platform without I/O counters reads
        c.FIELD_CPU_LIMIT_CORES: None,
    }


def test_compare_sorts_by_peak_memory_runs_without_last(home: Path) -> None:
    with ReadClient(home=home) as reader:
        up = reader.compare(["plain", "big", "small"], sort="peak_memory").to_list()
        down = reader.compare(["plain", "big", "small"], sort="peak_memory", descending=True).to_list()
        bare = reader.compare(["plain", "big", "small"], sort="peak_rss_bytes").to_list()
        columns = reader.compare(["big"], system=True).columns
        without = reader.compare(["big", "small"]).columns  # as before: the system columns are asked for
        with pytest.raises(TypeError, match=r"^system must be a bool, got int$"):
            reader.compare(["big"], system=1)  # type: ignore[arg-type]
    assert [r["run_id"] for r in up] == ["small", "big", "plain"] == [r["run_id"] for r in bare]
    assert [r["run_id"] for r in down] == ["big", "small", "plain"]
    assert [r["system.peak_rss_bytes"] for r in up] == [512 << 20, 3328599654, None]
    assert columns[-4:] == (
        "system.cpu_seconds",
        "system.mean_cpu_percent",
        "system.memory_limit_bytes",
        "system.peak_rss_bytes",
    )
    assert without == ("run_id", "pipeline", "step", "attempt", "status", "duration_ms")


# ---- artifacts -------------------------------------------------------------------------------------------


def test_artifacts_lists_what_the_run_recorded(home: Path, made: Path) -> None:
    with ReadClient(home=home) as reader:
        rows = reader.artifacts("big").to_list()
        assert reader.artifacts("plain").to_list() == []
        assert [r["name"] for r in reader.artifacts("big", name="checkpoint")] == ["checkpoint"]
        with pytest.raises(ValueError, match=r"^name='' is invalid: must be an artifact's name$"):
            reader.artifacts("big", name="")
        with pytest.raises(TypeError, match=r"^dest must be a path, got int$"):
            reader.restore_artifact("big", "checkpoint", 5)  # type: ignore[arg-type]
    assert [(r["name"], r["size_bytes"], r["sha256"], r["stored"], r["uri"]) for r in rows] == [
        ("config.json", len(CONFIG), sha(CONFIG), True, (made / "config.json").as_uri()),
        (
            "checkpoint",
            len(WEIGHTS),
            sha(f'[["weights.bin",{len(WEIGHTS)},"{sha(WEIGHTS)}"]]'.encode()),
            True,
            (made / "ckpt").as_uri(),
        ),
        ("final.pt", None, None, False, "gs://models/big/final.pt"),
    ]
    assert rows[1]["files"] == [{"path": "weights.bin", "size_bytes": len(WEIGHTS), "sha256": sha(WEIGHTS)}]


# ---- both backends agree ---------------------------------------------------------------------------------

CALLS: list[tuple[str, Callable[[ReadClient], Any]]] = [
    ("run big", lambda r: r.run("big")),
    ("run plain", lambda r: r.run("plain")),
    ("system", lambda r: r.system("big").to_list()),
    ("artifacts", lambda r: r.artifacts("big").to_list()),
    ("artifact", lambda r: r.artifacts("big", name="final.pt").to_list()),
    ("compare", lambda r: r.compare(["big", "small", "plain"], sort="peak_memory").to_list()),
]


@pytest.mark.parametrize(("name", "call"), CALLS, ids=[n for n, _ in CALLS])
def test_both_backends_answer_alike(
    home: Path, influx: ReadClient, name: str, call: Callable[[ReadClient], Any]
) -> None:
    with ReadClient(home=home) as local:
        assert call(influx) == call(local) not in ([], None)


def test_the_influxdb_backend_restores_from_the_local_store_it_is_given(
    influx: ReadClient, tmp_path: Path
) -> None:
    assert influx.describe().startswith("InfluxDB at http://127.0.0.1:")
    assert influx.restore_artifact("big", "config.json", tmp_path / "c.json").read_bytes() == CONFIG


# ---- the CLI ---------------------------------------------------------------------------------------------


def mlobs(home: Path, *args: str) -> str:
    exe = Path(sys.executable).parent / "mlobs"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOBS_")} | {c.ENV_HOME: str(home)}
    done = subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    return done.stdout


def test_show_prints_the_summary_line(home: Path) -> None:
    lines = mlobs(home, "runs", "show", "big").splitlines()
    width = len("attempt_key")  # the longest key
    summary = (
        "peak 3.1 GiB of a 4 GiB limit; 12.3 CPU seconds, mean 85% of one core (limit 2 cores); 12 samples"
    )
    assert lines[: lines.index("")] == [
        f"{'run_id'.ljust(width)}  big",
        f"{'pipeline'.ljust(width)}  train",
        f"{'step'.ljust(width)}  fit",
        f"{'attempt'.ljust(width)}  1",
        f"{'attempt_key'.ljust(width)}  1",
        f"{'status'.ljust(width)}  succeeded",
        f"{'started'.ljust(width)}  2027-01-15T08:00:00Z",
        f"{'ended'.ljust(width)}  2027-01-15T08:00:30Z",
        f"{'duration_ms'.ljust(width)}  30000",
        f"{'host'.ljust(width)}  node-1",
        f"{'system'.ljust(width)}  {summary}",
    ]
    as_json = json.loads(mlobs(home, "runs", "show", "big", "--json"))
    assert as_json["system"]["peak_rss_bytes"] == 3328599654


def test_show_of_a_run_without_a_profile_is_as_before(home: Path) -> None:
    out = mlobs(home, "runs", "show", "plain")
    pairs = [line.split()[0] for line in out.splitlines()[: out.splitlines().index("")]]
    expected = ["run_id", "pipeline", "step", "attempt", "attempt_key", "status", "started", "ended"]
    assert pairs == [*expected, "duration_ms", "host"]
    assert json.loads(mlobs(home, "runs", "show", "plain", "--json"))["system"] is None


def test_compare_shows_what_runs_used_when_asked(home: Path) -> None:
    plain = mlobs(home, "runs", "compare", "big", "small").splitlines()
    assert plain[0].split() == ["run_id", "pipeline", "step", "status", "duration_ms"]
    asked = mlobs(home, "runs", "compare", "big", "small", "--system").splitlines()
    assert asked[0].split()[5:] == [f"system.{name}" for name in SYSTEM_NAMES]
    assert asked[1].split()[5:] == ["12.34", "85.2", "4294967296", "3328599654"]


def test_compare_sorts_by_peak_memory_in_the_cli(home: Path) -> None:
    lines = mlobs(
        home, "runs", "compare", "big", "small", "plain", "--sort", "peak_memory", "--desc"
    ).splitlines()
    assert lines[0].split() == [
        "run_id",
        "pipeline",
        "step",
        "status",
        "duration_ms",
        "system.cpu_seconds",
        "system.mean_cpu_percent",
        "system.memory_limit_bytes",
        "system.peak_rss_bytes",
    ]
    assert [line.split() for line in lines[1:4]] == [
        ["big", "train", "fit", "succeeded", "30000", "12.34", "85.2", "4294967296", "3328599654"],
        ["small", "train", "fit", "succeeded", "30000", "0.5", "4.6", "-", "536870912"],
        ["plain", "train", "fit", "succeeded", "30000", "-", "-", "-", "-"],
    ]


def test_artifacts_prints_name_size_sha256_and_uri(home: Path, made: Path) -> None:
    out = mlobs(home, "runs", "artifacts", "big")
    ckpt = sha(f'[["weights.bin",{len(WEIGHTS)},"{sha(WEIGHTS)}"]]'.encode())
    rows = [
        ("name", "size", "files", "sha256", "stored", "uri"),
        ("config.json", "11 B", "-", sha(CONFIG)[:12], "yes", (made / "config.json").as_uri()),
        ("checkpoint", "2.9 KiB", "1", ckpt[:12], "yes", (made / "ckpt").as_uri()),
        ("final.pt", "-", "-", "-", "no", "gs://models/big/final.pt"),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    table = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    assert out.splitlines() == [*table, "(sha256: its first 12 hex digits; --json has it whole)"]
    listed = [json.loads(line) for line in mlobs(home, "runs", "artifacts", "big", "--json").splitlines()]
    assert [r["sha256"] for r in listed] == [sha(CONFIG), ckpt, None]
    none = mlobs(home, "runs", "artifacts", "plain")  # the header, as every table has it
    assert none == "name  size  files  sha256  stored  uri\n(run plain recorded no artifacts)\n"
