"""The demo finds drift: training's baseline, the model API's features, shifted traffic, the monitor.

``python -m demo.train`` logs its baseline profile and the demo model API (uvicorn on 127.0.0.1,
port 0) logs each prediction's features, both through the real SDK into one local store;
``python -m demo.traffic --shift`` moves one feature.  ``drift.Monitor`` and ``python -m
demo.monitor`` then read the profiles back, from the local store and through the InfluxDB
stand-in's HTTP API, and must find the shifted feature drifted and the others not.
"""

from __future__ import annotations

import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo import model_api, monitor, traffic
from demo.data import BASELINE, FEATURES, TRAIN_ROWS, TRAIN_SHARE, training_std
from pipeline_sdk import Client
from pipeline_sdk import contract as c
from pipeline_sdk.drift import NumericFeature, Profile
from pipeline_sdk.drift.monitor import Monitor
from pipeline_sdk.read import ReadClient
from pipeline_sdk.testing.influx_fake import serve_store

from .support import live_stack
from .test_demo import run_demo
from .test_model_api import Server

RUN_ID = "demo-train-drift1"
REQUESTS = 600  # of which about 89 % are good requests, whose features are profiled
TOKEN = "demo-drift-token"  # the InfluxDB stand-in's own


def env_of(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOBS_")}
    return {**env, "MLOBS_HOME": str(home), **extra}


def run(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_demo(module, *args, env=env, timeout=120)


def record(home: Path, *traffic_args: str) -> int:
    """Train (its baseline), then serve the traffic through the model API into ``home``; the good requests."""
    trained = run(
        "demo.train", "--sleep", "0", "--system-interval", "0", env=env_of(home, MLOBS_RUN_ID=RUN_ID)
    )
    assert trained.returncode == 0, trained.stderr
    app = model_api.create_app(Client(home=home), version="1")
    server = Server(app, lifespan="on")  # the lifespan's end closes the client: the last profile
    try:
        sent = run(
            "demo.traffic", "--url", server.url, "--requests", str(REQUESTS), "--users", "8", *traffic_args,
            env=env_of(home),
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
    finally:
        server.stop()
    shift = traffic.shift_arg(traffic_args[1]) if traffic_args else None
    return sum(1 for r in traffic.plan(REQUESTS, 8, 11, shift) if r.kind == "good")


def mean(profile: Profile, name: str) -> float:
    feature = profile.features[name]
    assert isinstance(feature, NumericFeature), feature
    return float(feature.mean)


@pytest.fixture(scope="module")
def shifted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    home = tmp_path_factory.mktemp("shifted")
    return home, record(home, "--shift", "tenure_months=2")


@pytest.fixture(scope="module")
def unshifted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    home = tmp_path_factory.mktemp("unshifted")
    return home, record(home)


@pytest.fixture
def influx(shifted: tuple[Path, int]) -> Iterator[str]:
    server = serve_store(shifted[0], TOKEN)
    yield server.url
    server.close()


def test_training_logs_its_baseline_and_the_api_its_features(shifted: tuple[Path, int]) -> None:
    home, good = shifted
    with ReadClient(home=home) as reader:
        baseline = reader.profile(RUN_ID, BASELINE)
        serving = reader.serving_profile("churn-logreg", version="1", since="1h")
    assert baseline.rows == int(TRAIN_ROWS * TRAIN_SHARE) == 1600  # the training split, not validation
    assert set(baseline.features) == set(FEATURES)
    assert mean(baseline, "tenure_months") == pytest.approx(36.5, abs=1.5)  # randint(1, 72)
    assert serving.rows == good  # every good request's features, none of the bad ones'
    assert set(serving.features) == set(FEATURES)
    moved = mean(serving, "tenure_months") - mean(baseline, "tenure_months")
    assert moved == pytest.approx(2 * training_std()["tenure_months"], rel=0.1)


@pytest.mark.parametrize("through", ["local store", "influxdb"])
def test_the_monitor_finds_the_shifted_feature_and_only_it(
    shifted: tuple[Path, int], influx: str, through: str
) -> None:
    home, _ = shifted
    reader = ReadClient(home=home) if through == "local store" else None
    if reader is None:
        from pipeline_sdk.read.influx import InfluxBackend

        reader = ReadClient(InfluxBackend(influx, TOKEN, c.INFLUXDB_ORG, c.INFLUXDB_BUCKET))
    with reader:
        found = Monitor(model="churn-logreg", baseline=(RUN_ID, BASELINE), client=reader)
        found.snapshot(since="1h")
        report = found.compare()
    assert report.drifted == ["tenure_months"]
    assert set(report.features) == set(FEATURES)
    tenure = report.features["tenure_months"]
    assert (tenure.test, tenure.threshold) == ("wasserstein", 0.1)
    assert tenure.statistic > 1.5  # 2 standard deviations, normed by the baseline's
    for name in (
        "monthly_charges",
        "support_calls",
    ):  # 0.036-0.046 over six recordings; the sketches add noise
        assert report.features[name].statistic < 0.08, name


def test_unshifted_traffic_does_not_drift(unshifted: tuple[Path, int]) -> None:
    home, good = unshifted
    with ReadClient(home=home) as reader:
        found = Monitor(model="churn-logreg", baseline=(RUN_ID, BASELINE), client=reader)
        found.snapshot(since="1h")
        report = found.compare()
    assert found.current is not None and found.current.rows == good
    assert (report.drifted, report.dataset_drift) == ([], False)


# ---- python -m demo.monitor: the monitor run of make demo -------------------------------------------------


def test_the_demo_monitor_captures_drift_as_a_run(shifted: tuple[Path, int], tmp_path: Path) -> None:
    home, _ = shifted
    runs = tmp_path / "runs"  # the monitor's own run goes here; it reads the demo's data from InfluxDB
    server = serve_store(home, TOKEN)
    try:
        done = run(
            "demo.monitor", "--baseline", f"{RUN_ID}:{BASELINE}", "--since", "1h", "--wait", "5",
            env=env_of(
                runs, MLOBS_INFLUXDB_URL=server.url, MLOBS_INFLUXDB_TOKEN=TOKEN, MLOBS_RUN_ID="demo-drift-1",
                MLOBS_PIPELINE="drift", MLOBS_STEP="demo-drift",
            ),
        )  # fmt: skip
    finally:
        server.close()
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("monitor: ")]
    assert lines[0].startswith("monitor: tenure_months: wasserstein ") and lines[0].endswith(": drifted")
    assert lines[1].startswith("monitor: monthly_charges: wasserstein ") and lines[1].endswith(": no drift")
    assert lines[2] == (
        f"monitor: 1 of 2 features drifted against {RUN_ID}:{BASELINE} over the last 1h: dataset drift"
    )
    with ReadClient(home=runs) as reader:
        [captured] = reader.runs(pipeline="drift").to_list()
        metrics = {m["name"]: m["value"] for m in reader.metrics("demo-drift-1")}
        params = {p["name"]: p["value"] for p in reader.params("demo-drift-1")}
    assert (captured["run_id"], captured["step"], captured["status"]) == (
        "demo-drift-1",
        "demo-drift",
        "succeeded",
    )
    assert (metrics["tenure_months.drifted"], metrics["monthly_charges.drifted"]) == (1.0, 0.0)
    assert (metrics["drifted_share"], metrics["dataset_drift"]) == (0.5, 1.0)
    assert params["baseline"] == f"{RUN_ID}:{BASELINE}" and params["window"] == "1h"


def test_the_demo_monitor_waits_for_the_data_then_names_what_is_missing(
    shifted: tuple[Path, int], tmp_path: Path
) -> None:
    home, good = shifted
    nothing = run(
        "demo.monitor", "--baseline", "demo-train-none:train", "--wait", "0.3", env=env_of(tmp_path)
    )
    assert nothing.returncode == 1
    assert nothing.stderr.startswith(
        f"monitor: no data to check after 0.3 s: run 'demo-train-none' not found in the local store"
        f" {tmp_path}"
    )
    unnamed = run("demo.monitor", "--baseline", f"{RUN_ID}:validation", "--wait", "0.3", env=env_of(home))
    assert unnamed.returncode == 1
    assert f"0.3 s: run '{RUN_ID}' has no profile named 'validation' in the local store" in unnamed.stderr
    args = ("--baseline", f"{RUN_ID}:{BASELINE}", "--since", "1h", "--wait", "0.3", "--interval", "0.1")
    short = run("demo.monitor", *args, "--min-rows", str(good + 1), env=env_of(home))
    assert short.returncode == 1
    assert f"monitor: waiting: {good} serving rows of churn-logreg so far" in short.stdout
    assert short.stderr.strip().endswith(
        f"no data to check after 0.3 s: {good} serving rows of churn-logreg so far"
    )
    enough = run("demo.monitor", *args, "--min-rows", str(good), env=env_of(home))
    assert enough.returncode == 0, enough.stderr
    assert "waiting" not in enough.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "the following arguments are required: --baseline"),
        (["--baseline", "demo-train-1"], "--baseline='demo-train-1' is invalid: must be RUN:NAME"),
        (["--baseline", "r:train", "--features", "age"], "argument --features: 'age' is invalid"),
        (["--baseline", "r:train", "--wait", "0"], "argument --wait: 0 is invalid: must be a finite number"),
    ],
)
def test_bad_monitor_arguments_are_named(args: list[str], message: str, tmp_path: Path) -> None:
    done = run("demo.monitor", *args, env=env_of(tmp_path))
    assert done.returncode == 2
    assert message in done.stderr


# ---- python -m demo.traffic --shift --------------------------------------------------------------------


def test_the_shift_moves_one_feature_by_sigmas_of_the_training_data() -> None:
    plain = traffic.plan(200, 5, 11)
    moved = traffic.plan(200, 5, 11, traffic.shift_arg("monthly_charges=1.5"))
    std = training_std()["monthly_charges"]
    assert std == pytest.approx(29.0, abs=0.5)  # uniform(20, 120): 100 / sqrt(12)
    pairs = [(a.body, b.body) for a, b in zip(plain, moved, strict=True) if "monthly_charges" in a.body]
    assert len(pairs) >= 190
    for before, after in pairs:
        assert after["monthly_charges"] == round(before["monthly_charges"] + 1.5 * std, 2)
        assert {k: v for k, v in after.items() if k != "monthly_charges"} == {
            k: v for k, v in before.items() if k != "monthly_charges"
        }
    down = traffic.plan(200, 5, 11, traffic.shift_arg("tenure_months=-3"))
    assert min(r.body["tenure_months"] for r in down if "tenure_months" in r.body) == 0.0  # never negative
    assert [r.kind for r in moved] == [r.kind for r in plain]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("age=2", "argument --shift: 'age=2' is invalid: unknown feature 'age'; one of tenure_months,"),
        ("tenure_months=x", "argument --shift: 'tenure_months=x' is invalid: 'x' is not a number"),
        (
            "tenure_months=inf",
            "argument --shift: 'tenure_months=inf' is invalid: 'inf' is not a finite number",
        ),
        ("tenure_months", "argument --shift: 'tenure_months' is invalid: must be FEATURE=SIGMAS"),
    ],
)
def test_a_bad_shift_is_named(value: str, message: str, tmp_path: Path) -> None:
    done = run("demo.traffic", "--shift", value, env=env_of(tmp_path))
    assert done.returncode == 2
    assert message in done.stderr


@pytest.mark.skipif(not live_stack.have_pushgateway(), reason="the Pushgateway is installed by make test")
def test_the_demo_monitor_pushes_its_results(shifted: tuple[Path, int], tmp_path: Path) -> None:
    home, _ = shifted
    gateway = live_stack.pushgateway(tmp_path)
    try:
        done = run(
            "demo.monitor", "--baseline", f"{RUN_ID}:{BASELINE}", "--since", "1h", "--wait", "5",
            "--pushgateway", gateway.url,
            env=env_of(home, MLOBS_RUN_ID="demo-drift-2", MLOBS_PIPELINE="drift", MLOBS_STEP="demo-drift"),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        with urllib.request.urlopen(f"{gateway.url}/metrics", timeout=10) as resp:
            pushed = resp.read().decode()
    finally:
        gateway.stop()
    from prometheus_client.parser import text_string_to_metric_families

    ours = {"job": c.PROM_JOB_DRIFT, "model": "churn-logreg", "version": c.DRIFT_ANY_VERSION}
    samples = [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(pushed)
        for sample in family.samples
        if ours.items() <= sample.labels.items()
    ]
    [(labels, detected)] = [(labels, v) for name, labels, v in samples if name == c.PROM_DRIFT_DETECTED]
    assert detected == 1.0
    assert (labels["baseline"], labels["monitor"], labels["window"]) == (
        f"{RUN_ID}:{BASELINE}",
        "demo-drift",
        "1h",
    )
    assert [v for name, _, v in samples if name == c.PROM_DRIFT_SCHEDULE] == [monitor.SCHEDULE_S]
    drifted = sorted(
        (labels["feature"], v) for name, labels, v in samples if name == c.PROM_DRIFT_FEATURE_DRIFTED
    )
    assert drifted == [("monthly_charges", 0.0), ("tenure_months", 1.0)]
