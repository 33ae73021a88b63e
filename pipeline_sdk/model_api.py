"""Model-API instrumentation: request and prediction events, and the Prometheus HTTP metrics.

:class:`ServiceRecorder` is the model API's counterpart of a run's recorder: bound
to a client and a service name, it writes one ``api_request`` event per request
and one ``prediction`` event per logged score or outcome, through the same
non-blocking queue hand-off as every other event.

:class:`MLObsMiddleware` is a plain ASGI middleware for Starlette and FastAPI apps
(neither is imported).  Per HTTP request it

* counts ``http_requests_total{handler, method, status}`` and observes
  ``http_request_duration_seconds{handler, method}``, the names and labels
  prometheus-fastapi-instrumentator made common.  ``handler`` is the route
  template (``/predict/{model}``), never the raw path, and ``status`` the class
  (``2xx``); an unknown HTTP method is counted as ``OTHER``, so neither label can
  be grown by a client;
* records one ``api_request`` event with the exact status, the duration and a
  keyed hash of the user id taken from a request header (see :class:`ServiceRecorder`).

Both are recorded just before the end of the response is handed to the server
(its last body message, or its head when it has no body), so by the time a
client has read the response it is counted.  Nothing in the request path does
I/O, but for the new client of a request served after the app's lifespan closed
the middleware's own.

The middleware wraps an app (``MLObsMiddleware(app, ...)``) or is added to one
(``app.add_middleware(MLObsMiddleware, ...)``, FastAPI's usual form), and both
behave the same: the app's routes are found under the middleware Starlette puts
in between, FastAPI's included routers are opened with their prefixes, and the
app's lifespan closes the client the middleware made.

The module is longer than the SDK's others (about 680 lines) and kept whole: the
recorder, its user hash, route matching and the middleware are one concern, the
model API's events, and change together.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import sys
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from . import contract as c
from .config import USER_HASH_KEY, SettingError
from .recorder import EventWriter
from .validation import check_identity, check_index, check_number, check_tag_value, check_text, escape_text

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from .client import Client

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("mlobs")

USER_HASH_HEX = 16  # hex characters kept of the HMAC-SHA256 (or salted SHA-256) of a user id (64 bits)
USER_HASH_KEY_MIN = 16  # bytes of a user-hash key, at least (128 bits: not guessable)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"})
OTHER_METHOD = c.PROM_HTTP_OTHER_METHOD  # method label of a request whose method is not in HTTP_METHODS
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")  # created at 0 for every known handler and method
_MOUNT_TAIL = "/{path}"  # what Starlette's Mount appends to its own path template
_FINAL_SEND = "http.response.pathsend"  # an ASGI extension message that completes a response
_AFTER_DISPATCH = ""  # a route matched, but its template is known only from scope["route"] after dispatch
_MAX_LAYERS = 64  # middleware layers followed down to the app's routes
# what the app sends when its lifespan ends: the owned client is closed then
_LIFESPAN_ENDS = frozenset(
    {"lifespan.startup.failed", "lifespan.shutdown.complete", "lifespan.shutdown.failed"}
)


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
        client: Client,
        service: str,
        *,
        salt: str | bytes | None = None,
        key: str | bytes | None = None,
    ) -> None:
        self.service = check_identity("service", service)
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

    def _emit(
        self, tag: str, record: Mapping[str, Any], time_ns: int | None = None, *, exact: bool = False
    ) -> bool:
        with self._lock:
            return super()._emit(tag, record, time_ns, exact=exact)

    def _rebind(self, client: Client) -> None:
        """Write through ``client`` from now on, event times still increasing (a middleware's new client)."""
        with self._lock:
            last_ns = self._last_ns
            EventWriter.__init__(self, client)
            self._last_ns = last_ns


# ---- route templates --------------------------------------------------------------------------


def _opened(routes: Iterable[Any]) -> Iterator[Any]:
    """``routes``, each of FastAPI's included routers opened into its own routes, in dispatch order.

    FastAPI 0.137 and later keep an included router whole in ``app.routes``, its
    include prefix to itself; its public ``fastapi.routing.iter_route_contexts``
    (0.137.2) gives its routes with the prefixes in their templates.  FastAPI is
    looked up only if the process has imported it.
    """
    contexts = getattr(sys.modules.get("fastapi.routing"), "iter_route_contexts", None)
    for route in routes:
        plain = isinstance(getattr(route, "path_format", None), str) or hasattr(route, "routes")
        if contexts is None or plain:
            yield route
        else:
            yield from contexts([route])


def _route_template(routes: Iterable[Any], scope: Scope, prefix: str = "") -> str | None:
    """The template of the route a Starlette router would dispatch ``scope`` to, or None.

    As the router does: the first full match wins, else the first partial one (a
    known path with another method, which gets a 405).  Mounts and hosts are
    followed into their own routes, a mount's path template going in front.
    """
    partial: tuple[Any, Scope] | None = None
    for route in _opened(routes):
        match, child_scope = route.matches(scope)
        if match.name == "FULL":
            return _template_of(route, scope, child_scope, prefix)
        if match.name == "PARTIAL" and partial is None:
            partial = (route, child_scope)
    if partial is not None:
        return _template_of(partial[0], scope, partial[1], prefix)
    return None


def _template_of(route: Any, scope: Scope, child_scope: Scope, prefix: str) -> str | None:
    path_format = getattr(route, "path_format", None)
    if not isinstance(path_format, str):
        path_format = getattr(route, "path", None)
    if hasattr(route, "routes"):  # a Mount or a Host
        own = path_format.removesuffix(_MOUNT_TAIL) if isinstance(path_format, str) else ""
        inner = route.routes
        if inner:
            return _route_template(inner, {**scope, **child_scope}, prefix + own)
        # a mounted app without routes (static files, another ASGI app): its mount is the template
        return prefix + path_format if isinstance(path_format, str) else _AFTER_DISPATCH
    # A route that keeps its template to itself (FastAPI's included routers before
    # 0.137.2) is read from scope["route"] once it has dispatched.
    return prefix + path_format if isinstance(path_format, str) else _AFTER_DISPATCH


def _dispatched_template(scope: Scope) -> str | None:
    """The template of the route the app itself put in ``scope["route"]`` (Starlette, FastAPI)."""
    route = scope.get("route")
    for attr in ("path_format", "path"):
        value = getattr(route, attr, None)
        if isinstance(value, str):
            return value
    return None


def _known_routes(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Every (template, method) the routes declare, mounts and included routers followed."""
    for route in _opened(routes):
        path_format = getattr(route, "path_format", None)
        own = path_format if isinstance(path_format, str) else ""
        inner = getattr(route, "routes", None)
        if inner is not None:  # a Mount or a Host
            yield from _known_routes(inner, prefix + own.removesuffix(_MOUNT_TAIL))
        elif own:
            for method in sorted(getattr(route, "methods", None) or ()):  # None: any method, none known
                if method in HTTP_METHODS:
                    yield prefix + own, method


def _complete_at_start(scope: Scope, start: Message) -> bool:
    """Whether a response has no body, so the client has it all once its head is sent."""
    status: int = start["status"]
    if scope["method"] == "HEAD" or status in (204, 304) or status < 200:
        return True
    for name, value in start.get("headers", ()):
        if name.lower() == b"content-length":
            return bool(value.strip() == b"0")
    return False


def _route_path(scope: Scope) -> str:
    """The request path below the app's root path."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


# ---- Prometheus -------------------------------------------------------------------------------


class _HttpMetrics:
    """The two HTTP metrics in one registry, and their labelled series by label values."""

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import (  # noqa: PLC0415 - 60 ms of imports that only model APIs pay
            Counter,
            Histogram,
        )

        labels = (c.PROM_LABEL_HANDLER, c.PROM_LABEL_METHOD)
        self.requests = Counter(
            c.PROM_HTTP_REQUESTS,
            "HTTP requests by route template, method and status class",
            (*labels, c.PROM_LABEL_STATUS),
            registry=registry,
        )
        self.duration = Histogram(
            c.PROM_HTTP_DURATION,
            "Time from request to the end of the response, by route template and method",
            labels,
            registry=registry,
        )
        self._counters: dict[tuple[str, str, str], Counter] = {}
        self._histograms: dict[tuple[str, str], Histogram] = {}

    def series(self, handler: str, method: str) -> Histogram:
        """The duration series of a handler and method; its request counters start at 0 with it."""
        histogram = self._histograms.get((handler, method))
        if histogram is None:
            for status in STATUS_CLASSES:  # a series that first appears at 1 never shows an increase
                self._counter(handler, method, status)
            histogram = self._histograms[handler, method] = self.duration.labels(handler, method)
        return histogram

    def _counter(self, handler: str, method: str, status: str) -> Counter:
        counter = self._counters.get((handler, method, status))
        if counter is None:
            counter = self._counters[handler, method, status] = self.requests.labels(handler, method, status)
        return counter

    def observe(self, handler: str, method: str, status: str, seconds: float) -> None:
        self.series(handler, method).observe(seconds)
        self._counter(handler, method, status).inc()


_metrics_lock = threading.Lock()
# One pair of metrics per registry: a second middleware on the same registry (another app
# in the process, or the same app built again) shares them instead of failing to register.
_metrics_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, _HttpMetrics] = weakref.WeakKeyDictionary()


def _http_metrics(registry: CollectorRegistry) -> _HttpMetrics:
    with _metrics_lock:
        metrics = _metrics_by_registry.get(registry)
        if metrics is None:
            metrics = _metrics_by_registry[registry] = _HttpMetrics(registry)
        return metrics


# ---- the middleware -----------------------------------------------------------------------------


def _routes_holder(app: ASGIApp) -> Any | None:
    """What holds the routes under ``app``: the app itself, or, through the middleware in between
    (each keeps the next in ``.app``), the router.  None when no layer shows its routes.

    Raises ValueError when an MLObsMiddleware is already on the way, or added to the app.
    """
    layer: Any = app
    for _ in range(_MAX_LAYERS):
        added = (getattr(m, "cls", None) for m in getattr(layer, "user_middleware", None) or ())
        if isinstance(layer, MLObsMiddleware) or any(
            isinstance(cls, type) and issubclass(cls, MLObsMiddleware) for cls in added
        ):
            if isinstance(layer, MLObsMiddleware) and layer._owns_client:
                # Starlette drops the stack it was building and builds it again at the next call:
                # its inner middleware's client must not be left running (it reopens if used again).
                layer.close(0)
            raise ValueError(
                f"app={app!r} is already instrumented by an MLObsMiddleware: each request would be "
                "counted twice (add_middleware(MLObsMiddleware, ...) called twice, or an instrumented "
                "app wrapped again); add it once"
            )
        if getattr(layer, "routes", None) is not None:
            return layer
        layer = getattr(layer, "app", None)
        if layer is None or not callable(layer):
            return None
    return None


class MLObsMiddleware:
    """ASGI middleware: Prometheus HTTP metrics and one ``api_request`` event per request.

    >>> app = MLObsMiddleware(Starlette(routes=[...]), service="churn-api")
    >>> app = FastAPI(); app.add_middleware(MLObsMiddleware, service="churn-api")

    Both forms count and record the same.  In the second, Starlette builds the
    middleware at the app's first ASGI call (under uvicorn, its lifespan startup)
    around the app's inner stack; the routes are found through it.

    ``client`` is the SDK client the events go through; without one the middleware
    makes a :class:`~pipeline_sdk.client.Client` from the environment and owns it:
    the end of the app's lifespan (shutdown, or a failed startup) or :meth:`close`
    flushes and closes it (an interpreter exit flushes it too, bounded by
    ``MLOBS_FLUSH_TIMEOUT``), and a later lifespan startup or request opens a new
    one, so an app served again (a test client entered once per test) still
    records.  A client passed in is the caller's to close.  ``registry`` defaults
    to prometheus_client's global ``REGISTRY``.  The user id comes from the
    ``user_header`` request header (None: no user), and is stored hashed with
    ``key`` (default ``MLOBS_USER_HASH_KEY``) and ``salt`` (see :class:`ServiceRecorder`).
    ``metrics_path`` is served by the middleware in the Prometheus text format and
    not counted (None: not served).  Websocket scopes pass through untouched, and
    lifespan messages pass through as they are.

    ``handler`` is the template of the route the app's router matches: the routes
    are those of the app, or of the router under the middleware in between
    (followed by their ``app`` attribute), matched before dispatch, mounts and
    FastAPI's included routers included with their prefixes.  Every declared route
    and method has its series at 0 from the start (the lifespan startup in the
    second form; with the server's lifespan off, the first request).  An app that
    exposes no routes (a plain ASGI callable around it), or a route that keeps its
    template to itself, is read after dispatch from ``scope["route"]``, which
    Starlette and FastAPI set; that route's own template then lacks any mount or
    include prefix.  A request no route matches is counted as handler ``"none"``.

    A second MLObsMiddleware on the same app (added twice, or an instrumented app
    wrapped again) is a ValueError when it is built.  An instrumented app mounted
    in another instrumented app is not: each counts what it routes.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        service: str,
        client: Client | None = None,
        registry: CollectorRegistry | None = None,
        user_header: str | None = "x-user-id",
        metrics_path: str | None = "/metrics",
        salt: str | bytes | None = None,
        key: str | bytes | None = None,
    ) -> None:
        import prometheus_client  # noqa: PLC0415 - 60 ms of imports that only model APIs pay

        check_identity("service", service)
        if user_header is not None and (type(user_header) is not str or not user_header):
            raise ValueError(f"user_header={user_header!r} is invalid: must be a header name or None")
        if metrics_path is not None and (type(metrics_path) is not str or not metrics_path.startswith("/")):
            raise ValueError(f"metrics_path={metrics_path!r} is invalid: must start with '/' (or be None)")
        self.app = app
        self._routed = _routes_holder(app)
        self.registry = registry if registry is not None else prometheus_client.REGISTRY
        self.metrics_path = metrics_path
        self._user_header = user_header.lower().encode("latin-1") if user_header is not None else None
        self._generate_latest = prometheus_client.generate_latest
        self._content_type = prometheus_client.CONTENT_TYPE_LATEST.encode("latin-1")
        self._metrics = _http_metrics(self.registry)
        self._start_series()
        self._warned: set[str] = set()
        self._owns_client = client is None
        self._closed = False  # whether close() closed the client the middleware made
        self._reopen_lock = threading.Lock()
        self._reopen_warned = False
        if client is None:
            from .client import Client  # noqa: PLC0415 - client.py imports this module

            client = Client()
        self.client = client
        try:
            self.recorder = ServiceRecorder(client, service, salt=salt, key=key)
        except (TypeError, ValueError):
            if self._owns_client:
                client.close(0)
            raise

    def __repr__(self) -> str:
        return f"<{type(self).__name__} service={self.recorder.service} app={self.app!r}>"

    def close(self, timeout: float | None = None) -> bool:
        """Flush the events so far; close the client if the middleware made it. False on timeout."""
        if self._owns_client:
            self._closed = True
            return self.client.close(timeout)
        return self.client.flush(timeout)

    def _start_series(self) -> None:
        """Every declared route and method at 0 (idempotent: routes added since get theirs)."""
        for handler, method in _known_routes(getattr(self._routed, "routes", None) or ()):
            self._metrics.series(handler, method)

    def _reopen(self) -> None:
        """A new client from the environment, in place of the one :meth:`close` closed."""
        with self._reopen_lock:
            if not self._closed:
                return
            from .client import Client  # noqa: PLC0415 - client.py imports this module

            try:
                client = Client()
            except SettingError as exc:  # the environment changed since: never fail the request
                if not self._reopen_warned:  # once: it is tried again at each request
                    self._reopen_warned = True
                    log.warning("mlobs: requests are counted but not recorded: no client: %s", exc)
                return
            self._reopen_warned = False
            self.recorder._rebind(client)
            self.client = client
            self._closed = False

    def _watched_lifespan(self, send: Send) -> Send:
        async def send_watched(message: Message) -> None:
            kind = message["type"]
            if kind == "lifespan.startup.complete":
                if self._closed:
                    self._reopen()
                self._start_series()  # and routes the app's startup added
            elif kind in _LIFESPAN_ENDS and self._owns_client:
                self.close()  # bounded by MLOBS_FLUSH_TIMEOUT; the server is no longer serving
            await send(message)

        return send_watched

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._watched_lifespan(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.metrics_path is not None and _route_path(scope) == self.metrics_path:
            await self._serve_metrics(scope, send)
            return
        start = time.perf_counter()
        routes = getattr(self._routed, "routes", None)
        # None: not known before dispatch; read from scope["route"] when the response ends
        handler = None if routes is None else _route_template(routes, scope)
        if handler is None and routes is not None:
            handler = c.PROM_HTTP_UNMATCHED_HANDLER
        elif handler == _AFTER_DISPATCH:
            handler = None
        status = 0
        done = False

        def finish(status_code: int) -> None:
            nonlocal done
            done = True
            self._observe(scope, handler, status_code, time.perf_counter() - start)

        async def send_observed(message: Message) -> None:
            nonlocal status
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
                if not done and _complete_at_start(scope, message):
                    finish(status)
            elif not done and (
                (kind == "http.response.body" and not message.get("more_body", False)) or kind == _FINAL_SEND
            ):
                finish(status)
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        except Exception:
            if not done:
                finish(500)
            raise
        finally:
            if not done:  # returned or cancelled before the response was complete
                finish(status or 500)

    def _observe(self, scope: Scope, handler: str | None, status_code: int, seconds: float) -> None:
        if self._closed:  # a request after the lifespan's shutdown (or close()), with no startup since
            self._reopen()
        recording = not self._closed  # still closed: no client could be made (warned in _reopen)
        if handler is None:
            handler = _dispatched_template(scope) or c.PROM_HTTP_UNMATCHED_HANDLER
        method = scope["method"]
        if method not in HTTP_METHODS:
            method = OTHER_METHOD
        self._metrics.observe(handler, method, status_class(status_code), seconds)
        user = None
        if self._user_header is not None:
            for name, value in scope["headers"]:
                if name == self._user_header:
                    user = value.decode("latin-1") or None
                    break
        if not recording:
            return
        try:
            self.recorder.log_request(handler, method, status_code, seconds * 1000.0, user)
        except (TypeError, ValueError) as exc:  # a route template or status the store cannot take
            if handler not in self._warned:  # once per handler: handlers are few, requests many
                self._warned.add(handler)
                log.warning("mlobs: requests to %s are counted but not recorded: %s", handler, exc)

    async def _serve_metrics(self, scope: Scope, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            headers = [(b"allow", b"GET, HEAD"), (b"content-length", b"0")]
            await send({"type": "http.response.start", "status": 405, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        body = self._generate_latest(self.registry)
        headers = [(b"content-type", self._content_type), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
