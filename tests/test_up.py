"""`make up`, run for real against stand-ins for docker, kind, helm, kubectl and curl.

Each test runs make targets on a laptop of tests/support/up_laptop.py: a scratch clone of the project
with the stand-ins first on PATH.  Helm's part is the real Helm engine, so a rollout is a pod
template that really changed.  Here: the first run, the second, changes, the waits of the last
phase, make demo, make down and make e2e's URLs.  The preflight is in test_up_preflight.py, the
pieces (tables, tags, the chart) in test_up_pieces.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.support.up_laptop import OUR_WORKLOADS, FirstRun, Laptop, first_up, free_port, image_repos


@pytest.fixture
def laptop(tmp_path: Path) -> Laptop:
    return Laptop(tmp_path)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> FirstRun:
    return first_up(tmp_path_factory.mktemp("first-run"))


@pytest.fixture
def after_up(first_run: FirstRun, tmp_path: Path) -> Laptop:
    return first_run.laptop.clone(tmp_path)


# ---- the first run, the second, a change -------------------------------------------------------------


def test_a_first_run_creates_the_cluster_builds_loads_and_installs_with_the_computed_tags(
    laptop: Laptop,
) -> None:
    tags = laptop.tags()
    run = laptop.up_ok()

    [create] = run.of("kind", "create", "cluster")
    assert create[create.index("--name") + 1] == "mlobs"
    config = laptop.world["clusters"]["mlobs"]["config"]
    mapped = {m["containerPort"]: m["hostPort"] for m in config["nodes"][0]["extraPortMappings"]}
    ports = laptop.ports
    assert mapped == {
        30300: ports["MLOBS_GRAFANA_PORT"], 30090: ports["MLOBS_PROMETHEUS_PORT"],
        30903: ports["MLOBS_ALERTMANAGER_PORT"], 30825: ports["MLOBS_MAILPIT_PORT"],
        30086: ports["MLOBS_INFLUXDB_PORT"],
    }  # fmt: skip
    pinned = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert config["nodes"][0]["image"] == pinned["nodes"][0]["image"]

    repos = {"exporter": "mlobs/pipeline-exporter", "fluentd": "mlobs/fluentd", "demo": "mlobs/demo"}
    refs = {key: f"{repos[key]}:{tags[key]}" for key in repos}
    assert [c[4] for c in run.of("docker", "build")] == list(refs.values())
    assert [c[3] for c in run.of("kind", "load")] == list(refs.values())
    assert all(re.fullmatch(r"[0-9a-f]{12}", t) for t in tags.values()), tags
    sets = run.helm_sets()
    for key, ref in refs.items():
        assert f"{sets[f'mlobs-core.images.{key}.repository']}:{sets[f'mlobs-core.images.{key}.tag']}" == ref
    assert sets["mlobs-core.alerting.grafanaUrl"] == f"http://localhost:{ports['MLOBS_GRAFANA_PORT']}"
    [upgrade] = run.of("helm", "upgrade")
    assert upgrade[upgrade.index("--kube-context") + 1] == "kind-mlobs"
    assert "--set" not in upgrade, "a hex tag of digits only would become a number"

    urls = sorted(c[4] for c in run.of("helm", "repo", "add"))
    chart = yaml.safe_load((ROOT / "charts/mlobs/Chart.yaml").read_text())
    assert urls == sorted(
        d["repository"] for d in chart["dependencies"] if d["repository"].startswith("https:")
    )
    assert len(run.of("helm", "dependency", "update")) == 1
    images = {c["image"] for w in laptop.world["workloads"].values() for c in w["spec"]["containers"]}
    assert set(refs.values()) <= images
    assert laptop.world["rollouts"] == []

    assert [c[-3] for c in run.of("kubectl", "--context", "kind-mlobs") if "rollout" in c] == [
        "statefulset/prometheus-mlobs-prometheus",
        "statefulset/alertmanager-mlobs-alertmanager",
    ]
    for kubectl in run.of("kubectl"):
        assert kubectl[:2] == ["kubectl", "--context"] or kubectl[1:3] in (
            ["version", "--client"],
            ["config", "get-contexts"],
        )
    phases = re.findall(r"^==> \[(\d)/6\] (\w+):", run.out, flags=re.MULTILINE)
    assert [p for _, p in phases] == ["preflight", "cluster", "images", "dependencies", "release", "ready"]
    assert (
        len(
            re.findall(
                r"^    \((preflight|cluster|images|dependencies|release|ready): \d+ s\)$", run.out, re.M
            )
        )
        == 6
    )
    assert f"Grafana       http://localhost:{ports['MLOBS_GRAFANA_PORT']}" in run.out
    assert laptop.git("status", "--porcelain") == "", "make up leaves the tree clean"


def test_a_second_run_with_no_change_builds_loads_and_rolls_out_nothing(laptop: Laptop) -> None:
    first = laptop.up_ok()
    second = laptop.up_ok()
    assert second.mutating() == [
        c for c in second.calls if c[:2] in (["helm", "package"], ["helm", "upgrade"])
    ]
    assert second.helm_sets() == first.helm_sets()
    assert laptop.world["release"]["revision"] == 2
    assert laptop.world["rollouts"] == []
    assert second.out.count("built before, already in the cluster") == 3
    assert "the pinned charts are in place" in second.out
    assert laptop.git("status", "--porcelain") == ""


def test_a_fluentd_statefulset_of_an_older_release_is_recreated_without_a_restart(after_up: Laptop) -> None:
    laptop = after_up
    assert laptop.world["service_names"]["StatefulSet/mlobs-fluentd"] == "mlobs-fluentd-headless"
    again = laptop.up_ok()
    assert [c for c in again.calls if "delete" in c] == []
    laptop.world["service_names"]["StatefulSet/mlobs-fluentd"] = "mlobs-fluentd"  # as before the change
    run = laptop.up_ok()
    [delete] = [c for c in run.calls if "delete" in c]
    assert delete[-3:] == ["statefulset", "mlobs-fluentd", "--cascade=orphan"]
    assert run.calls.index(delete) < run.calls.index(run.of("helm", "upgrade")[0])
    assert laptop.world["orphaned"] == ["mlobs-fluentd"] and laptop.world["rollouts"] == []
    assert laptop.world["service_names"]["StatefulSet/mlobs-fluentd"] == "mlobs-fluentd-headless"


CHANGES = [  # one after the other, each followed by make up
    ("exporters/pipeline_exporter/__main__.py", {"exporter"}),
    # Both Fluentd tiers run the one image, which holds both files: either file rolls both tiers
    # (each file is also in its own tier's pod template checksum: still one rollout each).
    ("fluentd/fluent.conf", {"fluentd"}),
    ("fluentd/forwarder.conf", {"fluentd"}),
    ("demo/new_module.py", {"demo"}),  # a new file that is not committed yet: docker would COPY it
    ("pipeline_sdk/contract.py", {"exporter", "demo"}),  # both images install the SDK
]


def test_a_changed_source_rebuilds_and_rolls_out_exactly_its_workloads(after_up: Laptop) -> None:
    laptop, repos = after_up, image_repos(after_up)
    for path, changed in CHANGES:
        before = laptop.tags()
        with (laptop.repo / path).open("a") as f:
            f.write("\n# a change\n")
        after = laptop.tags()
        assert {k for k in before if before[k] != after[k]} == changed, path
        laptop.world["rollouts"] = []
        run = laptop.up_ok()
        assert {c[4] for c in run.of("docker", "build")} == {f"{repos[k]}:{after[k]}" for k in changed}, path
        assert [c[3] for c in run.of("kind", "load")] == [
            f"{repos[k]}:{after[k]}" for k in repos if k in changed
        ]
        assert sorted(laptop.world["rollouts"]) == sorted(w for k in changed for w in OUR_WORKLOADS[k]), path
        assert run.of("kind", "create") == [] and run.of("helm", "dependency", "update") == []

    values = laptop.repo / "charts/mlobs-core/values.yaml"  # a chart change: no build, one rollout
    values.write_text(values.read_text().replace("finishedRunsMemory: 50000", "finishedRunsMemory: 40000"))
    laptop.world["rollouts"] = []
    run = laptop.up_ok()
    assert run.of("docker", "build") == [] and run.of("kind", "load") == []
    assert laptop.world["rollouts"] == ["Deployment/mlobs-pipeline-exporter"]


def test_an_existing_cluster_with_other_ports_is_not_silently_reused(after_up: Laptop) -> None:
    laptop = after_up
    other = free_port()
    run = laptop.run(MLOBS_GRAFANA_PORT=str(other))
    assert run.code != 0 and run.mutating() == []
    grafana = laptop.ports["MLOBS_GRAFANA_PORT"]
    assert f"the kind cluster 'mlobs' maps Grafana to port {grafana}, not {other}" in run.err
    assert "unset MLOBS_GRAFANA_PORT, or run make down and make up again" in run.err


# ---- ready means ready -------------------------------------------------------------------------------


def test_it_waits_for_what_the_operator_creates_after_helm_returns(after_up: Laptop) -> None:
    laptop = after_up
    laptop.world["polls"] = {}
    laptop.world["polls_before"] = {
        "statefulset:prometheus-mlobs-prometheus": 3,
        "statefulset:alertmanager-mlobs-alertmanager": 2,
        "rules": 4,
        "grafana": 2,
    }
    run = laptop.up_ok()
    polls = laptop.world["polls"]
    assert polls["statefulset:prometheus-mlobs-prometheus"] == 4
    assert polls["statefulset:alertmanager-mlobs-alertmanager"] == 3
    assert polls["rules"] == 5 and polls["grafana"] == 3
    groups = [g["name"] for p in sorted((ROOT / "alerting").glob("*-rules.yaml")) for g in
              yaml.safe_load(p.read_text())["groups"]]  # fmt: skip
    assert sorted(laptop.world["rule_groups"]) == sorted(groups)
    order = [line for line in run.out.splitlines() if line.startswith("    waiting for")]
    assert order == [
        "    waiting for Prometheus's StatefulSet prometheus-mlobs-prometheus",
        "    waiting for Alertmanager's StatefulSet alertmanager-mlobs-alertmanager",
        f"    waiting for Prometheus to load the rule groups {' '.join(groups)}",
        f"    waiting for Grafana at http://127.0.0.1:{laptop.ports['MLOBS_GRAFANA_PORT']}/api/health",
    ]


@pytest.mark.parametrize(
    ("never", "message"),
    [
        (
            "statefulset:prometheus-mlobs-prometheus",
            "Prometheus's StatefulSet prometheus-mlobs-prometheus: not within 2 s",
        ),
        ("rules", "Prometheus to load the rule groups"),
        ("grafana", "Grafana at http://127.0.0.1:"),
    ],
)
def test_it_gives_up_at_the_deadline_naming_what_it_waited_for(
    after_up: Laptop, never: str, message: str
) -> None:
    laptop = after_up
    laptop.world["polls"], laptop.world["polls_before"] = {}, {never: -1}
    run = laptop.run(MLOBS_UP_READY_TIMEOUT="2")
    assert run.code != 0
    assert message in run.err and "See: " in run.err, run.err
    assert laptop.world["polls"][never] >= 2


# ---- make demo and make down ---------------------------------------------------------------------------


def test_demo_jobs_get_a_fresh_random_suffix_and_the_deployed_image(after_up: Laptop) -> None:
    laptop = after_up
    runs = [laptop.run("demo") for _ in range(2)]
    assert [r.code for r in runs] == [0, 0], runs[-1].err
    jobs = laptop.world["jobs"]
    assert len(jobs) == len(set(jobs)) == 10
    names = [re.fullmatch(r"demo-(train|diverge|oom|traffic|drift)-([0-9a-f]{10})", j) for j in jobs]
    by_suffix: dict[str, set[str]] = {}
    for name, job in zip(names, jobs, strict=True):
        assert name is not None, job
        by_suffix.setdefault(name[2], set()).add(name[1])
    assert list(by_suffix.values()) == [{"train", "diverge", "oom", "traffic", "drift"}] * 2
    for run, suffix in zip(runs, by_suffix, strict=True):
        waited = [c[c.index("wait") + 1 :] for c in run.of("kubectl") if "wait" in c]
        assert [[a for a in w if a.startswith("job/")] for w in waited] == [
            [f"job/demo-train-{suffix}", f"job/demo-traffic-{suffix}"],
            [f"job/demo-diverge-{suffix}", f"job/demo-oom-{suffix}"],
            [f"job/demo-drift-{suffix}"],
        ]
    for run in runs:
        [template] = run.of("helm", "template")
        assert "--values" in template and run.of("helm", "get", "values")
        assert [c[-3:] for c in run.of("kubectl") if "create" in c] == [["create", "-f", "-"]]
    deployed = {
        c["image"] for c in laptop.world["workloads"]["Deployment/mlobs-model-api"]["spec"]["containers"]
    }
    assert set(laptop.world["job_images"].values()) == deployed
    grafana = laptop.ports["MLOBS_GRAFANA_PORT"]
    assert f"http://localhost:{grafana}/d/mlobs-run-view/" in runs[0].out


def test_a_demo_job_name_that_exists_already_is_an_error_not_a_reuse(after_up: Laptop) -> None:
    laptop = after_up
    assert laptop.run("demo").code == 0
    laptop.world["polls"] = {}
    fixed = laptop.bin / "od"  # the same "random" bytes twice
    fixed.unlink()
    fixed.write_text("#!/bin/sh\necho ' 01 02 03 04 05'\n")
    fixed.chmod(0o755)
    first, second = laptop.run("demo"), laptop.run("demo")
    assert first.code == 0 and second.code != 0
    assert 'jobs.batch "demo-train-0102030405" already exists' in second.err


def test_down_deletes_the_cluster_and_says_so_when_there_is_none(after_up: Laptop) -> None:
    laptop = after_up
    deleted = laptop.run("down")
    assert deleted.code == 0 and deleted.of("kind", "delete", "cluster", "--name", "mlobs")
    assert laptop.world["clusters"] == {}
    again = laptop.run("down")
    assert again.code == 0 and again.of("kind", "delete") == []
    assert "make down: no kind cluster named mlobs" in again.out


def test_e2e_finds_the_ports_the_cluster_maps(after_up: Laptop, tmp_path: Path) -> None:
    mapped = after_up.world["clusters"]["mlobs"]["ports"]
    run = after_up.command(
        ["scripts/cluster-env.sh", "env"], MLOBS_GRAFANA_PORT="1", MLOBS_PROMETHEUS_URL="http://elsewhere:1"
    )
    urls = dict(line.split("=", 1) for line in run.out.splitlines() if re.match(r"MLOBS_\w+_URL=", line))
    assert urls == {
        "MLOBS_GRAFANA_URL": f"http://localhost:{mapped['30300']}",  # the cluster's, not the variable's
        "MLOBS_PROMETHEUS_URL": "http://elsewhere:1",  # set by the user: kept
        "MLOBS_ALERTMANAGER_URL": f"http://localhost:{mapped['30903']}",
        "MLOBS_MAILPIT_URL": f"http://localhost:{mapped['30825']}",
        "MLOBS_INFLUXDB_URL": f"http://localhost:{mapped['30086']}",
    }
    (tmp_path / "fresh").mkdir()
    no_cluster = Laptop(tmp_path / "fresh").command(
        ["scripts/cluster-env.sh", "env"], MLOBS_GRAFANA_PORT="3999"
    )
    assert "MLOBS_GRAFANA_URL=http://localhost:3999" in no_cluster.out.splitlines()
