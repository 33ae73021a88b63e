"""A failed run's last words: the summary the SDK leaves in the container's termination message file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline_sdk import contract as c
from pipeline_sdk import termination as t
from tests.conftest import ROOT


def _raise(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def _fit() -> None:
    raise FloatingPointError("loss diverged at epoch 3")


def test_summary_names_type_message_and_innermost_frame() -> None:
    try:
        _fit()
    except FloatingPointError as exc:
        text = t.summary(exc)
    line = _fit.__code__.co_firstlineno + 1
    assert text == f"FloatingPointError: loss diverged at epoch 3\n  at {__file__}:{line} in _fit"


def test_summary_of_a_qualified_exception_and_an_empty_message() -> None:
    class StepError(Exception):
        pass

    text = t.summary(StepError())
    name = (
        "tests.test_termination.test_summary_of_a_qualified_exception_and_an_empty_message.<locals>.StepError"
    )
    assert text == name  # no message, no traceback: the type alone


def test_summary_is_at_most_the_kubelets_limit_in_utf8_bytes() -> None:
    exc = _raise(ValueError("é" * 5000))  # 10,000 bytes of UTF-8
    data = t.summary(exc).encode("utf-8")
    # 4096 - len(CUT_MARKER) = 4087 bytes of head: "ValueError: " (12) and 2037.5 two-byte
    # characters, so the half character is dropped whole and the summary is one byte short
    assert len(data) == c.TERMINATION_MESSAGE_MAX_BYTES - 1
    assert data.decode("utf-8") == "ValueError: " + "é" * 2037 + t.CUT_MARKER
    assert c.TERMINATION_MESSAGE_MAX_BYTES == 4096


def test_summary_just_under_the_limit_is_not_cut() -> None:
    head = "ValueError: "
    exc = ValueError("x" * (c.TERMINATION_MESSAGE_MAX_BYTES - len(head)))
    assert len(t.summary(exc).encode()) == c.TERMINATION_MESSAGE_MAX_BYTES
    assert not t.summary(exc).endswith(t.CUT_MARKER)
    longer = ValueError("x" * (c.TERMINATION_MESSAGE_MAX_BYTES - len(head) + 1))
    assert t.summary(longer).endswith(t.CUT_MARKER)
    assert len(t.summary(longer).encode()) == c.TERMINATION_MESSAGE_MAX_BYTES


def test_summary_of_a_lone_surrogate_is_valid_utf8() -> None:
    text = t.summary(ValueError("bad \udcff byte"))
    assert text == "ValueError: bad \\udcff byte"
    text.encode("utf-8")  # would raise UnicodeEncodeError with the surrogate


def test_summary_when_str_of_the_exception_raises() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert t.summary(Unprintable()).endswith(".<locals>.Unprintable: <message not printable>")


def test_path_defaults_to_the_kubelets_file_only_when_it_is_writable(tmp_path: Path) -> None:
    assert t.resolve_path({}, default=tmp_path / "missing") is None  # outside a container
    target = tmp_path / "termination-log"
    target.write_bytes(b"")
    assert t.resolve_path({}, default=target) == target
    target.chmod(0o400)
    if os.geteuid() != 0:  # root writes anyway
        assert t.resolve_path({}, default=target) is None


def test_path_from_the_env_var_or_off(tmp_path: Path) -> None:
    mine = tmp_path / "words"
    assert t.resolve_path({c.ENV_TERMINATION_LOG: str(mine)}, default=tmp_path / "x") == mine
    assert t.resolve_path({c.ENV_TERMINATION_LOG: "off"}, default=tmp_path) is None
    assert t.resolve_path({c.ENV_TERMINATION_LOG: "OFF"}, default=tmp_path) is None


def test_a_relative_path_in_the_env_var_is_refused_by_name() -> None:
    message = "environment variable MLOBS_TERMINATION_LOG='log': must be an absolute path or 'off'"
    with pytest.raises(ValueError, match=message):
        t.resolve_path({c.ENV_TERMINATION_LOG: "log"})


def test_write_replaces_the_file_privately(tmp_path: Path) -> None:
    target = tmp_path / "termination-log"
    target.write_text("old words that are longer than the new ones")
    assert t.write(target, "ValueError: x") is True
    assert target.read_text() == "ValueError: x"
    made = tmp_path / "new"
    assert t.write(made, "E") is True
    assert stat.S_IMODE(made.stat().st_mode) == 0o600


def test_write_never_raises_and_says_why_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    assert t.write(missing, "E") is False
    assert t.write(missing, "E") is False
    warnings = [r for r in caplog.records if "termination message" in r.getMessage()]
    assert len(warnings) == 1
    assert str(missing) in warnings[0].getMessage()


def test_write_does_not_follow_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = tmp_path / "termination-log"
    link.symlink_to(victim)
    assert t.write(link, "E") is False
    assert victim.read_text() == "precious"


STEP = """
import sys
import pipeline_sdk

def fit(outcome):
    if outcome == "fail":
        raise FloatingPointError("loss diverged at epoch 3")
    if outcome == "surrogate":
        raise ValueError("bad \\udcff byte")

with pipeline_sdk.run(pipeline="train", step="fit", run_id="r1"):
    fit(sys.argv[1])
"""


def _step(tmp_path: Path, outcome: str, log: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "step.py"
    script.write_text(textwrap.dedent(STEP))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOBS_")}
    env |= {c.ENV_HOME: str(tmp_path / "home"), c.ENV_TERMINATION_LOG: str(log), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(script), outcome],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_failed_run_leaves_its_summary_in_the_termination_file(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    done = _step(tmp_path, "fail", log)
    assert done.returncode == 1, done.stderr
    assert "FloatingPointError: loss diverged at epoch 3" in done.stderr  # re-raised as before
    assert (
        log.read_text()
        == f"FloatingPointError: loss diverged at epoch 3\n  at {tmp_path / 'step.py'}:7 in fit"
    )
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_a_successful_run_writes_nothing(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    done = _step(tmp_path, "ok", log)
    assert done.returncode == 0, done.stderr
    assert not log.exists()


def test_a_surrogate_in_the_message_is_written_as_an_escape(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    done = _step(tmp_path, "surrogate", log)
    assert done.returncode == 1, done.stderr
    assert log.read_bytes().decode("utf-8").startswith("ValueError: bad \\udcff byte\n  at ")
