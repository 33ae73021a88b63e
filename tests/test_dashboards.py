"""The dashboards: generated JSON in step with the sources, sound structure, every PromQL
parsed by promtool and by a PromQL parser (tests/support/promql.py: each metric it selects is the
contract's; ours are run against a live Prometheus scraping the real exporters), and every
Flux query naming only what the SDK and the exporter write."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from dashboards import generate
from dashboards.flux import FLUX_COLUMNS, MADE_COLUMNS, RUN_LABEL, FluxError, Var, select
from pipeline_sdk import Client, LocalTransport, MLObsMiddleware
from pipeline_sdk import contract as c
from pipeline_sdk.testing import kube_objects as k
from pipeline_sdk.testing.kube_fake import FakeKubeServer
from tests.conftest import wait_for
from tests.support.exporter_process import Exporter
from tests.support.live_stack import have_binaries, prometheus
from tests.support.promql import PromQLError, metric_names
from tests.test_alerting import contract_metric_names
from tests.test_flux_frontend import VARIABLE  # Grafana's own variable syntax
from tests.test_model_api import Server

BUILTINS = {
    "__rate_interval",
    "__range",
    "__interval",
    "__data",
    "__value",
    "__field",
    "__series",
    "__from",
    "__to",
    "timeFilter",
    "__name",
}
# Values that make an expression valid and broad where Grafana would put its interval or range.
MACROS = {"__rate_interval": "1m", "__range": "5m", "__interval": "1m"}


def variable_name(match: re.Match[str]) -> str | None:
    """The variable a match of Grafana's own VARIABLE regex names; None for ``$1`` (a label_replace group)."""
    name = match.group(1) or match.group(2) or match.group(4)
    return None if name.isdigit() else name


def boards() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(generate.OUT.glob("*.json"))}


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return list(board["panels"])


def targets(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for p in panels(board) for t in p.get("targets", [])]


def prom_exprs(board: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for t in targets(board) if t["datasource"]["type"] == "prometheus"]
    for var in board["templating"]["list"]:
        if (var.get("datasource") or {}).get("type") == "prometheus":
            match = re.fullmatch(r"label_values\((.*), \w+\)", var["query"])
            assert match, f"variable {var['name']}: not a label_values() query"
            exprs.append(match.group(1))
    return exprs


def flux_queries(board: dict[str, Any]) -> list[str]:
    queries = [t["query"] for t in targets(board) if t["datasource"]["type"] == "influxdb"]
    queries += [
        v["query"]
        for v in board["templating"]["list"]
        if (v.get("datasource") or {}).get("type") == "influxdb"
    ]
    return queries


def substitute(expr: str) -> str:
    """Grafana variables replaced by what makes the expression valid and broad (``$1`` kept)."""

    def value(match: re.Match[str]) -> str:
        name = variable_name(match)
        return match.group(0) if name is None else MACROS.get(name, ".*")

    return VARIABLE.sub(value, expr)


# ---- generation ----------------------------------------------------------------------------------


def test_committed_json_is_generated_from_the_sources() -> None:
    sources = generate.sources()
    assert {generate.stem(s) for s in sources} == {
        "pipeline_runs",
        "run_view",
        "model_api",
        "resources",
        "stack_health",
        "model_drift",
    }
    for source in sources:
        committed = generate.OUT / f"{generate.stem(source)}.json"
        assert committed.read_text() == generate.render(source), (
            f"{committed.name} drifted: run `make generate`"
        )
        assert committed.read_text().startswith('{\n  "__generated": "from dashboards/')


def test_drift_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "json"
    shutil.copytree(generate.OUT, out)
    monkeypatch.setattr(generate, "OUT", out)
    assert generate.main(["--check"]) == 0
    edited = out / "run_view.json"
    edited.write_text(edited.read_text().replace("Runs compared", "Runs compared by hand"))
    assert generate.main(["--check"]) == 1


def test_uids_are_stable_and_from_the_contract() -> None:
    uids = {stem: b["uid"] for stem, b in boards().items()}
    assert uids == {
        "pipeline_runs": c.DASHBOARD_PIPELINE_RUNS_UID,
        "run_view": c.DASHBOARD_RUN_VIEW_UID,
        "model_api": c.DASHBOARD_MODEL_API_UID,
        "resources": c.DASHBOARD_RESOURCES_UID,
        "stack_health": c.DASHBOARD_STACK_HEALTH_UID,
        "model_drift": c.DASHBOARD_MODEL_DRIFT_UID,
    }


# ---- structure -------------------------------------------------------------------------------------


def structure_problems(board: dict[str, Any]) -> list[str]:
    problems = []
    ids = [p["id"] for p in panels(board)]
    if len(ids) != len(set(ids)):
        problems.append(f"duplicate panel ids {sorted(ids)}")
    cells: dict[tuple[int, int], int] = {}
    for p in panels(board):
        g = p["gridPos"]
        if g["x"] + g["w"] > 24:
            problems.append(f"panel {p['id']} is wider than the grid")
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    problems.append(f"panels {cells[(x, y)]} and {p['id']} overlap")
                cells[(x, y)] = p["id"]
    known = {c.DATASOURCE_PROMETHEUS_UID, c.DATASOURCE_INFLUXDB_UID}
    for p in panels(board):
        for ds in [p["datasource"], *(t["datasource"] for t in p.get("targets", []))]:
            if ds["uid"] not in known:
                problems.append(f"panel {p['id']}: datasource uid {ds['uid']!r} is not provisioned")
    defined = {v["name"] for v in board["templating"]["list"]}
    used: set[str] = set()
    for text in re.findall(r'"((?:[^"\\]|\\.)*)"', json.dumps(panels(board))):
        used.update(n for m in VARIABLE.finditer(text) if (n := variable_name(m)) is not None)
    for name in sorted(used - defined - BUILTINS):
        problems.append(f"variable ${name} is used but not defined")
    return sorted(set(problems))


@pytest.mark.parametrize(
    "stem", ["pipeline_runs", "run_view", "model_api", "resources", "stack_health", "model_drift"]
)
def test_structure(stem: str) -> None:
    assert structure_problems(boards()[stem]) == []


def test_structure_check_can_fail() -> None:
    board = boards()["run_view"]
    broken = json.loads(json.dumps(board))
    broken["panels"][1]["id"] = broken["panels"][0]["id"]
    broken["panels"][2]["gridPos"]["y"] = 0
    broken["panels"][0]["targets"][0]["datasource"]["uid"] = "nope"
    broken["templating"]["list"] = [v for v in broken["templating"]["list"] if v["name"] != "agg"]
    problems = " | ".join(structure_problems(broken))
    for expected in (
        "duplicate panel ids",
        "overlap",
        "'nope' is not provisioned",
        "$agg is used but not defined",
    ):
        assert expected in problems


def test_the_logs_panel_has_the_id_emails_link_to() -> None:
    logs = [p for p in panels(boards()["run_view"]) if p["type"] == "logs"]
    assert [p["id"] for p in logs] == [c.RUN_VIEW_LOGS_PANEL_ID]


# ---- Flux against the contract -----------------------------------------------------------------------


def flux_problems(query: str, bucket: str = "v.defaultBucket") -> list[str]:
    """Names a Flux query uses that its measurement does not have (by the contract), and a bucket
    other than ``bucket`` (a dashboard's: the datasource's; make e2e's: a string literal)."""
    streams = {s.measurement: s for s in c.STREAMS}
    measurements = re.findall(r'r\._measurement == "([^"]+)"', query)
    if len(set(measurements)) != 1:
        return [f"expected one measurement, found {measurements}"]
    stream = streams.get(measurements[0])
    if stream is None:
        return [f"measurement {measurements[0]!r} is not written by the SDK or the exporter"]
    allowed = set(stream.tags) | set(stream.fields) | FLUX_COLUMNS
    made = {  # a column the query makes itself: where a map makes it
        n: m.start() for n in MADE_COLUMNS if (m := re.search(rf"\(\{{r with {n}: ", query)) is not None
    }

    def known(name: str, at: int) -> bool:
        return name in allowed or (name in made and made[name] < at)

    problems = [
        f"field {f!r} not in {stream.measurement}"
        for f in re.findall(r'r\._field == "([^"]+)"', query)
        if f not in stream.fields
    ]
    problems += [
        f"column r.{m.group(1)} not in {stream.measurement}"
        for m in re.finditer(r"\br\.(\w+)", query)
        if not known(m.group(1), m.start())
    ]
    for listed in re.finditer(r"(?:columns|rowKey|columnKey): \[([^\]]*)\]", query):
        problems += [
            f"column {n!r} not in {stream.measurement}"
            + (" before the query makes it" if n in MADE_COLUMNS else "")
            for n in re.findall(r'"([^"]+)"', listed.group(1))
            if not known(n, listed.start())
        ]
    problems += [
        f"tag {t!r} not in {stream.measurement}"
        for t in re.findall(r'tag: "([^"]+)"', query)
        if t not in stream.tags
    ]
    if bucket == "v.defaultBucket":
        if "bucket: v.defaultBucket" not in query or re.search(r"bucket:\s*+(?!v\.defaultBucket\b)", query):
            problems.append("not the datasource's bucket (v.defaultBucket)")
    elif re.findall(r"bucket:\s*([^,)]+)", query) != [bucket]:
        problems.append(f"not the bucket {bucket}")
    return problems


def test_every_flux_query_names_only_contract_measurements_tags_and_fields() -> None:
    queries = [q for b in boards().values() for q in flux_queries(b)]
    assert len(queries) >= 12
    problems = {q.splitlines()[2] if len(q.splitlines()) > 2 else q: flux_problems(q) for q in queries}
    assert {k_: v for k_, v in problems.items() if v} == {}


def test_flux_check_can_fail() -> None:
    query = boards()["run_view"]["panels"][0]["targets"][3]["query"]
    assert flux_problems(query) == []
    assert flux_problems(query.replace('r._field == "value"', 'r._field == "valeu"')) == [
        "field 'valeu' not in list_metric"
    ]
    assert (
        "measurement 'metrics' is not written"
        in flux_problems(query.replace('"list_metric"', '"metrics"'))[0]
    )
    assert flux_problems(query.replace('["run_id", "attempt", "name"]', '["run_id", "attempt", "nmae"]')) == [
        "column 'nmae' not in list_metric"
    ]
    # a column the query makes (the run label) is known only after the step that makes it
    made_at = query.index("({r with run: ")
    unmade = query[:made_at] + query[made_at:].replace("({r with run: ", "({r with rnu: ", 1)
    assert flux_problems(unmade) == [
        "column 'run' not in list_metric before the query makes it",
        "column 'run' not in list_metric before the query makes it",
    ]
    early = query.replace('group(columns: ["run_id", "attempt", "name"])', 'group(columns: ["run", "name"])')
    assert flux_problems(early) == ["column 'run' not in list_metric before the query makes it"]
    spelt = query.replace("bucket: v.defaultBucket", f'bucket: "{c.INFLUXDB_BUCKET}"')
    assert flux_problems(spelt) == ["not the datasource's bucket (v.defaultBucket)"]


# ---- attempts: a step run is (run id, step, attempt), never merged -----------------------------------

DEFAULT_ATTEMPT = f'if exists r.{c.TAG_ATTEMPT} then r.{c.TAG_ATTEMPT} else "{c.FIRST_ATTEMPT}"'
ATTEMPT_COLUMNS = {c.TAG_ATTEMPT, RUN_LABEL}
STEP_FILTER = Var(c.GRAFANA_VAR_STEP).matches(c.TAG_STEP)  # r.step =~ /^${step:regex}$/


def attempt_problems(query: str) -> list[str]:
    """How a query could merge the attempts of a step run, or hide data written before the tag existed."""
    problems = []
    default = query.find(DEFAULT_ATTEMPT)
    for match in re.finditer(r"\b(group|keep|pivot)\((?:columns|rowKey): \[([^\]]*)\]", query):
        step, names = match.group(1), re.findall(r'"([^"]+)"', match.group(2))
        if c.TAG_RUN_ID in names and not ATTEMPT_COLUMNS & set(names):
            problems.append(f"{step} by run_id without the attempt: {names}")
        if step != "group" and ATTEMPT_COLUMNS & set(names) and not 0 <= default < match.start():
            problems.append(f'{step} shows the attempt before a missing one reads as "1": {names}')
    label = query.find(f"({{r with {RUN_LABEL}: ")
    if label >= 0 and not 0 <= default < label:
        problems.append('the run label is made before a missing attempt reads as "1"')
    return problems


def test_no_query_merges_the_attempts_of_a_run() -> None:
    queries = {(stem, q): attempt_problems(q) for stem, b in boards().items() for q in flux_queries(b)}
    assert {k_: v for k_, v in queries.items() if v} == {}
    shown = {  # the last keep of every query of a run: it shows the attempt, or the run label
        p["title"] + " " + t["refId"]: ATTEMPT_COLUMNS & set(re.findall(r'"([^"]+)"', keeps[-1]))
        for stem in ("run_view", "pipeline_runs")
        for p in panels(boards()[stem])
        for t in p.get("targets", [])
        if t["datasource"]["type"] == "influxdb"
        and (keeps := re.findall(r"keep\(columns: \[([^\]]*)\]", t["query"]))
    }
    assert shown == {
        **{f"Runs compared {ref}": {RUN_LABEL} for ref in "ABCDE"},
        "List metrics, runs overlaid A": {RUN_LABEL},
        "CPU, runs overlaid A": {RUN_LABEL},
        "Memory, runs overlaid A": {RUN_LABEL},
        "Inputs and outputs A": {RUN_LABEL},
        "Logs A": {RUN_LABEL},
        "Last status per pipeline step A": {c.TAG_ATTEMPT},
        "Recent failures A": {c.TAG_ATTEMPT},
    }
    join = panels(boards()["run_view"])[0]["transformations"]
    assert join == [{"id": "joinByField", "options": {"byField": RUN_LABEL, "mode": "outer"}}]


def step_problems(query: str) -> list[str]:
    """A run-view query that reads every step sharing a run id, not the chosen one."""
    return [] if STEP_FILTER in query else [f"no filter {STEP_FILTER}"]


def test_the_run_view_shows_the_chosen_step_only() -> None:
    board = boards()["run_view"]
    queries = [t["query"] for t in targets(board)]
    [run_ids] = [v["query"] for v in board["templating"]["list"] if v["name"] == c.GRAFANA_VAR_RUN_ID]
    assert len(queries) == 10 and [step_problems(q) for q in [*queries, run_ids]] == [[]] * 11


def test_the_attempt_check_can_fail() -> None:
    logs = select(
        c.LOG, fields=[c.FIELD_MESSAGE], among={c.TAG_RUN_ID: Var(c.GRAFANA_VAR_RUN_ID)}
    ).pivot_fields()
    merged = logs.then("group()").keep("_time", c.TAG_RUN_ID, c.FIELD_MESSAGE).text
    assert attempt_problems(merged) == ["keep by run_id without the attempt: ['_time', 'run_id', 'message']"]
    grouped = select(c.PARAM, fields=[c.FIELD_VALUE]).group(c.TAG_RUN_ID, c.TAG_NAME).text
    assert attempt_problems(grouped) == ["group by run_id without the attempt: ['run_id', 'name']"]
    raw = logs.keep("_time", c.TAG_RUN_ID, c.TAG_ATTEMPT).text  # old points have no attempt: a blank
    assert attempt_problems(raw) == [
        "keep shows the attempt before a missing one reads as \"1\": ['_time', 'run_id', 'attempt']"
    ]
    assert attempt_problems(logs.attempts().keep("_time", c.TAG_RUN_ID, c.TAG_ATTEMPT).text) == []
    labelled = logs.by_attempt().keep(RUN_LABEL).text
    assert attempt_problems(labelled) == []
    assert attempt_problems(labelled.replace(DEFAULT_ATTEMPT, "r.attempt")) == [
        "keep shows the attempt before a missing one reads as \"1\": ['run']",
        'the run label is made before a missing attempt reads as "1"',
    ]
    no_step = panels(boards()["run_view"])[1]["targets"][0]["query"].replace(STEP_FILTER, "true")
    assert step_problems(no_step) == ["no filter r.step =~ /^${step:regex}$/"]


def test_a_column_a_query_makes_is_known_only_after_it_is_made() -> None:
    listed = select(c.LIST_METRIC, fields=[c.FIELD_VALUE])
    with pytest.raises(
        FluxError, match=r"\['run'\] not in measurement 'list_metric' .*only after by_attempt"
    ):
        listed.group(RUN_LABEL)
    assert listed.by_attempt().group(RUN_LABEL, c.TAG_NAME).text.endswith('group(columns: ["run", "name"])')


# ---- PromQL through promtool -------------------------------------------------------------------------


def promtool_problems(exprs: list[str], tmp: Path) -> str:
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [
                    {"record": f"dashboard:expr_{i}", "expr": substitute(e)} for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp / "dashboard-exprs.yaml"
    path.write_text(yaml.safe_dump(rules))
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed: `make test` installs it")
    run = subprocess.run([promtool, "check", "rules", str(path)], check=False, capture_output=True, text=True)
    return "" if run.returncode == 0 else run.stdout + run.stderr


def test_every_promql_expression_parses(tmp_path: Path) -> None:
    exprs = [e for b in boards().values() for e in prom_exprs(b)]
    assert len(exprs) >= 40
    assert promtool_problems(exprs, tmp_path) == ""


def test_promtool_check_can_fail(tmp_path: Path) -> None:
    assert "dashboard:expr_1" in promtool_problems(["up", "sum by (job) (rate(up[5m])"], tmp_path)


# ---- PromQL metric names, read by a parser; ours against a live Prometheus scraping the real exporters

OURS = {
    v
    for k_, v in vars(c).items()
    if k_.startswith("PROM_")
    and isinstance(v, str)
    and (v.startswith(("mlobs_", "http_request")) or v == c.PROM_HTTP_REQUESTS)
}


def provided_by_our_exporters(expr: str) -> bool:
    """Only our exporters' metrics (and `up` of their jobs): a live Prometheus here has their data."""
    if f'job="{c.PROM_JOB_FLUENTD}"' in expr:  # Fluentd cannot run here
        return False
    names = metric_names(substitute(expr))
    if any(n in PUSHED for n in names):  # pushed by drift monitors: tests/test_drift_monitor.py
        return False
    return bool(names) and all(ours(n) for n in names)


# What drift monitors push to the Pushgateway: no exporter here serves them
PUSHED = frozenset(v for k, v in vars(c).items() if k.startswith("PROM_DRIFT_") and isinstance(v, str))


def ours(name: str) -> bool:
    """A metric our exporters write (a histogram's series too), or ``up``."""
    return name == "up" or name in OURS or re.sub(r"_(bucket|sum|count)$", "", name) in OURS


def metric_problems(expr: str) -> list[str]:
    """Metrics an expression selects that neither we nor the upstream exporters the contract names write."""
    try:
        unknown = metric_names(substitute(expr)) - contract_metric_names()
    except PromQLError as exc:
        return [str(exc)]
    return [f"metrics not in the contract: {sorted(unknown)}"] if unknown else []


def test_every_promql_expression_selects_only_contract_metrics() -> None:
    exprs = [e for b in boards().values() for e in prom_exprs(b)]
    assert len(exprs) >= 40
    assert {e: metric_problems(e) for e in exprs if metric_problems(e)} == {}
    live = [e for e in exprs if provided_by_our_exporters(e)]
    assert len(live) >= 15
    # the rest read what cannot run here: cAdvisor, kube-state-metrics, Alertmanager, InfluxDB, Fluentd
    upstream = [e for e in exprs if not all(ours(n) for n in metric_names(substitute(e)))]
    fluentd = [e for e in exprs if f'job="{c.PROM_JOB_FLUENTD}"' in e]
    pushed = [e for e in exprs if metric_names(substitute(e)) & PUSHED]
    assert len(pushed) >= 5
    assert sorted(set(exprs) - set(live)) == sorted(set(upstream) | set(fluentd) | set(pushed))


def test_an_expression_is_checked_whatever_functions_it_calls() -> None:
    # A regex extractor with a stop-word list took clamp_max (not in its list) for a metric: the
    # expression then looked like another exporter's and dropped out of the live check.
    expr = f'clamp_max(sum(rate({c.PROM_RUNS_TOTAL}{{pipeline=~"$pipeline"}}[$__rate_interval])), 1)'
    assert metric_names(substitute(expr)) == {c.PROM_RUNS_TOTAL}
    assert provided_by_our_exporters(expr) and metric_problems(expr) == []
    misspelt = expr.replace(c.PROM_RUNS_TOTAL, "mlobs_pipeline_runs_totl")
    assert metric_problems(misspelt) == ["metrics not in the contract: ['mlobs_pipeline_runs_totl']"]
    assert not provided_by_our_exporters(misspelt)
    assert "is not PromQL" in metric_problems("sum(rate(up[5m])")[0]
    quantile = (
        f'histogram_quantile(0.9, sum by (le) (rate({c.PROM_RUN_DURATION}_bucket{{step=~"$step"}}[5m])))'
    )
    assert metric_names(substitute(quantile)) == {c.PROM_RUN_DURATION + "_bucket"}
    assert provided_by_our_exporters(quantile)
    replaced = f'label_replace({c.PROM_KSM_POD_LABELS}, "pipeline", "$1", "label_mlobs_io_pipeline", "(.*)")'
    assert substitute(replaced) == replaced and metric_problems(replaced) == []


@pytest.fixture
def live_prometheus(tmp_path: Path, forward_server) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    if not have_binaries():
        pytest.skip("Prometheus is not installed: `make test` installs it")
    api = FakeKubeServer()
    exporter = Exporter(api.url, tmp_path / "home", forward_server().port, "--settle", "0.5")
    registry = CollectorRegistry()
    client = Client(LocalTransport(tmp_path / "api.db"), home=tmp_path / "api-home")

    async def predict(request):  # type: ignore[no-untyped-def]
        if request.path_params["model"] == "broken":
            return JSONResponse({"error": "no such model"}, status_code=500)
        return JSONResponse({"score": 0.9})

    app = MLObsMiddleware(
        Starlette(routes=[Route("/predict/{model}", predict)]),
        service="churn-api",
        client=client,
        registry=registry,
    )
    api_server = Server(app)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": c.PROM_JOB_EXPORTER,
                "static_configs": [{"targets": [exporter.url.removeprefix("http://")]}],
            },
            {
                "job_name": c.PROM_JOB_MODEL_API,
                "static_configs": [
                    {
                        "targets": [api_server.url.removeprefix("http://")],
                        "labels": {"service": "churn-api", "namespace": "ml"},
                    }
                ],
            },
        ],
    }
    (tmp_path / "prometheus.yaml").write_text(yaml.safe_dump(config))
    prom = prometheus(tmp_path / "prometheus.yaml", tmp_path)
    try:
        yield prom, api, api_server
    finally:
        prom.stop()
        api_server.stop()
        client.close(timeout=0)
        exporter.stop()
        api.close()


def test_exporter_backed_expressions_return_data(live_prometheus: Any) -> None:
    prom, api, api_server = live_prometheus

    def result(expr: str) -> list[Any]:
        return prom.get_json("/api/v1/query", query=expr)["data"]["result"]  # type: ignore[no-any-return]

    wait_for(prom.ready, 60, "Prometheus to be ready")
    wait_for(lambda: len(result(f'up{{job="{c.PROM_JOB_EXPORTER}"}} == 1')) == 1, 60, "the exporter scraped")
    wait_for(
        lambda: len(result(f'up{{job="{c.PROM_JOB_MODEL_API}"}} == 1')) == 1, 60, "the model API scraped"
    )
    # Activity after the first scrapes, so counters and histograms have something to rate.
    now = time.time()
    for steps in (
        k.succeeding(k.RunSpec("train", "fit", "ok-1"), now - 50, now - 10),
        k.oom_killed(k.RunSpec("train", "fit", "oom-1"), now - 30, now - 5),
        k.backoff_limit(k.RunSpec("etl", "load", "bl-1", backoff_limit=1), now - 40, now - 2),
        [
            ("jobs", "apply", k.job(k.RunSpec("train", "eval", "run-1"), started=now - 20, active=1)),
            ("pods", "apply", k.pod(k.RunSpec("train", "eval", "run-1"), 0, "Running", started=now - 20)),
        ],
    ):
        for resource, _, obj in steps:
            api.kube.apply(resource, obj)
    for i in range(40):
        model = "broken" if i % 10 == 0 else "churn"
        with (
            urllib.request.urlopen(f"{api_server.url}/predict/{model}")
            if model != "broken"
            else _fail(f"{api_server.url}/predict/{model}")
        ):
            pass
    wait_for(
        lambda: bool(result(f'{c.PROM_RUNS_TOTAL}{{status="failed",reason="OOMKilled"}} == 1')),
        30,
        "the runs in Prometheus",
    )
    exprs = sorted({e for b in boards().values() for e in prom_exprs(b) if provided_by_our_exporters(e)})
    assert len(exprs) >= 15, exprs
    deadline = time.monotonic() + 30
    empty = exprs
    while empty and time.monotonic() < deadline:
        empty = [e for e in empty if not result(substitute(e))]
        if empty:
            time.sleep(1)  # one scrape interval: rates need a second sample
    assert empty == [], f"no data for {empty}"
    # and the check can fail: a misspelt metric or a label value nobody writes returns nothing
    assert result(substitute(exprs[0].replace("_bucket", "_buckets"))) == []
    assert result(f'{c.PROM_RUNS_TOTAL}{{pipeline="no-such-pipeline"}}') == []


def _fail(url: str) -> Any:
    try:
        urllib.request.urlopen(url)
    except urllib.error.HTTPError as err:
        return err
    raise AssertionError(f"{url} did not fail")


def test_recent_failures_show_each_attempts_error() -> None:
    [panel] = [p for p in panels(boards()["pipeline_runs"]) if p["title"] == "Recent failures"]
    [target] = panel["targets"]
    query = target["query"]
    keeps = re.findall(r"keep\(columns: \[([^\]]*)\]", query)
    assert re.findall(r'"([^"]+)"', keeps[-1]) == [
        "_time",
        c.TAG_PIPELINE,
        c.TAG_STEP,
        c.TAG_RUN_ID,
        c.TAG_ATTEMPT,
        c.TAG_REASON,
        c.FIELD_ERROR,
        c.TAG_NAMESPACE,
    ]
    # Both fields, made columns before the rows are merged: a failure without an error keeps its row.
    fields = f'r._field == "{c.FIELD_EXECUTION_TIME_MS}" or r._field == "{c.FIELD_ERROR}"'
    assert fields in query
    assert query.index('pivot(rowKey: ["_time"], columnKey: ["_field"]') < query.index("group()")
