"""The run context: ``with pipeline_sdk.run(...) as run:`` and ``@pipeline_sdk.run(...)``.

It resolves the run identity (arguments, else the ``MLOBS_*`` variables the chart
injects, else generated), records ``started``, then exactly one of
``succeeded``, ``failed`` (with the exception type and message) or
``cancelled`` (SIGTERM or Ctrl-C), each with the run's duration.  On the way
out it flushes with a bounded timeout.

The exit cannot fail the caller: the exception's type and message are stored
with :func:`~pipeline_sdk.validation.safe_text` (lone surrogates as backslash
escapes, a ``str()`` that raises described instead), and every cleanup step
(detach logging, record the end, restore the SIGTERM handler, clear
``current_run()``, close or flush the client) runs even when another one
raised; a step that raises is logged as a warning on the ``mlobs`` logger.
The caller's own exception propagates unchanged.
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
from collections.abc import Callable, Mapping, Sequence
from types import FrameType, TracebackType
from typing import Any, TypeVar

from . import config
from . import contract as c
from ._version import __version__
from .attempts import next_attempt
from .client import Client
from .logs import RunLogHandler
from .recorder import RunRecorder
from .validation import check_identity, check_name, describe, describe_error, param_value, safe_text

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


def _type_name(exc_type: type[BaseException]) -> str:
    """``KeyError`` for a builtin, else ``module.QualName``; never raises."""
    qualname = describe(getattr(exc_type, "__qualname__", None) or getattr(exc_type, "__name__", "?"))
    module = getattr(exc_type, "__module__", None)
    return qualname if module in (None, "builtins") else f"{describe(module)}.{qualname}"


def _succeeded(exc: BaseException | None) -> bool:
    if exc is None:
        return True
    if isinstance(exc, SystemExit) and not isinstance(exc, RunCancelled):
        code = exc.code
        return code is None or (isinstance(code, int) and code == 0)
    return False


_Step = tuple[str, Callable[[], None]]


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
        # What __enter__ set up, so that cleanup undoes exactly that.
        self._owned = False
        self._token: contextvars.Token[RunRecorder | None] | None = None
        self._sigterm_installed = False
        self._previous_handler: Any = None
        self._handler: RunLogHandler | None = None
        self._root_level = logging.NOTSET

    def __enter__(self) -> RunRecorder:
        if self.recorder is not None:
            raise RuntimeError("this run is already active; use a new run(...) for each run")
        pipeline, step, run_id, params = self._args
        identity = (
            _pick("pipeline", pipeline, config.PIPELINE, _default_pipeline),
            _pick("step", step, config.STEP, lambda: "main"),
            _pick("run_id", run_id, config.RUN_ID, new_run_id),
        )
        generated = run_id is None and config.RUN_ID.get() is None
        self._owned = self._client is None
        client = self._client if self._client is not None else Client()
        try:
            attempt = next_attempt(identity[2], identity[1], client.transport, generated=generated)
            self.recorder = rec = client.recorder(*identity, attempt)
            self._t0 = time.perf_counter_ns()
            rec.log_status(
                c.RunStatus.STARTED,
                {
                    c.FIELD_HOST: socket.gethostname(),
                    c.FIELD_PID: os.getpid(),
                    c.FIELD_SDK_VERSION: __version__,
                },
            )
            if params:
                rec.log_params(params)  # checked in __init__
            self._token = _current.set(rec)
            self._install_sigterm()
            self._attach_logging(rec)
        except BaseException:
            # Nothing of the run is left behind: no handler, no current run, no client threads.
            self.recorder = None
            self._cleanup(identity[2], self._undo_steps(identity[2], client, end=None))
            raise
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
        if _succeeded(exc):
            self.status = c.RunStatus.SUCCEEDED
        elif isinstance(exc, (RunCancelled, KeyboardInterrupt)):
            self.status = c.RunStatus.CANCELLED
        else:
            self.status = c.RunStatus.FAILED
            failed_type = type(exc) if exc is not None else exc_type
            assert failed_type is not None
            fields[c.FIELD_ERROR_TYPE] = safe_text(_type_name(failed_type), 256)
            fields[c.FIELD_ERROR_MESSAGE] = safe_text(exc)
        status = self.status
        end: _Step = ("record the end of the run", lambda: self._record_end(rec, status, fields))
        self._cleanup(rec.run_id, self._undo_steps(rec.run_id, rec.client, end=end))

    def _undo_steps(self, run_id: str, client: Client, *, end: _Step | None) -> list[_Step]:
        """The steps that undo __enter__, in order; each is a no-op when its part was not set up.

        With ``end`` (the run ran), the end is recorded once logging is detached, and a client
        the caller lent is flushed; without it (the start failed), only a client of our own is closed.
        """
        steps: list[_Step] = [("stop capturing logs", self._detach_logging)]
        if end is not None:
            steps.append(end)
        return [
            *steps,
            ("restore the SIGTERM handler", self._restore_sigterm),
            ("clear the current run", self._clear_current),
            (
                "close its client" if self._owned else "flush its client",
                lambda: self._release(run_id, client, flush=end is not None),
            ),
        ]

    def _cleanup(self, run_id: str, steps: Sequence[_Step]) -> None:
        """Run every step, whichever raises: an error is logged, an interrupt re-raised at the end."""
        interrupt: BaseException | None = None
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # logged; the next steps must still run
                log.warning(
                    "mlobs: run %s: could not %s: %s", run_id, what, describe_error(exc), exc_info=exc
                )
            except BaseException as exc:  # noqa: BLE001 - Ctrl-C or SIGTERM: finish cleaning up, re-raise below
                interrupt = interrupt if interrupt is not None else exc
        if interrupt is not None:
            raise interrupt

    def _record_end(self, rec: RunRecorder, status: c.RunStatus, fields: Mapping[str, Any]) -> None:
        try:
            rec.log_status(status, fields)
        except Exception as exc:
            if len(fields) == 1:
                raise
            # Without the error's text, the run's end (its status and duration) may still be written.
            log.warning(
                "mlobs: run %s: could not record its end in full (%s); recording its status only",
                rec.run_id,
                describe_error(exc),
            )
            rec.log_status(status, {c.FIELD_DURATION_MS: self.duration_ms})

    def _clear_current(self) -> None:
        token, self._token = self._token, None
        if token is None:
            return
        try:
            _current.reset(token)
        except ValueError:  # exited in another context than it was entered in
            old = token.old_value
            _current.set(None if old is contextvars.Token.MISSING else old)

    def _release(self, run_id: str, client: Client, *, flush: bool) -> None:
        """Close the client the run made; flush one the caller lent (bounded), if ``flush``."""
        if self._owned:
            client.close(self._flush_timeout)
        elif flush and not client.flush(self._flush_timeout):
            log.warning("mlobs: run %s not fully delivered yet; its client keeps trying", run_id)

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
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            if callable(previous):
                previous(signum, frame)
            raise RunCancelled(128 + signum)

        signal.signal(signal.SIGTERM, on_sigterm)
        self._previous_handler = previous
        self._sigterm_installed = True

    def _restore_sigterm(self) -> None:
        if self._sigterm_installed:
            self._sigterm_installed = False
            # None: a handler not set from Python, which cannot be put back; the default is closest.
            previous = self._previous_handler if self._previous_handler is not None else signal.SIG_DFL
            self._previous_handler = None
            signal.signal(signal.SIGTERM, previous)

    # ---- logging ------------------------------------------------------------------------

    def _attach_logging(self, rec: RunRecorder) -> None:
        if not self._capture_logs:
            return
        root = logging.getLogger()
        self._root_level = root.level
        self._handler = RunLogHandler(rec, self._log_level)
        root.addHandler(self._handler)
        if root.getEffectiveLevel() > self._log_level:
            root.setLevel(self._log_level)  # so records at log_level reach the handler

    def _detach_logging(self) -> None:
        handler, self._handler = self._handler, None
        if handler is not None:
            root = logging.getLogger()
            root.removeHandler(handler)
            root.setLevel(self._root_level)


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
