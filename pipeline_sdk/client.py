"""The explicit client: one transport, one spool, one pair of background threads.

Nothing is set up behind the caller's back: a :class:`Client` is created by the
caller (or by :func:`pipeline_sdk.run`, which then closes it when the run ends),
and every recorder it hands out writes through it.
"""

from __future__ import annotations

import dataclasses
import weakref
from pathlib import Path
from types import TracebackType

from . import contract as c
from .config import Settings
from .files import usable_home
from .recorder import ActiveRun
from .service import ServiceRecorder
from .shipper import Shipper
from .stats import ShipperStats
from .transports import Transport, transport_from_settings
from .writer import EventWriter


class Client:
    """Writes run events to a transport: Fluentd when configured, else the local store.

    >>> client = Client()                      # from MLOBS_* environment variables
    >>> rec = client.recorder("train", "fit", "run-1")
    >>> rec.log_metric("loss", 0.25, step=1)
    >>> client.close()                         # flush (bounded), then stop
    """

    def __init__(
        self,
        transport: Transport | None = None,
        *,
        home: Path | str | None = None,
        settings: Settings | None = None,
        max_queue: int = 262_144,
        linger: float = 0.01,
    ) -> None:
        settings = settings if settings is not None else Settings.from_env()
        # An unusable home (read-only, full, no permission) never fails the step: the spool and
        # the local store then go to a private temporary directory, with a warning naming both.
        self.home = usable_home(Path(home) if home is not None else settings.home)
        self.settings = dataclasses.replace(settings, home=self.home)
        self.transport = transport if transport is not None else transport_from_settings(self.settings)
        self._writers: weakref.WeakSet[EventWriter] = weakref.WeakSet()
        self.shipper = Shipper(
            self.transport,
            self.home,
            spool_max_bytes=self.settings.spool_max_bytes,
            max_queue=max_queue,
            linger=linger,
            exit_timeout=self.settings.flush_timeout,
        )

    def __repr__(self) -> str:
        return f"<Client to {self.transport.describe()}>"

    def describe(self) -> str:
        """Where events go, in words, e.g. "Fluentd at fluentd:24224"."""
        return self.transport.describe()

    def recorder(self, pipeline: str, step: str, run_id: str, attempt: str = c.FIRST_ATTEMPT) -> ActiveRun:
        """A run bound to one run identity: pipeline, step, run id and attempt (validated here).

        Unlike :func:`pipeline_sdk.run`, it records no start or end: it only records what you log.
        """
        return ActiveRun(self, pipeline, step, run_id, attempt)

    def service(
        self,
        name: str,
        *,
        salt: str | bytes | None = None,
        key: str | bytes | None = None,
        profile_interval: float | None = None,
    ) -> ServiceRecorder:
        """A recorder of a long-running service (a model API): requests, predictions and features.

        User ids are stored as an HMAC keyed by ``key`` (default: ``MLOBS_USER_HASH_KEY``), salted
        by ``salt`` (default: derived from ``name``); the features of ``log_features`` are flushed
        as a profile every ``profile_interval`` seconds (default: ``MLOBS_PROFILE_INTERVAL``); see
        :class:`ServiceRecorder`.
        """
        return ServiceRecorder(self, name, salt=salt, key=key, profile_interval=profile_interval)

    def stats(self) -> ShipperStats:
        """Counters: spooled, delivered, dropped (never silently), pending."""
        return self.shipper.stats()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything logged so far is delivered; False if ``timeout`` ran out."""
        return self.shipper.flush(self.settings.flush_timeout if timeout is None else timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Flush for at most ``timeout`` seconds (default MLOBS_FLUSH_TIMEOUT), then stop.

        Undelivered events stay in the spool under MLOBS_HOME for the next process.  From
        here on, every recorder and service of this client refuses events with a
        ``RuntimeError``: nothing can be queued that will never be sent.
        """
        for writer in list(self._writers):
            writer.host_closed()
        return self.shipper.close(timeout)

    def adopt_writer(self, writer: EventWriter) -> None:
        """Remember a writer (weakly), so that :meth:`close` makes it refuse later events.

        Every :class:`~pipeline_sdk.writer.EventWriter` made with this client calls it.
        """
        self._writers.add(writer)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
