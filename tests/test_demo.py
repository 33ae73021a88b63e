"""The demo of ``make demo``, run for real: its steps and model API against a real Forward server.

The chart runs these modules as Jobs and a Deployment in the mlobs/demo image; here
they run as child processes with ``MLOBS_FLUENTD_HOST`` pointing at the Forward
server of ``pipeline_sdk.testing``, and the tests read back what they sent.  The
OOM kill is the kernel's SIGKILL, sent here by the test once the step is allocating.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from demo import model_api, monitor, oom, traffic, train
from demo.data import FEATURES, SERVED, Model, features_of, make_dataset
from pipeline_sdk import contract as c
from pipeline_sdk.local_store import LocalStore, Point

from .conftest import ROOT, ForwardServerProcess, wait_for
from .test_chart import objects

DEMO_MODULES = {
    "demo.train": train,
    "demo.oom": oom,
    "demo.model_api": model_api,
    "demo.traffic": traffic,
    "demo.monitor": monitor,
}


def demo_env(home: Path, server: ForwardServerProcess | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOBS_")}
    env["MLOBS_HOME"] = str(home)
    if server is not None:
        env["MLOBS_FLUENTD_HOST"] = "127.0.0.1"
        env["MLOBS_FLUENTD_PORT"] = str(server.port)
    env.update(extra)
    return env


def run_demo(
    module: str, *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    if module == "demo.train" and "--sleep" not in args:
        args = (*args, "--sleep", "0")  # no need to wait here
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def events(server: ForwardServerProcess, stream: c.Stream) -> list[dict[str, Any]]:
    return [record for m in server.received() if m.tag == stream.tag for _, record in m.entries]


def statuses(server: ForwardServerProcess) -> list[str]:
    return [r[c.TAG_STATUS] for r in events(server, c.RUN)]


def series(server: ForwardServerProcess, name: str) -> dict[int, float]:
    return {
        r[c.FIELD_INDEX]: r[c.FIELD_VALUE] for r in events(server, c.LIST_METRIC) if r[c.TAG_NAME] == name
    }


# ---- the training step ---------------------------------------------------------------------------


def test_training_records_params_list_metrics_io_and_logs(tmp_path: Path, forward_server: Any) -> None:
    server = forward_server()
    done = run_demo("demo.train", "--epochs", "4", env=demo_env(tmp_path / "home", server))
    assert done.returncode == 0, done.stderr

    assert statuses(server) == ["started", "succeeded"]
    [run] = {(r[c.TAG_PIPELINE], r[c.TAG_STEP]) for r in events(server, c.RUN)}
    assert run == ("demo-train", "fit")
    params = {r[c.TAG_NAME]: r[c.FIELD_VALUE] for r in events(server, c.PARAM)}
    assert params == {"epochs": "4", "lr": "0.5", "rows": "2000", "seed": "7", "model": "logreg"}

    loss, accuracy = series(server, "loss"), series(server, "accuracy")
    assert sorted(loss) == sorted(accuracy) == [0, 1, 2, 3]
    assert all(loss[i + 1] < loss[i] for i in range(3)), f"the loss should fall every epoch: {loss}"
    simple = {r[c.TAG_NAME]: r[c.FIELD_VALUE] for r in events(server, c.METRIC)}
    assert set(simple) == {"val_accuracy", "train_loss"}
    assert simple["val_accuracy"] > 0.7  # the synthetic labels are learnable

    io = {(r[c.TAG_DIRECTION], r[c.TAG_NAME]): r for r in events(server, c.IO)}
    assert set(io) == {("input", "dataset"), ("output", "model"), ("artifact", "churn-logreg")}
    assert io["input", "dataset"][c.FIELD_SOURCE] == "synthetic://churn?seed=7&rows=2000"
    assert json.loads(io["input", "dataset"][c.FIELD_VALUE])["rows"] == 2000
    assert len(json.loads(io["output", "model"][c.FIELD_VALUE])["weights"]) == len(FEATURES)
    # the model file: under MLOBS_HOME, named by the run; sent to Fluentd, a reference with its hash
    saved = Path(io["output", "model"][c.FIELD_DESTINATION])
    run_id = events(server, c.RUN)[0][c.TAG_RUN_ID]
    assert saved == tmp_path / "home" / "demo-models" / run_id / "model.json"
    artifact = io["artifact", "churn-logreg"]
    assert {k: artifact[k] for k in (c.FIELD_URI, c.FIELD_SHA256, c.FIELD_SIZE_BYTES, c.FIELD_STORED)} == {
        c.FIELD_URI: saved.as_uri(),
        c.FIELD_SHA256: hashlib.sha256(saved.read_bytes()).hexdigest(),
        c.FIELD_SIZE_BYTES: saved.stat().st_size,
        c.FIELD_STORED: 0,
    }
    # its profile: a sample every 0.25 s (the last one at the end), its summary on the end event
    samples = events(server, c.SYSTEM)
    [end] = [r for r in events(server, c.RUN) if r[c.TAG_STATUS] == "succeeded"]
    assert len(samples) == end[c.FIELD_SYSTEM_SAMPLES] >= 1 and end[c.FIELD_PEAK_RSS_BYTES] > 0

    extras = [json.loads(r[c.FIELD_EXTRA]) for r in events(server, c.LOG) if c.FIELD_EXTRA in r]
    assert [e["epoch"] for e in extras] == [0, 1, 2, 3]
    assert [e["loss"] for e in extras] == [round(loss[i], 6) for i in range(4)]


def test_a_diverging_run_fails_with_the_exception(tmp_path: Path, forward_server: Any) -> None:
    server = forward_server()
    done = run_demo("demo.train", "--fail", env=demo_env(tmp_path / "home", server))
    assert done.returncode == 1
    assert "FloatingPointError: training diverged at epoch 1" in done.stderr

    assert statuses(server) == ["started", "failed"]
    [end] = [r for r in events(server, c.RUN) if r[c.TAG_STATUS] == "failed"]
    assert end[c.TAG_PIPELINE] == "demo-diverge"
    assert end[c.FIELD_ERROR_TYPE] == "FloatingPointError"
    assert "lower the learning rate" in end[c.FIELD_ERROR_MESSAGE]
    assert sorted(series(server, "loss")) == [0]  # the diverged epoch is not recorded


def test_the_run_identity_comes_from_the_chart_environment(tmp_path: Path, forward_server: Any) -> None:
    server = forward_server()
    env = demo_env(
        tmp_path / "home",
        server,
        MLOBS_PIPELINE="demo-train",
        MLOBS_STEP="fit",
        MLOBS_RUN_ID="demo-train-104500",
    )
    assert run_demo("demo.train", "--epochs", "1", env=env).returncode == 0
    identities = {(r[c.TAG_PIPELINE], r[c.TAG_STEP], r[c.TAG_RUN_ID]) for r in events(server, c.RUN)}
    assert identities == {("demo-train", "fit", "demo-train-104500")}


def local_points(home: Path, run_id: str) -> dict[str, list[Point]]:
    """The points of one run in the local store under ``home``, by measurement."""
    store = LocalStore(home / "mlobs.db")
    try:
        by_measurement: dict[str, list[Point]] = {}
        for point in store.points(run_id=run_id):
            by_measurement.setdefault(point.measurement, []).append(point)
        return by_measurement
    finally:
        store.close()


def test_the_steps_write_the_local_store_without_fluentd(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = demo_env(home, None, MLOBS_RUN_ID="local-ok")
    done = run_demo("demo.train", "--epochs", "3", "--sleep", "0.01", env=env)
    assert done.returncode == 0, done.stderr
    assert f"the local store {home / 'mlobs.db'}" in done.stderr

    points = local_points(home, "local-ok")
    assert [p.tags[c.TAG_STATUS] for p in points["run"]] == ["started", "succeeded"]
    assert points["run"][-1].fields[c.FIELD_DURATION_MS] >= 30  # three epochs of --sleep 0.01
    for name in ("loss", "accuracy"):
        values = [p for p in points["list_metric"] if p.tags[c.TAG_NAME] == name]
        assert [p.fields[c.FIELD_INDEX] for p in values] == [0, 1, 2], name
    assert {p.tags[c.TAG_NAME] for p in points["metric"]} == {"val_accuracy", "train_loss"}
    assert {(p.tags[c.TAG_DIRECTION], p.tags[c.TAG_NAME]) for p in points["io"]} == {
        ("input", "dataset"),
        ("output", "model"),
        ("artifact", "churn-logreg"),
    }
    [artifact] = [p for p in points["io"] if p.tags[c.TAG_DIRECTION] == "artifact"]
    assert artifact.fields[c.FIELD_STORED] == 1  # the local store keeps a copy
    assert len(points["system"]) == points["run"][-1].fields[c.FIELD_SYSTEM_SAMPLES] >= 1
    epochs = [
        json.loads(p.fields[c.FIELD_EXTRA])["epoch"] for p in points["log"] if c.FIELD_EXTRA in p.fields
    ]
    assert epochs == [0, 1, 2]
    assert {p.tags[c.TAG_LEVEL] for p in points["log"]} == {"INFO"}

    failing = demo_env(home, None, MLOBS_RUN_ID="local-fail")
    done = run_demo("demo.train", "--fail", "--epochs", "5", env=failing)
    assert done.returncode == 1
    points = local_points(home, "local-fail")
    [end] = [p for p in points["run"] if p.tags[c.TAG_STATUS] != "started"]
    assert end.tags[c.TAG_STATUS] == "failed"
    assert end.tags[c.TAG_PIPELINE] == "demo-diverge"
    assert end.fields[c.FIELD_ERROR_TYPE] == "FloatingPointError"
    assert end.fields[c.FIELD_ERROR_MESSAGE].startswith("training diverged at epoch 1: loss ")
    assert [p.fields[c.FIELD_INDEX] for p in points["list_metric"] if p.tags[c.TAG_NAME] == "loss"] == [0]


# ---- the OOM-killed step -------------------------------------------------------------------------


def test_an_oom_killed_step_delivered_its_progress_and_no_end(tmp_path: Path, forward_server: Any) -> None:
    server = forward_server()
    proc = subprocess.Popen(
        [sys.executable, "-m", "demo.oom", "--chunk-mb", "4", "--max-mb", "4096"],
        cwd=ROOT,
        env=demo_env(tmp_path / "home", server),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: len(series(server, "allocated_mb")) >= 3, 30, "three allocation steps at the server")
    finally:
        proc.send_signal(signal.SIGKILL)  # what the kernel's OOM killer sends
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    assert statuses(server) == ["started"]  # the exporter reports the end, from the pod's OOMKilled
    allocated = series(server, "allocated_mb")
    assert [allocated[i] for i in sorted(allocated)] == [4.0 * i for i in range(len(allocated))]


def test_with_max_mb_the_oom_step_stops_there_and_exits_0(tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = run_demo("demo.oom", "--max-mb", "64", env=demo_env(home, None, MLOBS_RUN_ID="oom-bounded"))
    assert done.returncode == 0, done.stderr
    progress = re.findall(r"demo\.oom: holding (\d+) MiB, allocating 8 more", done.stderr)
    assert [int(mb) for mb in progress] == list(range(0, 64, 8))
    assert "reached --max-mb=64 with 64 MiB held and was not killed" in done.stderr

    points = local_points(home, "oom-bounded")
    assert [p.tags[c.TAG_STATUS] for p in points["run"]] == ["started", "succeeded"]
    assert (points["run"][0].tags[c.TAG_PIPELINE], points["run"][0].tags[c.TAG_STEP]) == ("demo-oom", "embed")
    allocated = {p.fields[c.FIELD_INDEX]: p.fields[c.FIELD_VALUE] for p in points["list_metric"]}
    assert allocated == {i: 8.0 * i for i in range(9)}
    assert sum(1 for p in points["log"] if "holding" in p.fields[c.FIELD_MESSAGE]) == 8


def test_without_max_mb_the_oom_step_needs_a_memory_limit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(oom, "memory_limit", lambda: None)
    with pytest.raises(SystemExit) as exited:
        oom.main([])
    assert exited.value.code == 2
    assert "no cgroup memory limit is set for this process" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        ({"memory.max": "67108864\n"}, 64 * 1024 * 1024),  # cgroup v2, the chart's 64Mi
        ({"memory.max": "max\n"}, None),
        ({"memory/memory.limit_in_bytes": "268435456\n"}, 256 * 1024 * 1024),  # cgroup v1
        ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),  # v1's "unlimited"
        ({}, None),
    ],
)
def test_the_memory_limit_is_read_from_the_cgroup(
    tmp_path: Path, files: dict[str, str], limit: int | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert oom.memory_limit(tmp_path) == limit


# ---- the model API and its traffic ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def api(tmp_path: Path, forward_server: Any) -> Iterator[tuple[str, ForwardServerProcess]]:
    """The demo model API served by uvicorn on 127.0.0.1, sending to a real Forward server."""
    server = forward_server()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "demo.model_api", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=demo_env(tmp_path / "home", server, MODEL_VERSION="3"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, f"the model API exited: {proc.stderr.read() if proc.stderr else ''}"
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    try:
        wait_for(ready, 30, "the demo model API's /healthz", interval=0.05)
        yield url, server
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


def post(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_traffic_is_counted_by_the_middleware_and_recorded(api: tuple[str, ForwardServerProcess]) -> None:
    url, server = api
    done = subprocess.run(
        [sys.executable, "-m", "demo.traffic", "--url", url, "--requests", "150", "--users", "8"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    plan = traffic.plan(150, 8, 11)
    kinds = Counter(r.kind for r in plan)
    assert set(kinds) == {"good", *traffic.BAD}, "the plan should hold bad requests of every kind"
    valid = [r for r in plan if r.kind == "good"]
    assert all(r.model in SERVED and set(r.body) == set(FEATURES) for r in valid)
    not_found = kinds["unknown-model"] + kinds["unknown-path"]
    summary = (
        f"(200: {len(valid)}, 400: {kinds['bad-json']}, 404: {not_found}, 422: {kinds['missing-feature']})"
    )
    assert summary in done.stdout
    assert "traffic: 150/150 sent" in done.stdout

    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    counted = re.search(
        r'http_requests_total\{handler="/predict/\{model\}",method="POST",status="2xx"\} (\S+)', metrics
    )
    assert counted and float(counted.group(1)) == len(valid)
    unmatched = re.search(r'http_requests_total\{handler="none",method="POST",status="4xx"\} (\S+)', metrics)
    assert unmatched and float(unmatched.group(1)) == kinds["unknown-path"]

    def delivered() -> bool:
        return len(events(server, c.PREDICTION)) == len(valid)

    wait_for(delivered, 20, f"{len(valid)} prediction events at the server")
    predictions = events(server, c.PREDICTION)
    assert {(p[c.TAG_SERVICE], p[c.TAG_MODEL], p[c.TAG_MODEL_VERSION]) for p in predictions} == {
        ("churn-api", "churn-logreg", "3")
    }
    expected = sorted(round(SERVED["churn-logreg"].score(features_of(r.body)), 9) for r in valid)
    assert sorted(round(p[c.FIELD_SCORE], 9) for p in predictions) == expected
    routed = 150 - kinds["unknown-path"]
    wait_for(
        lambda: (
            sum(1 for r in events(server, c.API_REQUEST) if r[c.TAG_ENDPOINT] == "/predict/{model}") == routed
        ),
        20,
        f"{routed} api_request events of /predict/{{model}}",
    )
    users = {r[c.FIELD_USER] for r in events(server, c.API_REQUEST) if c.FIELD_USER in r}
    assert len(users) == len({r.user for r in plan})  # one hash per simulated user, none raw
    assert not any(u.startswith("user-") for u in users)


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/predict/churn-logreg", b"{not json", 400, "body is not JSON"),
        (
            "/predict/churn-logreg",
            b'{"tenure_months": 3, "monthly_charges": 80}',
            422,
            "support_calls is missing",
        ),
        (
            "/predict/churn-logreg",
            b'{"tenure_months": -1, "monthly_charges": 80, "support_calls": 1}',
            422,
            "tenure_months=-1 is invalid: must not be negative",
        ),
        ("/predict/churn-logreg", b"[1, 2, 3]", 422, "body must be a JSON object"),
        ("/predict/gpt", b"{}", 404, "model 'gpt' is unknown; known: churn-logreg"),
    ],
)
def test_the_model_api_names_what_is_wrong_with_a_request(
    api: tuple[str, ForwardServerProcess], path: str, body: bytes, status: int, message: str
) -> None:
    url, _ = api
    got, answer = post(url + path, body)
    assert (got, answer["error"][: len(message)]) == (status, message)


def test_a_good_request_gets_the_models_score(api: tuple[str, ForwardServerProcess]) -> None:
    url, _ = api
    features = {"tenure_months": 2, "monthly_charges": 110.0, "support_calls": 5}
    status, answer = post(url + "/predict/churn-logreg", json.dumps(features).encode())
    score = SERVED["churn-logreg"].score(features_of(features))
    assert status == 200
    assert answer == {"model": "churn-logreg", "version": "3", "score": round(score, 6), "outcome": "churn"}


class _Failing(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(503)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


def test_traffic_fails_on_server_errors() -> None:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        done = run_demo(
            "demo.traffic", "--url", url, "--requests", "20", "--users", "4", env=dict(os.environ)
        )
    finally:
        httpd.shutdown()
    assert done.returncode == 1
    assert "traffic: failed: {'503': 20}" in done.stderr


def test_traffic_names_an_api_that_never_gets_ready(refused_port: int) -> None:
    url = f"http://127.0.0.1:{refused_port}"
    done = run_demo("demo.traffic", "--url", url, "--ready-timeout", "1", env=dict(os.environ))
    assert done.returncode == 1
    assert f"the model API at {url} is not ready after 1 s" in done.stderr


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        ("demo.train", ["--epochs", "0"], "argument --epochs: 0 is invalid: must be at least 1"),
        ("demo.train", ["--lr", "nan"], "argument --lr: nan is invalid: must be a finite number above 0"),
        (
            "demo.train",
            ["--system-interval", "0.01"],
            "argument --system-interval: 0.01 is invalid: must be 0 (no samples) or at least 0.05",
        ),
        ("demo.oom", ["--chunk-mb", "x"], "argument --chunk-mb: 'x' is not an integer"),
        (
            "demo.traffic",
            ["--url", "localhost:8000"],
            "--url 'localhost:8000' is invalid: must start with http://",
        ),
        ("demo.model_api", ["--port", "70000"], "--port 70000 is invalid: must be at most 65535"),
    ],
)
def test_bad_arguments_are_named(tmp_path: Path, module: str, args: list[str], message: str) -> None:
    done = run_demo(module, *args, env=demo_env(tmp_path / "home", None))
    assert done.returncode == 2
    assert message in done.stderr


# ---- the data and the model ----------------------------------------------------------------------


def test_the_served_model_is_what_training_learns() -> None:
    xs, ys = make_dataset(2000, 7)
    model = Model.zeros()
    for _ in range(5):
        model.epoch(xs[:1600], ys[:1600], 0.5)
    served = SERVED["churn-logreg"]
    assert served.weights == [round(w, 2) for w in model.weights]
    assert served.bias == round(model.bias, 2)
    assert served.accuracy(xs[1600:], ys[1600:]) == pytest.approx(
        model.accuracy(xs[1600:], ys[1600:]), abs=0.02
    )


def test_the_dataset_is_seeded() -> None:
    assert make_dataset(50, 1) == make_dataset(50, 1)
    assert make_dataset(50, 1) != make_dataset(50, 2)
    with pytest.raises(ValueError, match=r"rows=0 is invalid"):
        make_dataset(0, 1)


# ---- the chart and the image run what exists -----------------------------------------------------


def chart_commands() -> Iterator[list[str]]:
    docs = [*objects("01-kind-demo-values.yaml", "Job"), *objects("01-kind-demo-values.yaml", "Deployment")]
    for doc in docs:
        for container in doc["spec"]["template"]["spec"]["containers"]:
            command = container.get("command", [])
            if command[:2] == ["python", "-m"] and command[2].startswith("demo."):
                yield command


def test_the_chart_runs_demo_modules_with_arguments_they_accept() -> None:
    commands = list(chart_commands())
    assert {cmd[2] for cmd in commands} == set(DEMO_MODULES)
    for cmd in commands:
        DEMO_MODULES[cmd[2]].parser().parse_args(cmd[3:])  # SystemExit on an argument it does not take


def test_the_demo_image_is_pinned_non_root_and_copies_the_demo() -> None:
    text = (ROOT / "demo" / "Dockerfile").read_text()
    [base] = re.findall(r"^FROM (\S+)$", text, re.MULTILINE)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), base
    assert re.findall(r"^USER (\S+)$", text, re.MULTILINE)[-1] == "65532:65532"
    assert "COPY demo ./demo" in text
    # the model API's server, the drift profiles and the monitors' InfluxDB reads (pyproject's extras)
    assert "-c constraints.txt '.[demo,drift,influxdb]'" in text


def dockerignore_admits(path: str) -> bool:
    """Whether .dockerignore sends ``path`` (relative to the root) to the build, by its last matching rule."""
    import fnmatch

    admitted = True
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        rule = line.strip()
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(p, pattern[3:]) for p in parts)
        else:
            hit = any(fnmatch.fnmatch(p, pattern) for p in prefixes)
        if hit:
            admitted = negate
    return admitted


def test_dockerignore_sends_what_every_dockerfile_copies() -> None:
    sources = []
    for dockerfile in ROOT.glob("*/Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                sources += line.split()[1:-1]
    assert len(sources) >= 8
    for source in sources:
        path = ROOT / source
        files = [p for p in path.rglob("*.py")] if path.is_dir() else [path]
        assert files, f"{source} copies nothing"
        for file in files:
            assert dockerignore_admits(str(file.relative_to(ROOT))), f"{file} is not sent to docker build"
    assert not dockerignore_admits(".venv/bin/python")
    assert not dockerignore_admits(".git/HEAD")


# ---- the model API in-process, on port 0, into the local store ------------------------------------


def test_traffic_to_the_api_lands_in_the_local_store(tmp_path: Path) -> None:
    from pipeline_sdk import Client, LocalTransport

    from .test_model_api import Server

    db = tmp_path / "mlobs.db"
    app = model_api.create_app(Client(LocalTransport(db)), version="2")
    server = Server(app, lifespan="on")  # the lifespan's end closes (flushes) the client

    def predicted() -> float:
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        found = re.search(
            r'http_requests_total\{handler="/predict/\{model\}",method="POST",status="2xx"\} (\S+)', text
        )
        return float(found.group(1)) if found else 0.0

    try:
        before = predicted()  # the middleware's counters live in the process-wide registry
        done = run_demo(
            "demo.traffic", "--url", server.url, "--requests", "60", "--users", "4", env=dict(os.environ)
        )
        assert done.returncode == 0, done.stderr
        good = [r for r in traffic.plan(60, 4, 11) if r.kind == "good"]
        assert predicted() - before == len(good)
    finally:
        server.stop()
    store = LocalStore(db)
    try:
        predictions = list(store.points(c.PREDICTION.measurement))
        requests = list(store.points(c.API_REQUEST.measurement))
    finally:
        store.close()
    assert len(predictions) == len(good)
    assert {(p.tags[c.TAG_MODEL], p.tags[c.TAG_MODEL_VERSION]) for p in predictions} == {
        ("churn-logreg", "2")
    }
    assert {p.fields[c.FIELD_OUTCOME] for p in predictions} <= {"churn", "stay"}
    assert len(requests) == 60 + 1  # the traffic's, and the /healthz it waited on
    assert {p.tags[c.TAG_SERVICE] for p in requests} == {"churn-api"}
    assert {p.tags[c.TAG_ENDPOINT] for p in requests} == {"/predict/{model}", "/healthz", "none"}
