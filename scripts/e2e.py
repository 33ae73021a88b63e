"""make e2e: assertions against the live kind cluster, after ``make up`` and ``make demo``.

Each check in ``CHECKS`` asks one component's API a question and is polled, every
``--interval`` seconds, until it passes, fails for good, or the overall ``--timeout``
passes; nothing waits blindly.  It prints ``[wait]`` while a check waits (each new
reason once), ``[PASS]`` or ``[FAIL]`` when it is decided, then a summary, and exits 1
if any check failed.  The checks:

* Prometheus: every active scrape target is up, every component has one, and
  ``up == 1`` for our own jobs (exporter, Fluentd, model API, InfluxDB);
* InfluxDB, read through the SDK's read API (``ReadClient`` on InfluxDB's HTTP API, the
  client ``mlobs runs`` uses): the demo runs ended as they should, the training run's
  params, metrics, list metrics, inputs/outputs, logs and baseline profile are there,
  and so are the model API's requests, predictions and serving profiles;
* Grafana: its API lists every dashboard of ``dashboards/json``, and both
  datasources pass their health check;
* Mailpit: the failure emails of the failing and the OOM-killed demo runs arrived
  within 2 minutes of the run's end (the failing one's Error: line names its exception),
  and so did the drift email of make demo's monitor run, which found the feature the
  demo traffic shifted and names it.

The URLs default to kind's port mappings on localhost, or ``MLOBS_PROMETHEUS_URL``,
``MLOBS_GRAFANA_URL``, ``MLOBS_INFLUXDB_URL`` and ``MLOBS_MAILPIT_URL``; flags override
both.  Credentials are read from the Secrets the chart generated (``kubectl get
secret``), unless ``MLOBS_E2E_INFLUXDB_TOKEN``, ``MLOBS_E2E_GRAFANA_USER`` and
``MLOBS_E2E_GRAFANA_PASSWORD`` are set.  The read API's queries name only what the contract
defines (pipeline_sdk.read.query refuses anything else).

Over 400 lines as one piece: a standalone script with only runtime dependencies, its checks
sharing one runner and one set of settings.
"""

from __future__ import annotations

import argparse
import base64
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

from pipeline_sdk import contract as c
from pipeline_sdk.read import ReadClient, ReadError, ServiceNotFound
from pipeline_sdk.read.influx import InfluxBackend
from pipeline_sdk.read.query import Select

ROOT = Path(__file__).resolve().parents[1]
EMAIL_BUDGET_S = 120.0  # a failure email must arrive within this long of the run's end
SINCE_S = 6 * 3600  # how far back the InfluxDB checks look for the demo's runs
SINCE = "6h"  # the same, as the read API takes it
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
EXPECTED_RUNS = (  # pipeline, status, the exporter's reason, the SDK's error type (None: none)
    (TRAIN, "succeeded", c.RunReason.COMPLETED, None),
    (DIVERGE, "failed", c.RunReason.ERROR, "FloatingPointError"),
    (OOM, "failed", c.RunReason.OOM_KILLED, None),
)
BASELINE = "train"  # the baseline profile demo-train logs (demo/data.py)
DRIFT_PIPELINE, DRIFT_STEP = "drift", "demo-drift"  # make demo's drift monitor run (demo/monitor.py)
SHIFTED = "tenure_months"  # the feature demo-traffic shifts (--shift), which the monitor must find
FAILED_ALERT = "MLPipelineRunFailed"  # its email's subject starts "[FIRING] <alert>" (alerting/templates)
DRIFT_ALERT = "MLModelDriftDetected"


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
    reads: ReadClient | None = None  # the read API on InfluxDB, made at its first use

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


# ---- InfluxDB, through the read API -------------------------------------------------------------


def reader(settings: Settings) -> ReadClient:
    """The read API on the cluster's InfluxDB (made once per run, with the token of its Secret)."""
    if settings.reads is None:
        backend = InfluxBackend(settings.influxdb, influx_token(settings), settings.org, c.INFLUXDB_BUCKET)
        settings.reads = ReadClient(backend)
    return settings.reads


def latest_run(
    settings: Settings, pipeline: str, status: str | None = None, step: str | None = None
) -> dict[str, Any] | None:
    """The newest step run of ``pipeline`` in the last SINCE (with that status, of that step), or None."""
    rows = reader(settings).runs(pipeline=pipeline, step=step, status=status, since=SINCE, limit=1).to_list()
    return rows[0] if rows else None


def check_runs(settings: Settings) -> Outcome:
    """How the latest run of each demo pipeline ended: its status, the exporter's reason, the SDK's error."""
    problems: list[str] = []
    for pipeline, status, reason, error_type in EXPECTED_RUNS:
        run = latest_run(settings, pipeline)
        if run is None:
            problems.append(f"no run of {pipeline} in the last {SINCE}")
            continue
        name = f"{pipeline} run {run['run_id']}"
        if run["status"] != status:
            problems.append(f"{name} is {run['status']!r}, not {status!r}")
        elif run["reason"] is None:
            problems.append(f"{name} has no run record from the exporter")
        elif run["reason"] != reason:
            problems.append(f"{name}'s run record has reason {run['reason']!r}, not {str(reason)!r}")
        elif error_type and not str(run["error"] or "").startswith(f"{error_type}:"):
            problems.append(f"{name} failed with {run['error']!r}, not {error_type}")
    if problems:
        return Outcome(False, "; ".join(problems))
    return Outcome(True, "demo-train succeeded, demo-diverge failed (FloatingPointError), demo-oom OOMKilled")


def profile_rows(settings: Settings, since_ns: int | None = None, **equal: str) -> list[int]:
    """The rows of each stored profile chunk whose tags are ``equal`` (a chunk per point)."""
    select = Select(c.PROFILE, (c.FIELD_ROWS,), equal=equal, start_ns=since_ns)
    return [int(row.fields.get(c.FIELD_ROWS, 0)) for row in reader(settings).backend.select(select)]


def check_training_data(settings: Settings) -> Outcome:
    """The latest successful training run's params, metrics, list metrics, inputs/outputs, logs, baseline."""
    run = latest_run(settings, TRAIN, "succeeded")
    if run is None:
        return Outcome(False, f"no successful {TRAIN} run yet")
    run_id = run["run_id"]
    reads = reader(settings)
    shown = reads.run(run_id)
    found = [
        ("params", len(reads.params(run_id).to_list()), 5),
        ("list metric loss", len(reads.list_metrics(run_id, "loss").to_list()), TRAIN_EPOCHS),
        ("simple metrics", len(reads.metrics(run_id).to_list()), 2),
        ("inputs and outputs", len(shown["inputs"]) + len(shown["outputs"]), 2),
        ("log records", len(reads.logs(run_id).to_list()), TRAIN_EPOCHS),
        ("baseline profile chunks", len(profile_rows(settings, run_id=run_id, name=BASELINE)), 1),
    ]
    problems = [f"{n} {what} (expected at least {least})" for what, n, least in found if n < least]
    if problems:
        return Outcome(False, f"run {run_id}: " + "; ".join(problems))
    return Outcome(True, f"run {run_id}: " + ", ".join(f"{n} {what}" for what, n, _ in found))


def check_model_api_data(settings: Settings) -> Outcome:
    """The model API's requests, predictions and serving profiles in the last SINCE."""
    reads = reader(settings)
    try:
        requests = len(reads.requests(SERVICE, since=SINCE).to_list())
        predictions = len(reads.predictions(SERVICE, since=SINCE).to_list())
    except ServiceNotFound as exc:  # no request recorded yet
        return Outcome(False, str(exc))
    since_ns = time.time_ns() - SINCE_S * 10**9
    profiled = sum(profile_rows(settings, since_ns, service=SERVICE))
    counts = f"{requests} requests, {predictions} predictions, {profiled} rows of serving profiles"
    if not requests or not predictions or not profiled:
        return Outcome(False, f"{SERVICE}: {counts} so far")
    return Outcome(True, f"{SERVICE}: {counts}")


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


def message_text(settings: Settings, mail: Mapping[str, Any]) -> str:
    """The text body of one of Mailpit's messages (its message API)."""
    message = http_json(f"{settings.mailpit}/api/v1/message/{urllib.parse.quote(str(mail['ID']))}")
    return str(message.get("Text") or "")


@dataclass(frozen=True)
class Email:
    mail: Mapping[str, Any]  # Mailpit's summary of the message: ID, Subject, Created...
    delay: float  # seconds after the event it reports


def email_within_budget(
    settings: Settings, phrase: str, alert: str, ended: float, name: str
) -> Email | Outcome:
    """The first ``alert`` email naming ``phrase``, if within EMAIL_BUDGET_S of ``ended``; else why not.

    Mailpit's search reads the whole message: an alert grouped into another one's email (same
    group, by Alertmanager) is named in the body, not in the subject.
    """
    search = urllib.parse.urlencode({"query": f'"{phrase}"'})  # quoted: one phrase
    found = http_json(f"{settings.mailpit}/api/v1/search?{search}")
    mails = [m for m in found["messages"] if m["Subject"].startswith(f"[FIRING] {alert}")]
    if mails:
        first = min(mails, key=lambda m: parse_time(m["Created"]))
        delay = parse_time(first["Created"]) - ended
        if delay <= EMAIL_BUDGET_S:
            return Email(first, delay)
        return Outcome(False, f"the email for {phrase} came {delay:.0f} s after the {name} ended", final=True)
    late = time.time() - ended
    if late > EMAIL_BUDGET_S:
        return Outcome(
            False, f"no {alert} email for the {name} {phrase}, {late:.0f} s after it ended", final=True
        )
    return Outcome(False, f"no email for {phrase} yet ({late:.0f} s after it ended)")


def email_check(pipeline: str, what: str, error: str | None = None) -> Callable[[Settings], Outcome]:
    """The failed-run email of ``pipeline``'s latest failed run; with ``error``, its Error: line starts so."""

    def check(settings: Settings) -> Outcome:
        run = latest_run(settings, pipeline, "failed")
        if run is None:
            return Outcome(False, f"no failed run of {pipeline} yet")
        run_id = run["run_id"]
        if run["ended"] is None:
            return Outcome(False, f"{pipeline} run {run_id} has not ended yet")
        found = email_within_budget(settings, run_id, FAILED_ALERT, run["ended"].timestamp(), f"{what} run")
        if isinstance(found, Outcome):
            return found
        detail = f"{found.mail['Subject']!r} {found.delay:.0f} s after the run ended"
        if error is None:
            return Outcome(True, detail)
        lines = [
            line for line in message_text(settings, found.mail).splitlines() if line.startswith("Error:")
        ]
        if not any(line.split(":", 1)[1].strip().startswith(error) for line in lines):
            shown = lines[0] if lines else "no Error: line"
            return Outcome(
                False, f"the email for {run_id} has {shown!r}, not an error starting {error!r}", final=True
            )
        return Outcome(True, f"{detail}, {lines[0].split(':', 1)[1].strip()[:60]!r}")

    return check


def drift_monitor_run(settings: Settings, baseline: str) -> dict[str, Any] | None:
    """The newest run of make demo's drift monitor against ``baseline`` (its param), or None."""
    reads = reader(settings)
    for run in reads.runs(pipeline=DRIFT_PIPELINE, step=DRIFT_STEP, since=SINCE, limit=5).to_list():
        params = {p["name"]: p["value"] for p in reads.params(run["run_id"]).to_list()}
        if params.get("baseline") == baseline:
            return run
    return None


def monitor_problem(settings: Settings, run: Mapping[str, Any], name: str) -> Outcome | None:
    """What keeps the monitor run from having found the shifted feature: not done, failed, no drift."""
    if run["status"] != "succeeded" or run["ended"] is None:
        failed = run["status"] == "failed"
        return Outcome(False, f"{name} is {run['status']!r}: {run['error'] or run['reason']}", final=failed)
    metrics = {m["name"]: m["value"] for m in reader(settings).metrics(run["run_id"]).to_list()}
    if metrics.get(f"{SHIFTED}.drifted") != 1.0 or metrics.get("dataset_drift") != 1.0:
        found = {k: metrics.get(k) for k in (f"{SHIFTED}.statistic", f"{SHIFTED}.threshold", "dataset_drift")}
        return Outcome(False, f"{name} found no drift of the shifted {SHIFTED}: {found}", final=True)
    return None


def check_drift_email(settings: Settings) -> Outcome:
    """The drift monitor run of make demo found the shifted feature, and its email names it."""
    train = latest_run(settings, TRAIN, "succeeded")
    if train is None:
        return Outcome(False, f"no successful {TRAIN} run yet (the baseline)")
    baseline = f"{train['run_id']}:{BASELINE}"
    run = drift_monitor_run(settings, baseline)
    if run is None:
        return Outcome(False, f"no {DRIFT_STEP} monitor run against {baseline} yet")
    name = f"monitor run {run['run_id']}"
    problem = monitor_problem(settings, run, name)
    if problem is not None:
        return problem
    email = email_within_budget(settings, baseline, DRIFT_ALERT, run["ended"].timestamp(), "monitor run")
    if isinstance(email, Outcome):
        return email
    text = message_text(settings, email.mail)
    if not re.search(rf"(?<![\w.]){re.escape(SHIFTED)} \(", text):
        first = " ".join(text.split())[:200]
        return Outcome(
            False, f"the drift email for {baseline} does not name {SHIFTED}: {first!r}", final=True
        )
    return Outcome(True, f"{email.mail['Subject']!r} {email.delay:.0f} s after {name}, naming {SHIFTED}")


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
    Check(
        "mailpit: the failing run's email within 2 minutes, with its error",
        email_check(DIVERGE, "failing", error="FloatingPointError: training diverged"),
    ),
    Check("mailpit: the OOM-killed run's email within 2 minutes", email_check(OOM, "OOM-killed")),
    Check(
        "mailpit: the drift email within 2 minutes of the monitor run, naming the feature", check_drift_email
    ),
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
            except (ProbeError, ReadError) as exc:  # not reachable yet, or an error status
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
    try:
        results = run_checks(CHECKS, settings, timeout=args.timeout, interval=args.interval)
    finally:
        if settings.reads is not None:
            settings.reads.close()
    failed = [(check, outcome) for check, outcome in results if not outcome.ok]
    print(f"==> e2e: {len(results) - len(failed)} passed, {len(failed)} failed")
    for check, outcome in failed:
        print(f"    failed: {check.name}: {outcome.detail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
