"""What a run needs from raw Kubernetes Job and Pod objects (the dicts of the API's JSON).

The exporter never builds client model objects on its hot path: deserialising a
Pod into ``V1Pod`` costs about 30 times a ``json.loads`` of the same bytes.  These
functions read the few fields a run needs straight from the dicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline_sdk import contract as c

Raw = dict[str, Any]
R = c.RunReason

WAITING_FAILURES = {  # container waiting reasons that mean the run cannot start
    "ImagePullBackOff": R.IMAGE_PULL,
    "ErrImagePull": R.IMAGE_PULL,
    "InvalidImageName": R.IMAGE_PULL,
    "CreateContainerConfigError": R.CONFIG_ERROR,
    "CreateContainerError": R.CONFIG_ERROR,
}


def timestamp(value: str | None) -> float | None:
    """Unix seconds of an RFC 3339 timestamp as the API writes them ("2026-11-22T10:00:00Z")."""
    if not value:
        return None
    return datetime.fromisoformat(value).timestamp()


@dataclass(frozen=True)
class Identity:
    namespace: str
    pipeline: str
    step: str
    run_id: str | None


def identity(meta: Raw, template_labels: Raw | None = None) -> Identity | None:
    """The run identity from the contract's labels; None when the pipeline label is missing."""
    labels = {**(template_labels or {}), **(meta.get("labels") or {})}
    pipeline = labels.get(c.LABEL_PIPELINE)
    if not pipeline:
        return None
    return Identity(
        namespace=meta.get("namespace", ""),
        pipeline=pipeline,
        step=labels.get(c.LABEL_STEP) or "main",
        run_id=labels.get(c.LABEL_RUN_ID),
    )


@dataclass(frozen=True)
class Failure:
    """Why one attempt (pod or container run) failed."""

    reason: c.RunReason
    exit_code: int | None


@dataclass(frozen=True)
class JobView:
    uid: str
    name: str
    ident: Identity
    created: float | None
    started: float | None
    finished: float | None  # completion, or the Failed condition's time
    condition: str | None  # "Complete" or "Failed"
    condition_reason: str | None  # e.g. BackoffLimitExceeded, DeadlineExceeded
    backoff_limit: int
    attempts: int  # pods started: active + succeeded + failed
    failed: int  # pods that failed
    image: str | None


def job_view(raw: Raw) -> JobView | None:
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    template = spec.get("template") or {}
    ident = identity(meta, (template.get("metadata") or {}).get("labels"))
    if ident is None:
        return None
    status = raw.get("status") or {}
    condition = reason = None
    finished = timestamp(status.get("completionTime"))
    for cond in status.get("conditions") or ():
        if cond.get("status") != "True":
            continue
        if cond.get("type") in ("Complete", "Failed"):
            condition, reason = cond["type"], cond.get("reason")
            finished = finished or timestamp(cond.get("lastTransitionTime"))
    containers = (template.get("spec") or {}).get("containers") or [{}]
    return JobView(
        uid=meta.get("uid", ""),
        name=meta.get("name", ""),
        ident=ident,
        created=timestamp(meta.get("creationTimestamp")),
        started=timestamp(status.get("startTime")),
        finished=finished,
        condition=condition,
        condition_reason=reason,
        backoff_limit=int(spec.get("backoffLimit", 6)),
        attempts=int(status.get("active", 0))
        + int(status.get("succeeded", 0))
        + int(status.get("failed", 0)),
        failed=int(status.get("failed", 0)),
        image=containers[0].get("image"),
    )


@dataclass(frozen=True)
class PodView:
    uid: str
    name: str
    ident: Identity
    job: str | None  # the owning Job's name, if any
    phase: str
    node: str | None
    image: str | None
    started: float | None
    finished: float | None
    failure: Failure | None  # the pod failed (phase Failed), and why
    restart_failures: tuple[tuple[str, int, Failure], ...]  # (container, restart count, why) of restarts
    waiting: c.RunReason | None  # a container waits on a reason that will not fix itself


def _terminated_failure(terminated: Raw) -> Failure | None:
    code = terminated.get("exitCode")
    reason = terminated.get("reason")
    if reason == "OOMKilled":
        return Failure(R.OOM_KILLED, code)
    if code not in (None, 0):
        return Failure(R.ERROR, code)
    return None


def pod_view(raw: Raw) -> PodView | None:
    meta = raw.get("metadata") or {}
    ident = identity(meta)
    if ident is None:
        return None
    spec = raw.get("spec") or {}
    status = raw.get("status") or {}
    job = next(
        (ref.get("name") for ref in meta.get("ownerReferences") or () if ref.get("kind") == "Job"), None
    )
    phase = status.get("phase", "Pending")
    statuses = status.get("containerStatuses") or []
    finished = None
    failures: list[Failure] = []
    restarts: list[tuple[str, int, Failure]] = []
    waiting = None
    for cs in statuses:
        state = cs.get("state") or {}
        terminated = state.get("terminated")
        if terminated:
            end = timestamp(terminated.get("finishedAt"))
            if end is not None and (finished is None or end > finished):
                finished = end
            failure = _terminated_failure(terminated)
            if failure:
                failures.append(failure)
        last = (cs.get("lastState") or {}).get("terminated")
        if last:
            failure = _terminated_failure(last)
            if failure:
                restarts.append((cs.get("name", ""), int(cs.get("restartCount", 0)), failure))
        wait_reason = (state.get("waiting") or {}).get("reason")
        if wait_reason in WAITING_FAILURES:
            waiting = WAITING_FAILURES[wait_reason]
    failure = None
    if phase == "Failed":
        pod_reason = status.get("reason")
        if pod_reason == "Evicted":
            failure = Failure(R.EVICTED, None)
        elif pod_reason == "DeadlineExceeded":
            failure = Failure(R.DEADLINE_EXCEEDED, None)
        else:
            oom = [f for f in failures if f.reason is R.OOM_KILLED]
            failure = (oom or failures or [Failure(R.UNKNOWN, None)])[0]
    containers = spec.get("containers") or [{}]
    return PodView(
        uid=meta.get("uid", ""),
        name=meta.get("name", ""),
        ident=ident,
        job=job,
        phase=phase,
        node=spec.get("nodeName"),
        image=containers[0].get("image"),
        started=timestamp(status.get("startTime")),
        finished=finished,
        failure=failure,
        restart_failures=tuple(restarts),
        waiting=waiting,
    )
