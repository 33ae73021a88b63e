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
) -> None:
    """Store the exporter's record of a finished run: ``outcome`` is (status, reason)."""
    status, reason = outcome
    start_ns, end_ns = span_ns
    record: dict[str, object] = {
        c.TAG_RUN_ID: run_id,
        c.TAG_PIPELINE: pipeline,
        c.TAG_STEP: step,
        c.TAG_STATUS: status,
        c.TAG_REASON: reason,
        c.TAG_NAMESPACE: "ml",
        c.FIELD_START_NS: start_ns,
        c.FIELD_END_NS: end_ns,
        c.FIELD_EXECUTION_TIME_MS: (end_ns - start_ns) / 1e6,
        c.FIELD_IMAGE: "ghcr.io/acme/train:1.4",
        c.FIELD_NODE: "kind-control-plane",
        c.FIELD_POD: f"{run_id}-x7k2p",
        c.FIELD_ATTEMPTS: 1,
    }
    if exit_code is not None:
        record[c.FIELD_EXIT_CODE] = exit_code
    store.write_entries(c.RUN_RECORD.tag, pack_entry(end_ns, record))


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
        with pipeline_sdk.run(pipeline="train", step="fit", run_id="train-oom", params={"lr": 0.05}) as run:
            run.log_metric("loss", 0.4, step=0)
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
        os.environ.pop("MLOBS_HOME", None)
        os.environ.update(saved)
