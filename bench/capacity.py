"""Capacity model: what a workload costs each tier of the stack, from figures measured here.

    python -m bench.capacity [--profile laptop|team|platform|all] [--runs-per-day N ...]

Inputs (a profile's, or yours with one ``--profile``): runs a day, steps per run; params,
simple metrics, list metrics (with points each), log lines and system samples per step;
model-API requests a second; retention; the peak-to-mean factor of the event rate (runs
bunched in a window: 3 means the day's runs arrive in 8 hours); pipeline/step pairs,
model-API services and their replicas (for Prometheus).

Measured in the same process, never typed in:

* **one step run** of the profile's shape through the real SDK (``pipeline_sdk.run``) and the
  exporter's run record (the real ``RunTracker`` fed the Job and Pods of one run, its
  ``RecordSender`` on the same client), delivered with the Forward protocol to a real
  receiver (``pipeline_sdk.testing.forward_server``): the events and the msgpack bytes of
  each, per stream; then the chunks as received are written into the real local store,
  which splits them into InfluxDB points by the contract as ``fluent.conf`` does: the
  distinct series (measurement and tag set) and field series (and field key: what InfluxDB
  counts as series cardinality), the numeric field values and the bytes of the string ones;
* **one model API** (a Starlette app behind ``MLObsMiddleware``) sent requests on every route
  and status class, its ``/metrics`` scraped: the Prometheus series of one replica; its
  api_request events go through the same receiver and store;
* **the pipeline exporter's collectors**, fed runs of 1, 2 and 3 pipeline/step pairs and
  scraped: the series of the exporter itself and of each pair (checked to be linear).

Every output is compared with the published figure of the engine that holds it (LIMITS,
each with its SOURCES entry).  The module is over 400 lines because the model, its three
measurements and its report belong together; each part is one section.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import math
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgpack
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from exporters.pipeline_exporter.collectors import ExporterCollector, ExporterStats, RunCollector
from exporters.pipeline_exporter.config import SeriesLimits
from exporters.pipeline_exporter.records import RecordSender
from exporters.pipeline_exporter.tracker import RunTracker
from pipeline_sdk import Client, FluentTransport, MLObsMiddleware, new_run_id
from pipeline_sdk import contract as c
from pipeline_sdk import run as sdk_run
from pipeline_sdk.local_store import LocalStore, series_key
from pipeline_sdk.testing import kube_objects as k
from pipeline_sdk.testing.forward_server import ForwardServer

ROOT = Path(__file__).resolve().parents[1]
BENCH_HASH_KEY = "capacity-model-bench-key"  # keys the hashes of made-up user ids only
DAY = 86_400.0
KIB, MIB, GIB = 2**10, 2**20, 2**30

SOURCES: Mapping[str, str] = {
    "influxdb": "https://docs.influxdata.com/influxdb/v1/guides/hardware_sizing/",
    "fluentd": "https://docs.fluentd.org/deployment/performance-tuning-single-process",
    "prometheus": "https://www.robustperception.io/how-much-ram-does-prometheus-2-x-need-for-cardinality-and-ingestion/",
}


@dataclass(frozen=True)
class InfluxNode:
    """One row of InfluxDB's OSS hardware sizing guidelines (single node)."""

    size: str
    writes_per_second: float  # field writes a second the row is sized for
    series: float  # unique series the row is sized for


INFLUX_NODES = (  # SOURCES["influxdb"]: the OSS guidelines table, and the single-node ceiling above it
    InfluxNode("2-4 cores, 2-4 GB RAM, 500 IOPS", 5_000, 100_000),
    InfluxNode("4-6 cores, 8-32 GB RAM, 500-1000 IOPS", 250_000, 1_000_000),
    InfluxNode("8+ cores, 32+ GB RAM, 1000+ IOPS", 750_000, 10_000_000),
)
INFLUX_BYTES_PER_VALUE = 3  # SOURCES["influxdb"]: a non-string value (a timestamp too) takes about 3 bytes
FLUENTD_EVENTS_PER_WORKER = 5_000  # SOURCES["fluentd"]: one process handles up to 5,000 messages/s
PROMETHEUS_BYTES_PER_SERIES = 2 * KIB  # SOURCES["prometheus"]: about 2 GiB per million series (cardinality)
FLUENTD_BUFFER_BYTES = 2 * GIB  # charts/mlobs-core values fluentd.persistence.size: the file buffer's volume
FLUENTD_REPLICAS = 1  # charts/mlobs-core values fluentd.replicas
PROMETHEUS_MEMORY_LIMIT = 1536 * MIB  # charts/mlobs values: kube-prometheus-stack's Prometheus memory limit


# ---- inputs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    """A workload.  Each count is per step run unless it says otherwise."""

    runs_per_day: float
    steps_per_run: int
    params: int
    metrics: int
    list_metrics: int
    points_per_list_metric: int
    log_lines: int
    system_samples: int  # one every MLOBS_SYSTEM_INTERVAL (10 s): a 10-minute step takes 60
    api_requests_per_second: float
    retention_days: float
    peak_factor: float  # peak over mean event rate (runs bunched in a window: 24 h / window)
    pipeline_steps: int  # distinct pipeline/step pairs (Prometheus series of the exporter)
    services: int  # model APIs
    replicas_per_service: int  # pods per model API (each one a scrape target)
    outage_hours: float = 2.0  # InfluxDB outage the Fluentd buffer must hold

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            whole = f.type == "int"
            least = 1 if f.name in ("steps_per_run", "replicas_per_service") else 0
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and value % 1):
                raise ValueError(f"{f.name}: expected a {'whole ' if whole else ''}number, got {value!r}")
            if value < least or not math.isfinite(value):
                raise ValueError(f"{f.name}: expected a number of at least {least}, got {value!r}")
        for name in ("retention_days", "peak_factor"):
            if getattr(self, name) <= 0 or (name == "peak_factor" and self.peak_factor < 1):
                raise ValueError(
                    f"{name}: expected {'at least 1' if name == 'peak_factor' else '> 0'}, "
                    f"got {getattr(self, name)!r}"
                )


PROFILES: Mapping[str, Inputs] = {
    "laptop": Inputs(20, 3, 10, 5, 3, 50, 50, 6, 1, 30, 4, 3, 1, 1),
    "team": Inputs(1_000, 5, 20, 10, 5, 100, 200, 30, 50, 90, 3, 50, 10, 2),
    "platform": Inputs(100_000, 5, 30, 10, 10, 500, 500, 60, 2_000, 90, 3, 2_000, 200, 3),
}


# ---- measurements --------------------------------------------------------------------------------


FIGURES = ("events", "bytes", "numeric_values", "string_values", "string_bytes")  # Received's per-measurement


@dataclass(frozen=True)
class Received:
    """What the Forward receiver got and the local store made of it; each figure per measurement."""

    events: Mapping[str, int]
    bytes: Mapping[str, int]  # msgpack bytes of the [time, record] entries
    numeric_values: Mapping[str, int]  # field values that are not strings
    string_values: Mapping[str, int]  # string field values
    string_bytes: Mapping[str, int]  # bytes of the string field values (before InfluxDB's compression)
    series: int  # distinct measurement + tag set
    field_series: int  # distinct measurement + tag set + field key: InfluxDB's series cardinality

    def total(self, figure: str, scale: Mapping[str, float] | None = None) -> float:
        """The sum of a figure over the measurements, each times ``scale``'s factor (default 1)."""
        figures: Mapping[str, int] = getattr(self, figure)
        return sum(value * (scale or {}).get(m, 1.0) for m, value in figures.items())


@contextmanager
def forward_receiver(workdir: Path) -> Iterator[tuple[int, list[Received]]]:
    """A real Forward receiver on 127.0.0.1; on exit, what it received lands in ``out[0]``."""
    recorded = io.BytesIO()
    server = ForwardServer("127.0.0.1", 0, recorded)
    thread = threading.Thread(target=server.serve, name="capacity-forward", daemon=True)
    thread.start()
    out: list[Received] = []
    try:
        yield server.port, out
    finally:
        server.running = False
        thread.join(10)
    db = workdir / f"store-{server.port}-{threading.get_ident()}-{len(list(workdir.iterdir()))}.db"
    out.append(store_received(recorded.getvalue(), db))


def store_received(recorded: bytes, db: Path) -> Received:
    """Count a receiver's recording, write its chunks into a local store and count the series."""
    counts: dict[str, Counter[str]] = {figure: Counter() for figure in FIGURES}
    store = LocalStore(db)
    try:
        for tag, _chunk, _mode, count, entries in msgpack.Unpacker(io.BytesIO(recorded), raw=False):
            measurement = c.STREAMS_BY_TAG[tag].measurement
            counts["events"][measurement] += count
            counts["bytes"][measurement] += len(entries)
            store.write_entries(tag, entries)
        series: set[str] = set()
        field_series: set[tuple[str, str]] = set()
        for point in store.points():
            key = series_key(point.measurement, point.tags)
            series.add(key)
            for name, value in point.fields.items():
                field_series.add((key, name))
                if isinstance(value, str):
                    counts["string_values"][point.measurement] += 1
                    counts["string_bytes"][point.measurement] += len(value.encode())
                else:
                    counts["numeric_values"][point.measurement] += 1
    finally:
        store.close()
    figures = {figure: dict(counter) for figure, counter in counts.items()}
    return Received(**figures, series=len(series), field_series=len(field_series))


def _client(port: int, home: Path) -> Client:
    return Client(FluentTransport("127.0.0.1", port, timeout=3.0), home=home)


def _delivered(client: Client, what: str) -> None:
    if not client.close(timeout=30):
        raise RuntimeError(f"{what}: events not delivered to the receiver within 30 s")


def measure_step(inputs: Inputs, workdir: Path) -> Received:
    """One step run of ``inputs``' shape through the SDK, and the exporter's record of it."""

    pipeline, step, run_id = "capacity", "fit", new_run_id()  # a fresh id: attempt "1", as in a new run
    with forward_receiver(workdir) as (port, out):
        client = _client(port, workdir / "home-step")
        params = {
            f"param_{i:02d}": (0.001 * (i + 1) if i % 2 else f"choice-{i}") for i in range(inputs.params)
        }
        logger = logging.getLogger("train.capacity")  # not "mlobs.*": the SDK keeps its own logs out of runs
        logger.setLevel(logging.INFO)
        # One system sample: the interval outlasts the run, so only the sampler's last one is taken.
        with sdk_run(pipeline, step, run_id, params, client=client, system_interval=3600.0) as run:
            for i in range(inputs.metrics):
                run.log_metric(f"metric_{i:02d}", 0.5 + i)
            for i in range(inputs.list_metrics):
                for n in range(inputs.points_per_list_metric):
                    run.log_metric(f"curve_{i:02d}", 1.0 / (n + 1), step=n)
            for n in range(inputs.log_lines):
                logger.info("epoch %d done: loss=%.4f, %d samples", n, 1.0 / (n + 1), 50_000)
        spec = k.RunSpec(pipeline, step, run_id)
        start = spec.created + 5
        tracker = RunTracker(records=RecordSender(client, ExporterStats()), clock=lambda: start + 700)
        for resource, action, obj in k.succeeding(spec, start, start + 600):
            handler = tracker.on_job if resource == "jobs" else tracker.on_pod
            handler("DELETED" if action == "delete" else "MODIFIED", obj)
        tracker.settle_all()
        _delivered(client, "measure_step")
    return out[0]


@dataclass(frozen=True)
class ApiMeasure:
    received: Received  # what the model API's requests wrote to InfluxDB
    requests: int  # requests sent
    prometheus_series: int  # series of one replica's /metrics


def measure_api(workdir: Path) -> ApiMeasure:
    """A model API with three routes, sent 2xx, 4xx and 5xx on each, and its /metrics scraped."""

    async def answer(request: Request) -> Response:
        return PlainTextResponse("ok", status_code=int(request.query_params.get("status", "200")))

    routes = [("/predict/{model}", "POST"), ("/explain/{model}", "POST"), ("/health", "GET")]
    app = Starlette(routes=[Route(path, answer, methods=[method]) for path, method in routes])
    with forward_receiver(workdir) as (port, out):
        client = _client(port, workdir / "home-api")
        registry = CollectorRegistry()
        api = MLObsMiddleware(
            app, service="capacity-api", client=client, registry=registry, key=BENCH_HASH_KEY
        )
        sent = 0
        with TestClient(api) as http:
            for path, method in routes:
                for status in (200, 404, 500):
                    url = path.replace("{model}", "churn") + f"?status={status}"
                    http.request(method, url, headers={"x-user-id": f"user-{sent}"})
                    sent += 1
            scraped = http.get("/metrics").text
        _delivered(client, "measure_api")
    series = sum(len(family.samples) for family in text_string_to_metric_families(scraped))
    return ApiMeasure(out[0], sent, series)


@dataclass(frozen=True)
class ExporterMeasure:
    base: int  # series of the exporter with no pipeline/step pair
    per_pair: int  # series each pipeline/step pair adds
    cap: int  # pairs the exporter keeps series for (exporter.series.maxPipelineSteps)

    def series(self, pairs: int) -> int:
        return self.base + self.per_pair * min(pairs, self.cap)


def exporter_series(pairs: int) -> int:
    """Series a fresh exporter registry holds after a success and an OOM kill on each of ``pairs``."""

    t0 = 1_795_000_000.0
    tracker = RunTracker(clock=lambda: t0 + 10_000)
    registry = CollectorRegistry()
    registry.register(RunCollector(tracker))
    registry.register(ExporterCollector(ExporterStats(), tracker))
    for i in range(pairs):
        for j, scenario in enumerate((k.succeeding, k.oom_killed)):
            spec = k.RunSpec(f"pipeline-{i}", "fit", f"run-{i}-{j}")
            for resource, action, obj in scenario(spec, t0 + j * 1000, t0 + j * 1000 + 600):
                handler = tracker.on_job if resource == "jobs" else tracker.on_pod
                handler("DELETED" if action == "delete" else "MODIFIED", obj)
    tracker.settle_all()
    text = generate_latest(registry).decode()
    return sum(len(family.samples) for family in text_string_to_metric_families(text))


def measure_exporter() -> ExporterMeasure:

    one, two, three = (exporter_series(n) for n in (1, 2, 3))
    if three - two != two - one:
        raise RuntimeError(f"exporter series are not linear in pairs: {one}, {two}, {three}")
    return ExporterMeasure(one - (two - one), two - one, SeriesLimits().max_pipeline_steps)


@dataclass(frozen=True)
class Measured:
    step: Received
    api: ApiMeasure
    exporter: ExporterMeasure


def measure(inputs: Inputs) -> Measured:
    with tempfile.TemporaryDirectory(prefix="mlobs-capacity-") as tmp:
        work = Path(tmp)
        return Measured(measure_step(inputs, work), measure_api(work), measure_exporter())


# ---- the model -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    step_runs_per_day: float
    events_per_step_run: float
    bytes_per_event: float
    peak_events_per_second: float  # into Fluentd
    fluentd_workers: int  # at FLUENTD_EVENTS_PER_WORKER
    points_per_day: float  # into InfluxDB
    peak_field_writes_per_second: float
    series_within_retention: float  # InfluxDB's series cardinality (field series)
    series_per_day: float  # the step runs' new series a day (the API's are bounded, not counted here)
    bounded_series: float  # the model APIs' series: per service, route, method and status class
    influx_disk_per_day: float  # bytes, by the sizing guide's 3 bytes per value
    forward_bytes_per_day: float  # msgpack bytes Fluentd receives (what its buffer holds in an outage)
    peak_bytes_per_second: float  # of them, at the peak
    buffer_hours: float  # InfluxDB outage the Fluentd buffer holds at the peak rate
    prometheus_series: int
    prometheus_memory: float  # bytes, at PROMETHEUS_BYTES_PER_SERIES


def estimate(inputs: Inputs, m: Measured) -> Estimate:
    """The outputs for ``inputs``, from the measured step run, model API and exporter."""
    step, api = m.step, m.api.received
    measured_samples = step.events.get(c.SYSTEM.measurement, 0)
    if measured_samples < 1:
        raise ValueError("the measured step run has no system sample to scale")
    # The measured run took one system sample per sampler; the workload takes inputs.system_samples.
    scale = {c.SYSTEM.measurement: inputs.system_samples / measured_samples}
    per_run = {figure: step.total(figure, scale) for figure in FIGURES}
    per_request = {figure: api.total(figure) / m.api.requests for figure in FIGURES}
    runs = inputs.runs_per_day * inputs.steps_per_run
    requests = inputs.api_requests_per_second * DAY

    def per_day(figure: str) -> float:
        return runs * per_run[figure] + requests * per_request[figure]

    def peak(figure: str) -> float:  # the runs' share bunched by the peak factor, the API's steady
        return (runs * per_run[figure] * inputs.peak_factor + requests * per_request[figure]) / DAY

    fields = ("numeric_values", "string_values")
    peak_events = peak("events")
    # Every value is stored with its timestamp: 3 bytes each, and a string's own bytes.
    disk = INFLUX_BYTES_PER_VALUE * (2 * per_day("numeric_values") + per_day("string_values"))
    disk += per_day("string_bytes")
    peak_bytes = peak("bytes")
    prom = m.exporter.series(inputs.pipeline_steps)
    prom += inputs.services * inputs.replicas_per_service * m.api.prometheus_series
    return Estimate(
        step_runs_per_day=runs,
        events_per_step_run=per_run["events"],
        bytes_per_event=per_run["bytes"] / per_run["events"],
        peak_events_per_second=peak_events,
        fluentd_workers=max(1, math.ceil(peak_events / FLUENTD_EVENTS_PER_WORKER)),
        points_per_day=per_day("events"),  # one event is one InfluxDB point
        peak_field_writes_per_second=sum(peak(f) for f in fields),
        # A step run's series live as long as the retention; the API's are bounded (service, route...).
        series_within_retention=runs * inputs.retention_days * step.field_series
        + inputs.services * api.field_series,
        series_per_day=runs * step.field_series,
        bounded_series=inputs.services * api.field_series,
        influx_disk_per_day=disk,
        forward_bytes_per_day=per_day("bytes"),
        peak_bytes_per_second=peak_bytes,
        buffer_hours=FLUENTD_BUFFER_BYTES / peak_bytes / 3600 if peak_bytes else math.inf,
        prometheus_series=prom,
        prometheus_memory=prom * PROMETHEUS_BYTES_PER_SERIES,
    )


# ---- limits, verdicts and the report -------------------------------------------------------------


@dataclass(frozen=True)
class Tier:
    """One tier's load against its published limit; ``use`` above 1 means it has run out."""

    name: str
    need: str
    limit: str
    use: float
    source: str
    advice: str


def influx_node(writes: float, series: float) -> str:
    """The smallest row of InfluxDB's OSS sizing table that holds both, or why none does."""
    for node in INFLUX_NODES:
        if writes <= node.writes_per_second and series <= node.series:
            return node.size
    return "beyond one OSS node"


def tiers(e: Estimate, inputs: Inputs) -> list[Tier]:
    top = INFLUX_NODES[-1]
    outage = e.peak_bytes_per_second * inputs.outage_hours * 3600
    return [
        Tier(
            "Fluentd (per worker)",
            f"{e.peak_events_per_second:,.0f} events/s at peak",
            f"{FLUENTD_EVENTS_PER_WORKER:,}/s per worker x {FLUENTD_REPLICAS}",
            e.peak_events_per_second / (FLUENTD_EVENTS_PER_WORKER * FLUENTD_REPLICAS),
            SOURCES["fluentd"],
            f"run {e.fluentd_workers} Fluentd workers (multi-process workers or more aggregator replicas), "
            "and node-local forwarders in front of them",
        ),
        Tier(
            "Fluentd buffer",
            f"{_size(outage)} for a {inputs.outage_hours:g} h InfluxDB outage at peak",
            f"{_size(FLUENTD_BUFFER_BYTES)} (fluentd.persistence.size)",
            outage / FLUENTD_BUFFER_BYTES,
            "charts/mlobs-core/values.yaml",
            "give the forwarders' and aggregators' file buffers more disk (fluentd.persistence.size)",
        ),
        Tier(
            "InfluxDB writes",
            f"{e.peak_field_writes_per_second:,.0f} field writes/s at peak",
            f"{top.writes_per_second:,.0f}/s (one OSS node, 8+ cores)",
            e.peak_field_writes_per_second / top.writes_per_second,
            SOURCES["influxdb"],
            "split InfluxDB by pipeline through Fluentd routes (one node per group of pipelines)",
        ),
        Tier(
            "InfluxDB series",
            f"{e.series_within_retention:,.0f} series within retention",
            f"{top.series:,.0f} (one OSS node, 8+ cores)",
            e.series_within_retention / top.series,
            SOURCES["influxdb"],
            "shorten the bucket's retention and keep the long view in the downsampled bucket "
            "(influxdbTasks), or split InfluxDB by pipeline through Fluentd routes",
        ),
        Tier(
            "Prometheus memory",
            f"{e.prometheus_series:,} series, {_size(e.prometheus_memory)}",
            f"{_size(PROMETHEUS_MEMORY_LIMIT)} (the chart's memory limit, shared with every other target)",
            e.prometheus_memory / PROMETHEUS_MEMORY_LIMIT,
            SOURCES["prometheus"],
            "raise Prometheus's memory, lower exporter.series.maxPipelineSteps, or run Prometheus HA "
            "pairs with Thanos (sidecar, store, querier) for retention and a global view",
        ),
    ]


def retention_for(e: Estimate, series: float) -> float:
    """Days of retention that keep InfluxDB's series at or below ``series``."""
    room = series - e.bounded_series
    return max(room, 0.0) / e.series_per_day if e.series_per_day else math.inf


def _size(n: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,.0f} B"


def report(name: str, inputs: Inputs, m: Measured) -> str:
    e = estimate(inputs, m)
    ts = tiers(e, inputs)
    first = max(ts, key=lambda t: t.use)
    step = m.step
    lines = [
        f"### {name}",
        "",
        f"Inputs: {inputs.runs_per_day:,g} runs/day x {inputs.steps_per_run} steps; per step "
        f"{inputs.params} params, {inputs.metrics} metrics, {inputs.list_metrics} list metrics x "
        f"{inputs.points_per_list_metric} points, {inputs.log_lines} log lines, {inputs.system_samples} "
        f"system samples; {inputs.api_requests_per_second:,g} model-API requests/s; retention "
        f"{inputs.retention_days:g} d; peak/mean {inputs.peak_factor:g}; {inputs.pipeline_steps:,} "
        f"pipeline/steps, {inputs.services} services x {inputs.replicas_per_service} replicas.",
        "",
        f"Measured: one step run {step.total('events'):.0f} events, {step.total('bytes'):,.0f} B "
        f"({step.total('bytes') / step.total('events'):.0f} B/event), {step.series} series "
        f"({step.field_series} with the field key); model API "
        f"{m.api.received.total('bytes') / m.api.requests:.0f} B/request, "
        f"{m.api.received.field_series} field series and {m.api.prometheus_series} Prometheus series "
        f"for 3 routes x 3 status classes; exporter {m.exporter.base} + {m.exporter.per_pair} "
        f"series per pipeline/step (cap {m.exporter.cap:,}).",
        "",
        "| output | value |",
        "|---|---|",
        f"| step runs/day | {e.step_runs_per_day:,.0f} |",
        f"| events per step run | {e.events_per_step_run:,.0f} ({e.bytes_per_event:.0f} B each) |",
        f"| peak events/s into Fluentd | {e.peak_events_per_second:,.0f} ({e.fluentd_workers} worker(s)) |",
        f"| points/day into InfluxDB | {e.points_per_day:,.0f} |",
        f"| peak field writes/s into InfluxDB | {e.peak_field_writes_per_second:,.0f} |",
        f"| InfluxDB series within retention | {e.series_within_retention:,.0f} |",
        f"| InfluxDB node (sizing guidelines) | "
        f"{influx_node(e.peak_field_writes_per_second, e.series_within_retention)} |",
        *(
            f"| retention that keeps {node.series:,.0f} series ({node.size.split(',')[0]}) | "
            f"{retention_for(e, node.series):,.1f} d |"
            for node in INFLUX_NODES[1:]
        ),
        f"| InfluxDB disk/day (3 B a value) | {_size(e.influx_disk_per_day)} |",
        f"| InfluxDB disk within retention | {_size(e.influx_disk_per_day * inputs.retention_days)} |",
        f"| Forward bytes/day into Fluentd | {_size(e.forward_bytes_per_day)} |",
        f"| outage the 2 GiB Fluentd buffer holds at peak | {e.buffer_hours:,.1f} h |",
        f"| Prometheus active series (exporter + middleware) | {e.prometheus_series:,} |",
        f"| Prometheus memory for them | {_size(e.prometheus_memory)} |",
        "",
        "| tier | need | limit | use |",
        "|---|---|---|---|",
        *(f"| {t.name} | {t.need} | {t.limit} | {t.use:.0%} |" for t in ts),
        "",
        f"Runs out first: **{first.name}** ({first.use:.0%})"
        + (f": {first.advice}." if first.use >= 1 else "; nothing has run out."),
    ]
    return "\n".join(lines)


# ---- the command ---------------------------------------------------------------------------------

OVERRIDES = {  # option -> (Inputs field, type)
    "--runs-per-day": ("runs_per_day", float),
    "--steps-per-run": ("steps_per_run", int),
    "--params": ("params", int),
    "--metrics": ("metrics", int),
    "--list-metrics": ("list_metrics", int),
    "--points-per-list-metric": ("points_per_list_metric", int),
    "--log-lines": ("log_lines", int),
    "--system-samples": ("system_samples", int),
    "--api-requests-per-second": ("api_requests_per_second", float),
    "--retention-days": ("retention_days", float),
    "--peak-factor": ("peak_factor", float),
    "--pipeline-steps": ("pipeline_steps", int),
    "--services": ("services", int),
    "--replicas-per-service": ("replicas_per_service", int),
    "--outage-hours": ("outage_hours", float),
}


def _number(kind: type[int] | type[float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value: float = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(  # noqa: B904 - argparse reports this message alone
                f"expected a {'whole ' if kind is int else ''}number, got {text!r}"
            )
        if not math.isfinite(value) or value < 0:
            raise argparse.ArgumentTypeError(f"expected a finite number of at least 0, got {text!r}")
        return value

    return parse


def parse_args(argv: list[str] | None) -> tuple[list[tuple[str, Inputs]], argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.capacity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--profile", choices=[*PROFILES, "all"], default="all")
    for option, (field, kind) in OVERRIDES.items():
        parser.add_argument(option, dest=field, type=_number(kind), metavar="N")
    args = parser.parse_args(argv)
    given = {
        field: getattr(args, field) for field, _ in OVERRIDES.values() if getattr(args, field) is not None
    }
    if given and args.profile == "all":
        option = next(o for o, (f, _) in OVERRIDES.items() if f in given)
        parser.error(f"argument {option}: changes one profile: name it with --profile laptop|team|platform")
    names = list(PROFILES) if args.profile == "all" else [args.profile]
    try:
        chosen = [(name, dataclasses.replace(PROFILES[name], **given)) for name in names]
    except ValueError as exc:  # Inputs names the field; the option is its dashed form
        field = str(exc).split(":", 1)[0]
        parser.error(f"argument --{field.replace('_', '-')}: {str(exc).split(': ', 1)[1]}")
    return chosen, args


def main(argv: list[str] | None = None) -> int:
    chosen, _ = parse_args(argv)
    command = " ".join(["python -m bench.capacity", *(sys.argv[1:] if argv is None else argv)])
    print(f"mlobs capacity model: `{command}`, measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n")
    with tempfile.TemporaryDirectory(prefix="mlobs-capacity-") as tmp:
        work = Path(tmp)
        api, exporter = measure_api(work), measure_exporter()  # the same for every profile
        for name, inputs in chosen:
            print(report(name, inputs, Measured(measure_step(inputs, work), api, exporter)) + "\n")
    print("Limits: " + "; ".join(f"{engine} {url}" for engine, url in SOURCES.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
