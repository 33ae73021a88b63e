"""``app.add_middleware(MLObsMiddleware, ...)``, FastAPI's and Starlette's form, against the wrapped form.

Starlette builds an added middleware lazily, at the app's first ASGI call (under
uvicorn, the lifespan startup), around the app's *inner* stack (exception
middleware, then the router), not around the app.  These tests run that form
under real uvicorn and under Starlette's TestClient, and hold it to what the
wrapped form does: series at 0 before the first request, route templates with
include prefixes, the same samples and events on the same traffic, and the
client the middleware made closed by the app's lifespan.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI, HTTPException
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from pipeline_sdk import Client, MLObsMiddleware
from pipeline_sdk import contract as c
from pipeline_sdk.local_store import DB_NAME, LocalStore, Point
from tests.test_model_api import SERVICE, Server, counted, fetch, make_app, request_tags, servers

DOCS = ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")  # FastAPI's own routes: GET and HEAD


# ---- the apps --------------------------------------------------------------------------------------


def make_fastapi(**kwargs: Any) -> FastAPI:
    """A FastAPI app whose routes cover the cases: path params, a router's own prefix, include prefixes
    (nested), a 404 raised by a route, a validation error and an exception."""
    app = FastAPI(**kwargs)

    @app.post("/predict/{model}")
    async def predict(model: str) -> dict[str, str]:
        if model == "unknown":
            raise HTTPException(status_code=404, detail="no such model")
        return {"model": model}

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:  # a non-int id is FastAPI's 422
        return {"item": item_id}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("model exploded")

    scoring = APIRouter(prefix="/v1")  # the router's own prefix

    @scoring.post("/score/{model}")
    async def score(model: str) -> dict[str, str]:
        return {"scored": model}

    admin = APIRouter()

    @admin.put("/reload/{name}")
    async def reload(name: str) -> dict[str, str]:
        return {"reloaded": name}

    scoring.include_router(admin, prefix="/admin")  # nested: the prefixes add up
    app.include_router(scoring, prefix="/api")  # the include prefix, kept apart by FastAPI 0.137+
    return app


FASTAPI_ROUTES = {
    *((path, method) for path in DOCS for method in ("GET", "HEAD")),
    ("/predict/{model}", "POST"),
    ("/items/{item_id}", "GET"),
    ("/boom", "GET"),
    ("/api/v1/score/{model}", "POST"),
    ("/api/v1/admin/reload/{name}", "PUT"),
}
STARLETTE_ROUTES = {  # make_app()'s, mounts included (Starlette's GET routes take HEAD too)
    ("/predict/{model}", "POST"),
    *(("/items/{item_id}", method) for method in ("GET", "HEAD", "DELETE")),
    *(
        (path, method)
        for path in ("/slow", "/boom", "/tenants/{tenant}/health")
        for method in ("GET", "HEAD")
    ),
    ("/v1/score/{model}", "POST"),
}


def added(app: Starlette, **kwargs: Any) -> Starlette:
    """``app`` with the middleware added the way FastAPI users write it."""
    app.add_middleware(MLObsMiddleware, service=SERVICE, **kwargs)
    return app


def installed(app: Starlette) -> MLObsMiddleware:
    """The middleware Starlette built into ``app``'s stack (after its first ASGI call)."""
    layer: Any = app.middleware_stack
    while layer is not None and not isinstance(layer, MLObsMiddleware):
        layer = getattr(layer, "app", None)
    assert isinstance(layer, MLObsMiddleware), f"no MLObsMiddleware in {app.middleware_stack!r}"
    return layer


def series(registry: CollectorRegistry) -> dict[tuple[str, str, str], float]:
    """Every series of http_requests_total, zeros included: (handler, method, status) -> count."""
    return {
        (
            s.labels[c.PROM_LABEL_HANDLER],
            s.labels[c.PROM_LABEL_METHOD],
            s.labels[c.PROM_LABEL_STATUS],
        ): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == c.PROM_HTTP_REQUESTS
    }


def at_zero(routes: set[tuple[str, str]]) -> dict[tuple[str, str, str], float]:
    return {(h, m, status): 0.0 for h, m in routes for status in ("2xx", "3xx", "4xx", "5xx")}


def events(home: Path) -> list[Point]:
    return list(LocalStore(home / DB_NAME).points(measurement=c.API_REQUEST.measurement))


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def client(home: Path) -> Iterator[Client]:
    with Client() as cl:
        yield cl


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    with servers() as start:
        yield start


# ---- series at 0 before the first request ----------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "make", "routes"),
    [("fastapi", make_fastapi, FASTAPI_ROUTES), ("starlette", make_app, STARLETTE_ROUTES)],
    ids=["fastapi", "starlette"],
)
def test_after_startup_every_declared_route_is_at_zero_before_any_request(
    *,
    serve: Callable[..., Server],
    registry: CollectorRegistry,
    home: Path,
    kind: str,
    make: Callable[[], Starlette],
    routes: set[tuple[str, str]],
) -> None:
    with Client() as client:
        server = serve(added(make(), client=client, registry=registry), lifespan="on")
        assert series(registry) == at_zero(routes), f"{kind}: not every route at 0 after the startup"
        status, body, _ = fetch(f"{server.url}/metrics")  # served, and not a request of the app
        assert status == 200
        text = body.decode()
        for handler, method in routes:
            assert f'{c.PROM_HTTP_REQUESTS}{{handler="{handler}",method="{method}",status="5xx"}} 0.0' in text
        assert counted(registry) == {}
        server.stop()


def test_the_wrapped_form_has_the_same_series_at_zero(registry: CollectorRegistry, client: Client) -> None:
    MLObsMiddleware(make_fastapi(), service=SERVICE, client=client, registry=registry)
    assert series(registry) == at_zero(FASTAPI_ROUTES)


def test_under_the_testclient_the_series_are_at_zero_once_the_lifespan_started(
    registry: CollectorRegistry, client: Client
) -> None:
    app = added(make_fastapi(), client=client, registry=registry)
    assert series(registry) == {}, "nothing built before the first ASGI call"
    with TestClient(app) as http:
        assert series(registry) == at_zero(FASTAPI_ROUTES)
        assert http.get("/items/3").status_code == 200
    assert counted(registry) == {("/items/{item_id}", "GET", "2xx"): 1.0}


# ---- route templates -------------------------------------------------------------------------------


def test_docs_include_prefixes_and_unmatched_paths_are_labelled_by_template(
    serve: Callable[..., Server], registry: CollectorRegistry, client: Client, home: Path
) -> None:
    url = serve(added(make_fastapi(), client=client, registry=registry), lifespan="on").url
    for path in DOCS:
        assert fetch(f"{url}{path}")[0] == 200
    assert fetch(f"{url}/docs", "HEAD")[0] == 200
    assert fetch(f"{url}/items/1")[0] == 200
    assert fetch(f"{url}/items/2")[0] == 200
    assert fetch(f"{url}/api/v1/score/a", "POST")[0] == 200
    assert fetch(f"{url}/api/v1/score/b", "POST")[0] == 200
    assert fetch(f"{url}/api/v1/admin/reload/cache", "PUT")[0] == 200
    assert fetch(f"{url}/v1/score/a", "POST")[0] == 404, "the include prefix is part of the path"
    assert fetch(f"{url}/nope/123")[0] == 404
    assert counted(registry) == {
        ("/openapi.json", "GET", "2xx"): 1.0,
        ("/docs", "GET", "2xx"): 1.0,
        ("/docs", "HEAD", "2xx"): 1.0,
        ("/docs/oauth2-redirect", "GET", "2xx"): 1.0,
        ("/redoc", "GET", "2xx"): 1.0,
        ("/items/{item_id}", "GET", "2xx"): 2.0,
        ("/api/v1/score/{model}", "POST", "2xx"): 2.0,
        ("/api/v1/admin/reload/{name}", "PUT", "2xx"): 1.0,
        (c.PROM_HTTP_UNMATCHED_HANDLER, "POST", "4xx"): 1.0,
        (c.PROM_HTTP_UNMATCHED_HANDLER, "GET", "4xx"): 1.0,
    }
    assert client.flush(10)
    assert [p.tags[c.TAG_ENDPOINT] for p in events(home)] == [
        *DOCS,
        "/docs",
        "/items/{item_id}",
        "/items/{item_id}",
        "/api/v1/score/{model}",
        "/api/v1/score/{model}",
        "/api/v1/admin/reload/{name}",
        c.PROM_HTTP_UNMATCHED_HANDLER,
        c.PROM_HTTP_UNMATCHED_HANDLER,
    ]


def test_routes_are_found_through_the_users_own_middleware(
    registry: CollectorRegistry, client: Client
) -> None:
    app = make_fastapi()
    app.add_middleware(GZipMiddleware, minimum_size=10)  # added first: inside ours
    added(app, client=client, registry=registry)
    with TestClient(app) as http:
        assert series(registry) == at_zero(FASTAPI_ROUTES)
        response = http.get("/openapi.json", headers={"accept-encoding": "gzip"})
        assert response.status_code == 200 and response.headers["content-encoding"] == "gzip"
        assert http.post("/api/v1/score/x").status_code == 200
    assert counted(registry) == {
        ("/openapi.json", "GET", "2xx"): 1.0,
        ("/api/v1/score/{model}", "POST", "2xx"): 1.0,
    }


# ---- the same traffic, both forms ------------------------------------------------------------------

TRAFFIC: list[tuple[str, str, str | None, int]] = [  # path, method, user, the status both forms answer
    ("/predict/churn", "POST", "alice", 200),
    ("/predict/fraud", "POST", "bob", 200),
    ("/predict/unknown", "POST", "alice", 404),  # the route's own 404
    ("/predict/churn", "GET", None, 405),
    ("/items/7", "GET", "carol", 200),
    ("/items/not-an-int", "GET", "carol", 422),  # FastAPI's validation error
    ("/items/7", "BREW", None, 405),  # counted as OTHER
    ("/boom", "GET", "dave", 500),  # an exception
    ("/api/v1/score/m1", "POST", "alice", 200),
    ("/api/v1/admin/reload/x", "PUT", None, 200),
    ("/docs", "GET", None, 200),
    ("/openapi.json", "HEAD", None, 200),
    ("/nowhere", "GET", "erin", 404),
    ("/metrics", "GET", None, 200),  # served by the middleware, not counted
]


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of both HTTP metrics except the durations themselves (sums and finite buckets)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name.startswith("http_request")
        and not s.name.endswith(("_sum", "_created"))
        and not (s.name.endswith("_bucket") and s.labels["le"] != "+Inf")
    }


def test_both_forms_count_and_record_the_same_traffic_exactly_once(
    serve: Callable[..., Server], tmp_path: Path, home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="uvicorn.error")  # the 500's traceback
    registries = {"wrapped": CollectorRegistry(), "added": CollectorRegistry()}
    homes = {form: tmp_path / form for form in registries}
    stack = contextlib.ExitStack()
    clients = {form: stack.enter_context(Client(home=homes[form])) for form in registries}
    apps = {
        "wrapped": MLObsMiddleware(
            make_fastapi(), service=SERVICE, client=clients["wrapped"], registry=registries["wrapped"]
        ),
        "added": added(make_fastapi(), client=clients["added"], registry=registries["added"]),
    }
    with stack:  # the clients closed even if a check fails
        for form, app in apps.items():
            url = serve(app, lifespan="on").url
            answered = [fetch(f"{url}{path}", method, user)[0] for path, method, user, _ in TRAFFIC]
            assert answered == [status for *_, status in TRAFFIC], form
        for client in clients.values():
            assert client.flush(10)
    assert samples(registries["wrapped"]) == samples(registries["added"])
    assert counted(registries["added"]) == {
        ("/predict/{model}", "POST", "2xx"): 2.0,
        ("/predict/{model}", "POST", "4xx"): 1.0,
        ("/predict/{model}", "GET", "4xx"): 1.0,
        ("/items/{item_id}", "GET", "2xx"): 1.0,
        ("/items/{item_id}", "GET", "4xx"): 1.0,
        ("/items/{item_id}", c.PROM_HTTP_OTHER_METHOD, "4xx"): 1.0,
        ("/boom", "GET", "5xx"): 1.0,
        ("/api/v1/score/{model}", "POST", "2xx"): 1.0,
        ("/api/v1/admin/reload/{name}", "PUT", "2xx"): 1.0,
        ("/docs", "GET", "2xx"): 1.0,
        ("/openapi.json", "HEAD", "2xx"): 1.0,
        (c.PROM_HTTP_UNMATCHED_HANDLER, "GET", "4xx"): 1.0,
    }

    stored: dict[str, list[tuple[dict[str, str], int, str | None]]] = {}
    for form in clients:
        points = events(homes[form])
        assert all(p.fields[c.FIELD_DURATION_MS] > 0 for p in points)
        stored[form] = [(p.tags, p.fields[c.FIELD_STATUS_CODE], p.fields.get(c.FIELD_USER)) for p in points]
    assert stored["wrapped"] == stored["added"]
    recorder = installed(apps["added"]).recorder
    assert stored["added"][:3] == [
        (request_tags("/predict/{model}", "POST", "2xx"), 200, recorder.user_hash("alice")),
        (request_tags("/predict/{model}", "POST", "2xx"), 200, recorder.user_hash("bob")),
        (request_tags("/predict/{model}", "POST", "4xx"), 404, recorder.user_hash("alice")),
    ]
    assert len(stored["added"]) == len(TRAFFIC) - 1, "one event per request, /metrics none"
    raw = [b"alice", b"bob", b"carol", b"dave", b"erin"]
    for f in (p for p in tmp_path.rglob("*") if p.is_file()):
        assert not [r for r in raw if r in f.read_bytes()], f"a raw user id is stored in {f}"


# ---- the lifespan closes the client the middleware made ---------------------------------------------


def with_lifespan(phases: list[str], fail_shutdown: bool = False) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        phases.append("startup")
        yield
        phases.append("shutdown")
        if fail_shutdown:
            raise RuntimeError("the model would not unload")

    return make_fastapi(lifespan=lifespan)


def with_on_event(phases: list[str], fail_shutdown: bool = False) -> FastAPI:
    app = make_fastapi()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # on_event is deprecated, and still used

        @app.on_event("startup")
        async def startup() -> None:
            phases.append("startup")

        @app.on_event("shutdown")
        async def shutdown() -> None:
            phases.append("shutdown")
            if fail_shutdown:
                raise RuntimeError("the model would not unload")

    return app


@pytest.mark.parametrize("fail_shutdown", [False, True], ids=["shutdown", "failed-shutdown"])
@pytest.mark.parametrize("make", [with_lifespan, with_on_event], ids=["lifespan", "on_event"])
def test_the_app_lifespan_closes_the_client_the_middleware_made(
    *,
    serve: Callable[..., Server],
    registry: CollectorRegistry,
    home: Path,
    caplog: pytest.LogCaptureFixture,
    make: Callable[..., FastAPI],
    fail_shutdown: bool,
) -> None:
    caplog.set_level(logging.CRITICAL, logger="uvicorn.error")  # a failed shutdown's traceback
    phases: list[str] = []
    app = added(make(phases, fail_shutdown), registry=registry)
    server = serve(app, lifespan="on")
    assert phases == ["startup"], "the user's startup ran"
    mw = installed(app)
    assert mw.client.describe() == f"the local store {home / DB_NAME}"
    assert fetch(f"{server.url}/predict/p", "POST", user="u1")[0] == 200
    assert fetch(f"{server.url}/items/9")[0] == 200
    threads = (mw.client.shipper._spooler, mw.client.shipper._delivery)
    assert all(t.is_alive() for t in threads)
    server.stop()
    assert phases == ["startup", "shutdown"], "the user's shutdown ran, once"
    assert [t.is_alive() for t in threads] == [False, False], "threads stopped by the shutdown"
    points = events(home)  # delivered by the close, not by a flush of the test's
    assert [p.tags for p in points] == [
        request_tags("/predict/{model}", "POST", "2xx"),
        request_tags("/items/{item_id}", "GET", "2xx"),
    ]
    assert points[0].fields[c.FIELD_USER] == mw.recorder.user_hash("u1")


def test_the_lifespan_leaves_a_client_the_user_passed_open(
    serve: Callable[..., Server], registry: CollectorRegistry, client: Client, home: Path
) -> None:
    server = serve(added(with_lifespan([]), client=client, registry=registry), lifespan="on")
    assert fetch(f"{server.url}/items/1")[0] == 200
    server.stop()
    shipper = client.shipper
    assert [shipper._spooler.is_alive(), shipper._delivery.is_alive()] == [True, True], "not closed"
    client.service(SERVICE).log_request("/after", "GET", 200, 1.0)  # the user's client still works
    assert client.flush(10)
    assert [p.tags[c.TAG_ENDPOINT] for p in events(home)] == ["/items/{item_id}", "/after"]


def test_a_second_lifespan_opens_a_new_client_and_closes_it_too(
    registry: CollectorRegistry, home: Path
) -> None:
    """A test suite enters ``TestClient(app)`` once per test: each run's events are delivered."""
    app = added(make_fastapi(), registry=registry)
    with TestClient(app) as http:
        assert http.get("/items/1").status_code == 200
        first = installed(app).client
    assert not first.shipper._spooler.is_alive(), "closed by the first shutdown"
    assert [p.tags[c.TAG_ENDPOINT] for p in events(home)] == ["/items/{item_id}"]
    with TestClient(app) as http:
        second = installed(app).client
        assert second is not first and second.shipper._spooler.is_alive()
        assert http.post("/api/v1/score/m", headers={"x-user-id": "zoe"}).status_code == 200
    assert not second.shipper._spooler.is_alive(), "closed by the second shutdown"
    points = events(home)
    assert [p.tags[c.TAG_ENDPOINT] for p in points] == ["/items/{item_id}", "/api/v1/score/{model}"]
    assert points[1].fields[c.FIELD_USER] == installed(app).recorder.user_hash("zoe")
    # a request with no lifespan around it, after a shutdown: still recorded, by a client of its own
    assert TestClient(app).get("/items/2").status_code == 200
    third = installed(app).client
    assert third is not second and third.shipper._spooler.is_alive()
    assert installed(app).close(10) is True
    assert [p.tags[c.TAG_ENDPOINT] for p in events(home)][-1] == "/items/{item_id}"
    assert len(events(home)) == 3
    assert counted(registry) == {
        ("/items/{item_id}", "GET", "2xx"): 2.0,
        ("/api/v1/score/{model}", "POST", "2xx"): 1.0,
    }


def test_a_failed_startup_closes_the_client_the_middleware_made(
    registry: CollectorRegistry, home: Path
) -> None:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("no model to load")
        yield

    app = added(make_fastapi(lifespan=lifespan), registry=registry)
    with pytest.raises(RuntimeError, match="no model to load"), TestClient(app):
        pass
    shipper = installed(app).client.shipper
    assert [shipper._spooler.is_alive(), shipper._delivery.is_alive()] == [False, False]


def test_routes_the_startup_adds_start_at_zero_too(registry: CollectorRegistry, client: Client) -> None:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def ready() -> dict[str, bool]:
            return {"ready": True}

        app.add_api_route("/ready", ready, methods=["GET"])  # after the middleware was built
        yield

    app = added(make_fastapi(lifespan=lifespan), client=client, registry=registry)
    with TestClient(app) as http:
        assert series(registry) == at_zero({*FASTAPI_ROUTES, ("/ready", "GET")})
        assert http.get("/ready").status_code == 200
    assert counted(registry) == {("/ready", "GET", "2xx"): 1.0}


def test_no_new_client_after_a_shutdown_is_logged_and_the_request_still_served(
    registry: CollectorRegistry, home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = added(make_fastapi(), registry=registry)
    with TestClient(app):
        pass
    monkeypatch.setenv(c.ENV_FLUSH_TIMEOUT, "soon")  # the environment no longer makes a client
    caplog.set_level(logging.WARNING, logger="mlobs")
    http = TestClient(app)
    assert [http.get(f"/items/{n}").status_code for n in range(3)] == [200, 200, 200]
    assert counted(registry) == {("/items/{item_id}", "GET", "2xx"): 3.0}
    [warning] = [r.getMessage() for r in caplog.records if "not recorded" in r.getMessage()]  # once
    assert warning.startswith("mlobs: requests are counted but not recorded: no client: ")
    assert c.ENV_FLUSH_TIMEOUT in warning
    assert events(home) == []


# ---- added twice -------------------------------------------------------------------------------------

TWICE = "is already instrumented by an MLObsMiddleware: each request would be counted twice"


def mlobs_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("mlobs-"))


def test_added_twice_is_a_clear_error_at_startup(registry: CollectorRegistry, client: Client) -> None:
    app = added(added(make_fastapi(), client=client, registry=registry), client=client, registry=registry)
    with pytest.raises(ValueError, match=re.escape(TWICE)), TestClient(app):
        pass
    assert counted(registry) == {}


def test_added_twice_fails_every_request_and_leaves_no_client_running(
    registry: CollectorRegistry, home: Path
) -> None:
    """Under uvicorn's default lifespan "auto" the startup's error is logged and the app serves on:
    Starlette builds the stack again at each request, and each attempt fails the same way."""
    app = added(added(make_fastapi(), registry=registry), registry=registry)
    before = mlobs_threads()
    http = TestClient(app)
    for _ in range(3):
        with pytest.raises(ValueError, match=re.escape(TWICE)):
            http.get("/items/1")
    assert mlobs_threads() == before, "the inner middleware's own client is closed with its stack"
    assert counted(registry) == {}


def test_wrapping_an_instrumented_app_is_a_clear_error_at_the_call(
    registry: CollectorRegistry, client: Client
) -> None:
    inner = MLObsMiddleware(make_fastapi(), service=SERVICE, client=client, registry=registry)
    with pytest.raises(ValueError, match=re.escape(f"app={inner!r} {TWICE}")):
        MLObsMiddleware(inner, service=SERVICE, client=client, registry=registry)
    app = added(make_fastapi(), client=client, registry=registry)
    with pytest.raises(ValueError, match=re.escape(TWICE)):
        MLObsMiddleware(app, service=SERVICE, client=client, registry=registry)


def test_an_instrumented_app_mounted_in_another_is_counted_by_each(
    registry: CollectorRegistry, client: Client
) -> None:
    """Not added twice: two apps, each with its own middleware, each counting what it routes."""

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    inner = added(make_fastapi(), client=client, registry=registry)
    outer_registry = CollectorRegistry()
    outer = added(
        Starlette(routes=[Route("/health", health), Mount("/model", app=inner)]),
        client=client,
        registry=outer_registry,
    )
    with TestClient(outer) as http:
        assert http.get("/model/items/5").status_code == 200
        assert http.get("/health").status_code == 200
    assert counted(registry) == {("/items/{item_id}", "GET", "2xx"): 1.0}, "the inner app's own template"
    assert counted(outer_registry) == {
        ("/model/items/{item_id}", "GET", "2xx"): 1.0,
        ("/health", "GET", "2xx"): 1.0,
    }
