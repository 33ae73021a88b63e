"""The files `make generate` writes: each is in step with its source and says so in its first lines.

Covered here: the generated parts of fluent.conf and forwarder.conf (fluentd/generate.py, with
fluentd/forwarder.py) and the chart's copies
(scripts/chart_files.py); the dashboards' JSON has its own drift check in test_dashboards.py.
Each drift check is also shown to fail, on a scratch copy that was edited by hand.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

from fluentd import generate as fluentd_generate
from pipeline_sdk import contract as c
from tests.conftest import ROOT


def load_script(name: str) -> ModuleType:
    """A module of scripts/ (not a package), imported from its file."""
    path = ROOT / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"mlobs_scripts_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


chart_files = load_script("chart_files")
COPIES = chart_files.plan()
NOTE = "by `make generate`; do not edit"

# The header of every copy that can carry a comment, pinned.
HEADERS = {
    **{
        f"alerting/{n}-rules.yaml": f"# generated from alerting/{n}-rules.yaml {NOTE}\n"
        f"# its promtool tests: alerting/{n}-rules-test.yaml, beside its source"
        for n in ("drift", "model-api", "pipeline", "resources", "telemetry")
    },
    "alerting/alertmanager.yaml": f"# generated from alerting/alertmanager.yaml {NOTE}",
    **{
        f"alertmanager-templates/{n}.tmpl": f"{{{{/* generated from alerting/templates/{n}.tmpl {NOTE} */}}}}"
        for n in ("chat", "email", "grafana-url")
    },
    **{f"fluentd/{n}.conf": f"# generated from fluentd/{n}.conf {NOTE}" for n in ("fluent", "forwarder")},
}
DASHBOARDS = {
    f"dashboards/{n}.json"
    for n in ("model_api", "model_drift", "pipeline_runs", "resources", "run_view", "stack_health")
}


def _name(copy: Path) -> str:
    return copy.relative_to(chart_files.FILES).as_posix()


def test_the_chart_holds_exactly_these_copies() -> None:
    assert {_name(p) for p in COPIES} == set(HEADERS) | DASHBOARDS
    assert len(COPIES) == 17
    on_disk = {_name(p) for p in chart_files.FILES.rglob("*") if p.is_file()}
    own = {n for n in on_disk if n.startswith("influxdb-tasks/")}  # the chart's own files, no copies
    assert on_disk - own == {_name(p) for p in COPIES}
    assert len(own) == 4 and all(n.endswith(".flux") for n in own)


@pytest.mark.parametrize("copy", sorted(COPIES), ids=_name)
def test_each_copy_is_its_source_under_a_header(copy: Path) -> None:
    source = COPIES[copy]
    data = copy.read_bytes()
    if _name(copy) in DASHBOARDS:  # JSON has no comment: the dashboard names its source itself
        assert data == source.read_bytes()
        assert json.loads(data)["__generated"].startswith(f"from dashboards/{source.stem}.dashboard.py")
        return
    header = HEADERS[_name(copy)] + "\n"
    assert data.decode().startswith(header)
    assert data.removeprefix(header.encode()) == source.read_bytes()


def test_the_chart_files_check_passes_on_the_committed_copies() -> None:
    assert chart_files.main(["--check"]) == 0


@pytest.fixture
def scratch_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch copy of charts/mlobs-core/files that chart_files.py reads and writes instead."""
    files = tmp_path / "files"
    shutil.copytree(chart_files.FILES, files)
    monkeypatch.setattr(chart_files, "FILES", files)
    assert chart_files.main([]) == 0  # in step with the sources, whatever the work tree holds
    return files


def test_the_chart_files_check_fails_on_each_kind_of_drift(
    scratch_files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = scratch_files / "alerting" / "pipeline-rules.yaml"
    rules.write_text(rules.read_text().replace("for: 0m", "for: 5m", 1))  # edited by hand
    template = scratch_files / "alertmanager-templates" / "email.tmpl"
    template.write_bytes(template.read_bytes().partition(b"\n")[2])  # its header dropped
    (scratch_files / "fluentd" / "fluent.conf").unlink()  # missing
    (scratch_files / "alerting" / "old-rules.yaml").write_text("groups: []\n")  # stale
    capsys.readouterr()
    assert chart_files.main(["--check"]) == 1
    err = capsys.readouterr().err
    for name in ("alerting/pipeline-rules.yaml", "alertmanager-templates/email.tmpl", "fluentd/fluent.conf"):
        assert f"{scratch_files / name}" in err or f"files/{name}" in err, name
    assert "old-rules.yaml" in err and "run `make generate`" in err

    assert chart_files.main([]) == 0
    assert capsys.readouterr().out.endswith("3 written\n")
    assert not (scratch_files / "alerting" / "old-rules.yaml").exists()
    assert chart_files.main(["--check"]) == 0
    assert chart_files.main([]) == 0
    assert capsys.readouterr().out.endswith("0 written\n")


def test_a_source_of_an_unknown_format_is_refused(tmp_path: Path) -> None:
    odd = tmp_path / "rules.toml"
    odd.write_text("x = 1\n")
    with pytest.raises(ValueError, match=r"rules.toml: no comment syntax known for '.toml' files"):
        chart_files.content(odd)


# ---- the generated parts of fluent.conf and forwarder.conf ---------------------------------------------

# Each file -> a line of its generated part, and that line edited by hand.
GENERATED_EDITS = {
    "fluent.conf": ("  measurement param\n", "  measurement params\n"),
    "forwarder.conf": ("    require_ack_response true\n", "    require_ack_response false\n"),
}


def test_the_fluentd_check_passes_on_the_committed_files() -> None:
    assert set(fluentd_generate.CONFIGS) == {fluentd_generate.CONF, fluentd_generate.FORWARDER_CONF}
    assert {p.name for p in fluentd_generate.CONFIGS} == set(GENERATED_EDITS)
    assert fluentd_generate.main(["--check"]) == 0


@pytest.fixture
def scratch_confs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Scratch copies of fluent.conf and forwarder.conf that fluentd/generate.py reads and writes instead."""
    conf, forwarder_conf = (tmp_path / name for name in ("fluent.conf", "forwarder.conf"))
    shutil.copy(fluentd_generate.CONF, conf)
    shutil.copy(fluentd_generate.FORWARDER_CONF, forwarder_conf)
    monkeypatch.setattr(fluentd_generate, "CONF", conf)
    monkeypatch.setattr(fluentd_generate, "FORWARDER_CONF", forwarder_conf)
    monkeypatch.setattr(
        fluentd_generate,
        "CONFIGS",
        {conf: fluentd_generate.generated, forwarder_conf: fluentd_generate.forwarder_generated},
    )
    monkeypatch.setattr(fluentd_generate, "HERE", tmp_path)
    assert fluentd_generate.main([]) == 0  # in step with the contract, whatever the work tree holds
    return {"fluent.conf": conf, "forwarder.conf": forwarder_conf}


@pytest.mark.parametrize("name", sorted(GENERATED_EDITS))
def test_the_fluentd_check_fails_on_an_edited_generated_part_and_generate_restores_it(
    name: str, scratch_confs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = scratch_confs[name]
    [other] = [p for p in scratch_confs.values() if p != path]
    other_text = other.read_text()
    original = path.read_text()
    head, _ = fluentd_generate.split(original)
    line, edited_line = GENERATED_EDITS[name]
    assert original.count(line) == 1 and original.index(line) > len(head), "the line is in the generated part"
    edited = original.replace(line, edited_line, 1).replace("  log_level info\n", "  log_level debug\n", 1)
    assert edited.count("log_level debug") == 1  # the head is edited too
    path.write_text(edited)
    capsys.readouterr()
    assert fluentd_generate.main(["--check"]) == 1
    assert capsys.readouterr().err == (
        f"{name}: its generated part differs from pipeline_sdk/contract.py; run `make generate`\n"
    ), "only the edited file is named"
    assert path.read_text() == edited, "--check writes nothing"
    assert fluentd_generate.main([]) == 0
    assert capsys.readouterr().out == (
        f"fluentd: {len(c.STREAMS)} routes in {scratch_confs['fluent.conf'].relative_to(path.parents[1])}, "
        f"the forwarder's pipeline in {scratch_confs['forwarder.conf'].relative_to(path.parents[1])}\n"
    )
    part = fluentd_generate.CONFIGS[path]
    assert path.read_text() == head.replace("log_level info", "log_level debug", 1) + part(), (
        "the hand-written head is kept as it is, the generated part is written afresh"
    )
    assert other.read_text() == other_text, "the file in step is left as it is"
    assert fluentd_generate.main(["--check"]) == 0


@pytest.mark.parametrize("name", sorted(GENERATED_EDITS))
def test_the_fluentd_generator_refuses_a_file_without_its_header(
    name: str, scratch_confs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = scratch_confs[name]
    path.write_text(path.read_text().replace(fluentd_generate.HEADER, "# routes", 1))
    before = {p: p.read_text() for p in scratch_confs.values()}
    capsys.readouterr()
    for argv in ([], ["--check"]):
        assert fluentd_generate.main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"{path}: ") and "must be there once, found 0 times" in err, err
        assert err.count("\n") == 1, "only the file without its header is reported"
    assert {p: p.read_text() for p in scratch_confs.values()} == before, "nothing is written"


# ---- the charts' values tables -------------------------------------------------------------------------

values_readme = load_script("values_readme")

SAMPLE = """# A values file.

# -- Replicas of the thing.
replicas: 2
image:
  # -- Its tag; a | in text is escaped.
  tag: v1
# -- (list) Extra peers,
# as NetworkPolicyPeer objects.
peers: []
# -- Resources of the container.
resources:
  requests: {cpu: 10m}
  # -- Limits, a row of their own too.
  limits: {cpu: "1"}
# -- On or off.
enabled: true
ratio: 0.5
"""


def test_the_values_table_has_helm_docs_format() -> None:
    text = SAMPLE.replace("ratio: 0.5\n", "# -- A ratio.\nratio: 0.5\n")
    assert values_readme.table(text) == (
        "| Key | Type | Default | Description |\n"
        "|-----|------|---------|-------------|\n"
        "| enabled | bool | `true` | On or off. |\n"
        '| image.tag | string | `"v1"` | Its tag; a \\| in text is escaped. |\n'
        "| peers | list | `[]` | Extra peers, as NetworkPolicyPeer objects. |\n"
        "| ratio | float | `0.5` | A ratio. |\n"
        "| replicas | int | `2` | Replicas of the thing. |\n"
        '| resources | object | `{"limits":{"cpu":"1"},"requests":{"cpu":"10m"}}` '
        "| Resources of the container. |\n"
        '| resources.limits | object | `{"cpu":"1"}` | Limits, a row of their own too. |\n'
    )


def test_a_key_without_a_comment_is_reported_with_its_line() -> None:
    with pytest.raises(values_readme.ValuesError) as raised:
        values_readme.table(SAMPLE.replace("  # -- Its tag; a | in text is escaped.\n", ""), "v.yaml")
    assert str(raised.value) == (
        "v.yaml:6: image.tag has no `# --` comment, nor has a map around it\n"
        "v.yaml:17: ratio has no `# --` comment, nor has a map around it"
    )


@pytest.mark.parametrize("chart", values_readme.CHARTS, ids=lambda p: p.name)
def test_each_chart_readme_holds_its_values_table(chart: Path) -> None:
    readme = (chart / "README.md").read_text()
    assert values_readme.render(readme, chart) == readme
    begin = values_readme.begin(chart)
    assert begin == (
        f"<!-- values:begin: generated from charts/{chart.name}/values.yaml "
        "by `make generate`; do not edit -->"
    )
    table = readme.split(begin + "\n")[1].split(values_readme.END)[0]
    assert table == values_readme.table((chart / "values.yaml").read_text())


def test_the_core_table_documents_every_key_of_the_chart() -> None:
    readme = (ROOT / "charts" / "mlobs-core" / "README.md").read_text()
    assert '| fluentd.persistence.size | string | `"2Gi"` | Its size. |\n' in readme
    assert "| images.mailpit | object |" in readme
    described = values_readme.comments((ROOT / "charts" / "mlobs-core" / "values.yaml").read_text())
    rows = sum(1 for c in described.values() if c.text)
    section = readme.split(values_readme.begin(ROOT / "charts" / "mlobs-core"))[1].split(values_readme.END)[0]
    assert rows > 80 and section.count("\n| ") == 1 + rows  # the header, then a row per described key


def test_the_values_check_fails_on_a_stale_table_and_generate_restores_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    chart = tmp_path / "charts" / "demo"
    chart.mkdir(parents=True)
    (chart / "values.yaml").write_text(SAMPLE.replace("ratio: 0.5\n", "# -- A ratio.\nratio: 0.5\n"))
    (chart / "README.md").write_text(
        "# demo\n\nby hand\n<!-- values:begin -->\n| old |\n<!-- values:end -->\nafter\n"
    )
    monkeypatch.setattr(values_readme, "ROOT", tmp_path)
    monkeypatch.setattr(values_readme, "CHARTS", (chart,))
    assert values_readme.main(["--check"]) == 1
    assert "values tables out of date: ['charts/demo/README.md']" in capsys.readouterr().err
    assert values_readme.main([]) == 0
    written = (chart / "README.md").read_text()
    assert written.startswith("# demo\n\nby hand\n<!-- values:begin: generated from charts/demo/values.yaml")
    assert written.endswith(
        "| replicas | int | `2` | Replicas of the thing. |\n"
        '| resources | object | `{"limits":{"cpu":"1"},"requests":{"cpu":"10m"}}` '
        "| Resources of the container. |\n"
        '| resources.limits | object | `{"cpu":"1"}` | Limits, a row of their own too. |\n'
        "<!-- values:end -->\nafter\n"
    )
    assert values_readme.main(["--check"]) == 0
    # A key without a comment: reported, and nothing written.
    (chart / "values.yaml").write_text(SAMPLE)
    assert values_readme.main([]) == 1
    assert "charts/demo/values.yaml:18: ratio has no `# --` comment" in capsys.readouterr().err
    assert (chart / "README.md").read_text() == written
    (chart / "README.md").write_text("# demo, no markers\n")
    with pytest.raises(values_readme.ValuesError, match="needs one `<!-- values:begin -->` line"):
        values_readme.render("# demo, no markers\n", chart)
