"""drift.Monitor and `mlobs drift`: a baseline and serving profiles in the local store, compared,
captured as a run of pipeline drift and pushed to Debian's real Pushgateway."""

from __future__ import annotations

import io
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pipeline_sdk
from pipeline_sdk import Client, drift
from pipeline_sdk import contract as c
from pipeline_sdk.cli import main
from pipeline_sdk.drift.monitor import Monitor, parse_baseline
from pipeline_sdk.drift_cli import DRIFT_EXIT
from pipeline_sdk.read import ReadClient
from pipeline_sdk.service import ServiceRecorder
from tests.support.live_stack import Service, have_pushgateway, pushgateway

N = 5000


def record(home: Path, shift: float) -> None:
    rng = np.random.default_rng(11)
    with Client(home=home) as client:
        with pipeline_sdk.run("train", "fit", run_id="train-1", client=client) as run:
            run.log_profile(
                "train",
                {
                    "age": rng.normal(40, 10, N),
                    "income": rng.normal(100, 20, N),
                    "plan": rng.choice(["a", "b"], N),
                },
            )
        recorder = ServiceRecorder(client, "churn-api", key="k" * 32, profile_interval=3600)
        ages, incomes, plans = (
            rng.normal(40 + shift, 10, N),
            rng.normal(100, 20, N),
            rng.choice(["a", "b"], N),
        )
        for i in range(N):
            recorder.log_features("churn", 1, {"age": ages[i], "income": incomes[i], "plan": plans[i]})
        recorder.close()
        assert client.flush(10)


@pytest.fixture(scope="module")
def shifted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("monitor") / "home"
    record(home, shift=10.0)  # one standard deviation older
    return home


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    if not have_pushgateway():
        pytest.skip("prometheus-pushgateway is not installed (scripts/ensure-prometheus.sh installs it)")
    service = pushgateway(tmp_path_factory.mktemp("pushgateway"))
    yield service
    service.stop()


def test_compare_finds_the_shifted_feature(shifted: Path) -> None:
    monitor = Monitor(model="churn", baseline=("train-1", "train"), client=ReadClient(home=shifted))
    assert monitor.snapshot(since="1h").rows == N
    report = monitor.compare()
    assert report.drifted == ["age"]
    assert report.features["age"].test == "wasserstein"
    assert report.drifted_share == pytest.approx(1 / 3)
    assert not report.dataset_drift
    strict = Monitor(
        model="churn", version=1, baseline="train-1:train", features=["age"], client=ReadClient(home=shifted)
    )
    assert strict.compare().dataset_drift  # one feature of one


def test_capture_records_a_run_and_pushes_the_gauges(shifted: Path, gateway: Service, tmp_path: Path) -> None:
    monitor = Monitor(
        model="churn",
        version=1,
        baseline=("train-1", "train"),
        client=ReadClient(home=shifted),
        name="churn-daily",
        schedule_seconds=3600,
    )
    monitor.snapshot(since="1h")
    with Client(home=tmp_path) as client:
        report = monitor.capture(gateway.url, run_client=client)
    runs = ReadClient(home=tmp_path)
    [run] = runs.runs(pipeline="drift").to_list()
    assert (run["step"], run["status"]) == ("churn-daily", "succeeded")
    metrics = {m["name"]: m["value"] for m in runs.metrics(run["run_id"])}
    assert metrics["age.drifted"] == 1.0 and metrics["income.drifted"] == 0.0
    assert metrics["age.statistic"] == pytest.approx(report.features["age"].statistic)
    assert metrics["drifted_share"] == pytest.approx(1 / 3)
    with urllib.request.urlopen(gateway.url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    group = 'instance="",job="mlobs-drift",model="churn"'
    assert re.search(
        rf'mlobs_drift_detected\{{baseline="train-1:train",{group},monitor="churn-daily",'
        r'version="1",window="1h"\} 0',
        text,
    ), text
    assert re.search(
        rf'mlobs_drift_feature_drifted\{{feature="age",{group},test="wasserstein",version="1"\}} 1', text
    )
    assert re.search(rf'mlobs_drift_schedule_seconds\{{{group},version="1"\}} 3600', text)
    assert re.search(rf"{c.PROM_DRIFT_LAST_RUN}\{{{group},version=\"1\"\}} \d", text)


def test_capture_records_both_sides_quantiles_of_each_numeric_feature(
    shifted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(c.ENV_PUSHGATEWAY_URL, raising=False)
    monitor = Monitor(model="churn", baseline=("train-1", "train"), client=ReadClient(home=shifted))
    with Client(home=tmp_path) as client:
        monitor.capture(run_client=client)
    runs = ReadClient(home=tmp_path)
    [run] = runs.runs(pipeline=c.DRIFT_PIPELINE).to_list()
    series: dict[str, list[tuple[int, float]]] = {}
    for row in runs.list_metrics(run["run_id"]):
        series.setdefault(row["name"], []).append((row["step"], row["value"]))
    names = {f"{f}{side}" for f in ("age", "income") for side in c.DRIFT_QUANTILE_SERIES}
    assert set(series) == names  # numbers only: "plan" is a category, it has frequencies, not quantiles
    percents = list(c.DRIFT_QUANTILE_PERCENTS)
    assert percents == list(range(0, 101, 5))
    baseline, current = (dict(series[f"age{side}"]) for side in c.DRIFT_QUANTILE_SERIES)
    assert sorted(baseline) == sorted(current) == percents
    ages = [baseline[p] for p in percents]
    assert ages == sorted(ages) and len(set(ages)) == len(ages)
    assert baseline[50] == pytest.approx(40, abs=0.6) and current[50] == pytest.approx(
        50, abs=0.6
    )  # 1 sd older
    assert baseline[0] == monitor.baseline.features["age"].min  # type: ignore[union-attr]
    assert current[100] == monitor.current.features["age"].max  # type: ignore[union-attr]


def test_a_push_that_fails_fails_the_run(shifted: Path, tmp_path: Path) -> None:
    monitor = Monitor(model="churn", baseline=("train-1", "train"), client=ReadClient(home=shifted))
    with Client(home=tmp_path) as client, pytest.raises(OSError):
        monitor.capture("http://127.0.0.1:9", run_client=client)
    [run] = ReadClient(home=tmp_path).runs(pipeline="drift").to_list()
    assert run["status"] == "failed"


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ("train-1", ValueError, "baseline='train-1' is invalid: must be RUN:NAME"),
        (":x", ValueError, "baseline=':x' is invalid"),
        (("a",), TypeError, "baseline must be (run_id, name) or 'RUN:NAME'"),
    ],
)
def test_bad_baselines_are_named(value: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        parse_baseline("baseline", value)


def test_bad_monitor_arguments_are_named() -> None:
    with pytest.raises(ValueError, match=re.escape("model='' is invalid")):
        Monitor(model="", baseline="r:n")
    with pytest.raises(ValueError, match=re.escape("schedule_seconds=0 is invalid")):
        Monitor(model="m", baseline="r:n", schedule_seconds=0)


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out), out.getvalue()


def test_cli_check_prints_the_table_and_exits_3_on_dataset_drift(shifted: Path) -> None:
    base = ("--home", str(shifted), "drift", "check", "--model", "churn", "--baseline", "train-1:train")
    code, text = cli(*base, "--since", "1d")
    assert code == 0
    assert re.search(r"^age\s+wasserstein\s+\d\.\d{4}\s+0\.1\s+yes$", text, re.M), text
    assert text.splitlines()[-1] == "1 of 3 features drifted (share 0.33): no drift"
    code, text = cli(*base, "--features", "age,plan")
    assert (code, text.splitlines()[-1]) == (DRIFT_EXIT, "1 of 2 features drifted (share 0.50): drift")
    code, text = cli(*base, "--threshold", "income=0.000001")
    assert code == DRIFT_EXIT and re.search(r"^income\s+wasserstein\s+\S+\s+1e-06\s+yes$", text, re.M)


def test_cli_capture_of_drift_exits_0_so_a_monitor_job_does_not_fail(
    shifted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CronJob's capture that finds drift succeeds: its alert is the drift email, not a failed run."""
    monkeypatch.delenv(c.ENV_PUSHGATEWAY_URL, raising=False)
    monkeypatch.setenv(c.ENV_HOME, str(tmp_path / "runs"))  # where the capture's run is recorded
    base = ("--home", str(shifted), "drift", "check", "--model", "churn", "--baseline", "train-1:train")
    code, text = cli(*base, "--features", "age,plan", "--capture")
    assert (code, text.splitlines()[-1]) == (0, "1 of 2 features drifted (share 0.50): drift")
    [run] = ReadClient(home=tmp_path / "runs").runs(pipeline=c.DRIFT_PIPELINE).to_list()
    assert run["status"] == "succeeded"


def test_cli_profiles_a_csv(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("age,plan\n30,a\n40,b\n,a\n50,a\n")
    code, text = cli("--home", str(tmp_path), "drift", "profile", str(path))
    assert code == 0
    lines = text.splitlines()
    assert lines[0] == "data.csv: 4 rows, 2 features"
    assert re.fullmatch(r"age\s+numeric\s+4\s+1 nulls\s+min 30 max 50 mean 40 std 8\.165", lines[1]), lines[1]
    assert re.fullmatch(r"plan\s+categorical\s+4\s+0 nulls\s+2 categories, top a, b", lines[2]), lines[2]


def test_cli_names_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("--home", str(tmp_path), "drift", "profile", str(tmp_path / "nope.csv"))[0] == 1
    assert "is not a file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli("drift", "check", "--model", "m", "--baseline", "r:n", "--threshold", "age")
    assert "must be FEATURE=NUMBER" in capsys.readouterr().err


def test_profile_of_a_file_agrees_with_the_api(tmp_path: Path) -> None:
    profile = drift.Profile.from_columns({"age": [30.0, 40.0, None, 50.0]})
    assert profile.summary()[0]["std"] == pytest.approx(8.165, abs=1e-3)
