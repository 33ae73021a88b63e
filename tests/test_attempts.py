"""A re-run of a run id is a new attempt, never a merge into the first one."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pipeline_sdk
from pipeline_sdk import contract as c
from pipeline_sdk.attempts import stored_attempts
from pipeline_sdk.local_store import DB_NAME, LocalStore
from tests.conftest import ROOT


def attempts_of(home: Path, run_id: str) -> dict[str, list[int]]:
    """attempt -> the list-metric steps it holds, from the store."""
    out: dict[str, list[int]] = {}
    for point in LocalStore(home / DB_NAME).points(c.LIST_METRIC.measurement, run_id):
        out.setdefault(point.tags[c.TAG_ATTEMPT], []).append(point.fields[c.FIELD_INDEX])
    return out


def cell(run_id: str) -> None:
    """The README's notebook cell: a hard-coded run id."""
    with pipeline_sdk.run(pipeline="nb", step="fit", run_id=run_id) as run:
        for epoch in range(3):
            run.log_metric("loss", 1.0 / (epoch + 1), step=epoch)


def test_running_a_cell_twice_gives_two_attempts(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    cell("lr-0.1")
    assert [r for r in caplog.records if "attempt" in r.getMessage()] == []
    cell("lr-0.1")
    cell("lr-0.1")
    assert attempts_of(home, "lr-0.1") == {"1": [0, 1, 2], "2": [0, 1, 2], "3": [0, 1, 2]}
    warnings = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "attempt" in r.getMessage()
    ]
    assert len(warnings) == 1, warnings  # said once, at the second attempt
    assert "'lr-0.1'" in warnings[0] and "attempt 2" in warnings[0] and "another run_id" in warnings[0]


def test_a_later_process_continues_the_numbering_from_the_store(home: Path) -> None:
    script = textwrap.dedent(
        """
        import pipeline_sdk
        with pipeline_sdk.run(pipeline="nb", step="fit", run_id="shared") as run:
            run.log_metric("loss", 0.5, step=0)
        """
    )
    env = {**os.environ, "MLOBS_HOME": str(home)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, timeout=60)
    assert attempts_of(home, "shared") == {"1": [0], "2": [0]}
    assert stored_attempts(home / DB_NAME, "shared", "fit") == {"1", "2"}
    assert stored_attempts(home / DB_NAME, "shared", "other-step") == set()


def test_steps_of_one_run_id_each_start_at_attempt_one(home: Path) -> None:
    for step in ("prep", "train"):
        with pipeline_sdk.run(pipeline="wf", step=step, run_id="wf-123") as run:
            run.log_metric("loss", 0.5, step=0)
    points = LocalStore(home / DB_NAME).points(c.LIST_METRIC.measurement, "wf-123")
    assert sorted((p.tags[c.TAG_STEP], p.tags[c.TAG_ATTEMPT]) for p in points) == [
        ("prep", "1"),
        ("train", "1"),
    ]


def test_a_generated_run_id_is_attempt_one(home: Path) -> None:
    with pipeline_sdk.run(pipeline="p", step="s") as run:
        assert run.attempt == "1"


def test_in_a_pod_the_attempt_is_the_pod_name(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(c.ENV_POD_NAME, "train-fit-42-x7k2p")
    for _ in range(2):  # a retried Job: each pod its own attempt, whatever this process saw before
        with pipeline_sdk.run(pipeline="p", step="s", run_id="job-1") as run:
            assert run.attempt == "train-fit-42-x7k2p"


def test_an_explicit_attempt_wins(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(c.ENV_POD_NAME, "pod-a")
    monkeypatch.setenv(c.ENV_ATTEMPT, "3")
    with pipeline_sdk.run(pipeline="p", step="s", run_id="argo-1") as run:
        assert run.attempt == "3"


def test_a_bad_attempt_names_the_variable(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(c.ENV_ATTEMPT, "two words")
    bad = r"attempt \(from MLOBS_ATTEMPT\)='two words' is invalid"
    with pytest.raises(ValueError, match=bad), pipeline_sdk.run(pipeline="p", step="s", run_id="argo-2"):
        pass


def test_old_data_without_the_tag_counts_as_attempt_one(home: Path) -> None:
    store = LocalStore(home / DB_NAME)
    from pipeline_sdk.encoding import pack_entry

    record = {c.TAG_RUN_ID: "old", c.TAG_PIPELINE: "p", c.TAG_STEP: "s", c.TAG_STATUS: "started"}
    store.write_entries(c.RUN.tag, pack_entry(1_000, record))
    assert stored_attempts(home / DB_NAME, "old", "s") == {"1"}
    with pipeline_sdk.run(pipeline="p", step="s", run_id="old") as run:
        assert run.attempt == "2"


def test_the_exporters_record_and_the_sdk_in_that_pod_name_the_same_attempt(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from exporters.pipeline_exporter.collectors import ExporterStats
    from exporters.pipeline_exporter.records import RecordSender
    from exporters.pipeline_exporter.tracker import FinishedRun

    pod = "train-fit-7-q2w9z"
    monkeypatch.setenv(c.ENV_POD_NAME, pod)  # as the chart injects it (Downward API)
    with pipeline_sdk.run(pipeline="train", step="fit", run_id="job-7") as run:
        run.log_metric("loss", 0.5)
    client = pipeline_sdk.Client()
    RecordSender(client, ExporterStats()).send(
        FinishedRun(
            run_id="job-7",
            pipeline="train",
            step="fit",
            namespace="ml",
            status=c.RunStatus.SUCCEEDED,
            reason=c.RunReason.COMPLETED,
            exit_code=None,
            start=1_700_000_000.0,
            end=1_700_000_060.0,
            image="img",
            node="node-1",
            pod=pod,
            attempts=2,
        )
    )
    assert client.flush(10)
    client.close()
    store = LocalStore(home / DB_NAME)
    sdk = {p.tags[c.TAG_ATTEMPT] for p in store.points(c.RUN.measurement, "job-7")}
    exporter = {p.tags[c.TAG_ATTEMPT] for p in store.points(c.RUN_RECORD.measurement, "job-7")}
    assert sdk == exporter == {pod}
