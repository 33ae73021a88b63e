"""ASGI middleware for model APIs: the Prometheus HTTP metrics and one ``api_request`` event per request.

:class:`MLObsMiddleware` is a plain ASGI middleware for Starlette and FastAPI apps
(neither is imported).  Per HTTP request it

* counts ``http_requests_total{handler, method, status}`` and observes
  ``http_request_duration_seconds{handler, method}``, the names and labels
  prometheus-fastapi-instrumentator made common.  ``handler`` is the route
  template (``/predict/{model}``, see :mod:`pipeline_sdk.routes`), never the raw path,
  and ``status`` the class (``2xx``); an unknown HTTP method is counted as ``OTHER``,
  so neither label can be grown by a client;
* records one ``api_request`` event with the exact status, the duration and a keyed
  hash of the user id taken from a request header (see
  :class:`~pipeline_sdk.service.ServiceRecorder`).

Both are recorded just before the end of the response is handed to the server
(its last body message, or its head when it has no body), so by the time a
client has read the response it is counted.  Nothing in the request path does
I/O, but for the new client of a request served after the app's lifespan closed
the middleware's own.  ``/metrics`` is prometheus_client's own ASGI exposition:
OpenMetrics when the scraper's ``Accept`` asks for it, gzip when its
``Accept-Encoding`` does, ``name[]`` filters.

The middleware wraps an app (``MLObsMiddleware(app, ...)``) or is added to one
(``app.add_middleware(MLObsMiddleware, ...)``, FastAPI's usual form), and both
behave the same: the app's routes are found under the middleware Starlette puts
in between, FastAPI's included routers are opened with their prefixes, and the
app's lifespan closes the client the middleware made.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from . import contract as c
from .client import Client
from .config import SettingError
from .http_metrics import http_metrics
from .routes import (
    AFTER_DISPATCH,
    HTTP_METHODS,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    dispatched_template,
    known_routes,
    route_template,
)
from .service import ServiceRecorder, status_class
from .validation import check_identity

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("mlobs")

OTHER_METHOD = c.PROM_HTTP_OTHER_METHOD  # method label of a request whose method is not in HTTP_METHODS
_FINAL_SEND = "http.response.pathsend"  # an ASGI extension message that completes a response
_MAX_LAYERS = 64  # middleware layers followed down to the app's routes
# what the app sends when its lifespan ends: the owned client is closed then
_LIFESPAN_ENDS = frozenset(
    {"lifespan.startup.failed", "lifespan.shutdown.complete", "lifespan.shutdown.failed"}
)


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
        self._exposition = prometheus_client.make_asgi_app(self.registry)
        self._metrics = http_metrics(self.registry)
        self._start_series()
        self._warned: set[str] = set()
        self._owns_client = client is None
        self._closed = False  # whether close() closed the client the middleware made
        self._reopen_lock = threading.Lock()
        self._reopen_warned = False
        if client is None:
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
        for handler, method in known_routes(getattr(self._routed, "routes", None) or ()):
            self._metrics.series(handler, method)

    def _reopen(self) -> None:
        """A new client from the environment, in place of the one :meth:`close` closed."""
        with self._reopen_lock:
            if not self._closed:
                return
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
            await self._serve_metrics(scope, receive, send)
            return
        start = time.perf_counter()
        routes = getattr(self._routed, "routes", None)
        # None: not known before dispatch; read from scope["route"] when the response ends
        handler = None if routes is None else route_template(routes, scope)
        if handler is None and routes is not None:
            handler = c.PROM_HTTP_UNMATCHED_HANDLER
        elif handler == AFTER_DISPATCH:
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
            handler = dispatched_template(scope) or c.PROM_HTTP_UNMATCHED_HANDLER
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

    async def _serve_metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            headers = [(b"allow", b"GET, HEAD"), (b"content-length", b"0")]
            await send({"type": "http.response.start", "status": 405, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        await self._exposition(scope, receive, _sized(send, head=scope["method"] == "HEAD"))


def _sized(send: Send, *, head: bool) -> Send:
    """``send`` that gives the response a Content-Length (prometheus_client's ASGI app sets none) and
    lowercased header names, and for a HEAD request sends the head alone."""
    start: Message = {}
    parts: list[bytes] = []

    async def send_sized(message: Message) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
            return
        parts.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(parts)
        # ASGI wants header names lowercased; prometheus_client sends "Content-Type"
        headers = [(bytes(name).lower(), value) for name, value in start.get("headers", ())]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else body})

    return send_sized
