"""Model-API data read back: services, requests and predictions, as the real middleware wrote them.

A Starlette app wrapped in ``MLObsMiddleware`` serves real HTTP requests under uvicorn
(``tests/test_model_api.Server``); its handler logs predictions through the SDK's
service recorder, a second service logs outcomes only.  The local store it all went
to is read through both backends (the InfluxDB stand-in evaluating the Flux) and the
installed ``mlobs`` command.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipeline_sdk import Client, MLObsMiddleware
from pipeline_sdk import contract as c
from pipeline_sdk.local_store import DB_NAME, LocalStore
from pipeline_sdk.read import ReadClient, ServiceNotFound
from pipeline_sdk.read.influx import InfluxBackend
from pipeline_sdk.testing.influx_fake import InfluxServer, serve_store

from .test_model_api import Server, fetch
from .test_read_attempts import mlobs
from .test_read_influx import flux_contract_problems

SERVICE, RULES = "churn-api", "fraud-api"
KEY = "k" * 32  # the user-hash key of the service (MLOBS_USER_HASH_KEY in the cluster)
TOKEN = "services-token"
OUTCOME = "blocked\nmanual review"  # free text: stored escaped, read back as it was
# (method, path, user, status, endpoint) of each request, in the order they are made
REQUESTS = [
    ("POST", "/predict/churn?score=0.9", "alice", 200, "/predict/{model}"),
    ("POST", "/predict/churn?score=0.25", "bob", 200, "/predict/{model}"),
    ("POST", "/predict/fraud?score=0.75", "alice", 200, "/predict/{model}"),
    ("GET", "/boom", None, 500, "/boom"),
    ("GET", "/nowhere", "carol", 404, c.PROM_HTTP_UNMATCHED_HANDLER),
]


@dataclass(frozen=True)
class ServiceData:
    home: Path
    users: dict[str, str]  # user id -> its stored hash
    times_ns: list[int]  # each request's stored time, in order


def served(client: Client) -> MLObsMiddleware:
    recorder = client.service(SERVICE, key=KEY)

    async def predict(request: Request) -> Response:
        model, score = request.path_params["model"], float(request.query_params["score"])
        recorder.log_prediction(model, "v3", score=score)
        return JSONResponse({"model": model, "score": score})

    async def boom(request: Request) -> Response:
        raise RuntimeError("model exploded")

    app = Starlette(routes=[Route("/predict/{model}", predict, methods=["POST"]), Route("/boom", boom)])
    return MLObsMiddleware(app, service=SERVICE, client=client, registry=CollectorRegistry(), key=KEY)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> ServiceData:
    home = tmp_path_factory.mktemp("services") / "home"
    with Client(home=home) as client:
        server = Server(served(client))
        try:
            for method, path, user, status, _ in REQUESTS:
                assert fetch(server.url + path, method, user)[0] == status
        finally:
            server.stop()
        client.service(RULES, key=KEY).log_prediction("rules", 2, outcome=OUTCOME)
        assert client.flush(10), "events not delivered"
        users = {u: client.service(SERVICE, key=KEY).user_hash(u) for u in ("alice", "bob", "carol")}
    store = LocalStore(home / DB_NAME)
    try:
        times = [p.time_ns for p in store.points(measurement=c.API_REQUEST.measurement)]
    finally:
        store.close()
    assert len(times) == len(REQUESTS)
    return ServiceData(home, users, times)


@pytest.fixture(scope="module")
def server(data: ServiceData) -> Iterator[InfluxServer]:
    srv = serve_store(data.home, TOKEN)
    yield srv
    srv.close()


def influx_reader(server: InfluxServer) -> ReadClient:
    return ReadClient(InfluxBackend(server.url, TOKEN, c.INFLUXDB_ORG, c.INFLUXDB_BUCKET))


@pytest.fixture(params=["local", "influx"])
def reader(request: pytest.FixtureRequest, data: ServiceData, server: InfluxServer) -> ReadClient:
    return ReadClient(home=data.home) if request.param == "local" else influx_reader(server)


def shape(rows: Any) -> list[tuple[Any, ...]]:
    return [(r["endpoint"], r["method"], r["status_code"]) for r in rows]


# ---- the read API ----------------------------------------------------------------------------------------


def test_services_are_listed_with_their_counts(reader: ReadClient, data: ServiceData) -> None:
    churn, rules = reader.services().to_list()
    last_request = reader.requests(SERVICE, descending=True, limit=1).to_list()[0]["time"]
    last_prediction = reader.predictions(SERVICE, descending=True, limit=1).to_list()[0]["time"]
    assert churn == {
        "service": SERVICE,
        "requests": 5,
        "server_errors": 1,
        "last_request": last_request,
        "models": "churn, fraud",
        "scores": 3,
        "outcomes": 0,
        "last_prediction": last_prediction,
    }
    assert (rules["service"], rules["requests"], rules["last_request"], rules["models"]) == (
        RULES,
        0,
        None,
        "rules",
    )
    assert (rules["scores"], rules["outcomes"]) == (0, 1)
    assert [s["service"] for s in reader.services(since=data.times_ns[-1] + 1)] == [RULES]  # predicted later
    assert [s["requests"] for s in reader.services(until=data.times_ns[2])] == [2]


def test_requests_in_time_order_with_filters(reader: ReadClient, data: ServiceData) -> None:
    rows = reader.requests(SERVICE).to_list()
    assert shape(rows) == [(e, m, s) for m, _, _, s, e in REQUESTS]
    assert [r["user"] for r in rows] == [
        data.users["alice"],
        data.users["bob"],
        data.users["alice"],
        None,
        data.users["carol"],
    ]
    assert all(r["duration_ms"] > 0 for r in rows) and list(rows[0]) == [
        "time",
        "endpoint",
        "method",
        "status_code",
        "duration_ms",
        "user",
    ]
    assert shape(reader.requests(SERVICE, status="5xx")) == [("/boom", "GET", 500)]
    assert shape(reader.requests(SERVICE, status=404)) == [("none", "GET", 404)]
    assert shape(reader.requests(SERVICE, status=200, limit=2)) == shape(rows[:2])
    assert shape(reader.requests(SERVICE, status=201)) == []  # its class, 2xx, has none of that code
    assert shape(reader.requests(SERVICE, method="GET")) == shape(rows[3:])
    assert shape(reader.requests(SERVICE, endpoint="/predict/{model}")) == shape(rows[:3])
    assert shape(reader.requests(SERVICE, descending=True, limit=2)) == shape(rows[:2:-1])
    t = data.times_ns
    assert shape(reader.requests(SERVICE, since=t[1])) == shape(rows[1:])  # since: included, to the ns
    assert shape(reader.requests(SERVICE, since=t[1] + 1)) == shape(rows[2:])
    assert shape(reader.requests(SERVICE, until=t[1])) == shape(rows[:1])  # until: excluded
    assert shape(reader.requests(SERVICE, until=t[1] + 1)) == shape(rows[:2])


def test_predictions_with_scores_and_outcomes(reader: ReadClient) -> None:
    rows = reader.predictions(SERVICE).to_list()
    assert [(r["model"], r["version"], r["score"], r["outcome"]) for r in rows] == [
        ("churn", "v3", 0.9, None),
        ("churn", "v3", 0.25, None),
        ("fraud", "v3", 0.75, None),
    ]
    assert [r["score"] for r in reader.predictions(SERVICE, model="churn")] == [0.9, 0.25]
    assert [r["score"] for r in reader.predictions(SERVICE, model="fraud", version="v3")] == [0.75]
    assert reader.predictions(SERVICE, version="v4").to_list() == []
    assert [r["score"] for r in reader.predictions(SERVICE, descending=True, limit=1)] == [0.75]
    [outcome] = reader.predictions(RULES, version=2).to_list()  # a version number, as it was logged
    assert (outcome["model"], outcome["version"], outcome["score"], outcome["outcome"]) == (
        "rules",
        "2",
        None,
        OUTCOME,
    )


def test_an_unknown_service_is_named_with_the_ones_there_are(reader: ReadClient) -> None:
    for call in (reader.requests, reader.predictions):
        with pytest.raises(ServiceNotFound) as caught:
            call("churn")
        assert (
            str(caught.value)
            == f"service 'churn' not found in {reader.describe()}; services: {SERVICE}, {RULES}"
        )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda r: r.requests(SERVICE, status="500"),
            r"status='500' is invalid: must be a status class \(2xx",
        ),
        (lambda r: r.requests(SERVICE, status=600), r"status=600 is invalid: must be a status class"),
        (lambda r: r.requests(SERVICE, status=True), r"status=True is invalid"),
        (lambda r: r.requests(SERVICE, limit=0), r"limit=0 is invalid"),
        (lambda r: r.requests("", limit=1), r"service='' is invalid: must be a service name"),
        (lambda r: r.predictions(SERVICE, model=""), r"model='' is invalid: must be a model name"),
        (lambda r: r.predictions(SERVICE, since="soon"), r"since='soon' is invalid"),
        (lambda r: r.services(since="2h", until="3h"), r"bad time range"),
    ],
)
def test_bad_arguments_are_named(reader: ReadClient, call: Callable[[ReadClient], Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(reader)


CALLS: list[tuple[str, Callable[[ReadClient, ServiceData], Any]]] = [
    ("services", lambda r, d: r.services().to_list()),
    ("services since", lambda r, d: r.services(since=d.times_ns[2]).to_list()),
    ("requests", lambda r, d: r.requests(SERVICE).to_list()),
    ("requests 5xx", lambda r, d: r.requests(SERVICE, status="5xx").to_list()),
    ("requests code", lambda r, d: r.requests(SERVICE, status=200, limit=2).to_list()),
    ("requests newest", lambda r, d: r.requests(SERVICE, descending=True, limit=3).to_list()),
    ("requests range", lambda r, d: r.requests(SERVICE, since=d.times_ns[1], until=d.times_ns[3]).to_list()),
    ("predictions", lambda r, d: r.predictions(SERVICE).to_list()),
    ("predictions model", lambda r, d: r.predictions(SERVICE, model="churn", version="v3").to_list()),
    ("outcomes", lambda r, d: r.predictions(RULES).to_list()),
]


@pytest.mark.parametrize(("name", "call"), CALLS, ids=[n for n, _ in CALLS])
def test_both_backends_agree_on_services(
    data: ServiceData, server: InfluxServer, name: str, call: Callable[[ReadClient, ServiceData], Any]
) -> None:
    from_local = call(ReadClient(home=data.home), data)
    assert call(influx_reader(server), data) == from_local
    assert from_local not in ([], None)


def test_every_service_query_names_only_the_contract(data: ServiceData, server: InfluxServer) -> None:
    server.fake.queries.clear()
    for _, call in CALLS:
        call(influx_reader(server), data)
    queries = server.fake.queries
    assert len(queries) >= 20
    assert {q: flux_contract_problems(q) for q in queries if flux_contract_problems(q)} == {}
    measurements = {re.findall(r'r\._measurement == "([^"]+)"', q)[0] for q in queries}
    assert measurements == {c.API_REQUEST.measurement, c.PREDICTION.measurement}
    assert any(q.endswith('count()\n  |> keep(columns: ["service", "status", "_value"])') for q in queries)


# ---- the CLI ---------------------------------------------------------------------------------------------


def test_cli_lists_services_and_prints_their_requests_and_predictions(data: ServiceData) -> None:
    listed = mlobs(data.home, "services", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == [
        "service",
        "requests",
        "server_errors",
        "last_request",
        "models",
        "scores",
        "outcomes",
        "last_prediction",
    ]
    assert lines[1].split()[:3] == [SERVICE, "5", "1"] and lines[1].split()[4:7] == ["churn,", "fraud", "3"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", lines[1].split()[3])
    assert lines[2].split()[:5] == [RULES, "0", "0", "-", "rules"]
    failed = mlobs(data.home, "services", "requests", SERVICE, "--status", "5xx")
    assert [line.split()[1:4] for line in failed.stdout.splitlines()] == [
        ["endpoint", "method", "status_code"],
        ["/boom", "GET", "500"],
    ]
    newest = mlobs(data.home, "services", "requests", SERVICE, "--descending", "--limit", "1", "--json")
    assert [json.loads(line)["status_code"] for line in newest.stdout.splitlines()] == [404]
    code = mlobs(data.home, "services", "requests", SERVICE, "--status", "404", "--json")
    assert [json.loads(line)["endpoint"] for line in code.stdout.splitlines()] == ["none"]
    outcomes = mlobs(data.home, "services", "predictions", RULES)
    assert outcomes.stdout.splitlines()[1].split()[1:] == ["rules", "2", "-", "blocked\\nmanual", "review"]
    scores = mlobs(data.home, "services", "predictions", SERVICE, "--model", "churn", "--json")
    assert [json.loads(line)["score"] for line in scores.stdout.splitlines()] == [0.9, 0.25]
    none = mlobs(data.home, "services", "requests", SERVICE, "--endpoint", "/other")
    assert (none.returncode, none.stdout.splitlines()[1:]) == (
        0,
        [f"(no requests of service {SERVICE} match)"],
    )
    unknown = mlobs(data.home, "services", "predictions", "churn")
    assert (unknown.returncode, unknown.stdout) == (1, "")
    assert unknown.stderr.startswith("mlobs: error: service 'churn' not found in the local store ")
    assert unknown.stderr.endswith(f"; services: {SERVICE}, {RULES}\n")
