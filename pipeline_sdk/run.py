"""The run context: ``with pipeline_sdk.run(...) as run:`` and ``@pipeline_sdk.run(...)``.

It resolves the run identity (arguments, else the ``MLOBS_*`` variables the chart
injects, else generated), records ``started``, then exactly one of
``succeeded``, ``failed`` (with the exception type and message) or
``cancelled`` (SIGTERM or Ctrl-C), each with the run's duration.  On the way
out it flushes with a bounded timeout.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from types import FrameType, TracebackType
from typing import Any, TypeVar

from . import config
from . import contract as c
from ._version import __version__
from .client import Client
from .logs import RunLogHandler
from .recorder import RunRecorder
from .validation import check_identity, check_name, param_value, truncate_text

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("mlobs")

_current: contextvars.ContextVar[RunRecorder | None] = contextvars.ContextVar(
    "mlobs_current_run", default=None
)


class RunCancelled(SystemExit):
    """Raised in the main thread when SIGTERM arrives during a run.

    It is a ``SystemExit`` with code 128 + signal number, so the process ends with
    the conventional status once the run has recorded ``cancelled`` and flushed.
    """


def current_run() -> RunRecorder | None:
    """The innermost active run of this thread or task, if any."""
    return _current.get()


def new_run_id() -> str:
    """A sortable, readable run id that is also a valid Kubernetes label value."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)


def _default_pipeline() -> str:
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", os.path.splitext(script)[0]).strip("-_.")
    return stem[:63].strip("-_.") or "notebook"


def _pick(arg: str, given: str | None, env: config.EnvVar[str], default: Callable[[], str]) -> str:
    if given is not None:
        return check_identity(arg, given)
    from_env = env.get()
    if from_env is not None:
        return check_identity(f"{arg} (from {env.name})", from_env)
    return default()


class Run:
    """A run of one pipeline step; see :func:`run`."""

    def __init__(
        self,
        pipeline: str | None = None,
        step: str | None = None,
        run_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        *,
        client: Client | None = None,
        capture_logs: bool = True,
        log_level: int = logging.INFO,
        flush_timeout: float | None = None,
    ) -> None:
        # Explicit arguments are checked here, at the call site.
        for arg, value in (("pipeline", pipeline), ("step", step), ("run_id", run_id)):
            if value is not None:
                check_identity(arg, value)
        if params is not None:
            if not isinstance(params, Mapping):
                raise TypeError(f"params must be a mapping of name to value, got {type(params).__name__}")
            for name, value in params.items():
                check_name(f"params key {name!r}", name)
                param_value(f"params[{name!r}]", value)
        self._args = (pipeline, step, run_id, params)
        self._client = client
        self._capture_logs = capture_logs
        self._log_level = log_level
        self._flush_timeout = flush_timeout
        self.recorder: RunRecorder | None = None
        self.status: c.RunStatus | None = None  # set when the run ends
        self.duration_ms: float | None = None

    def __enter__(self) -> RunRecorder:
        if self.recorder is not None:
            raise RuntimeError("this run is already active; use a new run(...) for each run")
        pipeline, step, run_id, params = self._args
        identity = (
            _pick("pipeline", pipeline, config.PIPELINE, _default_pipeline),
            _pick("step", step, config.STEP, lambda: "main"),
            _pick("run_id", run_id, config.RUN_ID, new_run_id),
        )
        self._owned = self._client is None
        client = self._client if self._client is not None else Client()
        self.recorder = rec = client.recorder(*identity)
        self._t0 = time.perf_counter_ns()
        rec.log_status(
            c.RunStatus.STARTED,
            {c.FIELD_HOST: socket.gethostname(), c.FIELD_PID: os.getpid(), c.FIELD_SDK_VERSION: __version__},
        )
        if params:
            rec.log_params(params)  # checked in __init__
        self._token = _current.set(rec)
        self._install_sigterm()
        self._attach_logging(rec)
        return rec

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        rec = self.recorder
        assert rec is not None, "__exit__ without __enter__"
        self.duration_ms = (time.perf_counter_ns() - self._t0) / 1e6
        fields: dict[str, Any] = {c.FIELD_DURATION_MS: self.duration_ms}
        if exc is None or (
            isinstance(exc, SystemExit) and not isinstance(exc, RunCancelled) and exc.code in (0, None)
        ):
            self.status = c.RunStatus.SUCCEEDED
        elif isinstance(exc, (RunCancelled, KeyboardInterrupt)):
            self.status = c.RunStatus.CANCELLED
        else:
            self.status = c.RunStatus.FAILED
            assert exc_type is not None
            module = exc_type.__module__
            name = exc_type.__qualname__ if module == "builtins" else f"{module}.{exc_type.__qualname__}"
            fields[c.FIELD_ERROR_TYPE] = truncate_text(name, 256)
            fields[c.FIELD_ERROR_MESSAGE] = truncate_text(str(exc))
        self._detach_logging()
        rec.log_status(self.status, fields)
        self._restore_sigterm()
        _current.reset(self._token)
        client = rec.client
        timeout = self._flush_timeout
        if self._owned:
            client.close(timeout)
        elif not client.flush(timeout):
            log.warning("mlobs: run %s not fully delivered yet; its client keeps trying", rec.run_id)

    def __call__(self, func: F) -> F:
        """Use as a decorator: each call of ``func`` is a new run (a fresh run id)."""

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            pipeline, step, run_id, params = self._args
            fresh = Run(
                pipeline,
                step,
                run_id,
                params,
                client=self._client,
                capture_logs=self._capture_logs,
                log_level=self._log_level,
                flush_timeout=self._flush_timeout,
            )
            with fresh:
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    # ---- SIGTERM ------------------------------------------------------------------------

    def _install_sigterm(self) -> None:
        self._previous_handler: Any = None
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            if callable(previous):
                previous(signum, frame)
            raise RunCancelled(128 + signum)

        self._previous_handler = previous
        signal.signal(signal.SIGTERM, on_sigterm)

    def _restore_sigterm(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None

    # ---- logging ------------------------------------------------------------------------

    def _attach_logging(self, rec: RunRecorder) -> None:
        self._handler: RunLogHandler | None = None
        if not self._capture_logs:
            return
        root = logging.getLogger()
        self._handler = RunLogHandler(rec, self._log_level)
        root.addHandler(self._handler)
        self._root_level = root.level
        if root.getEffectiveLevel() > self._log_level:
            root.setLevel(self._log_level)  # so records at log_level reach the handler

    def _detach_logging(self) -> None:
        if self._handler is not None:
            root = logging.getLogger()
            root.removeHandler(self._handler)
            root.setLevel(self._root_level)
            self._handler = None


def run(
    pipeline: str | None = None,
    step: str | None = None,
    run_id: str | None = None,
    params: Mapping[str, Any] | None = None,
    *,
    client: Client | None = None,
    capture_logs: bool = True,
    log_level: int = logging.INFO,
    flush_timeout: float | None = None,
) -> Run:
    """Track one run of a pipeline step, as a context manager or a decorator.

    Identity: each of ``pipeline``, ``step`` and ``run_id`` comes from the argument,
    else from ``MLOBS_PIPELINE``, ``MLOBS_STEP`` and ``MLOBS_RUN_ID``, else the script
    name, ``"main"`` and a generated id.  ``params`` are recorded at the start.

    Without ``client``, the run makes its own from the environment (Fluentd when
    ``MLOBS_FLUENTD_HOST`` is set, else the local store under ``MLOBS_HOME``) and
    closes it at the end, waiting at most ``flush_timeout`` seconds (default
    ``MLOBS_FLUSH_TIMEOUT``) for delivery.  With ``capture_logs``, records of the
    stdlib ``logging`` module at ``log_level`` and above go to the run.
    """
    return Run(
        pipeline,
        step,
        run_id,
        params,
        client=client,
        capture_logs=capture_logs,
        log_level=log_level,
        flush_timeout=flush_timeout,
    )
