"""Which route template a request goes to, as the app's Starlette router would dispatch it.

The middleware labels every request with its route's template (``/predict/{model}``),
never the raw path, so the ``handler`` label of the HTTP metrics stays bounded.  The
routes are matched before dispatch, as the router does; mounts and hosts are followed into
their own routes, a mount's template going in front, and FastAPI's included routers are
opened with their prefixes.  Neither Starlette nor FastAPI is imported.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"})
AFTER_DISPATCH = ""  # a route matched, but its template is known only from scope["route"] after dispatch
_MOUNT_TAIL = "/{path}"  # what Starlette's Mount appends to its own path template


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


def route_template(routes: Iterable[Any], scope: Scope, prefix: str = "") -> str | None:
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
            return route_template(inner, {**scope, **child_scope}, prefix + own)
        # a mounted app without routes (static files, another ASGI app): its mount is the template
        return prefix + path_format if isinstance(path_format, str) else AFTER_DISPATCH
    # A route that keeps its template to itself (FastAPI's included routers before
    # 0.137.2) is read from scope["route"] once it has dispatched.
    return prefix + path_format if isinstance(path_format, str) else AFTER_DISPATCH


def dispatched_template(scope: Scope) -> str | None:
    """The template of the route the app itself put in ``scope["route"]`` (Starlette, FastAPI)."""
    route = scope.get("route")
    for attr in ("path_format", "path"):
        value = getattr(route, attr, None)
        if isinstance(value, str):
            return value
    return None


def known_routes(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Every (template, method) the routes declare, mounts and included routers followed."""
    for route in _opened(routes):
        path_format = getattr(route, "path_format", None)
        own = path_format if isinstance(path_format, str) else ""
        inner = getattr(route, "routes", None)
        if inner is not None:  # a Mount or a Host
            yield from known_routes(inner, prefix + own.removesuffix(_MOUNT_TAIL))
        elif own:
            for method in sorted(getattr(route, "methods", None) or ()):  # None: any method, none known
                if method in HTTP_METHODS:
                    yield prefix + own, method
