"""The run context: ``with pipeline_sdk.run(...) as run:`` and ``@pipeline_sdk.run(...)``.

:func:`run` returns a :class:`RunContext`; entering it gives the :class:`~pipeline_sdk.recorder.ActiveRun`
you record into, which :func:`current_run` also returns while it is active.

Entering resolves the run identity (arguments, else the ``MLOBS_*`` variables the chart
injects, else generated: :mod:`pipeline_sdk.naming`), records ``started``, then on the way
out exactly one of ``succeeded``, ``failed`` (with the exception and its traceback) or
``cancelled`` (SIGTERM or Ctrl-C), each with the run's duration (:mod:`pipeline_sdk.outcome`),
and flushes with a bounded timeout.  Once the run has ended, its ``ActiveRun`` refuses every
call with a ``RuntimeError`` that names the run: an event logged after the end could never be
delivered by the client the run closed, so none is queued.

During the run, its context's log records are captured (see :mod:`pipeline_sdk.logs`), and
``on_invalid`` says what a call with an invalid argument does (see :mod:`pipeline_sdk.invalid`).
A :class:`~pipeline_sdk.system.SystemSampler` samples the process and its children every
``system_interval`` seconds (``MLOBS_SYSTEM_INTERVAL``, default 10; 0 turns it off), each sample
an event of the system stream; on the way out, the artifacts logged are hashed to the end
(at most the flush timeout), the sampler is stopped, and its summary (peak RSS, CPU seconds,
mean CPU, the cgroup's limits) goes on the end event (:mod:`pipeline_sdk.run_resources`).

The exit cannot fail the caller: every cleanup step (stop capturing logs, finish the artifacts,
stop the sampler, record the end,
refuse later calls, restore the SIGTERM handler, clear ``current_run()``, close or flush the
client) runs even when another one raised; a step that raises is logged as a warning on the
``mlobs`` logger.  The caller's own exception propagates unchanged.

``Run`` is the old name of :class:`RunContext`, and ``RunRecorder`` of ``ActiveRun``: both are
kept for one release (deprecated).

One concern past 400 lines: a run's lifecycle, each part it sets up undone by a step of its own.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType, TracebackType
from typing import Any, TypeVar

from . import config, logs, termination
from . import contract as c
from ._version import __version__
from .attempts import next_attempt
from .client import Client
from .deprecated import module_getattr
from .invalid import check_on_invalid
from .naming import default_pipeline, new_run_id, pick
from .outcome import TRACEBACK_CHARS, TRACEBACK_FRAMES, RunCancelled, end_fields, run_outcome
from .recorder import CURRENT_RUN, ActiveRun
from .run_resources import check_system_interval
from .system import Summary, SystemSampler
from .validation import check_identity, describe_error, short_repr
from .values import checked_params, flatten_params

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("mlobs")

_current = CURRENT_RUN
__all__ = [
    "TRACEBACK_CHARS",
    "TRACEBACK_FRAMES",
    "RunCancelled",
    "RunContext",
    "current_run",
    "new_run_id",
    "run",
]


def current_run() -> ActiveRun | None:
    """The innermost active run of this thread or task, if any.

    A new thread starts without one; a thread running in a copy of a run's context
    (``contextvars.copy_context()``) and an asyncio task created inside a run have it.
    """
    rec = _current.get()
    return rec if rec is not None and not rec.ended else None


def _capture_level(value: object) -> int:
    """``log_level``: a level name or a whole number from 0; None: ``MLOBS_LOG_LEVEL``, else INFO."""
    if value is None:
        level = config.LOG_LEVEL.get()
        assert level is not None  # it has a default
        return level
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(
            f"log_level must be a level name or an int, got {type(value).__name__} {short_repr(value)}"
        )
    try:
        return config.log_level(str(value))
    except ValueError as exc:
        raise ValueError(f"log_level={value!r} is invalid: {exc}") from None


_Step = tuple[str, Callable[[], None]]


class RunContext:
    """A run of one pipeline step before and after it is active, as :func:`run` returns it.

    ``with`` it to get the :class:`~pipeline_sdk.recorder.ActiveRun` (one run per ``with``), or
    decorate a function with it (one run per call).  Once the run has ended, ``status`` and
    ``duration_ms`` say how it ended, and ``system`` what it used (None when not sampled).
    """

    def __init__(
        self,
        pipeline: str | None = None,
        step: str | None = None,
        run_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        *,
        client: Client | None = None,
        capture_logs: bool = True,
        log_level: int | str | None = None,
        flush_timeout: float | None = None,
        on_invalid: str | None = None,
        system_interval: float | None = None,
    ) -> None:
        # Explicit arguments are checked here, at the call site, and so are the settings.
        for arg, value in (("pipeline", pipeline), ("step", step), ("run_id", run_id)):
            if value is not None:
                check_identity(arg, value)
        if params is not None:  # always checked (raised): nothing is lost at the start of a run
            refused = checked_params(flatten_params("params", params))[1]
            if refused:
                raise refused[0][1]
        self._args = (pipeline, step, run_id, params)
        self._client = client
        self._capture_logs = capture_logs
        self._settings = (log_level, on_invalid, system_interval)  # as given: a decorated call reads them
        self._log_level = _capture_level(log_level)
        self._on_invalid = (
            config.ON_INVALID.get() if on_invalid is None else check_on_invalid("on_invalid", on_invalid)
        )
        self._flush_timeout = flush_timeout
        self._system_interval = check_system_interval(system_interval)
        self._termination_log = termination.resolve_path()  # None outside a container
        self.recorder: ActiveRun | None = None
        self.status: c.RunStatus | None = None  # set when the run ends
        self.duration_ms: float | None = None
        self.system: Summary | None = None  # what the run used, once it has ended (None: not sampled)
        # What __enter__ set up, so that cleanup undoes exactly that.
        self._owned = False
        self._token: contextvars.Token[ActiveRun | None] | None = None
        self._sigterm_installed = False
        self._previous_handler: Any = None
        self._capturing: ActiveRun | None = None
        self._sampler: SystemSampler | None = None

    def __enter__(self) -> ActiveRun:
        if self.recorder is not None:
            if self.recorder.ended:
                raise RuntimeError("this run has ended; use a new run(...) for each run")
            raise RuntimeError("this run is already active; use a new run(...) for each run")
        pipeline, step, run_id, params = self._args
        identity = (
            pick("pipeline", pipeline, config.PIPELINE, default_pipeline),
            pick("step", step, config.STEP, lambda: "main"),
            pick("run_id", run_id, config.RUN_ID, new_run_id),
        )
        generated = run_id is None and config.RUN_ID.get() is None
        self._owned = self._client is None
        client = self._client if self._client is not None else Client()
        rec: ActiveRun | None = None
        try:
            attempt = next_attempt(identity[2], identity[1], client.transport, generated=generated)
            self.recorder = rec = ActiveRun(client, *identity, attempt, on_invalid=self._on_invalid)
            self._t0 = time.perf_counter_ns()
            rec.log_status(
                c.RunStatus.STARTED,
                {
                    c.FIELD_HOST: socket.gethostname(),
                    c.FIELD_PID: os.getpid(),
                    c.FIELD_SDK_VERSION: __version__,
                },
            )
            self._sampler = SystemSampler(self._system_interval, rec.record_system_sample)
            self._sampler.start()  # a daemon thread; never raises into the step, counts its failures
            if params:
                rec.log_params(params)  # checked in __init__
            self._token = _current.set(rec)
            self._install_sigterm()
            self._attach_logging(rec)
        except BaseException:
            # Nothing of the run is left behind: no log capture, no current run, no client threads.
            try:
                self._cleanup(identity[2], self._undo_steps(identity[2], client, rec, end=None))
            finally:
                self.recorder = None
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
        self.status, fields = run_outcome(exc_type, exc, self.duration_ms)
        status = self.status
        end: _Step = (
            "record the end of the run",
            lambda: self._record_end(rec, status, end_fields(fields, self.system)),
        )
        steps = self._undo_steps(rec.run_id, rec.client, rec, end=end)
        path = self._termination_log
        if status is c.RunStatus.FAILED and exc is not None and path is not None:
            # Kubernetes keeps it as the container's terminated.message: the exporter's alert says why
            failed: BaseException = exc
            steps.insert(0, ("leave its summary for Kubernetes", lambda: termination.leave(path, failed)))
        self._cleanup(rec.run_id, steps)

    def _undo_steps(
        self, run_id: str, client: Client, rec: ActiveRun | None, *, end: _Step | None
    ) -> list[_Step]:
        """The steps that undo __enter__, in order; each is a no-op when its part was not set up.

        With ``end`` (the run ran), the end is recorded once logging is detached, and a client
        the caller lent is flushed; without it (the start failed), only a client of our own is closed.
        Either way the recorder then refuses every call.
        """
        steps: list[_Step] = [("stop capturing logs", self._detach_logging)]
        if rec is not None:
            steps.append(("finish recording its artifacts", lambda: self._close_artifacts(rec)))
        steps.append(("stop its system sampler", self._stop_sampler))
        if end is not None:
            steps.append(end)
        if rec is not None:
            steps.append(("refuse later calls", rec._end))
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

    def _record_end(self, rec: ActiveRun, status: c.RunStatus, fields: Mapping[str, Any]) -> None:
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

    def _close_artifacts(self, rec: ActiveRun) -> None:
        timeout = (
            self._flush_timeout if self._flush_timeout is not None else rec.client.settings.flush_timeout
        )
        rec.close_artifacts(timeout)

    def _stop_sampler(self) -> None:
        sampler, self._sampler = self._sampler, None
        if sampler is not None:
            self.system = sampler.stop()
            if self.recorder is not None:
                self.recorder.system = self.system

    def _clear_current(self) -> None:
        token, self._token = self._token, None
        if token is None or _current.get() is not self.recorder:
            return  # a run entered after this one and still active (overlapping runs) stays current
        try:
            _current.reset(token)
        except ValueError:  # exited in another context than it was entered in
            old = token.old_value
            _current.set(None if old is contextvars.Token.MISSING else old)
        restored = _current.get()
        if restored is not None and restored.ended:  # an overlapping run that ended before this one
            _current.set(None)

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
            log_level, on_invalid, system_interval = self._settings
            fresh = RunContext(
                pipeline,
                step,
                run_id,
                params,
                client=self._client,
                capture_logs=self._capture_logs,
                log_level=log_level,
                flush_timeout=self._flush_timeout,
                on_invalid=on_invalid,
                system_interval=system_interval,
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

    def _attach_logging(self, rec: ActiveRun) -> None:
        if self._capture_logs:
            logs.capture(rec, self._log_level)
            self._capturing = rec

    def _detach_logging(self) -> None:
        rec, self._capturing = self._capturing, None
        if rec is not None:
            logs.release(rec)


def run(
    pipeline: str | None = None,
    step: str | None = None,
    run_id: str | None = None,
    params: Mapping[str, Any] | None = None,
    *,
    client: Client | None = None,
    capture_logs: bool = True,
    log_level: int | str | None = None,
    flush_timeout: float | None = None,
    on_invalid: str | None = None,
    system_interval: float | None = None,
) -> RunContext:
    """Track one run of a pipeline step, as a context manager or a decorator.

    Identity: each of ``pipeline``, ``step`` and ``run_id`` comes from the argument,
    else from ``MLOBS_PIPELINE``, ``MLOBS_STEP`` and ``MLOBS_RUN_ID``, else the script
    name, ``"main"`` and a generated id.  ``params`` are recorded at the start.

    Without ``client``, the run makes its own from the environment (Fluentd when
    ``MLOBS_FLUENTD_HOST`` is set, else the local store under ``MLOBS_HOME``) and
    closes it at the end, waiting at most ``flush_timeout`` seconds (default
    ``MLOBS_FLUSH_TIMEOUT``) for delivery.

    With ``capture_logs``, the stdlib ``logging`` records at ``log_level`` and above
    (a level name or number; default ``MLOBS_LOG_LEVEL``, else INFO) logged in the
    run's context go to the run; your console shows what it showed without mlobs
    (see :mod:`pipeline_sdk.logs`).  Nested ``params`` are flattened to dotted names.

    ``on_invalid`` (default ``MLOBS_ON_INVALID``, else ``"raise"``): ``"raise"`` makes
    a recording call with an invalid argument raise at the call; ``"drop"`` drops it,
    counts it in ``Client.stats().dropped_invalid`` and logs why, so a long job keeps
    its result.  ``run()``'s own arguments are always checked, at the call.

    ``system_interval`` (default ``MLOBS_SYSTEM_INTERVAL``, else 10): seconds between two
    samples of what the process and its children use (CPU, memory, I/O, threads, open files,
    GPUs); 0 samples nothing.  The end event carries the summary: peak RSS against the
    container's memory limit, CPU seconds and mean CPU.
    """
    return RunContext(
        pipeline,
        step,
        run_id,
        params,
        client=client,
        capture_logs=capture_logs,
        log_level=log_level,
        flush_timeout=flush_timeout,
        on_invalid=on_invalid,
        system_interval=system_interval,
    )


__getattr__ = module_getattr(__name__, {"Run": "RunContext", "RunRecorder": "ActiveRun"}, globals())
