"""Faults on the paths that must not raise: a run's exit, the log handler, lifecycle events.

Whatever an exception, a log record or a cleanup step does, the run ends cleanly: the end is
recorded (text that cannot be encoded is stored with backslash escapes), the SIGTERM handler is
restored, ``current_run()`` is cleared, log capture stops (``logging.Logger`` is as it was), the
recorder refuses later calls and the client the run made is closed.  The user's own exception
propagates unchanged.  Each test reads the run back from the local store.  (One concern, the
paths that must not raise, so one file a little over 400 lines.)
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import re
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import pipeline_sdk
from pipeline_sdk import contract as c
from pipeline_sdk.client import Client
from pipeline_sdk.extra import EXTRA_ERROR_KEY, EXTRA_TRUNCATED_KEY
from pipeline_sdk.local_store import DB_NAME, LocalStore, Point
from pipeline_sdk.logs import RunLogHandler
from pipeline_sdk.read import ReadClient
from pipeline_sdk.recorder import CURRENT_RUN, ActiveRun
from pipeline_sdk.run import RunContext
from pipeline_sdk.validation import MAX_TEXT_LENGTH, unescape_text


def mlobs_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("mlobs-") and t.is_alive()}


def run_log_handlers() -> list[RunLogHandler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, RunLogHandler)]


@dataclass
class Before:
    """What a run must leave as it found it."""

    home: Path
    sigterm: Any
    threads: set[threading.Thread]
    root_level: int
    hooks: tuple[Any, Any] = (logging.Logger.isEnabledFor, logging.Logger.callHandlers)

    def assert_restored(self) -> None:
        assert signal.getsignal(signal.SIGTERM) is self.sigterm, "the SIGTERM handler is restored"
        assert pipeline_sdk.current_run() is None
        assert CURRENT_RUN.get() is None, "the context holds no run, not even an ended one"
        assert run_log_handlers() == [], "no log handler is left on the root logger"
        assert (logging.Logger.isEnabledFor, logging.Logger.callHandlers) == self.hooks, (
            "logging is unwrapped"
        )
        assert logging.getLogger().level == self.root_level
        assert mlobs_threads() - self.threads == set(), "the client the run made is closed"


@pytest.fixture
def before(home: Path) -> Iterator[Before]:
    root = logging.getLogger()
    state = Before(home, signal.getsignal(signal.SIGTERM), mlobs_threads(), root.level)
    yield state
    # Undo whatever a failing test left behind, so the next test starts clean.
    signal.signal(signal.SIGTERM, state.sigterm)
    for handler in run_log_handlers():
        root.removeHandler(handler)
    root.setLevel(state.root_level)


def run_summary(home: Path, run_id: str) -> dict[str, Any]:
    with ReadClient(home=home) as reader:
        return reader.run(run_id)


def end_event(home: Path, run_id: str) -> Point:
    events = list(LocalStore(home / DB_NAME).points(measurement=c.RUN.measurement, run_id=run_id))
    assert [e.tags[c.TAG_STATUS] for e in events][:1] == ["started"]
    assert len(events) == 2, [e.tags[c.TAG_STATUS] for e in events]
    return events[1]


# ---- the exception the run ends with -------------------------------------------------------------


def test_a_lone_surrogate_in_the_exception_fails_the_run_with_an_escaped_message(
    home: Path, before: Before
) -> None:
    error = ValueError("bad \udcff")
    with pytest.raises(ValueError) as raised, pipeline_sdk.run(pipeline="p", step="s", run_id="sur-1"):
        raise error
    assert raised.value is error, "the user's exception propagates unchanged"
    before.assert_restored()
    summary = run_summary(home, "sur-1")
    assert summary["status"] == "failed"
    assert summary["error"] == "ValueError: bad \\udcff"  # the 6 characters \udcff
    assert unescape_text(end_event(home, "sur-1").fields[c.FIELD_ERROR_MESSAGE]) == "bad \\udcff"


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() fails on purpose")


def test_an_exception_whose_str_raises_is_recorded_as_unprintable(home: Path, before: Before) -> None:
    error = Unprintable()
    with pytest.raises(Unprintable) as raised, pipeline_sdk.run(pipeline="p", step="s", run_id="unp-1"):
        raise error
    assert raised.value is error
    before.assert_restored()
    summary = run_summary(home, "unp-1")
    assert summary["status"] == "failed"
    assert summary["error"] == (
        "tests.test_run_faults.Unprintable: <unprintable Unprintable: str() raised RuntimeError>"
    )


def test_a_surrogate_in_the_exception_type_name_is_escaped(home: Path, before: Before) -> None:
    class Odd(Exception):
        pass

    Odd.__module__ = "plugins\udcff"  # type() refuses such a name, but a class attribute takes it
    Odd.__qualname__ = "Odd\udcffError"
    with pytest.raises(Odd), pipeline_sdk.run(pipeline="p", step="s", run_id="typ-1"):
        raise Odd("x")
    before.assert_restored()
    assert run_summary(home, "typ-1")["error"] == "plugins\\udcff.Odd\\udcffError: x"


def test_a_long_message_is_truncated_with_the_marker(home: Path, before: Before) -> None:
    with pytest.raises(ValueError), pipeline_sdk.run(pipeline="p", step="s", run_id="long-1"):
        raise ValueError("x" * (MAX_TEXT_LENGTH + 1))
    before.assert_restored()
    message = unescape_text(end_event(home, "long-1").fields[c.FIELD_ERROR_MESSAGE])
    assert len(message) == MAX_TEXT_LENGTH
    kept, cut = re.fullmatch(r"(x*)\.\.\. \[(\d+) characters truncated by mlobs\]", message).groups()  # type: ignore[union-attr]
    assert len(kept) + int(cut) == MAX_TEXT_LENGTH + 1, "the marker counts exactly what was cut"


# ---- every cleanup step runs, whichever one raises ----------------------------------------------


def _after(original: Callable[..., Any], error: BaseException) -> Callable[..., Any]:
    """``original``, then raise ``error``: the step did its work but reported a failure."""

    def patched(*args: Any, **kwargs: Any) -> Any:
        original(*args, **kwargs)
        raise error

    return patched


def _end_status_raises(original: Callable[..., Any], error: BaseException) -> Callable[..., Any]:
    """``log_status`` that records ``started`` but raises for every end status."""

    def patched(self: ActiveRun, status: c.RunStatus, *args: Any, **kwargs: Any) -> Any:
        if status is not c.RunStatus.STARTED:
            raise error
        return original(self, status, *args, **kwargs)

    return patched


# step -> (owner, attribute, how it fails, whether the end is still recorded, the warning's words)
CLEANUP_STEPS: dict[str, tuple[type, str, Callable[..., Any], bool, str]] = {
    "detach": (RunContext, "_detach_logging", _after, True, "stop capturing logs"),
    "end": (ActiveRun, "log_status", _end_status_raises, False, "record the end of the run"),
    "refuse": (ActiveRun, "_end", _after, True, "refuse later calls"),
    "sigterm": (RunContext, "_restore_sigterm", _after, True, "restore the SIGTERM handler"),
    "current": (RunContext, "_clear_current", _after, True, "clear the current run"),
    "close": (Client, "close", _after, True, "close its client"),
}


@pytest.mark.parametrize("step", list(CLEANUP_STEPS))
@pytest.mark.parametrize("body_fails", [True, False], ids=["body-fails", "body-succeeds"])
def test_every_cleanup_step_runs_even_when_one_raises(
    before: Before,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    step: str,
    body_fails: bool,
) -> None:
    owner, attribute, how, end_recorded, words = CLEANUP_STEPS[step]
    monkeypatch.setattr(owner, attribute, how(getattr(owner, attribute), OSError("injected")))
    error = KeyError("the user's own")
    run_id = f"{step}-{int(body_fails)}"
    with caplog.at_level(logging.WARNING, logger="mlobs"):
        if body_fails:
            with pytest.raises(KeyError) as raised, pipeline_sdk.run(pipeline="p", step="s", run_id=run_id):
                raise error
            assert raised.value is error, "the user's exception, not the cleanup's"
        else:
            with pipeline_sdk.run(pipeline="p", step="s", run_id=run_id):
                pass  # a cleanup failure does not raise into a run that succeeded
    monkeypatch.undo()
    before.assert_restored()
    warnings = [r.getMessage() for r in caplog.records if r.name == "mlobs"]
    assert f"mlobs: run {run_id}: could not {words}: OSError: injected" in warnings
    status = run_summary(before.home, run_id)["status"]
    expected = ("failed" if body_fails else "succeeded") if end_recorded else "running"
    assert status == expected


def test_the_end_falls_back_to_a_bare_status_when_the_full_one_cannot_be_written(
    home: Path, before: Before, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = ActiveRun.log_status

    def no_error_fields(self: ActiveRun, status: c.RunStatus, fields: Any, *a: Any, **k: Any) -> None:
        if c.FIELD_ERROR_MESSAGE in fields:
            raise OSError("injected")
        original(self, status, fields, *a, **k)

    monkeypatch.setattr(ActiveRun, "log_status", no_error_fields)
    with pytest.raises(ZeroDivisionError), pipeline_sdk.run(pipeline="p", step="s", run_id="bare-1"):
        _ = 1 / 0
    monkeypatch.undo()
    before.assert_restored()
    end = end_event(home, "bare-1")
    assert end.tags[c.TAG_STATUS] == "failed"
    assert set(end.fields) == {c.FIELD_DURATION_MS}


def test_an_interrupt_during_cleanup_still_cleans_up_then_propagates(
    home: Path, before: Before, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        ActiveRun, "log_status", _end_status_raises(ActiveRun.log_status, KeyboardInterrupt())
    )
    with pytest.raises(KeyboardInterrupt), pipeline_sdk.run(pipeline="p", step="s", run_id="int-2"):
        raise ValueError("user")
    monkeypatch.undo()
    before.assert_restored()


def test_a_failed_start_closes_the_client_it_made(
    home: Path, before: Before, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("injected at start")

    monkeypatch.setattr(ActiveRun, "log_status", refuse)
    with pytest.raises(OSError, match="injected at start"), pipeline_sdk.run(pipeline="p", step="s"):
        raise AssertionError("not reached")
    monkeypatch.undo()
    before.assert_restored()


@pytest.mark.parametrize("step", ["_install_sigterm", "_attach_logging"])
def test_a_start_that_fails_once_the_run_is_current_leaves_nothing_behind(
    home: Path, before: Before, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    monkeypatch.setattr(
        RunContext, step, _after(getattr(RunContext, step), OSError("injected late in the start"))
    )
    with pytest.raises(OSError, match="injected late in the start"), pipeline_sdk.run(pipeline="p", step="s"):
        raise AssertionError("not reached")
    monkeypatch.undo()
    before.assert_restored()


def test_an_exit_in_another_context_still_clears_the_current_run(home: Path, before: Before) -> None:
    ctx = pipeline_sdk.run(pipeline="p", step="s", run_id="ctx-1")
    entered = contextvars.copy_context()
    rec = entered.run(ctx.__enter__)
    other = entered.copy()  # the token cannot be reset here: the run is cleared instead
    assert other.run(pipeline_sdk.current_run) is rec
    other.run(ctx.__exit__, None, None, None)
    assert other.run(pipeline_sdk.current_run) is None
    assert pipeline_sdk.current_run() is None
    assert run_summary(home, "ctx-1")["status"] == "succeeded"
    assert signal.getsignal(signal.SIGTERM) is before.sigterm


def test_log_status_escapes_what_it_cannot_encode(home: Path) -> None:
    with Client() as client:
        rec = client.recorder("p", "s", "st-1")
        rec.log_status(
            c.RunStatus.FAILED,
            {c.FIELD_ERROR_TYPE: "Bad\udcff", c.FIELD_ERROR_MESSAGE: Unprintable(), c.FIELD_DURATION_MS: 1.5},
        )
    [event] = LocalStore(home / DB_NAME).points(measurement=c.RUN.measurement, run_id="st-1")
    assert event.fields == {
        c.FIELD_ERROR_TYPE: "Bad\\\\udcff",  # escape_text doubles the backslash in storage
        c.FIELD_ERROR_MESSAGE: "<unprintable Unprintable: str() raised RuntimeError>",
        c.FIELD_DURATION_MS: 1.5,
    }


# ---- log records: never dropped for their message or their extra ---------------------------------


def logged(home: Path, run_id: str, emit: Callable[[logging.Logger], None]) -> list[dict[str, Any]]:
    """Log through ``emit`` during a run, then read that run's log records back."""
    with pipeline_sdk.run(pipeline="p", step="s", run_id=run_id):
        emit(logging.getLogger("app"))
    with ReadClient(home=home) as reader:
        return reader.logs(run_id).to_list()


def raw_extra(home: Path, run_id: str) -> str:
    [point] = LocalStore(home / DB_NAME).points(measurement=c.LOG.measurement, run_id=run_id)
    return unescape_text(point.fields[c.FIELD_EXTRA])


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_a_deeply_nested_extra_loses_only_the_extra(home: Path, before: Before) -> None:
    [row] = logged(home, "deep-1", lambda log: log.warning("deep", extra={"tree": nested(10_000)}))
    assert (row["level"], row["logger"], row["message"]) == ("WARNING", "app", "deep")
    assert list(row["extra"]) == [EXTRA_ERROR_KEY]
    assert row["extra"][EXTRA_ERROR_KEY].startswith("RecursionError: maximum recursion depth exceeded")
    before.assert_restored()


def test_a_circular_extra_loses_only_the_extra(home: Path) -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    [row] = logged(home, "loop-1", lambda log: log.info("loop", extra={"loop": loop}))
    assert (row["level"], row["message"]) == ("INFO", "loop")
    assert row["extra"] == {EXTRA_ERROR_KEY: "ValueError: Circular reference detected"}


def test_an_extra_whose_repr_raises_loses_only_the_extra(home: Path) -> None:
    class NoRepr:
        def __repr__(self) -> str:
            raise RuntimeError("repr fails on purpose")

    [row] = logged(home, "repr-1", lambda log: log.error("odd", extra={"obj": NoRepr()}))
    assert (row["level"], row["message"]) == ("ERROR", "odd")
    assert row["extra"] == {EXTRA_ERROR_KEY: "RuntimeError: repr fails on purpose"}


def test_a_surrogate_in_the_extra_is_escaped_and_reads_back(home: Path) -> None:
    [row] = logged(home, "surx-1", lambda log: log.info("s", extra={"path": "bad \udcff"}))
    assert row["message"] == "s"
    assert raw_extra(home, "surx-1") == '{"path": "bad \\udcff"}'  # a JSON escape: lossless
    assert row["extra"] == {"path": "bad \udcff"}


def test_mixed_key_types_in_the_extra_are_kept_unsorted(home: Path) -> None:
    [row] = logged(home, "mix-1", lambda log: log.info("m", extra={"a": {1: "one", "b": 2}}))
    assert row["message"] == "m"
    assert row["extra"] == {"a": {"1": "one", "b": 2}}


def test_nan_in_the_extra_is_kept(home: Path) -> None:
    [row] = logged(home, "nan-1", lambda log: log.info("epoch", extra={"loss": float("nan"), "lr": 0.1}))
    assert raw_extra(home, "nan-1") == '{"loss": NaN, "lr": 0.1}'
    assert math.isnan(row["extra"]["loss"]) and row["extra"]["lr"] == 0.1


def test_a_huge_extra_is_capped_with_the_truncation_marker(home: Path) -> None:
    blob = "x" * 1_000_000
    [row] = logged(home, "big-1", lambda log: log.info("big", extra={"blob": blob}))
    assert row["message"] == "big"
    stored = raw_extra(home, "big-1")
    assert len(stored) <= MAX_TEXT_LENGTH
    assert len(stored) >= MAX_TEXT_LENGTH - 1  # the cap is used, not wasted
    assert list(row["extra"]) == [EXTRA_TRUNCATED_KEY]
    full = json.dumps({"blob": blob})
    match = re.fullmatch(
        r"(.*)\.\.\. \[(\d+) characters truncated by mlobs\]", row["extra"][EXTRA_TRUNCATED_KEY]
    )
    assert match is not None
    kept, cut = match.group(1), int(match.group(2))
    assert full.startswith(kept) and len(kept) + cut == len(full)


def test_an_extra_of_exactly_the_cap_is_kept_whole(home: Path) -> None:
    overhead = len(json.dumps({"blob": ""}))
    blob = "y" * (MAX_TEXT_LENGTH - overhead)
    [row] = logged(home, "cap-1", lambda log: log.info("cap", extra={"blob": blob}))
    assert row["extra"] == {"blob": blob}
    assert len(raw_extra(home, "cap-1")) == MAX_TEXT_LENGTH


def test_a_surrogate_in_the_message_and_logger_name_is_escaped(home: Path) -> None:
    def emit(_: logging.Logger) -> None:
        logging.getLogger("app\udcff").warning("bad \udcff")

    [row] = logged(home, "surm-1", emit)
    assert (row["level"], row["logger"], row["message"]) == ("WARNING", "app\\udcff", "bad \\udcff")


def test_a_message_that_cannot_be_formatted_is_kept_with_the_reason(home: Path, before: Before) -> None:
    # An INFO record under a root at WARNING exists for the run alone: pytest's own handlers, which
    # re-raise formatting errors, never see it.
    logging.getLogger().setLevel(logging.WARNING)

    def emit(log: logging.Logger) -> None:
        log.info("%d rows", "many")

    [row] = logged(home, "fmt-1", emit)
    assert (row["level"], row["logger"]) == ("INFO", "app")
    assert row["message"] == (
        "<unformattable log message '%d rows' with args ('many',): "
        "TypeError: %d format: a real number is required, not str>"
    )


def test_a_long_logger_name_is_truncated_not_dropped(home: Path) -> None:
    name = "n" * 300

    def emit(_: logging.Logger) -> None:
        logging.getLogger(name).info("named")

    [row] = logged(home, "name-1", emit)
    assert row["message"] == "named"
    assert len(row["logger"]) == 256
    assert row["logger"].startswith("n" * 200) and row["logger"].endswith("characters truncated by mlobs]")


def test_a_level_name_that_cannot_be_a_tag_falls_back_to_its_number(home: Path) -> None:
    logging.addLevelName(25, "NOTICE\nME")
    try:
        [row] = logged(home, "lvl-1", lambda log: log.log(25, "odd level"))
    finally:
        logging.addLevelName(25, "Level 25")
    assert (row["level"], row["message"]) == ("Level 25", "odd level")


def test_capture_never_raises_into_the_code_that_logs(
    home: Path, before: Before, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("recorder broke")

    with caplog.at_level(logging.WARNING), pipeline_sdk.run(pipeline="p", step="s", run_id="hand-1") as run:
        monkeypatch.setattr(run, "log_record", broken)
        for _ in range(3):
            logging.getLogger("app").warning("lost")  # must not raise
        stats = run.client.stats()
        assert stats.dropped_log_records == 3 and stats.dropped_events == 3  # counted, never silent
    said = [r.getMessage() for r in caplog.records if r.name == "mlobs"]
    assert said == [
        "mlobs: run p/s run_id=hand-1 attempt=1: a log record of logger 'app' was not recorded: "
        "OSError: recorder broke"
    ], "said once (rate-limited)"
    assert [r.getMessage() for r in caplog.records if r.name == "app"] == ["lost"] * 3, "the console saw them"
    before.assert_restored()


def test_a_handler_attached_by_hand_counts_what_it_cannot_record(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Client() as client:
        rec = client.recorder("p", "s", "hand-3")
        handler = RunLogHandler(rec)
        rec._end()  # the run is over: its recorder refuses the record
        handler.handle(logging.LogRecord("app", logging.WARNING, __file__, 1, "late", None, None))
        assert handler.lost_records == 1
        assert client.stats().dropped_log_records == 1
    assert (
        "RuntimeError: log_record() on run p/s run_id=hand-3 attempt=1, which has ended"
        in capsys.readouterr().err
    )
