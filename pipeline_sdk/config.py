"""Typed settings read from the environment variables that the contract names.

Each setting is parsed once, and a malformed value fails loudly, naming the
variable and what it should look like.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from . import contract as c
from .redact import redact
from .system import parse_interval

T = TypeVar("T")


class SettingError(ValueError):
    """An environment variable holds a value that cannot be used."""


def _port(raw: str) -> int:
    if not raw.strip().isdigit() or not 1 <= int(raw) <= 65535:
        raise ValueError("must be a TCP port number from 1 to 65535")
    return int(raw)


def _positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("must be a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a finite number of seconds, 0 or more")
    return value


def _positive_int(raw: str) -> int:
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ValueError("must be a whole number, 1 or more")
    return int(raw)


LOG_LEVEL_NAMES = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ON_INVALID_CHOICES = ("raise", "drop")  # what an invalid recording call does: raise, or drop and count


def log_level(raw: str) -> int:
    """A logging level: one of LOG_LEVEL_NAMES (any case) or a whole number from 0."""
    text = raw.strip()
    if text.upper() in LOG_LEVEL_NAMES:
        return int(getattr(logging, text.upper()))
    if text.isdigit():
        return int(text)
    raise ValueError(f"must be a logging level: {', '.join(LOG_LEVEL_NAMES)} or a whole number from 0")


def on_invalid(raw: str) -> str:
    """One of ON_INVALID_CHOICES (any case)."""
    if raw.strip().lower() not in ON_INVALID_CHOICES:
        raise ValueError("must be 'raise' or 'drop'")
    return raw.strip().lower()


def termination_log(raw: str) -> str:
    """An absolute path, or "off" (any case)."""
    text = raw.strip()
    if text.lower() == "off":
        return "off"
    if not os.path.isabs(text):
        raise ValueError("must be an absolute path or 'off'")
    return text


def _text(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be blank")
    return raw.strip()


def _hidden(raw: str) -> str:
    return f"(hidden, {len(raw)} characters)"


@dataclass(frozen=True)
class EnvVar(Generic[T]):
    """One environment variable: its name, how to parse it and its default."""

    name: str
    parse: Callable[[str], T]
    default: T | None = None
    show: Callable[[str], str] = repr  # how an error message quotes a bad value (never a secret)

    def get(self, environ: Mapping[str, str] | None = None) -> T | None:
        env = os.environ if environ is None else environ
        raw = env.get(self.name)
        if raw is None or raw == "":
            return self.default
        try:
            return self.parse(raw)
        except ValueError as exc:
            raise SettingError(f"environment variable {self.name}={self.show(raw)}: {exc}") from None


FLUENTD_HOST = EnvVar(c.ENV_FLUENTD_HOST, _text)
FLUENTD_PORT = EnvVar(c.ENV_FLUENTD_PORT, _port, c.DEFAULT_FLUENTD_PORT)
HOME = EnvVar(c.ENV_HOME, lambda raw: Path(_text(raw)).expanduser())


def home_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The local store's directory: MLOBS_HOME, else ~/.mlobs (writer and reader alike)."""
    home = HOME.get(environ)
    return home if home is not None else Path("~/.mlobs").expanduser()


PIPELINE = EnvVar(c.ENV_PIPELINE, _text)
STEP = EnvVar(c.ENV_STEP, _text)
RUN_ID = EnvVar(c.ENV_RUN_ID, _text)
ATTEMPT = EnvVar(c.ENV_ATTEMPT, _text)
POD_NAME = EnvVar(c.ENV_POD_NAME, _text)
FLUENTD_SHARED_KEY = EnvVar(c.ENV_FLUENTD_SHARED_KEY, _text, show=_hidden)
USER_HASH_KEY = EnvVar(c.ENV_USER_HASH_KEY, _text, show=_hidden)
FLUSH_TIMEOUT = EnvVar(c.ENV_FLUSH_TIMEOUT, _positive_float, 10.0)
SPOOL_MAX_MB = EnvVar(c.ENV_SPOOL_MAX_MB, _positive_int, 512)
LOG_LEVEL = EnvVar(c.ENV_LOG_LEVEL, log_level, logging.INFO)
ON_INVALID = EnvVar(c.ENV_ON_INVALID, on_invalid, "raise")
TERMINATION_LOG = EnvVar(c.ENV_TERMINATION_LOG, termination_log)
SYSTEM_INTERVAL = EnvVar(c.ENV_SYSTEM_INTERVAL, parse_interval, c.DEFAULT_SYSTEM_INTERVAL)


def _http_url(raw: str) -> str:
    url = raw.strip().rstrip("/")
    if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1]) == 0:
        raise ValueError("must be an http:// or https:// URL, e.g. http://localhost:8086")
    return url


INFLUXDB_URL = EnvVar(c.ENV_INFLUXDB_URL, _http_url, show=lambda raw: repr(redact(raw)))
INFLUXDB_TOKEN = EnvVar(c.ENV_INFLUXDB_TOKEN, _text, show=_hidden)
INFLUXDB_ORG = EnvVar(c.ENV_INFLUXDB_ORG, _text, c.INFLUXDB_ORG)
INFLUXDB_BUCKET = EnvVar(c.ENV_INFLUXDB_BUCKET, _text, c.INFLUXDB_BUCKET)


def _profile_interval(raw: str) -> float:
    value = _positive_float(raw)
    if value == 0:
        raise ValueError("must be a number of seconds above 0")
    return value


PROFILE_INTERVAL = EnvVar(c.ENV_PROFILE_INTERVAL, _profile_interval, c.DEFAULT_PROFILE_INTERVAL)
PUSHGATEWAY_URL = EnvVar(c.ENV_PUSHGATEWAY_URL, _http_url, show=lambda raw: repr(redact(raw)))


@dataclass(frozen=True)
class Settings:
    """Everything the SDK reads from the environment, parsed and checked."""

    fluentd_host: str | None
    fluentd_port: int
    home: Path
    flush_timeout: float
    spool_max_bytes: int
    fluentd_shared_key: str | None = field(default=None, repr=False)  # Forward handshake key; None: none

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        host = FLUENTD_HOST.get(environ)
        env = os.environ if environ is None else environ
        if host is None and env.get(c.ENV_FLUENTD_PORT):
            raise SettingError(
                f"environment variable {c.ENV_FLUENTD_PORT} is set but {c.ENV_FLUENTD_HOST} is not: "
                f"set {c.ENV_FLUENTD_HOST} too, or unset both to use the local store"
            )
        port = FLUENTD_PORT.get(environ)
        timeout = FLUSH_TIMEOUT.get(environ)
        spool_mb = SPOOL_MAX_MB.get(environ)
        assert port is not None and timeout is not None and spool_mb is not None  # defaults
        return cls(
            fluentd_host=host,
            fluentd_port=port,
            home=home_dir(environ),
            flush_timeout=timeout,
            spool_max_bytes=spool_mb * 1024 * 1024,
            fluentd_shared_key=FLUENTD_SHARED_KEY.get(environ),
        )


@dataclass(frozen=True)
class ReadSettings:
    """Where the read API reads from: InfluxDB when MLOBS_INFLUXDB_URL is set, else the local store."""

    influxdb_url: str | None = field(repr=False)  # may carry credentials: never in a repr
    influxdb_token: str | None = field(repr=False)
    influxdb_org: str
    influxdb_bucket: str
    home: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ReadSettings:
        url = INFLUXDB_URL.get(environ)
        token = INFLUXDB_TOKEN.get(environ)
        if url is not None and token is None:
            raise SettingError(
                f"environment variable {c.ENV_INFLUXDB_URL} is set but {c.ENV_INFLUXDB_TOKEN} is not: "
                "set the API token too (kubectl -n mlobs get secret mlobs-influxdb-auth "
                "-o jsonpath='{.data.admin-token}' | base64 -d), or unset both to read the local store"
            )
        org, bucket = INFLUXDB_ORG.get(environ), INFLUXDB_BUCKET.get(environ)
        assert org is not None and bucket is not None  # defaults
        return cls(
            influxdb_url=url,
            influxdb_token=token,
            influxdb_org=org,
            influxdb_bucket=bucket,
            home=home_dir(environ),
        )
