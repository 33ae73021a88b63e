"""make e2e: assertions against the live kind cluster, after ``make up`` and ``make demo``.

Each check in ``CHECKS`` asks one component's API a question and is polled, every
``--interval`` seconds, until it passes, fails for good, or the overall ``--timeout``
passes; nothing waits blindly.  It prints ``[wait]`` while a check waits (each new
reason once), ``[PASS]`` or ``[FAIL]`` when it is decided, then a summary, and exits 1
if any check failed.  The checks:

* Prometheus: every active scrape target is up, every component has one, and
  ``up == 1`` for our own jobs (exporter, Fluentd, model API, InfluxDB);
* InfluxDB (Flux through its HTTP API): the demo runs ended as they should, the
  training run's params, metrics, list metrics, inputs/outputs and logs are there,
  and so are the model API's requests and predictions;
* Grafana: its API lists every dashboard of ``dashboards/json``, and both
  datasources pass their health check;
* Mailpit: the failure emails of the failing and the OOM-killed demo runs arrived
  within 2 minutes of the run's end.

The URLs default to kind's port mappings on localhost, or ``MLOBS_PROMETHEUS_URL``,
``MLOBS_GRAFANA_URL``, ``MLOBS_INFLUXDB_URL`` and ``MLOBS_MAILPIT_URL``; flags override
both.  Credentials are read from the Secrets the chart generated (``kubectl get
secret``), unless ``MLOBS_E2E_INFLUXDB_TOKEN``, ``MLOBS_E2E_GRAFANA_USER`` and
``MLOBS_E2E_GRAFANA_PASSWORD`` are set.  Every Flux query is built with
``dashboards.flux``, so it can name only what the contract defines.

Over 400 lines as one piece: a standalone script with only runtime dependencies, its checks
sharing one runner and one set of settings.
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from dashboards.flux import select
from pipeline_sdk import contract as c

ROOT = Path(__file__).resolve().parents[1]
EMAIL_BUDGET_S = 120.0  # a failure email must arrive within this long of the run's end
SINCE = "-6h"  # how far back the InfluxDB checks look for the demo's runs
DEFAULT_TIMEOUT_S = 300.0  # the whole of make e2e, every check's polling included
# The components' URLs: kind's port mappings (kind-config.yaml), or these variables, or the flags.
URL_ENV = {
    "prometheus": ("MLOBS_PROMETHEUS_URL", "http://localhost:9090"),
    "grafana": ("MLOBS_GRAFANA_URL", "http://localhost:3000"),
    "influxdb": ("MLOBS_INFLUXDB_URL", "http://localhost:8086"),
    "mailpit": ("MLOBS_MAILPIT_URL", "http://localhost:8025"),
}

# Scrape jobs of kube-prometheus-stack (the version Chart.yaml pins) for release "mlobs" (its
# ServiceMonitors: the job is the Service's jobLabel value, else the Service's name), then ours
# (pipeline_sdk.contract).
UPSTREAM_JOBS = ("apiserver", "coredns", "kubelet", "kube-state-metrics", "node-exporter")
RELEASE_JOBS = ("{release}-prometheus", "{release}-alertmanager", "{release}-operator", "{release}-grafana")
OUR_JOBS = (c.PROM_JOB_EXPORTER, c.PROM_JOB_FLUENTD, c.PROM_JOB_MODEL_API, c.PROM_JOB_INFLUXDB)

# The demo of `make demo` (charts/mlobs-core/templates/demo/jobs-demo.yaml, demo/).
TRAIN, DIVERGE, OOM = "demo-train", "demo-diverge", "demo-oom"
TRAIN_EPOCHS = 5
SERVICE = "churn-api"
FAILED_ALERT = "MLPipelineRunFailed"
FAILED_SUBJECT = f"[FIRING] {FAILED_ALERT}"  # how its email's subject starts (alerting/templates/email.tmpl)


class ProbeError(Exception):
    """A component did not answer as expected (not reachable yet, or an error status)."""


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str
    final: bool = False  # a failure that polling cannot fix (e.g. an email that came too late)


@dataclass
class Settings:
    prometheus: str = "http://localhost:9090"
    grafana: str = "http://localhost:3000"
    influxdb: str = "http://localhost:8086"
    mailpit: str = "http://localhost:8025"
    namespace: str = "mlobs"
    release: str = "mlobs"
    org: str = "mlobs"
    jobs: tuple[str, ...] = ()
    dashboards: Path = ROOT / "dashboards" / "json"
    secrets: dict[str, str] = field(default_factory=dict)  # cache of read credentials

    def expected_jobs(self) -> tuple[str, ...]:
        if self.jobs:
            return self.jobs
        return (*UPSTREAM_JOBS, *(j.format(release=self.release) for j in RELEASE_JOBS), *OUR_JOBS)


# ---- HTTP and credentials -----------------------------------------------------------------------


def http(
    url: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 10.0,
) -> bytes:
    """The body of a 2xx answer; ProbeError naming the URL otherwise."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"url {url!r} is invalid: must start with http:// or https://")
    request = urllib.request.Request(url, data=body, headers=dict(headers or {}), method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 - scheme checked above
            data: bytes = resp.read()
            return data
    except urllib.error.HTTPError as exc:
        raise ProbeError(
            f"{method} {url}: HTTP {exc.code} {exc.read()[:300].decode(errors='replace')}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise ProbeError(f"{method} {url}: {getattr(exc, 'reason', exc)}") from None


def http_json(url: str, **kwargs: Any) -> Any:
    data = http(url, **kwargs)
    try:
        return json.loads(data)
    except json.JSONDecodeError:
        raise ProbeError(f"{url}: not JSON: {data[:200]!r}") from None


def secret_value(settings: Settings, env: str, secret: str, key: str) -> str:
    """``env`` if set, else key ``key`` of Secret ``secret`` in the release's namespace, by kubectl."""
    if os.environ.get(env):
        return os.environ[env]
    cache_key = f"{secret}/{key}"
    if cache_key in settings.secrets:
        return settings.secrets[cache_key]
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise SystemExit(f"e2e: kubectl is not installed: it reads Secret {secret}; or set {env}")
    done = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [kubectl, "-n", settings.namespace, "get", "secret", secret, "-o", f"jsonpath={{.data.{key}}}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0 or not done.stdout:
        raise SystemExit(
            f"e2e: cannot read key {key} of Secret {settings.namespace}/{secret}: "
            f"{done.stderr.strip() or 'empty'}; is the stack up (make up)? Or set {env}"
        )
    value = base64.b64decode(done.stdout).decode()
    settings.secrets[cache_key] = value
    return value


def influx_token(settings: Settings) -> str:
    return secret_value(
        settings, "MLOBS_E2E_INFLUXDB_TOKEN", f"{settings.release}-influxdb-auth", "admin-token"
    )


def grafana_auth(settings: Settings) -> dict[str, str]:
    user = secret_value(settings, "MLOBS_E2E_GRAFANA_USER", f"{settings.release}-grafana-admin", "admin-user")
    password = secret_value(
        settings, "MLOBS_E2E_GRAFANA_PASSWORD", f"{settings.release}-grafana-admin", "admin-password"
    )
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# ---- InfluxDB -------------------------------------------------------------------------------------


def parse_csv(text: str) -> list[dict[str, str]]:
    """Rows of InfluxDB's query CSV (a header per table, tables apart by a blank line; no annotations)."""
    rows: list[dict[str, str]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith("#")]
        if len(lines) > 1:
            rows += list(csv.DictReader(io.StringIO("\n".join(lines))))
    return rows


def flux(settings: Settings, query: str) -> list[dict[str, str]]:
    body = json.dumps({"query": query, "type": "flux", "dialect": {"header": True, "annotations": []}})
    text = http(
        f"{settings.influxdb}/api/v2/query?{urllib.parse.urlencode({'org': settings.org})}",
        method="POST",
        headers={
            "Authorization": f"Token {influx_token(settings)}",
            "Content-Type": "application/json",
            "Accept": "application/csv",
        },
        body=body.encode(),
    ).decode()
    return parse_csv(text)


def query(stream: c.Stream, fields: Iterable[str], *, last: bool = False, **equal: str) -> str:
    """A Flux query over ``stream`` (the contract's names only): one row per point, newest first."""
    q = select(stream, fields=fields, equal=equal, since=SINCE, bucket=c.INFLUXDB_BUCKET).pivot_fields()
    q = q.then("group()").sort("_time", desc=True)
    return (q.then("limit(n: 1)") if last else q).text


def latest_run_id(settings: Settings, pipeline: str, status: str) -> tuple[str, dict[str, str]] | None:
    rows = flux(
        settings,
        query(c.RUN_RECORD, [c.FIELD_END_NS, c.FIELD_EXIT_CODE], last=True, pipeline=pipeline, status=status),
    )
    return (rows[0][c.TAG_RUN_ID], rows[0]) if rows else None


def check_runs(settings: Settings) -> Outcome:
    """How each demo run ended: by the SDK's own events, and by the exporter's run records."""
    problems: list[str] = []
    sdk = {
        (TRAIN, "succeeded"): None,
        (DIVERGE, "failed"): "FloatingPointError",
    }
    for (pipeline, status), error_type in sdk.items():
        fields = [c.FIELD_DURATION_MS, c.FIELD_ERROR_TYPE] if error_type else [c.FIELD_DURATION_MS]
        rows = flux(settings, query(c.RUN, fields, last=True, pipeline=pipeline, status=status))
        if not rows:
            problems.append(f"no '{status}' run event of {pipeline}")
        elif error_type and rows[0].get(c.FIELD_ERROR_TYPE) != error_type:
            problems.append(f"{pipeline} failed with {rows[0].get(c.FIELD_ERROR_TYPE)!r}, not {error_type}")
    records = {
        (TRAIN, "succeeded"): c.RunReason.COMPLETED,
        (DIVERGE, "failed"): c.RunReason.ERROR,
        (OOM, "failed"): c.RunReason.OOM_KILLED,
    }
    for (pipeline, status), reason in records.items():
        rows = flux(
            settings,
            query(
                c.RUN_RECORD, [c.FIELD_EXIT_CODE, c.FIELD_END_NS], last=True, pipeline=pipeline, status=status
            ),
        )
        if not rows:
            problems.append(f"no '{status}' run record of {pipeline} from the exporter")
        elif rows[0][c.TAG_REASON] != reason:
            problems.append(f"{pipeline}'s run record has reason {rows[0][c.TAG_REASON]!r}, not {reason!r}")
    if problems:
        return Outcome(False, "; ".join(problems))
    return Outcome(True, "demo-train succeeded, demo-diverge failed (FloatingPointError), demo-oom OOMKilled")


def check_training_data(settings: Settings) -> Outcome:
    """The latest successful training run's params, metrics, list metrics, inputs/outputs and logs."""
    rows = flux(settings, query(c.RUN, [c.FIELD_DURATION_MS], last=True, pipeline=TRAIN, status="succeeded"))
    if not rows:
        return Outcome(False, f"no successful {TRAIN} run yet")
    run_id = rows[0][c.TAG_RUN_ID]
    expect: list[tuple[str, c.Stream, list[str], str | None, int]] = [
        ("params", c.PARAM, [c.FIELD_VALUE], None, 5),
        (
            "list metric loss",
            c.LIST_METRIC,
            [c.FIELD_VALUE, c.FIELD_INDEX],
            "loss",
            TRAIN_EPOCHS,
        ),
        ("simple metrics", c.METRIC, [c.FIELD_VALUE], None, 2),
        ("inputs and outputs", c.IO, [c.FIELD_VALUE], None, 2),
        ("log records", c.LOG, [c.FIELD_MESSAGE], None, TRAIN_EPOCHS),
    ]
    problems, counts = [], []
    for what, stream, fields, name, minimum in expect:
        if name is None:
            rows = flux(settings, query(stream, fields, run_id=run_id))
        else:
            rows = flux(settings, query(stream, fields, run_id=run_id, name=name))
        counts.append(f"{len(rows)} {what}")
        if len(rows) < minimum:
            problems.append(f"{len(rows)} {what} (expected at least {minimum})")
    if problems:
        return Outcome(False, f"run {run_id}: " + "; ".join(problems))
    return Outcome(True, f"run {run_id}: " + ", ".join(counts))


def check_model_api_data(settings: Settings) -> Outcome:
    requests = flux(settings, query(c.API_REQUEST, [c.FIELD_STATUS_CODE], service=SERVICE))
    predictions = flux(settings, query(c.PREDICTION, [c.FIELD_SCORE], service=SERVICE))
    if not requests or not predictions:
        return Outcome(False, f"{SERVICE}: {len(requests)} requests, {len(predictions)} predictions so far")
    return Outcome(True, f"{SERVICE}: {len(requests)} requests, {len(predictions)} predictions")


# ---- Prometheus, Grafana, Mailpit -----------------------------------------------------------------


def check_targets(settings: Settings) -> Outcome:
    answer = http_json(f"{settings.prometheus}/api/v1/targets?state=active")
    targets = answer["data"]["activeTargets"]
    by_job: dict[str, list[dict[str, Any]]] = {}
    for target in targets:
        by_job.setdefault(target["labels"].get("job", "?"), []).append(target)
    missing = [job for job in settings.expected_jobs() if job not in by_job]
    down = [
        f"{t['labels'].get('job')} {t['scrapeUrl']} is {t['health']}: {t.get('lastError') or 'no scrape yet'}"
        for t in targets
        if t["health"] != "up"
    ]
    if missing or down:
        parts = ([f"no target for jobs {missing}"] if missing else []) + down
        return Outcome(False, "; ".join(parts))
    ours = [job for job in settings.expected_jobs() if job in OUR_JOBS]
    not_up = up_series_not_one(settings, ours) if ours else []
    if not_up:
        return Outcome(False, "; ".join(not_up))
    return Outcome(True, f"{len(targets)} targets of {len(by_job)} jobs up")


def up_series_not_one(settings: Settings, jobs: list[str]) -> list[str]:
    """What keeps ``up{job=~"<jobs>"} == 1`` from holding for each of ``jobs``, by the query API."""
    selector = "up{job=~" + json.dumps("|".join(re.escape(job) for job in jobs)) + "}"
    answer = http_json(f"{settings.prometheus}/api/v1/query?{urllib.parse.urlencode({'query': selector})}")
    values: dict[str, list[str]] = {}
    for sample in answer["data"]["result"]:
        values.setdefault(sample["metric"].get("job", "?"), []).append(sample["value"][1])
    problems = [f"no up series of job {job}" for job in jobs if job not in values]
    problems += [f"up of job {job} is {vals}" for job, vals in sorted(values.items()) if set(vals) != {"1"}]
    return problems


def dashboard_uids(folder: Path) -> dict[str, str]:
    boards = (json.loads(p.read_text()) for p in sorted(folder.glob("*.json")))
    return {b["uid"]: b["title"] for b in boards}


def check_dashboards(settings: Settings) -> Outcome:
    listed = http_json(
        f"{settings.grafana}/api/search?type=dash-db&limit=5000", headers=grafana_auth(settings)
    )
    have = {d["uid"] for d in listed}
    want = dashboard_uids(settings.dashboards)
    missing = {uid: title for uid, title in want.items() if uid not in have}
    if not want:
        return Outcome(False, f"no dashboard JSON in {settings.dashboards}", final=True)
    if missing:
        return Outcome(False, f"Grafana does not list {missing}")
    return Outcome(True, f"all {len(want)} dashboards listed")


def check_datasources(settings: Settings) -> Outcome:
    problems, fine = [], []
    for uid in (c.DATASOURCE_PROMETHEUS_UID, c.DATASOURCE_INFLUXDB_UID):
        try:
            health = http_json(
                f"{settings.grafana}/api/datasources/uid/{uid}/health", headers=grafana_auth(settings)
            )
        except ProbeError as exc:
            problems.append(f"{uid}: {exc}")
            continue
        if health.get("status") == "OK":
            fine.append(uid)
        else:
            problems.append(f"{uid}: {health.get('status')} {health.get('message', '')}".strip())
    if problems:
        return Outcome(False, "; ".join(problems))
    return Outcome(True, f"{', '.join(fine)} healthy")


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)")


def parse_time(text: str) -> float:
    """Unix seconds of an RFC 3339 time with up to nanoseconds (Mailpit's ``Created``)."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ProbeError(f"time {text!r} is not RFC 3339")
    base, frac, zone = match.groups()
    stamp = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone))
    return stamp.timestamp() + (float(frac) if frac else 0.0)


def email_check(pipeline: str, what: str) -> Callable[[Settings], Outcome]:
    def check(settings: Settings) -> Outcome:
        found = latest_run_id(settings, pipeline, "failed")
        if found is None:
            return Outcome(False, f"no failed run record of {pipeline} yet")
        run_id, record = found
        ended = int(record[c.FIELD_END_NS]) / 1e9
        # Mailpit's search reads the whole message: a run grouped into another run's email (same
        # pipeline, alerts grouped by Alertmanager) is named in the body, not in the subject.
        search = urllib.parse.urlencode({"query": f'"{run_id}"'})  # quoted: the id as one phrase
        found_mails = http_json(f"{settings.mailpit}/api/v1/search?{search}")
        mails = [m for m in found_mails["messages"] if m["Subject"].startswith(FAILED_SUBJECT)]
        if mails:
            first = min(mails, key=lambda m: parse_time(m["Created"]))
            delay = parse_time(first["Created"]) - ended
            if delay <= EMAIL_BUDGET_S:
                return Outcome(True, f"{first['Subject']!r} {delay:.0f} s after the run ended")
            return Outcome(
                False, f"the email for {run_id} came {delay:.0f} s after the run ended", final=True
            )
        late = time.time() - ended
        if late > EMAIL_BUDGET_S:
            return Outcome(
                False,
                f"no {FAILED_ALERT} email for {what} run {run_id}, {late:.0f} s after it ended",
                final=True,
            )
        return Outcome(False, f"no email for {run_id} yet ({late:.0f} s after it ended)")

    return check


# ---- the table and the runner ---------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    name: str
    probe: Callable[[Settings], Outcome]


CHECKS = (
    Check("prometheus: every scrape target is up", check_targets),
    Check("influxdb: the demo runs ended as expected", check_runs),
    Check("influxdb: the training run's params, metrics, list metrics, io and logs", check_training_data),
    Check("influxdb: the model API's requests and predictions", check_model_api_data),
    Check("grafana: every dashboard is listed", check_dashboards),
    Check("grafana: the datasources are healthy", check_datasources),
    Check("mailpit: the failing run's email within 2 minutes", email_check(DIVERGE, "the failing")),
    Check("mailpit: the OOM-killed run's email within 2 minutes", email_check(OOM, "the OOM-killed")),
)


def run_checks(
    checks: Iterable[Check],
    settings: Settings,
    *,
    timeout: float,
    interval: float = 2.0,
    out: Callable[[str], None] = print,
) -> list[tuple[Check, Outcome]]:
    """Poll each check in turn until it passes, fails for good, or ``timeout`` seconds pass in all.

    The deadline is the whole run's: a check that waits takes time from the ones after
    it, which have had that time to come true.  Each check is probed at least once.
    """
    results = []
    deadline = time.monotonic() + timeout
    for check in checks:
        started = time.monotonic()
        shown = ""
        while True:
            try:
                outcome = check.probe(settings)
            except ProbeError as exc:
                outcome = Outcome(False, str(exc))
            took = time.monotonic() - started
            if outcome.ok or outcome.final or time.monotonic() >= deadline:
                mark = "PASS" if outcome.ok else "FAIL"
                out(f"[{mark}] {check.name} ({took:.0f} s): {outcome.detail}")
                results.append((check, outcome))
                break
            if outcome.detail != shown:
                out(f"[wait] {check.name}: {outcome.detail}")
                shown = outcome.detail
            time.sleep(max(0.0, min(interval, deadline - time.monotonic())))  # the poll interval
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make e2e", description=__doc__.splitlines()[0])
    defaults = Settings()
    for name, (env, url) in URL_ENV.items():
        parser.add_argument(
            f"--{name}", default=os.environ.get(env) or url, help=f"{name}'s URL (${env}, else {url})"
        )
    parser.add_argument("--namespace", default=os.environ.get("NAMESPACE", defaults.namespace))
    parser.add_argument("--release", default=defaults.release)
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds all the checks may take together (default {DEFAULT_TIMEOUT_S:g})",
    )
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between polls (default 2)")
    args = parser.parse_args(argv)
    if not args.timeout > 0 or not args.interval > 0:
        parser.error("--timeout and --interval must be above 0")
    settings = Settings(
        prometheus=args.prometheus.rstrip("/"),
        grafana=args.grafana.rstrip("/"),
        influxdb=args.influxdb.rstrip("/"),
        mailpit=args.mailpit.rstrip("/"),
        namespace=args.namespace,
        release=args.release,
    )
    print(f"==> e2e: {len(CHECKS)} checks against the cluster (polled for up to {args.timeout:g} s in all)")
    results = run_checks(CHECKS, settings, timeout=args.timeout, interval=args.interval)
    failed = [(check, outcome) for check, outcome in results if not outcome.ok]
    print(f"==> e2e: {len(results) - len(failed)} passed, {len(failed)} failed")
    for check, outcome in failed:
        print(f"    failed: {check.name}: {outcome.detail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
