"""Jobs and Pods built from the ``kubernetes`` client's own model classes, as the API serves them.

Each object is a real ``V1Job``/``V1Pod`` serialised with
``ApiClient().sanitize_for_serialization``, the client's own encoder, so the
exporter reads exactly the JSON shape a real API server returns.  The scenario
functions give the sequence of states a real run goes through.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes.client import (
    ApiClient,
    V1Container,
    V1ContainerState,
    V1ContainerStateRunning,
    V1ContainerStateTerminated,
    V1ContainerStateWaiting,
    V1ContainerStatus,
    V1Job,
    V1JobCondition,
    V1JobSpec,
    V1JobStatus,
    V1ObjectMeta,
    V1OwnerReference,
    V1Pod,
    V1PodSpec,
    V1PodStatus,
    V1PodTemplateSpec,
)

from pipeline_sdk import contract as c

_api = ApiClient()
IMAGE = "ghcr.io/mlobs/demo-train:0.1.0"


def ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=0)


def serialise(obj: Any) -> dict[str, Any]:
    return _api.sanitize_for_serialization(obj)  # type: ignore[no-any-return, no-untyped-call]


@dataclass
class RunSpec:
    """One run: a Job with its labels, and the pods it starts."""

    pipeline: str
    step: str
    run_id: str
    namespace: str = "ml"
    backoff_limit: int = 0
    created: float = 1_795_000_000.0
    job_uid: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def name(self) -> str:
        return f"{self.pipeline}-{self.step}-{self.run_id}"[:63].rstrip("-")

    @property
    def labels(self) -> dict[str, str]:
        return {c.LABEL_PIPELINE: self.pipeline, c.LABEL_STEP: self.step, c.LABEL_RUN_ID: self.run_id}


def job(
    run: RunSpec,
    *,
    started: float | None = None,
    condition: tuple[str, str | None, float] | None = None,  # (type, reason, time)
    active: int = 0,
    succeeded: int = 0,
    failed: int = 0,
) -> dict[str, Any]:
    conditions = None
    completion = None
    if condition is not None:
        kind, reason, when = condition
        conditions = [V1JobCondition(type=kind, status="True", reason=reason, last_transition_time=ts(when))]
        completion = ts(when) if kind == "Complete" else None
    obj = V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=V1ObjectMeta(
            name=run.name,
            namespace=run.namespace,
            uid=run.job_uid,
            labels=run.labels,
            creation_timestamp=ts(run.created),
        ),
        spec=V1JobSpec(
            backoff_limit=run.backoff_limit,
            template=V1PodTemplateSpec(
                metadata=V1ObjectMeta(labels=run.labels),
                spec=V1PodSpec(restart_policy="Never", containers=[V1Container(name="main", image=IMAGE)]),
            ),
        ),
        status=V1JobStatus(
            start_time=ts(started) if started else None,
            completion_time=completion,
            active=active or None,
            succeeded=succeeded or None,
            failed=failed or None,
            conditions=conditions,
        ),
    )
    return serialise(obj)


def pod(
    run: RunSpec,
    attempt: int,
    phase: str,
    *,
    started: float | None = None,
    terminated: tuple[str, int, float] | None = None,  # (reason, exit code, finished)
    waiting: str | None = None,
    pod_reason: str | None = None,
    node: str = "kind-worker",
    bare: bool = False,
    name: str | None = None,  # default "<job name>-<attempt>"; the API's are "<job name>-<5 random>"
    created: float | None = None,  # creationTimestamp; default the start, else the run's creation
) -> dict[str, Any]:
    state = V1ContainerState()
    if terminated is not None:
        reason, code, finished = terminated
        state = V1ContainerState(
            terminated=V1ContainerStateTerminated(
                reason=reason, exit_code=code, started_at=ts(started or finished), finished_at=ts(finished)
            )
        )
    elif waiting is not None:
        state = V1ContainerState(
            waiting=V1ContainerStateWaiting(reason=waiting, message=f"{waiting} {IMAGE}")
        )
    elif phase == "Running":
        state = V1ContainerState(running=V1ContainerStateRunning(started_at=ts(started or run.created)))
    owner = None
    if not bare:
        owner = [
            V1OwnerReference(
                api_version="batch/v1", kind="Job", name=run.name, uid=run.job_uid, controller=True
            )
        ]
    obj = V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=V1ObjectMeta(
            name=name or f"{run.name}-{attempt}",
            namespace=run.namespace,
            uid=f"{run.job_uid}-pod-{attempt}",
            labels={**run.labels, "batch.kubernetes.io/job-name": run.name} if not bare else run.labels,
            owner_references=owner,
            creation_timestamp=ts(created if created is not None else started or run.created),
        ),
        spec=V1PodSpec(
            restart_policy="Never", node_name=node, containers=[V1Container(name="main", image=IMAGE)]
        ),
        status=V1PodStatus(
            phase=phase,
            reason=pod_reason,
            start_time=ts(started) if started else None,
            container_statuses=[
                V1ContainerStatus(
                    name="main",
                    image=IMAGE,
                    image_id="",
                    ready=phase == "Running",
                    restart_count=0,
                    state=state,
                )
            ],
        ),
    )
    return serialise(obj)


Step = tuple[str, str, dict[str, Any]]  # (resource, "apply" or "delete", object)


def succeeding(run: RunSpec, start: float, end: float) -> list[Step]:
    return [
        ("jobs", "apply", job(run)),
        ("pods", "apply", pod(run, 0, "Pending")),
        ("jobs", "apply", job(run, started=start, active=1)),
        ("pods", "apply", pod(run, 0, "Running", started=start)),
        ("pods", "apply", pod(run, 0, "Succeeded", started=start, terminated=("Completed", 0, end))),
        ("jobs", "apply", job(run, started=start, succeeded=1, condition=("Complete", None, end))),
    ]


def oom_killed(run: RunSpec, start: float, end: float) -> list[Step]:
    return [
        ("jobs", "apply", job(run)),
        ("pods", "apply", pod(run, 0, "Running", started=start)),
        ("jobs", "apply", job(run, started=start, active=1)),
        ("pods", "apply", pod(run, 0, "Failed", started=start, terminated=("OOMKilled", 137, end))),
        (
            "jobs",
            "apply",
            job(run, started=start, failed=1, condition=("Failed", "BackoffLimitExceeded", end)),
        ),
    ]


def backoff_limit(
    run: RunSpec, start: float, end: float, attempts: int = 2, exit_code: int = 1
) -> list[Step]:
    """Every attempt exits non-zero; the Job gives up after backoff_limit retries."""
    steps: list[Step] = [("jobs", "apply", job(run))]
    span = (end - start) / attempts
    for i in range(attempts):
        t0, t1 = start + i * span, start + (i + 1) * span
        steps.append(("pods", "apply", pod(run, i, "Running", started=t0)))
        steps.append(("jobs", "apply", job(run, started=start, active=1, failed=i)))
        steps.append(
            ("pods", "apply", pod(run, i, "Failed", started=t0, terminated=("Error", exit_code, t1)))
        )
    steps.append(
        (
            "jobs",
            "apply",
            job(run, started=start, failed=attempts, condition=("Failed", "BackoffLimitExceeded", end)),
        )
    )
    return steps


def evicted(run: RunSpec, start: float, end: float) -> list[Step]:
    return [
        ("jobs", "apply", job(run, started=start, active=1)),
        ("pods", "apply", pod(run, 0, "Running", started=start)),
        ("pods", "apply", pod(run, 0, "Failed", started=start, pod_reason="Evicted")),
        (
            "jobs",
            "apply",
            job(run, started=start, failed=1, condition=("Failed", "BackoffLimitExceeded", end)),
        ),
    ]


def deadline_exceeded(run: RunSpec, start: float, end: float) -> list[Step]:
    return [
        ("jobs", "apply", job(run, started=start, active=1)),
        ("pods", "apply", pod(run, 0, "Running", started=start)),
        ("jobs", "apply", job(run, started=start, failed=1, condition=("Failed", "DeadlineExceeded", end))),
        ("pods", "apply", pod(run, 0, "Failed", started=start, pod_reason="DeadlineExceeded")),
    ]


def image_pull(run: RunSpec) -> list[Step]:
    return [
        ("jobs", "apply", job(run, active=1)),
        ("pods", "apply", pod(run, 0, "Pending", waiting="ErrImagePull")),
        ("pods", "apply", pod(run, 0, "Pending", waiting="ImagePullBackOff")),
    ]


# ---- many objects, and malformed ones ------------------------------------------------------------


def variant(obj: dict[str, Any], name: str) -> dict[str, Any]:
    """A copy of a Job or Pod built above under another name, uid and run id (fast: no models)."""
    out = copy.deepcopy(obj)
    meta = out["metadata"]
    meta["name"], meta["uid"] = name, f"uid-{name}"
    meta["labels"][c.LABEL_RUN_ID] = name
    template = out.get("spec", {}).get("template")
    if template is not None:
        template["metadata"]["labels"][c.LABEL_RUN_ID] = name
    return out


Mutation = Callable[[Any], Any]
_TERMINATED = ("status", "containerStatuses", 0, "state", "terminated")


def _set(*path: str | int, value: Any) -> Mutation:
    """A mutation that sets the field at ``path`` (keys and list indexes) to ``value``."""

    def mutate(obj: Any) -> Any:
        node = obj
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
        return obj

    return mutate


def _drop(key: str) -> Mutation:
    def mutate(obj: Any) -> Any:
        del obj[key]
        return obj

    return mutate


# Shapes no API server validates into existence, but a proxy, a conversion webhook or a
# hostile tester can: each breaks one field the exporter reads.  Applied to a copy of a good
# object: a Pod that has terminated, or a Job with a condition.  The flag says whether the
# object's resourceVersion can still be read.
MALFORMED_POD_SHAPES: dict[str, tuple[Mutation, bool]] = {
    "metadata missing": (_drop("metadata"), False),
    "metadata a string": (_set("metadata", value="ml/p"), False),
    "labels a list": (_set("metadata", "labels", value=[c.LABEL_PIPELINE]), True),
    "pipeline label a number": (_set("metadata", "labels", c.LABEL_PIPELINE, value=7), True),
    "namespace a number": (_set("metadata", "namespace", value=12), True),
    "ownerReferences a mapping": (_set("metadata", "ownerReferences", value={"kind": "Job"}), True),
    "status a string": (_set("status", value="Running"), True),
    "phase a number": (_set("status", "phase", value=3), True),
    "startTime not a time": (_set("status", "startTime", value="yesterday"), True),
    "startTime a number": (_set("status", "startTime", value=1_795_000_000), True),
    "containerStatuses a mapping": (_set("status", "containerStatuses", value={"name": "main"}), True),
    "containerStatus a string": (_set("status", "containerStatuses", 0, value="main"), True),
    "exitCode a string": (_set(*_TERMINATED, "exitCode", value="137"), True),
    "finishedAt not a time": (_set(*_TERMINATED, "finishedAt", value="soon"), True),
    "creationTimestamp a number": (_set("metadata", "creationTimestamp", value=1_795_000_000), True),
    "restartCount a string": (_set("status", "containerStatuses", 0, "restartCount", value="two"), True),
    "spec a list": (_set("spec", value=[]), True),
    "object a list": (lambda obj: [obj], False),
    "object null": (lambda obj: None, False),
}
MALFORMED_JOB_SHAPES: dict[str, tuple[Mutation, bool]] = {
    "metadata missing": (_drop("metadata"), False),
    "metadata a list": (_set("metadata", value=[1, 2]), False),
    "labels a list": (_set("metadata", "labels", value=["a"]), True),
    "template labels a string": (_set("spec", "template", "metadata", "labels", value="x"), True),
    "status a string": (_set("status", value="Complete"), True),
    "backoffLimit a string": (_set("spec", "backoffLimit", value="six"), True),
    "backoffLimit a bool": (_set("spec", "backoffLimit", value=True), True),
    "active a string": (_set("status", "active", value="1"), True),
    "conditions a mapping": (_set("status", "conditions", value={"type": "Complete"}), True),
    "condition a string": (_set("status", "conditions", 0, value="Complete"), True),
    "completionTime not a time": (_set("status", "completionTime", value="2026-13-45T99:00:00Z"), True),
    "containers a string": (_set("spec", "template", "spec", "containers", value="main"), True),
    "image a number": (_set("spec", "template", "spec", "containers", 0, "image", value=5), True),
    "object a string": (lambda obj: "job", False),
}


def malformed(resource: str, shape: str, good: dict[str, Any]) -> Any:
    """A copy of ``good`` (a terminated Pod, or a Job with a condition) broken as ``shape`` says."""
    shapes = MALFORMED_POD_SHAPES if resource == "pods" else MALFORMED_JOB_SHAPES
    return shapes[shape][0](copy.deepcopy(good))
