"""A run captures the log records of its own context, and the console shows what it showed without mlobs.

Each test configures logging itself (root level, handlers, library loggers) and the ``logging_state``
fixture puts the process's logging back as it was.  The console checks run the same logging calls
twice, with and without runs, and compare what the user's handlers wrote byte for byte.
(One concern, a run's logging, so one file a little over 400 lines.)
"""

from __future__ import annotations

import contextvars
import io
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import pipeline_sdk
from pipeline_sdk import contract as c
from pipeline_sdk.client import Client
from pipeline_sdk.config import SettingError
from pipeline_sdk.local_store import DB_NAME, LocalStore
from pipeline_sdk.run import RunContext
from pipeline_sdk.validation import unescape_text

DEBUG, INFO, WARNING, ERROR = logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR
LEVELS = (DEBUG, INFO, WARNING, ERROR)
# The loggers the scenarios log through: name -> the level the test gives it (NOTSET: inherits the root's).
LOGGERS = {
    "app": logging.NOTSET,
    "lib": logging.NOTSET,  # a library logger with a console handler of its own
    "lib.sub": logging.NOTSET,
    "chatty": DEBUG,  # a library the user turned up
    "quiet": ERROR,  # a library the user turned down
    "isolated": logging.NOTSET,  # propagate=False, with a handler of its own
}
Line = tuple[str, str, str]  # (level, logger, message) of a captured record


def captured(home: Path, run_id: str) -> list[Line]:
    points = LocalStore(home / DB_NAME).points(measurement=c.LOG.measurement, run_id=run_id)
    return [
        (
            p.tags[c.TAG_LEVEL],
            unescape_text(p.fields[c.FIELD_LOGGER]),
            unescape_text(p.fields[c.FIELD_MESSAGE]),
        )
        for p in points
    ]


@dataclass
class Saved:
    root_level: int
    root_handlers: list[logging.Handler]
    levels: dict[str, tuple[int, bool, list[logging.Handler]]]
    hooks: tuple[Any, Any] = field(
        default_factory=lambda: (logging.Logger.isEnabledFor, logging.Logger.callHandlers)
    )


def pytests_own(handler: logging.Handler) -> bool:
    return type(handler).__module__.startswith("_pytest")


def bare_root() -> logging.Logger:
    """The root logger without handlers, as in a fresh process (pytest adds its own at each phase)."""
    root = logging.getLogger()
    root.handlers = []
    return root


@pytest.fixture
def logging_state() -> Iterator[Saved]:
    """Logging as a fresh process has it (root at WARNING), and as it was afterwards."""
    root = logging.getLogger()
    saved = Saved(
        root.level,
        [h for h in root.handlers if not pytests_own(h)],
        {
            name: (logger.level, logger.propagate, list(logger.handlers))
            for name in LOGGERS
            for logger in [logging.getLogger(name)]
        },
    )
    root.setLevel(WARNING)
    yield saved
    # pytest's handlers of this phase stay; what the test added goes.
    root.handlers = saved.root_handlers + [h for h in root.handlers if pytests_own(h)]
    root.setLevel(saved.root_level)
    for name, (level, propagate, handlers) in saved.levels.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.propagate = propagate
        logger.handlers = handlers
    assert (logging.Logger.isEnabledFor, logging.Logger.callHandlers) == saved.hooks, "hooks removed"


class Console:
    """The user's logging configuration; every handler writes into one buffer of its own."""

    def __init__(self, root_level: int) -> None:
        self.buffers: dict[str, io.StringIO] = {}
        root = bare_root()
        root.setLevel(root_level)
        root.addHandler(self.handler("root", "%(levelname)s:%(name)s:%(message)s"))
        root.addHandler(self.handler("root-info", "[%(levelname)s] %(message)s", INFO))
        for name, level in LOGGERS.items():
            logging.getLogger(name).setLevel(level)
        logging.getLogger("lib").addHandler(self.handler("lib", "lib> %(name)s %(levelname)s %(message)s"))
        isolated = logging.getLogger("isolated")
        isolated.propagate = False
        isolated.addHandler(self.handler("isolated", "iso> %(levelname)s %(message)s", INFO))

    def handler(self, key: str, fmt: str, level: int = logging.NOTSET) -> logging.Handler:
        self.buffers[key] = io.StringIO()
        handler = logging.StreamHandler(self.buffers[key])
        handler.setFormatter(ShoutingFormatter(fmt))
        handler.setLevel(level)
        return handler

    def output(self) -> dict[str, str]:
        return {key: buffer.getvalue() for key, buffer in self.buffers.items()}


class ShoutingFormatter(logging.Formatter):
    """A formatter of the user's own, with its own exception format (which must reach the console)."""

    def formatException(self, ei: Any) -> str:
        return f"EXCEPTION {ei[0].__name__}: {ei[1]}"


def emit_all(tag: str) -> None:
    """A line from every logger at every level, and a logged exception."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for level in LEVELS:
            logger.log(level, "%s %s %s", tag, name, logging.getLevelName(level))
    try:
        raise KeyError(tag)
    except KeyError:
        logging.getLogger("app").exception("%s failed", tag)


def expected_lines(tag: str, capture_level: int = INFO) -> list[Line]:
    """What a run capturing at ``capture_level`` records of ``emit_all(tag)``."""
    lines = [
        (logging.getLevelName(level), name, f"{tag} {name} {logging.getLevelName(level)}")
        for name, own_level in LOGGERS.items()
        for level in LEVELS
        if level >= capture_level and level >= own_level
    ]
    return [*lines, ("ERROR", "app", f"{tag} failed\nTraceback (most recent call last):")]


TAGS = ("before", "a", "a+b", "b", "between", "outer", "inner", "outer again", "after")  # scenario's order


def scenario(
    with_runs: bool, client: Client | None, capture_level: int | None = None, step: str = "s"
) -> None:
    """Lines outside runs, in two overlapping runs, and in a nested run; or the same lines alone.

    Each test gives its runs a step of its own: a second attempt of a run would say so on the console.
    """

    def start(run_id: str) -> RunContext | None:
        if not with_runs:
            return None
        level: dict[str, Any] = {} if capture_level is None else {"log_level": capture_level}
        ctx = pipeline_sdk.run(pipeline="p", step=step, run_id=run_id, client=client, **level)
        ctx.__enter__()
        return ctx

    def end(ctx: RunContext | None) -> None:
        if ctx is not None:
            ctx.__exit__(None, None, None)

    emit_all(TAGS[0])
    first = start("ov-a")
    emit_all("a")
    second = start("ov-b")  # overlaps the first: it starts before the first ends
    emit_all("a+b")
    end(first)
    emit_all("b")
    end(second)
    emit_all("between")
    outer = start("nest-outer")
    emit_all("outer")
    inner = start("nest-inner")
    emit_all("inner")
    end(inner)
    emit_all("outer again")
    end(outer)
    emit_all("after")


def shortened(lines: list[Line]) -> list[Line]:
    """Captured lines, with a traceback cut to its first line (its frames are this file's)."""
    return [(lv, name, msg.split("\n  File")[0]) for lv, name, msg in lines]


@pytest.mark.parametrize(
    "root_level", [WARNING, INFO, DEBUG], ids=["root-WARNING", "root-INFO", "root-DEBUG"]
)
def test_the_console_is_byte_for_byte_what_it_is_without_mlobs(
    home: Path, logging_state: Saved, root_level: int
) -> None:
    alone = Console(root_level)
    scenario(with_runs=False, client=None)
    expected = alone.output()
    logging_state_after_alone = (logging.getLogger().level, list(logging.getLogger().handlers))
    for logger in map(logging.getLogger, LOGGERS):
        logger.handlers = []
    watched = Console(root_level)
    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    with Client() as client:
        scenario(with_runs=True, client=client, step=logging.getLevelName(root_level))
    assert watched.output() == expected
    assert (root.level, root.handlers) == before, "root level and handlers as they were"
    assert logging_state_after_alone[0] == before[0]
    assert "EXCEPTION KeyError: 'a'" in expected["root"], "the user's own exception format"
    assert expected["root"].count("\n") > 20, "the console did show lines"
    assert captured(home, "ov-a") != [] and shortened(captured(home, "ov-a")) == expected_lines("a")
    assert shortened(captured(home, "ov-b")) == expected_lines("a+b") + expected_lines("b")
    assert shortened(captured(home, "nest-outer")) == expected_lines("outer") + expected_lines("outer again")
    assert shortened(captured(home, "nest-inner")) == expected_lines("inner")


def test_the_console_check_catches_a_capture_that_lowers_the_root_level(logging_state: Saved) -> None:
    """The check above can fail: a handler on the root with the root lowered to INFO (how a capture
    by handler must work) shows lines the console never showed."""
    alone = Console(WARNING)
    emit_all("a")
    expected = alone.output()
    for logger in map(logging.getLogger, LOGGERS):
        logger.handlers = []
    watched = Console(WARNING)
    root = logging.getLogger()
    root.setLevel(INFO)
    root.addHandler(logging.NullHandler())
    emit_all("a")
    got = watched.output()
    assert got != expected
    added = sorted(set(got["root"].splitlines()) - set(expected["root"].splitlines()))
    assert added == sorted(f"INFO:{name}:a {name} INFO" for name in ("app", "lib", "lib.sub"))


def test_a_run_at_debug_captures_debug_while_the_console_stays_at_warning(
    home: Path, logging_state: Saved
) -> None:
    alone = Console(WARNING)
    scenario(with_runs=False, client=None)
    expected = alone.output()
    for logger in map(logging.getLogger, LOGGERS):
        logger.handlers = []
    watched = Console(WARNING)
    with Client() as client:
        scenario(with_runs=True, client=client, capture_level=DEBUG, step="debug")
    assert watched.output() == expected
    debug = [line for line in expected["root"].splitlines() if line.startswith("DEBUG")]
    assert debug == [f"DEBUG:chatty:{tag} chatty DEBUG" for tag in TAGS], "only the logger set to DEBUG"
    assert shortened(captured(home, "ov-a")) == expected_lines("a", DEBUG)
    assert ("DEBUG", "app", "a app DEBUG") in captured(home, "ov-a")


LAST_RESORT_SCRIPT = """\
import logging
log = logging.getLogger("app")
log.info("an info line")
log.warning("a warning line")
logging.getLogger("lib").error("an error line")
"""


@pytest.mark.parametrize("with_runs", [False, True])
def test_unconfigured_logging_still_prints_warnings_through_the_last_resort(
    home: Path, logging_state: Saved, capsys: pytest.CaptureFixture[str], with_runs: bool
) -> None:
    bare_root()  # nothing configured: logging's last resort prints warnings and errors
    capsys.readouterr()
    if with_runs:
        with pipeline_sdk.run(pipeline="p", step="s", run_id="lr-1"):
            exec(LAST_RESORT_SCRIPT, {})
    else:
        exec(LAST_RESORT_SCRIPT, {})
    assert capsys.readouterr().err == "a warning line\nan error line\n"
    if with_runs:
        assert captured(home, "lr-1") == [
            ("INFO", "app", "an info line"),
            ("WARNING", "app", "a warning line"),
            ("ERROR", "lib", "an error line"),
        ]


def test_basic_config_inside_a_run_configures_the_console(home: Path, logging_state: Saved) -> None:
    outputs = []
    for with_runs in (False, True):
        bare_root()
        buffer = io.StringIO()
        if with_runs:
            with pipeline_sdk.run(pipeline="p", step="s", run_id="bc-1"):
                logging.basicConfig(level=WARNING, stream=buffer, format="%(levelname)s %(message)s")
                logging.getLogger("app").info("info")
                logging.getLogger("app").warning("warning")
        else:
            logging.basicConfig(level=WARNING, stream=buffer, format="%(levelname)s %(message)s")
            logging.getLogger("app").info("info")
            logging.getLogger("app").warning("warning")
        outputs.append(buffer.getvalue())
    assert outputs == ["WARNING warning\n", "WARNING warning\n"]
    assert captured(home, "bc-1") == [("INFO", "app", "info"), ("WARNING", "app", "warning")]


def test_nothing_is_added_to_the_loggers_during_a_run(home: Path, logging_state: Saved) -> None:
    Console(WARNING)
    root = logging.getLogger()
    before = (root.level, list(root.handlers), logging.getLogger("app").level)
    with pipeline_sdk.run(pipeline="p", step="s", run_id="add-1"):
        assert (root.level, root.handlers, logging.getLogger("app").level) == before
        # Documented: in the run's context a logger is enabled for the levels the run captures.
        assert logging.getLogger("app").isEnabledFor(INFO)
        assert not logging.getLogger("app").isEnabledFor(DEBUG)
        assert not logging.getLogger("quiet").isEnabledFor(WARNING), "a level the user set still counts"
        assert not contextvars.Context().run(logging.getLogger("app").isEnabledFor, INFO), "other contexts"
    assert not logging.getLogger("app").isEnabledFor(INFO)


# ---- records go to the run of the context that logs them --------------------------------------------


def test_two_threads_each_with_its_own_run_get_only_their_own_lines(home: Path, logging_state: Saved) -> None:
    log = logging.getLogger("app")
    both_started = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            with pipeline_sdk.run(pipeline="p", step=name, run_id=f"thr-{name}", client=client):
                both_started.wait()
                for i in range(200):
                    (log.info if i % 2 else log.warning)("%s %d", name, i)
                both_started.wait()  # both runs are still active until here
        except BaseException as exc:  # reported below: an assertion in a thread is otherwise lost
            errors.append(exc)

    with Client() as client:
        threads = [
            threading.Thread(target=contextvars.Context().run, args=(worker, name), name=f"worker-{name}")
            for name in ("a", "b")
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert errors == []
    for name in ("a", "b"):
        assert captured(home, f"thr-{name}") == [
            ("INFO" if i % 2 else "WARNING", "app", f"{name} {i}") for i in range(200)
        ]


def test_a_thread_started_in_a_run_is_in_it_only_with_a_copy_of_the_context(
    home: Path, logging_state: Saved
) -> None:
    console = Console(WARNING)
    log = logging.getLogger("app")

    def in_thread(target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target)
        thread.start()
        thread.join(10)

    with pipeline_sdk.run(pipeline="p", step="s", run_id="ctx-2"):
        in_thread(lambda: log.warning("from a plain thread"))
        in_thread(lambda: contextvars.copy_context().run(log.warning, "not copied in the thread"))
        ctx = contextvars.copy_context()
        in_thread(lambda: ctx.run(log.warning, "from a thread with the run's context"))
        log.warning("from the run itself")
    assert captured(home, "ctx-2") == [
        ("WARNING", "app", "from a thread with the run's context"),
        ("WARNING", "app", "from the run itself"),
    ]
    assert console.output()["root"] == (
        "WARNING:app:from a plain thread\n"
        "WARNING:app:not copied in the thread\n"
        "WARNING:app:from a thread with the run's context\n"
        "WARNING:app:from the run itself\n"
    )


def test_a_nested_run_without_capture_captures_nothing(home: Path, logging_state: Saved) -> None:
    log = logging.getLogger("app")
    with pipeline_sdk.run(pipeline="p", step="s", run_id="cap-outer"):
        log.warning("outer")
        with pipeline_sdk.run(pipeline="p", step="s", run_id="cap-inner", capture_logs=False):
            log.warning("inner")
            assert not log.isEnabledFor(INFO)
        log.warning("outer again")
    assert captured(home, "cap-outer") == [("WARNING", "app", "outer"), ("WARNING", "app", "outer again")]
    assert captured(home, "cap-inner") == []


# ---- the capture level: an argument, else MLOBS_LOG_LEVEL, else INFO ----------------------------------


@pytest.mark.parametrize(
    ("setting", "lines"),  # setting: (the argument, MLOBS_LOG_LEVEL)
    [
        ((None, None), ["info", "warning"]),
        ((None, "DEBUG"), ["debug", "info", "warning"]),
        ((None, "warning"), ["warning"]),
        ((None, "15"), ["info", "warning"]),
        (("DEBUG", "WARNING"), ["debug", "info", "warning"]),
        ((WARNING, None), ["warning"]),
        ((0, None), ["debug", "info", "warning"]),
    ],
)
def test_the_capture_level_setting(
    home: Path,
    logging_state: Saved,
    monkeypatch: pytest.MonkeyPatch,
    setting: tuple[int | str | None, str | None],
    lines: list[str],
) -> None:
    argument, env = setting
    if env is not None:
        monkeypatch.setenv(c.ENV_LOG_LEVEL, env)
    log = logging.getLogger("app")
    with pipeline_sdk.run(pipeline="p", step="s", run_id="lvl-1", log_level=argument):
        log.debug("debug")
        log.info("info")
        log.warning("warning")
    assert [message for _, _, message in captured(home, "lvl-1")] == lines


def test_a_bad_capture_level_names_the_argument_or_the_variable(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    levels = "DEBUG, INFO, WARNING, ERROR, CRITICAL or a whole number from 0"
    with pytest.raises(
        ValueError, match=rf"^log_level='LOUD' is invalid: must be a logging level: {levels}$"
    ):
        pipeline_sdk.run(pipeline="p", log_level="LOUD")
    with pytest.raises(ValueError, match=r"^log_level=-1 is invalid: must be a logging level: DEBUG"):
        pipeline_sdk.run(pipeline="p", log_level=-1)
    with pytest.raises(TypeError, match=r"^log_level must be a level name or an int, got float 1\.5$"):
        pipeline_sdk.run(pipeline="p", log_level=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^log_level must be a level name or an int, got bool True$"):
        pipeline_sdk.run(pipeline="p", log_level=True)
    monkeypatch.setenv(c.ENV_LOG_LEVEL, "LOUD")
    with pytest.raises(
        SettingError,
        match=rf"^environment variable MLOBS_LOG_LEVEL='LOUD': must be a logging level: {levels}$",
    ):
        pipeline_sdk.run(pipeline="p")
    assert not (home / DB_NAME).exists(), "nothing was started"


def test_a_handler_attached_by_hand_records_that_logger_into_its_run(
    home: Path, logging_state: Saved
) -> None:
    with Client() as client:
        rec = client.recorder("p", "s", "hand-2")
        handler = pipeline_sdk.RunLogHandler(rec, INFO)
        worker = logging.getLogger("lib.sub")
        worker.addHandler(handler)
        try:
            worker.warning("by hand, with no run() around it")
            worker.debug("below the handler's level")
        finally:
            worker.removeHandler(handler)
    assert captured(home, "hand-2") == [("WARNING", "lib.sub", "by hand, with no run() around it")]
    assert handler.lost_records == 0
