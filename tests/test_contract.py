"""The contract is consistent, documented, and the only place our names are spelled out."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from pipeline_sdk import config
from pipeline_sdk import contract as c
from pipeline_sdk.config import SettingError, Settings
from tests.conftest import ROOT

CONTRACT = ROOT / "pipeline_sdk" / "contract.py"


def test_streams_are_consistent() -> None:
    tags = [s.tag for s in c.STREAMS]
    measurements = [s.measurement for s in c.STREAMS]
    assert len(set(tags)) == len(tags) and len(set(measurements)) == len(measurements)
    for stream in c.STREAMS:
        assert stream.tag == c.TAG_PREFIX + stream.measurement, "fluent.conf routes mlobs.<measurement>"
        assert re.fullmatch(r"[a-z_]+", stream.measurement)
        assert stream.fields, "InfluxDB needs at least one field per point"
        assert set(stream.tags) & set(stream.fields) == set()
    for stream in c.RUN_STREAMS:
        assert stream.tags[: len(c.IDENTITY_TAGS)] == c.IDENTITY_TAGS
    assert c.STREAMS_BY_TAG[c.LOG.tag] is c.LOG


def test_a_stream_cannot_have_a_key_as_tag_and_field() -> None:
    with pytest.raises(ValueError, match="both tag and field"):
        c.Stream("mlobs.x", "x", (c.TAG_NAME,), {c.TAG_NAME: c.FieldType.STRING})


def test_every_public_name_has_a_one_line_comment() -> None:
    lines = CONTRACT.read_text().splitlines()
    tree = ast.parse(CONTRACT.read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name = node.target.id
            if name.startswith("_"):
                continue
            span = lines[node.lineno - 1 : node.end_lineno]
            assert any("#" in line for line in span), f"contract name {name} has no comment"


def test_names_are_not_spelled_out_elsewhere_in_the_sdk() -> None:
    """Boundary names live in the contract; other SDK modules import them."""
    literals = {s.tag for s in c.STREAMS} | {
        c.ENV_FLUENTD_HOST,
        c.ENV_FLUENTD_PORT,
        c.ENV_HOME,
        c.ENV_PIPELINE,
        c.ENV_STEP,
        c.ENV_RUN_ID,
        c.LABEL_PIPELINE,
        c.LABEL_STEP,
        c.LABEL_RUN_ID,
        c.PROM_RUNS_TOTAL,
    }
    offenders = []
    for path in (ROOT / "pipeline_sdk").rglob("*.py"):
        if path == CONTRACT:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in literals:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert offenders == []


def test_env_vars_are_public_names() -> None:
    names = [v for k, v in vars(c).items() if k.startswith("ENV_")]
    assert all(n.startswith("MLOBS_") for n in names)
    assert {
        c.ENV_FLUENTD_HOST,
        c.ENV_FLUENTD_PORT,
        c.ENV_HOME,
        c.ENV_PIPELINE,
        c.ENV_STEP,
        c.ENV_RUN_ID,
    } <= set(names)


def test_pod_labels() -> None:
    assert (c.LABEL_PIPELINE, c.LABEL_STEP, c.LABEL_RUN_ID) == (
        "mlobs.io/pipeline",
        "mlobs.io/step",
        "mlobs.io/run-id",
    )


def test_run_outcomes_are_bounded() -> None:
    assert len(c.RUN_OUTCOMES) == len(set(c.RUN_OUTCOMES)) <= 16
    assert {status for status, _ in c.RUN_OUTCOMES} == {
        c.RunStatus.SUCCEEDED,
        c.RunStatus.FAILED,
        c.RunStatus.CANCELLED,
    }


# ---- settings --------------------------------------------------------------------------------


def test_settings_defaults(tmp_path: Path) -> None:
    s = Settings.from_env({c.ENV_HOME: str(tmp_path)})
    assert (s.fluentd_host, s.fluentd_port, s.home, s.flush_timeout) == (None, 24224, tmp_path, 10.0)
    assert s.spool_max_bytes == 512 * 1024 * 1024


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {c.ENV_FLUENTD_HOST: "fluentd", c.ENV_FLUENTD_PORT: "http"},
            "MLOBS_FLUENTD_PORT='http': must be a TCP port",
        ),
        ({c.ENV_FLUENTD_HOST: "fluentd", c.ENV_FLUENTD_PORT: "70000"}, "MLOBS_FLUENTD_PORT='70000'"),
        ({c.ENV_FLUENTD_PORT: "24224"}, "MLOBS_FLUENTD_PORT is set but MLOBS_FLUENTD_HOST is not"),
        ({c.ENV_FLUSH_TIMEOUT: "-1"}, "MLOBS_FLUSH_TIMEOUT='-1': must be a finite number"),
        ({c.ENV_FLUSH_TIMEOUT: "soon"}, "MLOBS_FLUSH_TIMEOUT='soon': must be a number of seconds"),
        ({c.ENV_SPOOL_MAX_MB: "0"}, "MLOBS_SPOOL_MAX_MB='0'"),
        ({c.ENV_HOME: "   "}, "MLOBS_HOME='   ': must not be blank"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingError, match=re.escape(message)):
        Settings.from_env(env)


def test_env_var_declarations_use_contract_names() -> None:
    declared = {v.name for v in vars(config).values() if isinstance(v, config.EnvVar)}
    assert declared == {v for k, v in vars(c).items() if k.startswith("ENV_")}
