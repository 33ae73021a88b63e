"""The demo of ``make demo``, run for real: its steps and model API against a real Forward server.

The chart runs these modules as Jobs and a Deployment in the mlobs/demo image; here
they run as child processes with ``MLOBS_FLUENTD_HOST`` pointing at the Forward
server of ``pipeline_sdk.testing``, and the tests read back what they sent.  The
OOM kill is the kernel's SIGKILL, sent here by the test once the step is allocating.
"""

from __future__ import annotations

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
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from demo import model_api, oom, traffic, train
from demo.data import FEATURES, SERVED, Model, features_of, make_dataset
from pipeline_sdk import contract as c

from .conftest import ROOT, ForwardServerProcess, wait_for
from .test_chart import objects

DEMO_MODULES = {"demo.train": train, "demo.oom": oom, "demo.model_api": model_api, "demo.traffic": traffic}


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

    loss, accuracy = series(server, "loss"), series(server, "val_accuracy")
    assert sorted(loss) == sorted(accuracy) == [0, 1, 2, 3]
    assert all(loss[i + 1] < loss[i] for i in range(3)), f"the loss should fall every epoch: {loss}"
    simple = {r[c.TAG_NAME]: r[c.FIELD_VALUE] for r in events(server, c.METRIC)}
    assert set(simple) == {"val_accuracy", "train_loss"}
    assert simple["val_accuracy"] > 0.7  # the synthetic labels are learnable

    io = {(r[c.TAG_DIRECTION], r[c.TAG_NAME]): r for r in events(server, c.IO)}
    assert set(io) == {("input", "dataset"), ("output", "model")}
    assert io["input", "dataset"][c.FIELD_SOURCE] == "synthetic://churn?seed=7&rows=2000"
    assert json.loads(io["input", "dataset"][c.FIELD_VALUE])["rows"] == 2000
    assert len(json.loads(io["output", "model"][c.FIELD_VALUE])["weights"]) == len(FEATURES)

    epochs = [json.loads(r[c.FIELD_EXTRA])["epoch"] for r in events(server, c.LOG) if c.FIELD_EXTRA in r]
    assert epochs == [0, 1, 2, 3]


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


def test_the_steps_write_the_local_store_without_fluentd(tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = run_demo("demo.train", "--epochs", "2", env=demo_env(home, None))
    assert done.returncode == 0, done.stderr
    assert f"the local store {home / 'mlobs.db'}" in done.stderr

    from pipeline_sdk.local_store import LocalStore

    points = list(LocalStore(home / "mlobs.db").points())
    assert {p.measurement for p in points} >= {"run", "param", "list_metric", "metric", "io", "log"}


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


def test_without_a_memory_limit_the_oom_step_fails_by_itself(tmp_path: Path, forward_server: Any) -> None:
    server = forward_server()
    done = run_demo("demo.oom", "--chunk-mb", "2", "--max-mb", "6", env=demo_env(tmp_path / "home", server))
    assert done.returncode == 1
    assert "MemoryError: allocated 6 MiB without being OOM-killed" in done.stderr
    assert statuses(server) == ["started", "failed"]
    assert sorted(series(server, "allocated_mb")) == [0, 1, 2]


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
    valid = [r for r in plan if r.model in SERVED and set(r.body) == set(FEATURES)]
    unknown = sum(1 for r in plan if r.model not in SERVED)
    missing = len(plan) - len(valid) - unknown
    assert unknown and missing, "the plan should hold bad requests of both kinds"
    assert f"(200: {len(valid)}, 404: {unknown}, 422: {missing})" in done.stdout
    assert "traffic: 150/150 sent" in done.stdout

    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    counted = re.search(
        r'http_requests_total\{handler="/predict/\{model\}",method="POST",status="2xx"\} (\S+)', metrics
    )
    assert counted and float(counted.group(1)) == len(valid)

    def delivered() -> bool:
        return len(events(server, c.PREDICTION)) == len(valid)

    wait_for(delivered, 20, f"{len(valid)} prediction events at the server")
    predictions = events(server, c.PREDICTION)
    assert {(p[c.TAG_SERVICE], p[c.TAG_MODEL], p[c.TAG_MODEL_VERSION]) for p in predictions} == {
        ("churn-api", "churn-logreg", "3")
    }
    expected = sorted(round(SERVED["churn-logreg"].score(features_of(r.body)), 9) for r in valid)
    assert sorted(round(p[c.FIELD_SCORE], 9) for p in predictions) == expected
    wait_for(
        lambda: (
            sum(1 for r in events(server, c.API_REQUEST) if r[c.TAG_ENDPOINT] == "/predict/{model}") == 150
        ),
        20,
        "150 api_request events",
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
    assert "-c constraints.txt '.[demo]'" in text


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
