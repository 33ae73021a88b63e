"""The run context: identity, lifecycle events, SIGTERM, the decorator, logging, bounded exit."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

import pipeline_sdk
from pipeline_sdk import contract as c
from pipeline_sdk.client import Client
from pipeline_sdk.local_store import DB_NAME, LocalStore, Point
from pipeline_sdk.recorder import ActiveRun
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


# ---- a run that has ended refuses every recording call ---------------------------------------------

LATE_CALLS: dict[str, Callable[[ActiveRun], None]] = {
    "log_metric": lambda r: r.log_metric("loss", 0.25),  # a known name: the fast path
    "log_metric (list)": lambda r: r.log_metric("loss", 0.25, step=1),
    "log_metric (new name)": lambda r: r.log_metric("accuracy", 0.9),
    "log_metrics": lambda r: r.log_metrics({"loss": 0.25}),
    "log_param": lambda r: r.log_param("lr", 0.1),
    "log_params": lambda r: r.log_params({"lr": 0.1}),
    "log_input": lambda r: r.log_input("data", {"rows": 1}),
    "log_output": lambda r: r.log_output("model", "m.pkl"),
    "log_record": lambda r: r.log_record("INFO", "late"),
    "log_status": lambda r: r.log_status(c.RunStatus.SUCCEEDED, {}),
}


def ended_message(call: str, run_id: str) -> str:
    return (
        f"{call}() on run p/s run_id={run_id} attempt=1, which has ended: record inside the run's "
        "`with` block (or in the function that run() decorates), or start a new run with "
        "pipeline_sdk.run(...)"
    )


@pytest.mark.parametrize("call", list(LATE_CALLS))
def test_a_call_after_the_run_ended_raises_naming_the_run_and_queues_nothing(home: Path, call: str) -> None:
    run_id = "late-" + re.sub(r"[^a-z_]+", "-", call).strip("-")  # one run id per case: attempt 1
    with pipeline_sdk.run(pipeline="p", step="s", run_id=run_id) as run:
        run.log_metric("loss", 0.5)
        run.log_metric("loss", 0.5, step=0)
    assert run.ended
    with pytest.raises(RuntimeError) as raised:
        LATE_CALLS[call](run)
    assert str(raised.value) == ended_message(call.split(maxsplit=1)[0], run_id)
    # started, the metric, the list metric, the system sampler's last sample (taken at the end), the end
    stats = run.client.stats()
    assert (stats.queued_events, stats.dropped_events, stats.delivered_events) == (0, 0, 5)
    assert len(list(LocalStore(home / DB_NAME).points(run_id=run_id))) == 5


def test_a_lent_client_keeps_nothing_of_a_late_call_and_serves_the_next_run(home: Path) -> None:
    with Client() as client:
        with pipeline_sdk.run(pipeline="p", step="s", run_id="late-2", client=client) as run:
            run.log_metric("loss", 0.5)
        with pytest.raises(RuntimeError, match=r"^log_metric\(\) on run p/s run_id=late-2 attempt=1, which"):
            run.log_metric("loss", 0.25)
        assert client.stats().queued_events == 0
        with pipeline_sdk.run(pipeline="p", step="s", run_id="late-3", client=client) as again:
            again.log_metric("loss", 0.25)
        assert client.flush(10)
        assert client.stats().queued_events == 0
    assert [p.fields[c.FIELD_VALUE] for p in LocalStore(home / DB_NAME).points(c.METRIC.measurement)] == [
        0.5,
        0.25,
    ]


def test_a_run_leaked_out_of_its_decorated_function_has_ended(home: Path) -> None:
    @pipeline_sdk.run(pipeline="p", step="s", run_id="late-4")
    def step() -> ActiveRun | None:
        return pipeline_sdk.current_run()

    leaked = step()
    assert leaked is not None and leaked.ended
    with pytest.raises(RuntimeError, match=r"^log_param\(\) on run p/s run_id=late-4 attempt=1, which has"):
        leaked.log_param("lr", 0.1)


def test_entering_an_ended_run_again_says_it_has_ended(home: Path) -> None:
    ctx = pipeline_sdk.run(pipeline="p", step="s", run_id="late-5")
    with ctx:
        pass
    with (
        pytest.raises(RuntimeError, match=r"^this run has ended; use a new run\(\.\.\.\) for each run$"),
        ctx,
    ):
        pass


# ---- the traceback of a failed run -----------------------------------------------------------------


def _dive(depth: int) -> None:
    if depth == 0:
        raise TrainingDiverged("deep down")
    if depth % 2:  # two call lines in turn: no frame repeats the one before (those are shown once)
        _dive(depth - 1)
    else:
        _dive(depth - 1)


def test_a_failed_run_keeps_its_last_30_frames(home: Path) -> None:
    with pytest.raises(TrainingDiverged), pipeline_sdk.run(pipeline="p", step="s", run_id="tb-1"):
        _dive(100)
    _, ended = run_events(home, "tb-1")
    text = unescape_text(ended.fields[c.FIELD_TRACEBACK])
    assert text.startswith("Traceback (most recent call last):\n")
    assert text.endswith("tests.test_run.TrainingDiverged: deep down\n")
    assert text.count('  File "') == 30, "the innermost 30 frames"
    assert text.count(", in _dive\n") == 30
    assert "test_a_failed_run_keeps_its_last_30_frames" not in text, "the outermost frame is cut"


def test_a_traceback_longer_than_8_kib_keeps_its_end(home: Path) -> None:
    message = "m" * 20_000
    with (
        pytest.raises(TrainingDiverged) as raised,
        pipeline_sdk.run(pipeline="p", step="s", run_id="tb-2"),
    ):
        raise TrainingDiverged(message)
    _, ended = run_events(home, "tb-2")
    text = unescape_text(ended.fields[c.FIELD_TRACEBACK])
    assert len(text) == 8192
    head = re.match(r"\[(\d+) characters cut by mlobs\]\.\.\.", text)
    assert head is not None
    full = "".join(traceback.format_exception(raised.value))
    assert full.startswith("Traceback (most recent call last):\n") and len(full) > 20_000
    cut = int(head.group(1))
    assert text[head.end() :] == full[cut:], "the end is kept"
    assert cut + len(text) - head.end() == len(full), "the marker counts exactly what was cut"


def test_only_a_failed_run_has_a_traceback(home: Path) -> None:
    with pipeline_sdk.run(pipeline="p", step="s", run_id="tb-3"):
        pass
    with pytest.raises(KeyboardInterrupt), pipeline_sdk.run(pipeline="p", step="s", run_id="tb-4"):
        raise KeyboardInterrupt
    for run_id in ("tb-3", "tb-4"):
        assert c.FIELD_TRACEBACK not in run_events(home, run_id)[1].fields


# ---- the default pipeline name in a notebook -------------------------------------------------------

LAUNCHER = "/opt/conda/lib/python3.11/site-packages/ipykernel_launcher.py"


JPY, SESSION, VSCODE = c.JUPYTER_SESSION_VAR, c.JUPYTER_SESSION_GLOBAL, c.VSCODE_NOTEBOOK_GLOBAL


@pytest.mark.parametrize(
    ("argv0", "hints", "pipeline"),  # hints: environment variables, and globals of __main__ (``__...``)
    [
        (LAUNCHER, {}, "notebook"),
        (LAUNCHER, {JPY: "/home/ada/work/churn model v2.ipynb"}, "churn-model-v2"),
        (LAUNCHER, {SESSION: "/home/ada/work/eval.ipynb"}, "eval"),
        (LAUNCHER, {JPY: "/home/ada/work/other.ipynb", VSCODE: "/home/ada/work/vscode.ipynb"}, "vscode"),
        (LAUNCHER, {JPY: "/home/ada/???.ipynb"}, "notebook"),
        ("/content/colab_kernel_launcher.py", {}, "notebook"),
        ("", {}, "notebook"),
        # A script started from a notebook inherits JPY_SESSION_NAME: it is still the script.
        ("/home/ada/work/train.py", {JPY: "/home/ada/work/eval.ipynb"}, "train"),
    ],
)
def test_the_default_pipeline_in_a_notebook_is_its_name(
    home: Path, monkeypatch: pytest.MonkeyPatch, argv0: str, hints: dict[str, str], pipeline: str
) -> None:
    monkeypatch.setattr(sys, "argv", [argv0, "-f", "/tmp/kernel-1.json"])
    monkeypatch.delenv(JPY, raising=False)
    main = sys.modules["__main__"]
    for global_name in (SESSION, VSCODE):
        monkeypatch.delattr(main, global_name, raising=False)
    for name, value in hints.items():
        if name.startswith("__"):
            monkeypatch.setattr(main, name, value, raising=False)
        else:
            monkeypatch.setenv(name, value)
    with pipeline_sdk.run(step="s") as run:
        pass
    assert run.pipeline == pipeline


def test_a_closed_client_refuses_events_of_its_recorders_and_services(home: Path) -> None:
    """Nothing can be queued that will never be sent: after close(), every writer raises."""
    client = Client()
    rec = client.recorder("p", "s", "closed-1")
    service = client.service("churn-api")
    rec.log_metric("loss", 1.0)
    assert client.close(10)
    for call in (
        lambda: rec.log_metric("loss", 2.0),
        lambda: rec.log_metric("loss", 2.0, step=1),
        lambda: rec.log_param("a", 1),
        lambda: service.log_prediction("m", version=1, score=0.5),
    ):
        with pytest.raises(RuntimeError, match=r"writes through a client that was closed \(the local store "):
            call()
    stats = client.stats()
    assert (stats.queued_events, stats.dropped_events, stats.delivered_events) == (0, 0, 1)


def test_events_logged_while_a_client_closes_are_counted(home: Path) -> None:
    from pipeline_sdk import contract as c

    client = Client(linger=60)
    queue = client.shipper.queues[c.METRIC.tag]
    client.shipper._stopping.set()  # the spooler's last drain has happened
    client.shipper._wake.set()
    assert client.shipper._spooler.join(10) is None and not client.shipper._spooler.is_alive()
    queue.append(b"an entry appended after the last drain")
    client.close(0)
    stats = client.stats()
    assert stats.dropped_at_close == 1 and stats.dropped_events == 1 and stats.queued_events == 0


# ---- names: what a `with` block gives is what current_run() returns; the old names warn ----------


def test_the_with_block_and_current_run_give_one_active_run(home: Path) -> None:
    ctx = pipeline_sdk.run(pipeline="p", step="s", run_id="names-1")
    assert type(ctx) is pipeline_sdk.RunContext
    with ctx as run:
        assert type(run) is pipeline_sdk.ActiveRun
        assert pipeline_sdk.current_run() is run
    assert (ctx.status, ctx.recorder) == (c.RunStatus.SUCCEEDED, run)
    with Client() as client:
        assert type(client.recorder("p", "s", "names-2")) is pipeline_sdk.ActiveRun
    assert "RunRecorder" not in pipeline_sdk.__all__ and "Run" not in pipeline_sdk.__all__


@pytest.mark.parametrize(
    ("module", "old", "new"),
    [
        ("pipeline_sdk", "RunRecorder", "ActiveRun"),
        ("pipeline_sdk", "Run", "RunContext"),
        ("pipeline_sdk.recorder", "RunRecorder", "ActiveRun"),
        ("pipeline_sdk.run", "Run", "RunContext"),
        ("pipeline_sdk.run", "RunRecorder", "ActiveRun"),
    ],
)
def test_an_old_name_is_the_new_class_and_warns_that_it_is_deprecated(
    module: str, old: str, new: str
) -> None:
    namespace = sys.modules[module]
    with pytest.warns(DeprecationWarning) as caught:
        value = getattr(namespace, old)
    assert value is getattr(pipeline_sdk, new)
    assert [str(w.message) for w in caught] == [
        f"{module}.{old} is deprecated and goes in the next release: use pipeline_sdk.{new} (the same)"
    ]
    assert caught[0].filename == __file__  # the warning points at the code that uses the old name


def test_importing_the_sdk_and_its_new_names_warns_of_nothing() -> None:
    code = (
        "import pipeline_sdk\n"
        "from pipeline_sdk import ActiveRun, RunContext, run, current_run\n"
        "from pipeline_sdk.model_api import MLObsMiddleware, ServiceRecorder\n"
        "from pipeline_sdk.recorder import EventWriter\n"
        "try:\n"
        "    from pipeline_sdk.run import NoSuchName\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert (
        done.stdout
        == "cannot import name 'NoSuchName' from 'pipeline_sdk.run' ("
        + str(ROOT / "pipeline_sdk" / "run.py")
        + ")\n"
    )
