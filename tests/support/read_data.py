"""A data set for the read API's tests, written the way production writes it.

Runs go through the SDK (``pipeline_sdk.run`` into the local store); the exporter's
run records go in as the exporter sends them, PackedForward entries on the
``mlobs.run_record`` tag, through the local store's own write path.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pipeline_sdk
from pipeline_sdk import contract as c
from pipeline_sdk.encoding import pack_entry
from pipeline_sdk.local_store import DB_NAME, LocalStore


@dataclass(frozen=True)
class Dataset:
    home: Path
    first_ns: int  # before the first run started
    middle_ns: int  # between the second and third runs
    last_ns: int  # after everything


def run_record(
    store: LocalStore,
    run_id: str,
    outcome: tuple[str, str],
    span_ns: tuple[int, int],
    exit_code: int | None,
    *,
    pipeline: str = "train",
    step: str = "fit",
    pod: str | None = None,
    attempts: int = 1,
) -> None:
    """Store the exporter's record of a finished run: ``outcome`` is (status, reason).

    As the exporter does, the record's attempt is the name of the run's last pod
    (``pod``, default ``<run id>-x7k2p``): the SDK in that pod tagged its events the same.
    """
    status, reason = outcome
    start_ns, end_ns = span_ns
    pod = pod if pod is not None else f"{run_id}-x7k2p"
    record: dict[str, object] = {
        c.TAG_RUN_ID: run_id,
        c.TAG_PIPELINE: pipeline,
        c.TAG_STEP: step,
        c.TAG_ATTEMPT: pod,
        c.TAG_STATUS: status,
        c.TAG_REASON: reason,
        c.TAG_NAMESPACE: "ml",
        c.FIELD_START_NS: start_ns,
        c.FIELD_END_NS: end_ns,
        c.FIELD_EXECUTION_TIME_MS: (end_ns - start_ns) / 1e6,
        c.FIELD_IMAGE: "ghcr.io/acme/train:1.4",
        c.FIELD_NODE: "kind-control-plane",
        c.FIELD_POD: pod,
        c.FIELD_ATTEMPTS: attempts,
    }
    if exit_code is not None:
        record[c.FIELD_EXIT_CODE] = exit_code
    store.write_entries(c.RUN_RECORD.tag, pack_entry(end_ns, record))


def artifact_files(root: Path) -> Path:
    """A small directory of two files to log as an artifact: ``weights.bin`` and ``config/model.json``."""
    (root / "config").mkdir(parents=True)
    (root / "weights.bin").write_bytes(bytes(range(256)) * 4)
    (root / "config" / "model.json").write_text('{"layers": 2}')
    return root


def record_dataset(home: Path) -> Dataset:
    """Six runs: trained, failed, OOM-killed (SDK + record), record only, still running, another pipeline."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("MLOBS_")}
    os.environ["MLOBS_HOME"] = str(home)
    log = logging.getLogger("train")
    try:
        first = time.time_ns()
        with pipeline_sdk.run(
            pipeline="train",
            step="fit",
            run_id="train-a",
            params={"lr": 0.1, "epochs": 3, "batch": "32", "shuffle": True},
        ) as run:
            run.log_input("dataset", {"rows": 1000, "path": "s3://bucket/a.csv"}, source="s3://bucket/a.csv")
            for epoch, (loss, acc) in enumerate([(0.9, 0.5), (0.5, 0.7), (0.6, 0.8)]):
                run.log_metrics({"loss": loss, "accuracy": acc}, step=epoch)
                log.info("epoch %d done", epoch, extra={"epoch": epoch})
            log.warning("loss went up at epoch 2\nsee the curve")
            run.log_metric("accuracy", 0.75)
            run.log_metric("accuracy", 0.8)  # the last value of a simple metric wins
            run.log_output("model", {"weights": [1.5, -2.0]}, destination="models/a.json")
            run.log_artifact(artifact_files(home.parent / "made-by-train-a"), "model")  # a directory
            run.log_artifact("s3://bucket/models/a.json")  # a reference only
        try:
            with pipeline_sdk.run(
                pipeline="train", step="fit", run_id="train-b", params={"lr": 0.5, "epochs": 3}
            ) as run:
                run.log_metric("loss", 2.0, step=0)
                run.log_metric("loss", 1.2, step=1)
                log.error("diverging", extra={"lr": 0.5})
                raise ValueError("loss is NaN at epoch 2")
        except ValueError:
            pass
        middle = time.time_ns()
        os.environ[c.ENV_POD_NAME] = "train-oom-x7k2p"  # in its pod, as the chart runs it
        with pipeline_sdk.run(pipeline="train", step="fit", run_id="train-oom", params={"lr": 0.05}) as run:
            run.log_metric("loss", 0.4, step=0)
        del os.environ[c.ENV_POD_NAME]
        store = LocalStore(home / DB_NAME)
        # the exporter saw train-oom killed: its record overrides the SDK's "succeeded"
        now = time.time_ns()
        run_record(store, "train-oom", ("failed", "OOMKilled"), (middle, now), 137)
        # a run only the exporter saw: its image could not be pulled
        start = time.time_ns()
        run_record(store, "train-pull", ("failed", "ImagePullBackOff"), (start, start + 10**9), None)
        # a run still going: started, no end (as a step looks while it runs)
        client = pipeline_sdk.Client()
        live = client.recorder("train", "fit", "train-live")
        identity = {c.FIELD_HOST: "node-1", c.FIELD_PID: 42, c.FIELD_SDK_VERSION: "0.1.0"}
        live.log_status(c.RunStatus.STARTED, identity)
        live.log_metric("loss", 0.7, step=0)
        assert client.close(10)
        with pipeline_sdk.run(pipeline="etl", step="load", run_id="etl-1", params={"rows": 10}) as run:
            run.log_metric("rows_loaded", 10.0)
        store.close()
        return Dataset(home, first, middle, time.time_ns() + 2 * 10**9)
    finally:
        for key in [k for k in os.environ if k.startswith("MLOBS_")]:
            del os.environ[key]
        os.environ.update(saved)


# ---- attempts and step runs ---------------------------------------------------------------------------

LR1_LOSS = ([1.0, 0.9, 0.8, 0.7, 0.6], [0.5, 0.4, 0.3, 0.2, 0.1])  # lr-0.1's loss, attempt 1 and 2
LR5_LOSS = [0.8, 0.6, 0.5, 0.45, 0.4]
WF_TRAIN_LOSS = [2.0, 3.0]
POD_ATTEMPTS = ("job-7-zq9xk", "job-7-a2b3c")  # job-7's pods in the order they ran (keys sort the other way)


@dataclass(frozen=True)
class StepRuns:
    home: Path
    keys: dict[str, list[str]]  # "run id/step" -> its attempt keys, in the order they started
    first_ns: int  # before everything
    between_ns: int  # after lr-0.1's first attempt, before its second
    last_ns: int  # after everything


def _old_run(store: LocalStore, run_id: str, at_ns: int) -> None:
    """A run as the SDK wrote it before attempts existed: no attempt tag on any point."""
    identity = {c.TAG_RUN_ID: run_id, c.TAG_PIPELINE: "legacy", c.TAG_STEP: "s"}
    ms = 1_000_000
    entries = [
        (c.RUN.tag, at_ns, {c.TAG_STATUS: "started", c.FIELD_HOST: "old-host", c.FIELD_PID: 7}),
        (c.PARAM.tag, at_ns + ms, {c.TAG_NAME: "lr", c.FIELD_VALUE: "0.2", c.FIELD_NUMBER: 0.2}),
        (c.METRIC.tag, at_ns + 2 * ms, {c.TAG_NAME: "accuracy", c.FIELD_VALUE: 0.7}),
        *(
            (
                c.LIST_METRIC.tag,
                at_ns + (3 + i) * ms,
                {c.TAG_NAME: "loss", c.FIELD_VALUE: v, c.FIELD_INDEX: i},
            )
            for i, v in enumerate([0.9, 0.8, 0.75])
        ),
        (c.LOG.tag, at_ns + 6 * ms, {c.TAG_LEVEL: "INFO", c.FIELD_MESSAGE: "old", c.FIELD_LOGGER: "legacy"}),
        (c.RUN.tag, at_ns + 7 * ms, {c.TAG_STATUS: "succeeded", c.FIELD_DURATION_MS: 7.0}),
    ]
    for tag, time_ns, record in entries:
        store.write_entries(tag, pack_entry(time_ns, {**identity, **record}))


def _train(run_id: str, losses: list[float], accuracy: float, fail: str | None = None, **kw: str) -> str:
    """One step run through the SDK (``fail``: the message it raises with); returns its attempt key."""
    pipeline, step = kw.get("pipeline", "train"), kw.get("step", "fit")
    params = {"lr": float(kw["lr"])} if "lr" in kw else {"rows": 100}
    try:
        with pipeline_sdk.run(pipeline=pipeline, step=step, run_id=run_id, params=params) as run:
            for epoch, loss in enumerate(losses):
                run.log_metric("loss", loss, step=epoch)
            run.log_metric("accuracy", accuracy)
            logging.getLogger(pipeline).info("%s of %s", step, run_id)
            if fail is not None:
                raise ValueError(fail)
    except ValueError:
        pass
    return run.attempt


def record_step_runs(home: Path) -> StepRuns:
    """Re-runs of one run id, steps of one execution sharing a run id, old untagged data, pod attempts.

    In start order: old-1 (no attempt tags); lr-0.1 attempt 1 (failed) and 2; lr-0.5; wf-123's
    steps prep and train (train fails); job-7's two pods (the first fails; the exporter's record
    names the second).
    """
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("MLOBS_")}
    os.environ["MLOBS_HOME"] = str(home)
    keys: dict[str, list[str]] = {}
    try:
        first = time.time_ns()
        store = LocalStore(home / DB_NAME)
        _old_run(store, "old-1", first)
        keys["old-1/s"] = [c.FIRST_ATTEMPT]
        keys["lr-0.1/fit"] = [_train("lr-0.1", LR1_LOSS[0], 0.7, "out of patience", lr="0.1")]
        between = time.time_ns()
        keys["lr-0.1/fit"].append(_train("lr-0.1", LR1_LOSS[1], 0.9, lr="0.1"))
        keys["lr-0.5/fit"] = [_train("lr-0.5", LR5_LOSS, 0.85, lr="0.5")]
        keys["wf-123/prep"] = [_train("wf-123", [], 1.0, pipeline="wf", step="prep")]
        keys["wf-123/train"] = [
            _train("wf-123", WF_TRAIN_LOSS, 0.6, "diverged", pipeline="wf", step="train", lr="0.3")
        ]
        job_start = time.time_ns()
        for pod, fail in zip(POD_ATTEMPTS, ("bad shard", None), strict=True):
            os.environ[c.ENV_POD_NAME] = pod
            keys.setdefault("job-7/fit", []).append(_train("job-7", [0.3], 0.95, fail, lr="0.01"))
        del os.environ[c.ENV_POD_NAME]
        run_record(
            store,
            "job-7",
            ("succeeded", "Completed"),
            (job_start, time.time_ns()),
            None,
            pod=POD_ATTEMPTS[1],
            attempts=2,
        )
        store.close()
        return StepRuns(home, keys, first - 1, between, time.time_ns() + 2 * 10**9)
    finally:
        for key in [k for k in os.environ if k.startswith("MLOBS_")]:
            del os.environ[key]
        os.environ.update(saved)
