"""A long-running service's events: one ``api_request`` per request, one ``prediction`` per score.

:class:`ServiceRecorder` is the model API's counterpart of a run: bound to a client
and a service name, it writes through the same non-blocking queue hand-off as every
other event (:class:`~pipeline_sdk.writer.EventWriter`), and stores user ids as a keyed
hash.  :class:`~pipeline_sdk.middleware.MLObsMiddleware` calls it once per request.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import contract as c
from .config import PROFILE_INTERVAL, USER_HASH_KEY, SettingError
from .validation import check_identity, check_index, check_number, check_tag_value, check_text, escape_text
from .writer import EventWriter, WriterHost

if TYPE_CHECKING:  # annotations only: the drift extra is imported at the first log_features
    from .drift.profile import Profile
    from .drift.serving import FeatureProfiles

log = logging.getLogger("mlobs")

USER_HASH_HEX = 16  # hex characters kept of the HMAC-SHA256 (or salted SHA-256) of a user id (64 bits)
USER_HASH_KEY_MIN = 16  # bytes of a user-hash key, at least (128 bits: not guessable)


def status_class(status_code: int) -> str:
    """``"2xx"`` for 200 to 299, and so on."""
    return f"{status_code // 100}xx"


def _check_status_code(value: object) -> int:
    code = check_index("status_code", value)
    if not 100 <= code <= 599:
        raise ValueError(f"status_code={code!r} is invalid: must be an HTTP status from 100 to 599")
    return code


def _check_version(value: object) -> str:
    if type(value) is int:  # a model registry's version number, e.g. MLflow's
        return str(check_index("version", value))
    if type(value) is not str:
        raise TypeError(f"version must be a str or an int, got {type(value).__name__} {value!r:.60}")
    return check_tag_value("version", value)


_unkeyed_lock = threading.Lock()
_unkeyed_warned: set[str] = set()  # services whose unkeyed hashing was warned of, in this process


def _warn_unkeyed(service: str) -> None:
    with _unkeyed_lock:
        if service in _unkeyed_warned:
            return
        _unkeyed_warned.add(service)
    log.warning(
        "mlobs: %s is not set, so the user ids of service %s are hashed with a salt anyone who knows "
        "the service name can recompute: the stored hashes are pseudonymous, not anonymous (a list of "
        "candidate ids reverses them). Set %s to a random secret of %d bytes or more to key the hash "
        "(HMAC-SHA256).",
        c.ENV_USER_HASH_KEY,
        service,
        c.ENV_USER_HASH_KEY,
        USER_HASH_KEY_MIN,
    )


def _check_key(key: object) -> bytes:
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, bytes):
        raise TypeError(f"key must be a str, bytes or None, got {type(key).__name__}")
    if not key:
        raise ValueError(f"key is invalid: must not be empty (leave it None to read {c.ENV_USER_HASH_KEY})")
    if len(key) < USER_HASH_KEY_MIN:  # the length only: a key is never echoed
        raise ValueError(
            f"key is invalid: {len(key)} bytes, must be at least {USER_HASH_KEY_MIN} "
            "(a random secret, e.g. openssl rand -hex 32)"
        )
    return key


def _key_from_env() -> bytes | None:
    raw = USER_HASH_KEY.get()
    if raw is None:
        return None
    key = raw.encode("utf-8")
    if len(key) < USER_HASH_KEY_MIN:
        raise SettingError(
            f"environment variable {c.ENV_USER_HASH_KEY} is {len(key)} bytes long: must be at least "
            f"{USER_HASH_KEY_MIN} (a random secret, e.g. openssl rand -hex 32)"
        )
    return key


class ServiceRecorder(EventWriter):
    """Records the requests and predictions of one long-running service, e.g. a model API.

    A service is called from several threads at once (an ASGI server's event loop and
    its thread pool), so unlike a run's recorder it takes a lock to keep its event
    times unique: CPython 3.11's GIL happens to make the read-and-bump of the last
    time atomic, a free-threaded build does not.

    User ids are stored hashed, cut to 16 hex characters (64 bits): the distinct
    values count unique users without storing who they are.  The hash is

    * ``HMAC-SHA256(key, salt + user)`` with a key: ``key``, else the environment
      variable ``MLOBS_USER_HASH_KEY`` (a Secret in the cluster), at least 16 bytes.
      Without the key nobody can recompute a user's hash, so a small id space (a
      customer number) cannot be enumerated back;
    * ``SHA-256(salt + user)`` without one.  Anyone who knows the service name can
      recompute these, so they are pseudonymous, not anonymous: a list of candidate
      ids reverses them in a second.  The recorder warns of it once per service and
      process (logger ``mlobs``), unless ``salt`` was chosen explicitly.

    ``salt`` defaults to ``"mlobs:<service>:"``, so the same user hashes differently
    in each service; pass one ``salt`` to several services to count users across them.
    Setting a key changes every hash: users counted before and after are not the same.
    """

    def __init__(
        self,
        client: WriterHost,
        service: str,
        *,
        salt: str | bytes | None = None,
        key: str | bytes | None = None,
        profile_interval: float | None = None,
    ) -> None:
        self.service = check_identity("service", service)
        if profile_interval is not None:
            interval = check_number("profile_interval", profile_interval)
            if not math.isfinite(interval) or interval <= 0:
                raise ValueError(
                    f"profile_interval={interval!r} is invalid: must be a number of seconds above 0"
                )
        explicit_salt = salt is not None
        if salt is None:
            salt = f"mlobs:{service}:"
        if isinstance(salt, str):
            salt = salt.encode("utf-8")
        if not isinstance(salt, bytes):
            raise TypeError(f"salt must be a str, bytes or None, got {type(salt).__name__}")
        if not salt:
            raise ValueError("salt is invalid: must not be empty (leave it None for the per-service default)")
        secret = _check_key(key) if key is not None else _key_from_env()
        super().__init__(client)
        self._salted = hmac.new(secret, salt, hashlib.sha256) if secret is not None else hashlib.sha256(salt)
        self.keyed = secret is not None  # whether the user hash is keyed (HMAC) or only salted
        self._lock = threading.Lock()
        self._profile_interval = profile_interval  # None: MLOBS_PROFILE_INTERVAL, read at the first use
        self._profiles: FeatureProfiles | None = None
        self.replica = f"{socket.gethostname()}:{os.getpid()}"  # the replica tag of its serving profiles
        self._feature_keys: dict[tuple[str, object, type], tuple[str, str]] = {}
        if secret is None and not explicit_salt:
            _warn_unkeyed(self.service)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} service={self.service}>"

    def user_hash(self, user: str) -> str:
        """The stored form of a user id: 16 hex characters of its HMAC-SHA256 (salted SHA-256 unkeyed)."""
        if type(user) is not str:
            raise TypeError(f"user must be a str, got {type(user).__name__}")
        if not user:
            raise ValueError("user='' is invalid: must not be empty (pass None for no user)")
        digest = self._salted.copy()
        digest.update(user.encode("utf-8", "surrogatepass"))
        return digest.hexdigest()[:USER_HASH_HEX]

    def log_request(
        self,
        endpoint: str,
        method: str,
        status_code: int,
        duration_ms: float,
        user: str | None = None,
    ) -> None:
        """Record one request: its route template, method, HTTP status, duration and hashed user."""
        duration = check_number("duration_ms", duration_ms)
        if duration < 0:
            raise ValueError(f"duration_ms={duration!r} is invalid: must not be negative")
        code = _check_status_code(status_code)
        record: dict[str, Any] = {
            c.TAG_SERVICE: self.service,
            c.TAG_ENDPOINT: check_tag_value("endpoint", endpoint),
            c.TAG_METHOD: check_tag_value("method", method, 32),
            c.TAG_HTTP_STATUS: status_class(code),
            c.FIELD_DURATION_MS: duration,
            c.FIELD_STATUS_CODE: code,
        }
        if user is not None:
            record[c.FIELD_USER] = self.user_hash(user)  # hex: nothing to escape
        self._emit(c.API_REQUEST.tag, record)

    def log_prediction(
        self,
        model: str,
        version: str | int,
        score: float | None = None,
        outcome: str | None = None,
    ) -> None:
        """Record one prediction of ``model`` at ``version``: a score, an outcome, or both."""
        record: dict[str, Any] = {
            c.TAG_SERVICE: self.service,
            c.TAG_MODEL: check_tag_value("model", model),
            c.TAG_MODEL_VERSION: _check_version(version),
        }
        if score is None and outcome is None:
            raise TypeError("log_prediction needs score or outcome (or both), got neither")
        if score is not None:
            record[c.FIELD_SCORE] = check_number("score", score)
        if outcome is not None:
            record[c.FIELD_OUTCOME] = escape_text(check_text("outcome", outcome))
        self._emit(c.PREDICTION.tag, record)

    def log_features(self, model: str, version: str | int, features: Mapping[str, Any]) -> None:
        """Add one prediction's inputs to the serving profile of ``model`` at ``version``.

        Only appends to a buffer: a background thread sketches the features and records a profile
        per (model, version) every ``MLOBS_PROFILE_INTERVAL`` seconds (default 60), and :meth:`close`
        (or closing the client) records the last one.  Memory stays bounded whatever the traffic
        (see :mod:`pipeline_sdk.drift.serving`).  Needs the ``drift`` extra.
        """
        key = self._feature_keys.get((model, version, type(version)))
        if key is None:
            key = (check_tag_value("model", model), _check_version(version))
            if len(self._feature_keys) < 4096:
                self._feature_keys[(model, version, type(version))] = key
        profiles = self._profiles or self._start_profiles()
        profiles.add(key, features)

    def _start_profiles(self) -> FeatureProfiles:
        from .drift.serving import FeatureProfiles  # noqa: PLC0415 - the optional drift extra

        with self._lock:
            if self._profiles is None:
                interval = self._profile_interval
                if interval is None:
                    interval = PROFILE_INTERVAL.get()
                    assert interval is not None  # it has a default
                self._profiles = FeatureProfiles(self._record_profile, interval)
            return self._profiles

    def _record_profile(self, key: tuple[str, str], profile: Profile) -> None:
        from .drift.records import profile_records  # noqa: PLC0415 - as above

        tags = {
            c.TAG_SERVICE: self.service,
            c.TAG_MODEL: key[0],
            c.TAG_MODEL_VERSION: key[1],
            c.TAG_REPLICA: self.replica,
        }
        records = profile_records(tags, profile)
        start = time.time_ns()
        for index, record in enumerate(records):
            if not self._emit(c.PROFILE.tag, record, start + index):
                raise RuntimeError("the profile stream's queue is full")

    @property
    def profile_stats(self) -> Any:
        """What :meth:`log_features` did (``drift.serving.ProfileStats``), or None before its first call."""
        return self._profiles.stats if self._profiles is not None else None

    def close(self) -> None:
        """Record the last serving profiles; later :meth:`log_features` calls start new ones."""
        profiles, self._profiles = self._profiles, None
        if profiles is not None:
            profiles.close()

    def host_closed(self) -> None:
        """The client is closing: record the last serving profiles first, then refuse events."""
        self.close()
        super().host_closed()

    def _emit(self, tag: str, record: Mapping[str, Any], time_ns: int | None = None) -> bool:
        with self._lock:
            return super()._emit(tag, record, time_ns)

    def _rebind(self, client: WriterHost) -> None:
        """Write through ``client`` from now on, event times still increasing (a middleware's new client)."""
        with self._lock:
            last_ns = self._last_ns
            EventWriter.__init__(self, client)
            self._last_ns = last_ns
