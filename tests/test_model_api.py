"""Model-API instrumentation, for real: Starlette apps behind uvicorn, urllib requests, the local store.

Every request goes over a socket to a uvicorn server in a thread; the Prometheus
series are read from a registry of the test's own, and the events back from the
local store the client delivered them to.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import hmac
import logging
import math
import re
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route, Router

from pipeline_sdk import Client, MLObsMiddleware, ServiceRecorder, service
from pipeline_sdk import contract as c
from pipeline_sdk.config import SettingError
from pipeline_sdk.local_store import DB_NAME, LocalStore, Point
from pipeline_sdk.validation import unescape_text
from tests.conftest import wait_for

SERVICE = "churn-api"
_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ---- a real server and real requests ----------------------------------------------------------


class Server:
    """uvicorn serving ``app`` on 127.0.0.1, port 0, in a thread of its own."""

    def __init__(self, app: Any, lifespan: str = "off") -> None:
        # h11, whatever else is installed: httptools answers 400 to a method it does not know
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, lifespan=lifespan, log_config=None, access_log=False, http="h11"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), 10, "uvicorn to start")
        assert self.server.started, "uvicorn did not start"
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        assert not self.thread.is_alive(), "uvicorn did not stop"


@contextlib.contextmanager
def servers() -> Iterator[Callable[..., Server]]:
    """Start servers on demand; every one still running is stopped at the end."""
    started: list[Server] = []

    def start(app: Any, lifespan: str = "off") -> Server:
        server = Server(app, lifespan)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            if server.thread.is_alive():
                server.stop()


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    with servers() as start:
        yield start


def fetch(
    url: str, method: str = "GET", user: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    """Status, body and headers of one request (an error status is returned, not raised)."""
    headers = {**(headers or {}), **({"x-user-id": user} if user is not None else {})}
    data = b"{}" if method in ("POST", "PUT") else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with _no_proxy.open(req, timeout=10) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read(), dict(err.headers)


@pytest.fixture
def client(home: Path) -> Iterator[Client]:
    with Client() as cl:
        yield cl


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def stored(client: Client, home: Path, stream: c.Stream) -> list[Point]:
    assert client.flush(10), "events not delivered"
    return list(LocalStore(home / DB_NAME).points(measurement=stream.measurement))


def counted(registry: CollectorRegistry) -> dict[tuple[str, str, str], float]:
    """Every non-zero series of http_requests_total: (handler, method, status) -> count."""
    return {
        (
            s.labels[c.PROM_LABEL_HANDLER],
            s.labels[c.PROM_LABEL_METHOD],
            s.labels[c.PROM_LABEL_STATUS],
        ): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == c.PROM_HTTP_REQUESTS and s.value
    }


def durations(registry: CollectorRegistry, handler: str, method: str) -> tuple[float | None, float | None]:
    """Count and sum of the duration histogram of one handler and method."""
    labels = {c.PROM_LABEL_HANDLER: handler, c.PROM_LABEL_METHOD: method}
    return (
        registry.get_sample_value(f"{c.PROM_HTTP_DURATION}_count", labels),
        registry.get_sample_value(f"{c.PROM_HTTP_DURATION}_sum", labels),
    )


def request_tags(endpoint: str, method: str, status: str) -> dict[str, str]:
    return {c.TAG_SERVICE: SERVICE, c.TAG_ENDPOINT: endpoint, c.TAG_METHOD: method, c.TAG_HTTP_STATUS: status}


# ---- the app under test -------------------------------------------------------------------------


async def predict(request: Request) -> Response:
    return JSONResponse({"model": request.path_params["model"]})


async def item(request: Request) -> Response:
    return Response(status_code=204 if request.method == "DELETE" else 200)


async def slow(request: Request) -> Response:
    await asyncio.sleep(0.05)  # what the duration must cover
    return PlainTextResponse("done")


async def boom(request: Request) -> Response:
    raise RuntimeError("model exploded")


async def health(request: Request) -> Response:
    return PlainTextResponse(f"ok {request.path_params['tenant']}")


def make_app(**kwargs: Any) -> Starlette:
    return Starlette(
        routes=[
            Route("/predict/{model}", predict, methods=["POST"]),
            Route("/items/{item_id:int}", item, methods=["GET", "DELETE"]),
            Route("/slow", slow),
            Route("/boom", boom),
            Mount("/v1", routes=[Route("/score/{model}", predict, methods=["POST"])]),
            Mount("/tenants/{tenant}", routes=[Route("/health", health)]),
        ],
        **kwargs,
    )


def instrument(app: Any, client: Client, registry: CollectorRegistry, **kwargs: Any) -> MLObsMiddleware:
    return MLObsMiddleware(app, service=SERVICE, client=client, registry=registry, **kwargs)


# ---- handlers: route templates, never raw paths -----------------------------------------------


def test_two_raw_paths_of_one_route_give_one_handler(
    serve: Callable[..., Server], client: Client, registry: CollectorRegistry, home: Path
) -> None:
    url = serve(instrument(make_app(), client, registry)).url
    assert fetch(f"{url}/predict/churn")[:2] == (405, b"Method Not Allowed")
    assert fetch(f"{url}/predict/churn", "POST")[:2] == (200, b'{"model":"churn"}')
    assert fetch(f"{url}/predict/fraud", "POST")[:2] == (200, b'{"model":"fraud"}')

    assert counted(registry) == {
        ("/predict/{model}", "POST", "2xx"): 2.0,
        ("/predict/{model}", "GET", "4xx"): 1.0,
    }
    assert durations(registry, "/predict/{model}", "POST")[0] == 2.0
    handlers = {
        s.labels[c.PROM_LABEL_HANDLER] for family in registry.collect() for s in family.samples if s.labels
    }
    assert not {h for h in handlers if "churn" in h or "fraud" in h}, handlers

    points = stored(client, home, c.API_REQUEST)
    assert [p.tags for p in points] == [
        request_tags("/predict/{model}", "GET", "4xx"),
        request_tags("/predict/{model}", "POST", "2xx"),
        request_tags("/predict/{model}", "POST", "2xx"),
    ]
    assert [p.fields[c.FIELD_STATUS_CODE] for p in points] == [405, 200, 200]
    for p in points:
        assert set(p.fields) == {c.FIELD_DURATION_MS, c.FIELD_STATUS_CODE}, "no user header, no user field"
        assert type(p.fields[c.FIELD_DURATION_MS]) is float and p.fields[c.FIELD_DURATION_MS] > 0


def test_mounted_routes_carry_the_mount_template(
    serve: Callable[..., Server], client: Client, registry: CollectorRegistry, home: Path
) -> None:
    url = serve(instrument(make_app(), client, registry)).url
    assert fetch(f"{url}/v1/score/a", "POST")[0] == 200
    assert fetch(f"{url}/v1/score/b", "POST")[0] == 200
    assert fetch(f"{url}/tenants/acme/health")[:2] == (200, b"ok acme")
    assert fetch(f"{url}/tenants/globex/health")[:2] == (200, b"ok globex")
    assert fetch(f"{url}/v1/nothing-here")[0] == 404
    assert counted(registry) == {
        ("/v1/score/{model}", "POST", "2xx"): 2.0,
        ("/tenants/{tenant}/health", "GET", "2xx"): 2.0,
        (c.PROM_HTTP_UNMATCHED_HANDLER, "GET", "4xx"): 1.0,
    }
    assert [p.tags[c.TAG_ENDPOINT] for p in stored(client, home, c.API_REQUEST)] == [
        "/v1/score/{model}",
        "/v1/score/{model}",
        "/tenants/{tenant}/health",
        "/tenants/{tenant}/health",
        c.PROM_HTTP_UNMATCHED_HANDLER,
    ]


def test_an_unmatched_path_is_handler_none(
    serve: Callable[..., Server], client: Client, registry: CollectorRegistry, home: Path
) -> None:
    url = serve(instrument(make_app(), client, registry)).url
    assert fetch(f"{url}/nope/123")[0] == 404
    assert fetch(f"{url}/nope/456")[0] == 404
    assert fetch(f"{url}/items/not-an-int")[0] == 404  # the int convertor does not match either
    assert counted(registry) == {(c.PROM_HTTP_UNMATCHED_HANDLER, "GET", "4xx"): 3.0}
    points = stored(client, home, c.API_REQUEST)
    assert [p.tags for p in points] == [request_tags(c.PROM_HTTP_UNMATCHED_HANDLER, "GET", "4xx")] * 3
    assert [p.fields[c.FIELD_STATUS_CODE] for p in points] == [404, 404, 404]


def test_handler_from_scope_route_when_the_app_hides_its_routes(
    serve: Callable[..., Server], client: Client, registry: CollectorRegistry, home: Path
) -> None:
    inner = make_app()

    async def wrapper(scope: Any, receive: Any, send: Any) -> None:  # no .routes: read after dispatch
        await inner(scope, receive, send)

    url = serve(instrument(wrapper, client, registry)).url
    assert fetch(f"{url}/items/1")[0] == 200
    assert fetch(f"{url}/items/2", "DELETE")[0] == 204
    assert fetch(f"{url}/items/3", "DELETE")[0] == 204
    assert fetch(f"{url}/nope")[0] == 404
    assert counted(registry) == {
        ("/items/{item_id}", "GET", "2xx"): 1.0,
        ("/items/{item_id}", "DELETE", "2xx"): 2.0,
        (c.PROM_HTTP_UNMATCHED_HANDLER, "GET", "4xx"): 1.0,
    }
    assert [p.fields[c.FIELD_STATUS_CODE] for p in stored(client, home, c.API_REQUEST)] == [
        200,
        204,
        204,
        404,
    ]


class Included(BaseRoute):
    """A route that keeps its template to itself and dispatches to routes of its own (as FastAPI's
    included routers do, where no ``iter_route_contexts`` opens them): the template is known only
    from ``scope["route"]`` after dispatch."""

    def __init__(self, routes: list[BaseRoute]) -> None:
        self.router = Router(routes=routes)

    def matches(self, scope: Any) -> tuple[Match, dict[str, Any]]:
        found = [route.matches(scope)[0] for route in self.router.routes]
        return max(found, key=lambda m: m.value, default=Match.NONE), {}

    async def handle(self, scope: Any, receive: Any, send: Any) -> None:
        await self.router(scope, receive, send)


def test_a_route_without_a_template_of_its_own_is_read_after_dispatch(
    serve: Callable[..., Server], client: Client, registry: CollectorRegistry, home: Path
) -> None:
    app = Starlette(routes=[Included([Route("/hidden/{key}", item)]), Route("/plain", item)])
    url = serve(instrument(app, client, registry)).url
    assert fetch(f"{url}/hidden/a")[0] == 200
    assert fetch(f"{url}/hidden/b")[0] == 200
    assert fetch(f"{url}/plain")[0] == 200
    assert fetch(f"{url}/elsewhere")[0] == 404
    assert counted(registry) == {
        ("/hidden/{key}", "GET", "2xx"): 2.0,
        ("/plain", "GET", "2xx"): 1.0,
        (c.PROM_HTTP_UNMATCHED_HANDLER, "GET", "4xx"): 1.0,
    }
    assert [p.tags[c.TAG_ENDPOINT] for p in stored(client, home, c.API_REQUEST)] == [
        "/hidden/{key}",
        "/hidden/{key}",
        "/plain",
        c.PROM_HTTP_UNMATCHED_HANDLER,
    ]


# ---- methods, statuses, durations --------------------------------------------------------------


def test_method_label_and_unknown_methods(
    serve: Callable[..., Server], client: Client, registry: CollectorRegistry, home: Path
) -> None:
    url = serve(instrument(make_app(), client, registry)).url
    assert fetch(f"{url}/items/7")[0] == 200
    assert fetch(f"{url}/items/7", "DELETE")[0] == 204
    assert fetch(f"{url}/items/7", "PUT")[0] == 405
    assert fetch(f"{url}/items/7", "BREW")[0] == 405  # a client cannot grow the method label
    assert fetch(f"{url}/items/8", "FROBNICATE")[0] == 405
    assert counted(registry) == {
        ("/items/{item_id}", "GET", "2xx"): 1.0,
        ("/items/{item_id}", "DELETE", "2xx"): 1.0,
        ("/items/{item_id}", "PUT", "4xx"): 1.0,
        ("/items/{item_id}", "OTHER", "4xx"): 2.0,
    }
    points = stored(client, home, c.API_REQUEST)
    assert [(p.tags[c.TAG_METHOD], p.fields[c.FIELD_STATUS_CODE]) for p in points] == [
        ("GET", 200),
        ("DELETE", 204),
        ("PUT", 405),
        ("OTHER", 405),
        ("OTHER", 405),
    ]


def test_duration_covers_the_request(
    serve: Callable[..., Server], client: Client, registry: CollectorRegistry, home: Path
) -> None:
    url = serve(instrument(make_app(), client, registry)).url
    assert fetch(f"{url}/slow")[:2] == (200, b"done")
    count, total = durations(registry, "/slow", "GET")
    assert count == 1.0
    assert total is not None and 0.05 <= total < 5
    bucket = {c.PROM_LABEL_HANDLER: "/slow", c.PROM_LABEL_METHOD: "GET", "le": "0.025"}
    assert registry.get_sample_value(f"{c.PROM_HTTP_DURATION}_bucket", bucket) == 0.0
    [point] = stored(client, home, c.API_REQUEST)
    assert point.tags == request_tags("/slow", "GET", "2xx")
    assert 50 <= point.fields[c.FIELD_DURATION_MS] < 5000
    assert math.isclose(point.fields[c.FIELD_DURATION_MS], total * 1000, rel_tol=1e-9)


def test_an_exception_counts_as_500_and_is_reraised(
    serve: Callable[..., Server],
    client: Client,
    registry: CollectorRegistry,
    home: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="uvicorn.error")

    async def bare(scope: Any, receive: Any, send: Any) -> None:  # fails before any response
        raise ValueError("no response at all")

    starlette_url = serve(instrument(make_app(), client, registry)).url
    bare_url = serve(instrument(bare, client, registry)).url
    assert fetch(f"{starlette_url}/boom")[0] == 500
    assert fetch(f"{bare_url}/predict/x")[0] == 500  # uvicorn's own 500: the exception reached it

    def logged() -> list[BaseException]:
        return [r.exc_info[1] for r in caplog.records if r.exc_info and r.exc_info[1] is not None]

    wait_for(lambda: len(logged()) == 2, 10, "uvicorn to log both exceptions")
    assert sorted(f"{type(e).__name__}: {e}" for e in logged()) == [
        "RuntimeError: model exploded",
        "ValueError: no response at all",
    ]
    assert counted(registry) == {
        ("/boom", "GET", "5xx"): 1.0,
        (c.PROM_HTTP_UNMATCHED_HANDLER, "GET", "5xx"): 1.0,
    }
    points = stored(client, home, c.API_REQUEST)
    assert sorted((p.tags[c.TAG_ENDPOINT], p.tags[c.TAG_HTTP_STATUS]) for p in points) == [
        ("/boom", "5xx"),
        (c.PROM_HTTP_UNMATCHED_HANDLER, "5xx"),
    ]
    assert [p.fields[c.FIELD_STATUS_CODE] for p in points] == [500, 500]


def test_series_start_at_zero_for_every_route_and_method(registry: CollectorRegistry, client: Client) -> None:
    instrument(make_app(), client, registry)

    def value(handler: str, method: str, status: str) -> float | None:
        return registry.get_sample_value(
            c.PROM_HTTP_REQUESTS,
            {c.PROM_LABEL_HANDLER: handler, c.PROM_LABEL_METHOD: method, c.PROM_LABEL_STATUS: status},
        )

    assert value("/predict/{model}", "POST", "5xx") == 0.0
    assert value("/items/{item_id}", "DELETE", "4xx") == 0.0
    assert value("/v1/score/{model}", "POST", "2xx") == 0.0
    assert value("/tenants/{tenant}/health", "HEAD", "3xx") == 0.0
    assert value("/predict/{model}", "GET", "2xx") is None, "only the methods a route declares"
    assert counted(registry) == {}


def test_routes_are_found_through_a_middleware_in_between(
    serve: Callable[..., Server], registry: CollectorRegistry, client: Client
) -> None:
    url = serve(instrument(GZipMiddleware(make_app()), client, registry)).url
    assert (
        registry.get_sample_value(
            c.PROM_HTTP_REQUESTS,
            {
                c.PROM_LABEL_HANDLER: "/v1/score/{model}",
                c.PROM_LABEL_METHOD: "POST",
                c.PROM_LABEL_STATUS: "5xx",
            },
        )
        == 0.0
    )
    assert fetch(f"{url}/tenants/acme/health")[:2] == (200, b"ok acme")
    assert fetch(f"{url}/elsewhere")[0] == 404
    assert counted(registry) == {
        ("/tenants/{tenant}/health", "GET", "2xx"): 1.0,  # the mount's template: matched before dispatch
        (c.PROM_HTTP_UNMATCHED_HANDLER, "GET", "4xx"): 1.0,
    }


# ---- /metrics -------------------------------------------------------------------------------------


def test_metrics_path_is_served_and_not_counted(
    serve: Callable[..., Server], client: Client, registry: CollectorRegistry, home: Path
) -> None:
    url = serve(instrument(make_app(), client, registry)).url
    assert fetch(f"{url}/predict/a", "POST")[0] == 200
    status, body, headers = fetch(f"{url}/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=")
    text = body.decode()
    assert 'http_requests_total{handler="/predict/{model}",method="POST",status="2xx"} 1.0' in text
    assert 'http_request_duration_seconds_count{handler="/predict/{model}",method="POST"} 1.0' in text
    assert fetch(f"{url}/metrics")[0] == 200
    assert fetch(f"{url}/metrics", "HEAD")[0] == 200
    assert fetch(f"{url}/metrics", "POST")[0] == 405
    assert counted(registry) == {("/predict/{model}", "POST", "2xx"): 1.0}
    assert [p.tags[c.TAG_ENDPOINT] for p in stored(client, home, c.API_REQUEST)] == ["/predict/{model}"]


# Accept, Accept-Encoding -> the Content-Type and Content-Encoding prometheus_client's exposition answers
EXPOSITIONS = {
    "plain": ({}, "text/plain; version=0.0.4; charset=utf-8", None),
    "openmetrics": (
        {"Accept": "application/openmetrics-text; version=1.0.0"},
        "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores",
        None,
    ),
    "gzip": ({"Accept-Encoding": "gzip"}, "text/plain; version=0.0.4; charset=utf-8", "gzip"),
    "openmetrics, gzip": (
        {"Accept": "application/openmetrics-text", "Accept-Encoding": "br, GZIP;q=0.5"},
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        "gzip",
    ),
}


def exposed(kind: str, body: bytes, headers: Mapping[str, str]) -> dict[tuple[str, tuple[str, ...]], float]:
    """The samples of a /metrics answer, checked against what ``EXPOSITIONS[kind]`` asked for:
    (name, label values) -> value."""
    _, content_type, encoding = EXPOSITIONS[kind]
    folded = {k.lower(): v for k, v in headers.items()}
    assert folded["content-type"] == content_type
    assert folded.get("content-encoding") == encoding
    text = (gzip.decompress(body) if encoding else body).decode()
    if content_type.startswith("application/openmetrics-text"):
        assert text.endswith("\n# EOF\n")
        families = openmetrics_parser.text_string_to_metric_families(text)
    else:
        assert "# EOF" not in text
        families = text_string_to_metric_families(text)
    return {(s.name, tuple(s.labels.values())): s.value for family in families for s in family.samples}


@pytest.mark.parametrize("kind", list(EXPOSITIONS))
def test_metrics_are_prometheus_clients_exposition_negotiated_and_gzipped(
    serve: Callable[..., Server], client: Client, registry: CollectorRegistry, kind: str
) -> None:
    url = serve(instrument(make_app(), client, registry)).url
    assert fetch(f"{url}/predict/a", "POST")[0] == 200
    status, body, headers = fetch(f"{url}/metrics", headers=EXPOSITIONS[kind][0])
    assert (status, int(headers["content-length"])) == (200, len(body))
    samples = exposed(kind, body, headers)
    assert samples[(c.PROM_HTTP_REQUESTS, ("/predict/{model}", "POST", "2xx"))] == 1.0
    assert samples[(f"{c.PROM_HTTP_DURATION}_count", ("/predict/{model}", "POST"))] == 1.0
    assert samples[(c.PROM_HTTP_REQUESTS, ("/predict/{model}", "POST", "5xx"))] == 0.0
    head = fetch(f"{url}/metrics", "HEAD", headers=EXPOSITIONS[kind][0])
    assert (head[0], head[1], head[2]["content-type"]) == (200, b"", EXPOSITIONS[kind][1])


def test_metrics_path_none_leaves_the_path_to_the_app(
    serve: Callable[..., Server], client: Client, registry: CollectorRegistry
) -> None:
    url = serve(instrument(make_app(), client, registry, metrics_path=None)).url
    assert fetch(f"{url}/metrics")[0] == 404
    assert counted(registry) == {(c.PROM_HTTP_UNMATCHED_HANDLER, "GET", "4xx"): 1.0}


def test_two_middlewares_share_one_registry(
    serve: Callable[..., Server], client: Client, registry: CollectorRegistry
) -> None:
    first = serve(instrument(make_app(), client, registry)).url
    second = serve(instrument(make_app(), client, registry)).url
    assert fetch(f"{first}/items/1")[0] == 200
    assert fetch(f"{second}/items/2")[0] == 200
    assert counted(registry) == {("/items/{item_id}", "GET", "2xx"): 2.0}


# ---- users ------------------------------------------------------------------------------------


def test_unique_users_are_distinct_hashes_and_raw_ids_are_stored_nowhere(
    serve: Callable[..., Server], client: Client, registry: CollectorRegistry, home: Path
) -> None:
    url = serve(instrument(make_app(), client, registry)).url
    for user in ("alice@example.com", "bob@example.com", "alice@example.com", None):
        assert fetch(f"{url}/items/1", user=user)[0] == 200
    points = stored(client, home, c.API_REQUEST)
    users = [p.fields.get(c.FIELD_USER) for p in points]
    assert users[3] is None, "no header, no user field"
    assert len(set(users[:3])) == 2, "two users in three requests"
    assert users[0] == users[2] != users[1]
    recorder = client.service(SERVICE)
    assert users[:2] == [recorder.user_hash("alice@example.com"), recorder.user_hash("bob@example.com")]
    assert all(re.fullmatch(r"[0-9a-f]{16}", u) for u in users[:3] if u is not None)

    raw = [b"alice@example.com", b"bob@example.com", b"alice", b"example.com"]
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any(users[0].encode() in f.read_bytes() for f in files), "the hashes are in the store"
    for f in files:
        content = f.read_bytes()
        assert not [r for r in raw if r in content], f"a raw user id is stored in {f}"


def test_user_hash_is_salted_sha256(client: Client) -> None:
    salted = client.service(SERVICE, salt="pepper")
    assert salted.user_hash("alice") == hashlib.sha256(b"pepperalice").hexdigest()[:16]
    default = client.service(SERVICE)
    other_service = client.service("fraud-api")
    assert default.user_hash("alice") != salted.user_hash("alice")
    assert default.user_hash("alice") != other_service.user_hash("alice"), "the default salt is per service"
    assert default.user_hash("alice") == client.service(SERVICE).user_hash("alice"), "and stable"
    assert client.service(SERVICE, salt=b"pepper").user_hash("alice") == salted.user_hash("alice")


KEY = "k3y-0f-th3-cluster-5ecret"
UNKEYED_WARNING = (
    "mlobs: MLOBS_USER_HASH_KEY is not set, so the user ids of service churn-api are hashed with a "
    "salt anyone who knows the service name can recompute: the stored hashes are pseudonymous, not "
    "anonymous (a list of candidate ids reverses them). Set MLOBS_USER_HASH_KEY to a random secret "
    "of 16 bytes or more to key the hash (HMAC-SHA256)."
)


@pytest.fixture
def hash_warnings(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> Callable[[], list[str]]:
    """The warnings so far of logger "mlobs" about user hashes, in a process that has given none yet."""
    monkeypatch.setattr(service, "_unkeyed_warned", set())
    caplog.set_level(logging.WARNING, logger="mlobs")

    def messages() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "mlobs" and r.levelno == logging.WARNING and c.ENV_USER_HASH_KEY in r.getMessage()
        ]

    return messages


def expected_hmac(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:16]


def test_with_a_key_the_user_hash_is_hmac_sha256(
    client: Client, monkeypatch: pytest.MonkeyPatch, hash_warnings: Callable[[], list[str]]
) -> None:
    monkeypatch.setenv("MLOBS_USER_HASH_KEY", KEY)
    keyed = client.service(SERVICE)
    assert keyed.user_hash("alice") == expected_hmac(KEY.encode(), b"mlobs:churn-api:alice")
    assert keyed.user_hash("alice") != hashlib.sha256(b"mlobs:churn-api:alice").hexdigest()[:16]
    # a salt still names the domain: the same salt counts users across services, under the key
    assert client.service(SERVICE, salt="shop").user_hash("bob") == expected_hmac(KEY.encode(), b"shopbob")
    assert client.service("fraud-api", salt="shop").user_hash("bob") == expected_hmac(
        KEY.encode(), b"shopbob"
    )
    other = ServiceRecorder(client, SERVICE, key=b"another key, 16 bytes or more")
    assert other.user_hash("alice") == expected_hmac(
        b"another key, 16 bytes or more", b"mlobs:churn-api:alice"
    )
    assert other.user_hash("alice") != keyed.user_hash("alice"), "two keys, two hashes"
    assert KEY not in repr(keyed) and KEY not in str(vars(keyed))
    assert hash_warnings() == []


def test_an_explicit_key_wins_over_the_environment(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOBS_USER_HASH_KEY", KEY)
    explicit = ServiceRecorder(client, SERVICE, key="explicit-key-of-20-by")
    assert explicit.user_hash("u") == expected_hmac(b"explicit-key-of-20-by", b"mlobs:churn-api:u")
    through_client = client.service(SERVICE, key="explicit-key-of-20-by")
    assert through_client.user_hash("u") == explicit.user_hash("u")


@pytest.fixture
def user_hash_key(home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """MLOBS_USER_HASH_KEY set, as the chart sets it from its Secret (after ``home`` clears MLOBS_*)."""
    monkeypatch.setenv(c.ENV_USER_HASH_KEY, KEY)
    return KEY


@pytest.mark.usefixtures("user_hash_key")
def test_the_middleware_hashes_with_the_key_from_the_environment(
    serve: Callable[..., Server],
    client: Client,
    registry: CollectorRegistry,
    home: Path,
    hash_warnings: Callable[[], list[str]],
) -> None:
    first = serve(instrument(make_app(), client, registry)).url
    second = serve(instrument(make_app(), client, registry, key=b"the middleware's own key")).url
    assert fetch(f"{first}/items/1", user="cust-42")[0] == 200
    assert fetch(f"{second}/items/1", user="cust-42")[0] == 200
    users = [p.fields[c.FIELD_USER] for p in stored(client, home, c.API_REQUEST)]
    assert users == [
        expected_hmac(KEY.encode(), b"mlobs:churn-api:cust-42"),
        expected_hmac(b"the middleware's own key", b"mlobs:churn-api:cust-42"),
    ]
    assert hash_warnings() == []


def test_without_a_key_it_warns_once_and_hashes_as_before(
    serve: Callable[..., Server],
    client: Client,
    registry: CollectorRegistry,
    home: Path,
    hash_warnings: Callable[[], list[str]],
) -> None:
    url = serve(instrument(make_app(), client, registry)).url
    for n in range(25):
        assert fetch(f"{url}/items/{n}", user=f"user-{n}")[0] == 200
    client.service(SERVICE).user_hash("again")  # another recorder of the same service: no second warning
    assert hash_warnings() == [UNKEYED_WARNING]
    users = [p.fields[c.FIELD_USER] for p in stored(client, home, c.API_REQUEST)]
    assert users == [hashlib.sha256(f"mlobs:churn-api:user-{n}".encode()).hexdigest()[:16] for n in range(25)]
    client.service("fraud-api")  # another service is named in a warning of its own
    assert hash_warnings() == [UNKEYED_WARNING, UNKEYED_WARNING.replace("churn-api", "fraud-api")]


def test_an_explicit_salt_without_a_key_is_the_callers_choice_and_not_warned(
    client: Client, hash_warnings: Callable[[], list[str]]
) -> None:
    assert (
        client.service(SERVICE, salt="pepper").user_hash("alice")
        == hashlib.sha256(b"pepperalice").hexdigest()[:16]
    )
    assert hash_warnings() == []


def test_an_attacker_with_the_service_name_reverses_the_unkeyed_hash_not_the_keyed_one(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = "73519"  # a numeric customer id: a space of 100,000 candidates
    unkeyed = client.service(SERVICE).user_hash(user)
    monkeypatch.setenv("MLOBS_USER_HASH_KEY", KEY)
    keyed = client.service(SERVICE).user_hash(user)

    def enumerate_ids(stored_hash: str) -> list[str]:
        """What the attacker tries: every id under the public per-service salt, and the name as a key."""
        salt = f"mlobs:{SERVICE}:".encode()
        base = hashlib.sha256(salt)
        found = []
        for n in range(100_000):
            candidate = str(n).encode()
            digest = base.copy()
            digest.update(candidate)
            if digest.hexdigest()[:16] == stored_hash:
                found.append(str(n))
            if expected_hmac(SERVICE.encode(), salt + candidate) == stored_hash:
                found.append(str(n))
        return found

    assert enumerate_ids(unkeyed) == [user], "the unkeyed hash is reversed by enumeration"
    assert enumerate_ids(keyed) == [], "the keyed hash is not"


@pytest.mark.parametrize(
    ("key", "error", "message"),
    [
        ("", ValueError, "key is invalid: must not be empty"),
        (b"fifteen bytes!!", ValueError, "key is invalid: 15 bytes, must be at least 16 (a random secret"),
        (1234, TypeError, "key must be a str, bytes or None, got int"),
    ],
)
def test_a_bad_key_is_named_without_echoing_it(
    client: Client, key: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        ServiceRecorder(client, SERVICE, key=key)
    assert str(caught.value).startswith(message)
    assert "fifteen" not in str(caught.value)


def test_a_short_key_in_the_environment_is_named_without_echoing_it(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOBS_USER_HASH_KEY", "tooshort")
    with pytest.raises(SettingError) as caught:
        client.service(SERVICE)
    assert str(caught.value) == (
        "environment variable MLOBS_USER_HASH_KEY is 8 bytes long: must be at least 16 "
        "(a random secret, e.g. openssl rand -hex 32)"
    )
    monkeypatch.setenv("MLOBS_USER_HASH_KEY", "x" * 16)  # the boundary: 16 bytes is enough
    assert client.service(SERVICE).user_hash("u") == expected_hmac(b"x" * 16, b"mlobs:churn-api:u")


def test_custom_user_header(
    serve: Callable[..., Server], client: Client, registry: CollectorRegistry, home: Path
) -> None:
    app = instrument(make_app(), client, registry, user_header="X-Customer", salt="s3")

    url = serve(app).url
    req = urllib.request.Request(f"{url}/items/1", headers={"X-Customer": "cust-42", "x-user-id": "ignored"})
    with _no_proxy.open(req, timeout=10) as resp:
        assert resp.status == 200
    [point] = stored(client, home, c.API_REQUEST)
    assert point.fields[c.FIELD_USER] == hashlib.sha256(b"s3cust-42").hexdigest()[:16]


# ---- predictions --------------------------------------------------------------------------------


def test_log_prediction_stores_score_and_outcome(client: Client, home: Path) -> None:
    rec = client.service(SERVICE)
    rec.log_prediction("churn-xgb", 3, score=0.87)
    rec.log_prediction("churn-xgb", "v4", outcome="churned\nyes \\ no")
    rec.log_prediction("churn-xgb", "v4", score=1, outcome="stayed")
    points = stored(client, home, c.PREDICTION)
    assert [p.tags for p in points] == [
        {c.TAG_SERVICE: SERVICE, c.TAG_MODEL: "churn-xgb", c.TAG_MODEL_VERSION: "3"},
        {c.TAG_SERVICE: SERVICE, c.TAG_MODEL: "churn-xgb", c.TAG_MODEL_VERSION: "v4"},
        {c.TAG_SERVICE: SERVICE, c.TAG_MODEL: "churn-xgb", c.TAG_MODEL_VERSION: "v4"},
    ]
    assert points[0].fields == {c.FIELD_SCORE: 0.87}
    assert points[1].fields == {c.FIELD_OUTCOME: "churned\\nyes \\\\ no"}, "stored escaped"
    assert unescape_text(points[1].fields[c.FIELD_OUTCOME]) == "churned\nyes \\ no"
    assert points[2].fields == {c.FIELD_SCORE: 1.0, c.FIELD_OUTCOME: "stayed"}
    assert type(points[2].fields[c.FIELD_SCORE]) is float
    assert len({p.time_ns for p in points}) == 3


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"model": ""}, ValueError, "model='' is invalid"),
        ({"model": 7}, TypeError, "model must be a str"),
        ({"model": "bad\nname"}, ValueError, "model='bad\\nname' is invalid"),
        ({"version": None}, TypeError, "version must be a str or an int"),
        ({"version": True}, TypeError, "version must be a str or an int"),
        ({"version": -1}, ValueError, "version=-1 is invalid"),
        ({"version": ""}, ValueError, "version='' is invalid"),
        ({"score": float("nan")}, ValueError, "score=nan is invalid"),
        ({"score": "high"}, TypeError, "score must be a real number"),
        ({"outcome": 5}, TypeError, "outcome must be a str"),
        ({"score": None, "outcome": None}, TypeError, "needs score or outcome"),
    ],
)
def test_bad_prediction_input_names_the_argument(
    client: Client, home: Path, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    args: dict[str, Any] = {"model": "churn-xgb", "version": "1", "score": 0.5, **kwargs}
    with pytest.raises(error, match=re.escape(message)):
        client.service(SERVICE).log_prediction(**args)
    assert stored(client, home, c.PREDICTION) == [], "nothing recorded"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"endpoint": ""}, ValueError, "endpoint='' is invalid"),
        ({"method": None}, TypeError, "method must be a str"),
        ({"status_code": 99}, ValueError, "status_code=99 is invalid"),
        ({"status_code": "200"}, TypeError, "status_code must be an int"),
        ({"duration_ms": -1.0}, ValueError, "duration_ms=-1.0 is invalid"),
        ({"duration_ms": float("inf")}, ValueError, "duration_ms=inf is invalid"),
        ({"user": ""}, ValueError, "user='' is invalid"),
        ({"user": 42}, TypeError, "user must be a str"),
    ],
)
def test_bad_request_input_names_the_argument(
    client: Client, home: Path, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    args: dict[str, Any] = {
        "endpoint": "/x",
        "method": "GET",
        "status_code": 200,
        "duration_ms": 1.0,
        **kwargs,
    }
    with pytest.raises(error, match=re.escape(message)):
        client.service(SERVICE).log_request(**args)
    assert stored(client, home, c.API_REQUEST) == [], "nothing recorded"


def test_bad_service_and_middleware_arguments(client: Client, registry: CollectorRegistry) -> None:
    with pytest.raises(ValueError, match=re.escape("service='churn api' is invalid")):
        client.service("churn api")
    with pytest.raises(ValueError, match=re.escape("service='' is invalid")):
        MLObsMiddleware(make_app(), service="", client=client, registry=registry)
    with pytest.raises(ValueError, match=re.escape("metrics_path='metrics' is invalid")):
        MLObsMiddleware(make_app(), service=SERVICE, client=client, registry=registry, metrics_path="metrics")
    with pytest.raises(ValueError, match=re.escape("salt is invalid")):
        client.service(SERVICE, salt="")
    assert isinstance(client.service(SERVICE), ServiceRecorder)


# ---- lifespan, websockets, the middleware's own client -------------------------------------------


def test_lifespan_passes_through_and_can_flush(
    serve: Callable[..., Server], client: Client, registry: CollectorRegistry, home: Path
) -> None:
    phases: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, str]]:
        phases.append("startup")
        yield {"model": "loaded-at-startup"}
        phases.append(f"shutdown flushed={api.close(5)}")

    async def state(request: Request) -> Response:
        return PlainTextResponse(request.state.model)

    api = instrument(Starlette(routes=[Route("/state", state)], lifespan=lifespan), client, registry)
    server = serve(api, lifespan="on")
    assert phases == ["startup"]
    assert fetch(f"{server.url}/state")[:2] == (200, b"loaded-at-startup")
    server.stop()
    assert phases == ["startup", "shutdown flushed=True"]
    assert counted(registry) == {("/state", "GET", "2xx"): 1.0}, "the lifespan is not a request"
    points = list(LocalStore(home / DB_NAME).points(measurement=c.API_REQUEST.measurement))
    assert [p.tags[c.TAG_ENDPOINT] for p in points] == ["/state"], "delivered by the shutdown's close()"


def test_the_lifespan_shutdown_closes_the_client_the_middleware_made(
    serve: Callable[..., Server], registry: CollectorRegistry, home: Path
) -> None:
    api = MLObsMiddleware(make_app(), service=SERVICE, registry=registry)
    server = serve(api, lifespan="on")
    assert fetch(f"{server.url}/items/5", user="u5")[0] == 200
    threads = (api.client.shipper._spooler, api.client.shipper._delivery)
    assert [t.is_alive() for t in threads] == [True, True]
    server.stop()
    assert [t.is_alive() for t in threads] == [False, False], "closed by the shutdown"
    points = list(LocalStore(home / DB_NAME).points(measurement=c.API_REQUEST.measurement))
    assert [p.tags for p in points] == [request_tags("/items/{item_id}", "GET", "2xx")]
    assert points[0].fields[c.FIELD_USER] == api.recorder.user_hash("u5")


def test_websocket_scope_passes_through_untouched(
    client: Client, registry: CollectorRegistry, home: Path
) -> None:
    seen: list[tuple[Any, ...]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, await receive()))
        await send({"type": "websocket.accept"})

    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/metrics", "headers": [(b"x-user-id", b"alice")]}
    asyncio.run(instrument(app, client, registry)(scope, receive, send))
    assert seen == [(scope, {"type": "websocket.connect"})] and seen[0][0] is scope
    assert sent == [{"type": "websocket.accept"}]
    assert counted(registry) == {}
    assert stored(client, home, c.API_REQUEST) == []


def test_middleware_owns_a_client_from_the_environment(
    serve: Callable[..., Server], registry: CollectorRegistry, home: Path
) -> None:
    api = MLObsMiddleware(make_app(), service=SERVICE, registry=registry)
    assert api.client.describe() == f"the local store {home / DB_NAME}"
    url = serve(api).url
    assert fetch(f"{url}/predict/p", "POST", user="u1")[0] == 200
    assert api.close(10) is True
    points = list(LocalStore(home / DB_NAME).points(measurement=c.API_REQUEST.measurement))
    assert [p.tags for p in points] == [request_tags("/predict/{model}", "POST", "2xx")]
    assert points[0].fields[c.FIELD_USER] == api.recorder.user_hash("u1")
    assert not api.client.shipper._spooler.is_alive(), "close() stopped the client it made"
