"""The run context: identity, lifecycle events, SIGTERM, the decorator, logging, bounded exit."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import pipeline_sdk
from pipeline_sdk import contract as c
from pipeline_sdk.local_store import DB_NAME, LocalStore, Point
from pipeline_sdk.validation import check_identity, unescape_text
from tests.conftest import ROOT


def run_events(home: Path, run_id: str | None = None) -> list[Point]:
    return list(LocalStore(home / DB_NAME).points(measurement=c.RUN.measurement, run_id=run_id))


def test_success_records_started_then_succeeded_with_duration(home: Path) -> None:
    with pipeline_sdk.run(pipeline="train", step="fit", run_id="ok-1") as run:
        assert pipeline_sdk.current_run() is run
        time.sleep(0.01)
    assert pipeline_sdk.current_run() is None
    started, ended = run_events(home, "ok-1")
    assert started.tags[c.TAG_STATUS] == "started"
    assert started.fields[c.FIELD_PID] == os.getpid()
    assert ended.tags[c.TAG_STATUS] == "succeeded"
    assert ended.fields[c.FIELD_DURATION_MS] >= 10
    assert c.FIELD_ERROR_TYPE not in ended.fields


class TrainingDiverged(RuntimeError):
    pass


def test_failure_records_the_exception_and_reraises(home: Path) -> None:
    with (
        pytest.raises(TrainingDiverged),
        pipeline_sdk.run(pipeline="train", step="fit", run_id="bad-1") as ctx,
    ):
        raise TrainingDiverged("loss is nan at epoch 3\nsee logs")
    _, ended = run_events(home, "bad-1")
    assert ended.tags[c.TAG_STATUS] == "failed"
    assert ended.fields[c.FIELD_ERROR_TYPE] == "tests.test_run.TrainingDiverged"
    assert unescape_text(ended.fields[c.FIELD_ERROR_MESSAGE]) == "loss is nan at epoch 3\nsee logs"
    assert ended.fields[c.FIELD_DURATION_MS] >= 0
    assert ctx.run_id == "bad-1"


def test_builtin_exceptions_keep_their_short_name(home: Path) -> None:
    with pytest.raises(KeyError), pipeline_sdk.run(pipeline="train", step="fit", run_id="bad-2"):
        raise KeyError("x")
    assert run_events(home, "bad-2")[1].fields[c.FIELD_ERROR_TYPE] == "KeyError"


def test_keyboard_interrupt_is_cancelled(home: Path) -> None:
    with pytest.raises(KeyboardInterrupt), pipeline_sdk.run(pipeline="train", step="fit", run_id="int-1"):
        raise KeyboardInterrupt
    assert run_events(home, "int-1")[1].tags[c.TAG_STATUS] == "cancelled"


SIGTERM_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    import pipeline_sdk
    with pipeline_sdk.run(pipeline="train", step="fit", run_id="term-1") as run:
        run.log_metric("loss", 0.5, step=0)
        print("RUNNING", flush=True)
        time.sleep(30)
    print("not reached")
    """
)


def test_sigterm_records_cancelled_and_exits_143(home: Path) -> None:
    env = {**os.environ, "MLOBS_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_SCRIPT], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "RUNNING"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 128 + signal.SIGTERM
    assert "not reached" not in proc.stdout.read()
    _, ended = run_events(home, "term-1")
    assert ended.tags[c.TAG_STATUS] == "cancelled"
    assert ended.fields[c.FIELD_DURATION_MS] > 0
    metrics = list(LocalStore(home / DB_NAME).points(measurement=c.LIST_METRIC.measurement, run_id="term-1"))
    assert len(metrics) == 1, "what was logged before SIGTERM is delivered"


def test_the_previous_sigterm_handler_is_restored(home: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pipeline_sdk.run(pipeline="p", step="s"):
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


def test_decorator_makes_a_fresh_run_per_call(home: Path) -> None:
    seen = []

    @pipeline_sdk.run(pipeline="etl", step="load")
    def load(x: int) -> int:
        current = pipeline_sdk.current_run()
        assert current is not None
        seen.append(current.run_id)
        return x * 2

    assert load(1) == 2
    assert load(2) == 4
    assert len(set(seen)) == 2
    for run_id in seen:
        assert [p.tags[c.TAG_STATUS] for p in run_events(home, run_id)] == ["started", "succeeded"]


def test_identity_from_the_environment_the_chart_injects(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(c.ENV_PIPELINE, "nightly")
    monkeypatch.setenv(c.ENV_STEP, "score")
    monkeypatch.setenv(c.ENV_RUN_ID, "job-abc-123")
    with pipeline_sdk.run() as run:
        assert (run.pipeline, run.step, run.run_id) == ("nightly", "score", "job-abc-123")
    with pipeline_sdk.run(step="other") as run:  # an argument wins over the environment
        assert (run.pipeline, run.step, run.run_id) == ("nightly", "other", "job-abc-123")


def test_generated_identity(home: Path) -> None:
    with pipeline_sdk.run() as run:
        pass
    assert run.step == "main"
    check_identity("run_id", run.run_id)
    check_identity("pipeline", run.pipeline)


def test_a_bad_identity_in_the_environment_names_the_variable(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(c.ENV_RUN_ID, "has spaces")
    with (
        pytest.raises(ValueError, match=r"run_id \(from MLOBS_RUN_ID\)='has spaces' is invalid"),
        pipeline_sdk.run(pipeline="p", step="s"),
    ):
        pass


def test_bad_arguments_raise_at_the_call_site(home: Path) -> None:
    with pytest.raises(ValueError, match="params\\['lr'\\]=nan is invalid"):
        pipeline_sdk.run(pipeline="p", step="s", params={"lr": float("nan")})
    with pytest.raises(ValueError, match="pipeline='my pipeline' is invalid"):
        pipeline_sdk.run(pipeline="my pipeline")
    with pytest.raises(TypeError, match="params must be a mapping"):
        pipeline_sdk.run(pipeline="p", params=[("lr", 1)])  # type: ignore[arg-type]
    assert not (home / DB_NAME).exists(), "nothing was started"


def test_logging_is_captured_during_the_run_only(home: Path) -> None:
    root = logging.getLogger()
    level_before, handlers_before = root.level, list(root.handlers)
    app = logging.getLogger("app")
    with pipeline_sdk.run(pipeline="p", step="s", run_id="log-1", log_level=logging.INFO):
        app.debug("below the level")
        app.info("kept", extra={"rows": 10})
        logging.getLogger("mlobs.shipper").warning("the SDK's own warnings are not fed back")
    app.info("after the run")
    assert root.level == level_before and root.handlers == handlers_before
    logs = list(LocalStore(home / DB_NAME).points(measurement=c.LOG.measurement, run_id="log-1"))
    assert [(p.tags[c.TAG_LEVEL], p.fields[c.FIELD_MESSAGE]) for p in logs] == [("INFO", "kept")]


def test_exit_is_bounded_when_fluentd_is_down(
    home: Path, monkeypatch: pytest.MonkeyPatch, refused_port: int
) -> None:
    monkeypatch.setenv(c.ENV_FLUENTD_HOST, "127.0.0.1")
    monkeypatch.setenv(c.ENV_FLUENTD_PORT, str(refused_port))
    t0 = time.monotonic()
    with pipeline_sdk.run(pipeline="p", step="s", run_id="down-1", flush_timeout=0.5) as run:
        for i in range(1000):
            run.log_metric("loss", float(i), step=i)
    elapsed = time.monotonic() - t0
    assert elapsed < 3, f"exit took {elapsed:.1f} s with a 0.5 s flush timeout"
    kept = list((home / "spool" / "fluent").glob("*/*.seg"))
    assert kept, "undelivered events are kept in the spool for the next process"
