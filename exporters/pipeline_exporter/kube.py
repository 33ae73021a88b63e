"""What a run needs from raw Kubernetes Job and Pod objects (the dicts of the API's JSON).

The exporter never builds client model objects on its hot path: deserialising a
Pod into ``V1Pod`` costs about 30 times a ``json.loads`` of the same bytes.  These
functions read the few fields a run needs straight from the dicts, and check the
type of every field they read: an object of another shape raises
:class:`MalformedObject` naming the field (``status.containerStatuses[0].state``),
before anything is changed, so the watcher can skip it and count it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline_sdk import contract as c
from pipeline_sdk.validation import MAX_TEXT_LENGTH

from .messages import ELLIPSIS, one_line

Raw = dict[str, Any]
R = c.RunReason

WAITING_FAILURES = {  # container waiting reasons that mean the run cannot start
    "ImagePullBackOff": R.IMAGE_PULL,
    "ErrImagePull": R.IMAGE_PULL,
    "InvalidImageName": R.IMAGE_PULL,
    "CreateContainerConfigError": R.CONFIG_ERROR,
    "CreateContainerError": R.CONFIG_ERROR,
}


class MalformedObject(ValueError):
    """An API object with a field of the wrong type; the message names the field."""


def _got(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def mapping(raw: Raw, key: str, where: str) -> Raw:
    """``raw[key]`` as a mapping; absent or null reads as empty."""
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedObject(f"{where}{key}: expected a mapping, got {_got(value)}")
    return value


def mappings(raw: Raw, key: str, where: str) -> list[tuple[str, Raw]]:
    """``raw[key]`` as a list of mappings, each with the path to name it by."""
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedObject(f"{where}{key}: expected a list, got {_got(value)}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise MalformedObject(f"{where}{key}[{i}]: expected a mapping, got {_got(item)}")
        out.append((f"{where}{key}[{i}].", item))
    return out


def text(raw: Raw, key: str, where: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise MalformedObject(f"{where}{key}: expected a string, got {_got(value)}")
    return value


def whole_or_none(raw: Raw, key: str, where: str) -> int | None:
    value = raw.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise MalformedObject(f"{where}{key}: expected a whole number, got {_got(value)}")
    return value


def whole(raw: Raw, key: str, where: str, default: int = 0) -> int:
    value = whole_or_none(raw, key, where)
    return default if value is None else value


def when(raw: Raw, key: str, where: str) -> float | None:
    """Unix seconds of an RFC 3339 time as the API writes them ("2026-11-22T10:00:00Z")."""
    value = raw.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            pass
    raise MalformedObject(f"{where}{key}: expected an RFC 3339 time, got {_got(value)} {str(value)[:40]!r}")


def top(raw: Any) -> Raw:
    if not isinstance(raw, dict):
        raise MalformedObject(f"object: expected a mapping, got {_got(raw)}")
    if not isinstance(raw.get("metadata"), dict):
        raise MalformedObject(f"metadata: expected a mapping, got {_got(raw.get('metadata'))}")
    return raw


def describe(raw: Any) -> str:
    """``namespace/name`` of an object, as far as it can be read, for log lines."""
    meta = raw.get("metadata") if isinstance(raw, dict) else None
    if not isinstance(meta, dict):
        return "(no readable name)"
    namespace, name = meta.get("namespace"), meta.get("name")
    name = name if isinstance(name, str) and name else "(no name)"
    return f"{namespace}/{name}" if isinstance(namespace, str) and namespace else name


def resource_version(raw: Any) -> str | None:
    """The object's resourceVersion, or None when it cannot be read."""
    meta = raw.get("metadata") if isinstance(raw, dict) else None
    version = meta.get("resourceVersion") if isinstance(meta, dict) else None
    return version if isinstance(version, str) and version else None


@dataclass(frozen=True)
class Identity:
    namespace: str
    pipeline: str
    step: str
    run_id: str | None


def identity(meta: Raw, template_labels: Raw | None = None) -> Identity | None:
    """The run identity from the contract's labels; None when the pipeline label is missing."""
    labels = {**(template_labels or {}), **mapping(meta, "labels", "metadata.")}
    where = "metadata.labels."
    pipeline = text(labels, c.LABEL_PIPELINE, where)
    if not pipeline:
        return None
    return Identity(
        namespace=text(meta, "namespace", "metadata.") or "",
        pipeline=pipeline,
        step=text(labels, c.LABEL_STEP, where) or "main",
        run_id=text(labels, c.LABEL_RUN_ID, where),
    )


@dataclass(frozen=True)
class Failure:
    """Why one attempt (pod or container run) failed."""

    reason: c.RunReason
    exit_code: int | None
    message: str = ""  # the container's termination message as one line (last_words); "" for none


def last_words(message: str | None) -> str:
    """A termination message as one line that the run record can always store: lone surrogates
    (which JSON can carry) backslash-escaped, cut to the store's MAX_TEXT_LENGTH characters."""
    line = one_line(message).encode("utf-8", "backslashreplace").decode("utf-8")
    return line if len(line) <= MAX_TEXT_LENGTH else line[: MAX_TEXT_LENGTH - 1] + ELLIPSIS


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


def _first_image(pod_spec: Raw, where: str) -> str | None:
    containers = mappings(pod_spec, "containers", where)
    return text(containers[0][1], "image", containers[0][0]) if containers else None


def job_view(raw: Any) -> JobView | None:
    """The run-relevant fields of a Job; None when it has no pipeline label."""
    meta = top(raw)["metadata"]
    spec = mapping(raw, "spec", "")
    template = mapping(spec, "template", "spec.")
    template_meta = mapping(template, "metadata", "spec.template.")
    ident = identity(meta, mapping(template_meta, "labels", "spec.template.metadata."))
    if ident is None:
        return None
    status = mapping(raw, "status", "")
    condition = reason = None
    finished = when(status, "completionTime", "status.")
    for where, cond in mappings(status, "conditions", "status."):
        kind = text(cond, "type", where)
        if text(cond, "status", where) != "True" or kind not in ("Complete", "Failed"):
            continue
        condition, reason = kind, text(cond, "reason", where)
        finished = finished or when(cond, "lastTransitionTime", where)
    active, succeeded, failed = (whole(status, key, "status.") for key in ("active", "succeeded", "failed"))
    return JobView(
        uid=text(meta, "uid", "metadata.") or "",
        name=text(meta, "name", "metadata.") or "",
        ident=ident,
        created=when(meta, "creationTimestamp", "metadata."),
        started=when(status, "startTime", "status."),
        finished=finished,
        condition=condition,
        condition_reason=reason,
        backoff_limit=whole(spec, "backoffLimit", "spec.", default=6),
        attempts=active + succeeded + failed,
        failed=failed,
        image=_first_image(mapping(template, "spec", "spec.template."), "spec.template.spec."),
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
    created: float | None  # creationTimestamp: the pod created last is a run's last attempt
    started: float | None
    finished: float | None  # its containers' last finish
    failure: Failure | None  # the pod failed (phase Failed), and why
    restart_failures: tuple[tuple[str, int, Failure], ...]  # (container, restart count, why) of restarts
    waiting: c.RunReason | None  # a container waits on a reason that will not fix itself


def _terminated_failure(terminated: Raw, where: str) -> Failure | None:
    code = whole_or_none(terminated, "exitCode", where)
    message = last_words(text(terminated, "message", where))
    if text(terminated, "reason", where) == "OOMKilled":
        return Failure(R.OOM_KILLED, code, message)
    if code not in (None, 0):
        return Failure(R.ERROR, code, message)
    return None


def pod_view(raw: Any) -> PodView | None:
    """The run-relevant fields of a Pod; None when it has no pipeline label."""
    meta = top(raw)["metadata"]
    ident = identity(meta)
    if ident is None:
        return None
    spec = mapping(raw, "spec", "")
    status = mapping(raw, "status", "")
    job = next(
        (
            text(ref, "name", w)
            for w, ref in mappings(meta, "ownerReferences", "metadata.")
            if ref.get("kind") == "Job"
        ),
        None,
    )
    phase = text(status, "phase", "status.") or "Pending"
    finished = None
    failures: list[Failure] = []
    restarts: list[tuple[str, int, Failure]] = []
    waiting = None
    for where, cs in mappings(status, "containerStatuses", "status."):
        state = mapping(cs, "state", where)
        terminated = mapping(state, "terminated", where + "state.")
        if terminated:
            end = when(terminated, "finishedAt", where + "state.terminated.")
            if end is not None and (finished is None or end > finished):
                finished = end
            failure = _terminated_failure(terminated, where + "state.terminated.")
            if failure:
                failures.append(failure)
        last = mapping(mapping(cs, "lastState", where), "terminated", where + "lastState.")
        restart_count = whole(cs, "restartCount", where)
        if last:
            failure = _terminated_failure(last, where + "lastState.terminated.")
            if failure:
                restarts.append((text(cs, "name", where) or "", restart_count, failure))
        wait_reason = text(mapping(state, "waiting", where + "state."), "reason", where + "state.waiting.")
        if wait_reason in WAITING_FAILURES:
            waiting = WAITING_FAILURES[wait_reason]
    failure = None
    if phase == "Failed":
        pod_reason = text(status, "reason", "status.")
        said = last_words(text(status, "message", "status."))  # the kubelet's words, e.g. on an eviction
        if pod_reason == "Evicted":
            failure = Failure(R.EVICTED, None, said)
        elif pod_reason == "DeadlineExceeded":
            failure = Failure(R.DEADLINE_EXCEEDED, None, said)
        else:
            oom = [f for f in failures if f.reason is R.OOM_KILLED]
            failure = (oom or failures or [Failure(R.UNKNOWN, None)])[0]
    return PodView(
        uid=text(meta, "uid", "metadata.") or "",
        name=text(meta, "name", "metadata.") or "",
        ident=ident,
        job=job,
        phase=phase,
        node=text(spec, "nodeName", "spec."),
        image=_first_image(spec, "spec."),
        created=when(meta, "creationTimestamp", "metadata."),
        started=when(status, "startTime", "status."),
        finished=finished,
        failure=failure,
        restart_failures=tuple(restarts),
        waiting=waiting,
    )
