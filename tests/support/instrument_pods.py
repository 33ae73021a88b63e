"""The pods that Kubernetes and the pipeline frameworks make of docs/instrument.md's examples.

No controller runs here, so each function makes what one controller makes of an example, and
only what mlobs reads or the kubelet resolves: names, namespaces, labels, owners, containers
and their env.  The facts come from each controller:

* the Job controller names a pod ``<job>-<5 random characters>`` and adds the labels
  ``batch.kubernetes.io/job-name`` and ``batch.kubernetes.io/controller-uid`` (and their
  unprefixed forms) to the template's, with the Job as controlling owner;
* the CronJob controller names a Job ``<cronjob>-<scheduled time in Unix minutes>``, with the
  jobTemplate's labels and spec;
* Argo's workflow controller substitutes ``{{workflow.name}}`` in ``spec.podMetadata`` and in
  each template, labels a pod with ``spec.podMetadata.labels``, the template's
  ``metadata.labels`` and ``workflows.argoproj.io/workflow``, owns it by the Workflow, and runs
  the template's container as ``main`` after its own ``wait`` container;
* Kubeflow Pipelines (v2, on Argo) runs each task in such a pod, labelled with the task's
  ``podMetadata`` (kfp-kubernetes' ``add_pod_label``) and ``pipeline/runid``, the env of its
  container spec plus ``fieldPathAsEnv`` and ``secretAsEnv``;
* the Airflow provider's own ``build_pod_request_obj`` makes its pod (tests/support/instrument_build.py).

The kubelet's part is :func:`step_env`: the Downward API and Secret references resolved as
Kubernetes resolves them.  :func:`served` turns a pod into the JSON the API serves, through the
client's ``V1Pod`` model, refusing a field the model does not know.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import uuid
from typing import Any

from kubernetes.client import (
    ApiClient,
    V1ContainerState,
    V1ContainerStateRunning,
    V1ContainerStateTerminated,
    V1ContainerStatus,
    V1PodStatus,
)

from pipeline_sdk.testing import kube_objects as k

Obj = dict[str, Any]
ARGOEXEC = "quay.io/argoproj/argoexec:v3.7.3"  # the image of Argo's wait container
_api = ApiClient()


def _owner(obj: Obj) -> Obj:
    meta = obj["metadata"]
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": meta["name"],
        "uid": meta.setdefault("uid", str(uuid.uuid4())),
        "controller": True,
    }


def _suffix(*parts: str, length: int = 5) -> str:
    """A stable stand-in for a controller's random or hashed name suffix."""
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:length]


# ---- the controllers ---------------------------------------------------------------------------------


def job_pod(job: Obj, attempt: int) -> Obj:
    """The pod the Job controller makes for ``job``'s attempt (0 the first)."""
    template = copy.deepcopy(job["spec"]["template"])
    name, uid = job["metadata"]["name"], _owner(job)["uid"]
    labels = {**template.get("metadata", {}).get("labels", {})}
    for prefix in ("batch.kubernetes.io/", ""):
        labels |= {f"{prefix}job-name": name, f"{prefix}controller-uid": uid}
    meta = {
        "name": f"{name}-{_suffix(name, str(attempt))}",
        "namespace": job["metadata"]["namespace"],
        "labels": labels,
        "ownerReferences": [_owner(job)],
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]}


def cronjob_job(cronjob: Obj, scheduled: float) -> Obj:
    """The Job the CronJob controller makes for the run scheduled at ``scheduled`` (Unix seconds)."""
    template = copy.deepcopy(cronjob["spec"]["jobTemplate"])
    meta = {
        "name": f"{cronjob['metadata']['name']}-{int(scheduled // 60)}",
        "namespace": cronjob["metadata"]["namespace"],
        "labels": template.get("metadata", {}).get("labels", {}),
        "ownerReferences": [_owner(cronjob)],
    }
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": template["spec"]}


_ARGO_VARIABLE = re.compile(r"\{\{\s*([^}]*?)\s*\}\}")


def _substitute(value: Any, variables: dict[str, str]) -> Any:
    """Argo's simple template tags, ``{{name}}``; an unknown one is an error, as in Argo."""
    text = json.dumps(value)

    def one(m: re.Match[str]) -> str:
        if m.group(1) not in variables:
            raise ValueError(f"unknown Argo variable {m.group(0)} (this test knows {sorted(variables)})")
        return variables[m.group(1)]

    return json.loads(_ARGO_VARIABLE.sub(one, text))


def argo_pod(workflow: Obj, name: str, template_name: str, attempt: int) -> Obj:
    """The pod Argo makes for attempt ``attempt`` (0 the first) of ``template_name`` in the
    workflow named ``name`` (what generateName became)."""
    spec = _substitute(workflow["spec"], {"workflow.name": name})
    [template] = [t for t in spec["templates"] if t["name"] == template_name]
    labels = {
        **(spec.get("podMetadata") or {}).get("labels", {}),
        **(template.get("metadata") or {}).get("labels", {}),
        "workflows.argoproj.io/workflow": name,
        "workflows.argoproj.io/completed": "false",
    }
    owner = {**workflow, "metadata": {**workflow["metadata"], "name": name}}
    main = {**template["container"], "name": "main"}
    pod_spec: Obj = {
        "restartPolicy": "Never",
        "containers": [{"name": "wait", "image": ARGOEXEC, "command": ["argoexec"], "args": ["wait"]}, main],
    }
    if spec.get("securityContext"):
        pod_spec["securityContext"] = spec["securityContext"]
    meta = {
        "name": f"{name}-{template_name}-{_suffix(name, template_name, str(attempt), length=10)}",
        "namespace": workflow["metadata"]["namespace"],
        "labels": labels,
        "ownerReferences": [_owner(owner)],
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec}


def kfp_pods(ir: list[Obj], run_uuid: str, namespace: str, attempt: int) -> dict[str, Obj]:
    """The executor pod of every task of a compiled pipeline (kfp's IR and its platform spec),
    by task name, for Kubeflow's run ``run_uuid``."""
    pipeline, platform = ir
    executors = pipeline["deploymentSpec"]["executors"]
    k8s_executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    components = pipeline["components"]
    workflow = f"{pipeline['pipelineInfo']['name']}-{_suffix(run_uuid)}"
    pods = {}
    for task, body in pipeline["root"]["dag"]["tasks"].items():
        label = components[body["componentRef"]["name"]]["executorLabel"]
        container, config = executors[label]["container"], k8s_executors[label]
        env = [*container.get("env", [])]
        env += [
            {"name": f["name"], "valueFrom": {"fieldRef": {"fieldPath": f["fieldPath"]}}}
            for f in config.get("fieldPathAsEnv", [])
        ]
        env += [
            {
                "name": m["envVar"],
                "valueFrom": {"secretKeyRef": {"name": s["secretName"], "key": m["secretKey"]}},
            }
            for s in config.get("secretAsEnv", [])
            for m in s["keyToEnv"]
        ]
        labels = {
            **config.get("podMetadata", {}).get("labels", {}),
            "pipeline/runid": run_uuid,
            "pipelines.kubeflow.org/v2_component": "true",
            "workflows.argoproj.io/workflow": workflow,
        }
        main = {"name": "main", "image": container["image"], "command": container["command"], "env": env}
        owner = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": workflow}}
        meta = {
            "name": f"{workflow}-system-container-impl-{_suffix(workflow, task, str(attempt), length=10)}",
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [_owner(owner)],
        }
        wait = {"name": "wait", "image": ARGOEXEC, "command": ["argoexec"], "args": ["wait"]}
        spec = {"restartPolicy": "Never", "containers": [wait, main]}
        pods[task] = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
    return pods


# ---- the kubelet -----------------------------------------------------------------------------------


_LABEL_REF = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")


def field_value(pod: Obj, path: str) -> str:
    """What the Downward API gives a ``fieldRef`` of ``pod``: a missing label is the empty string."""
    ref = _LABEL_REF.fullmatch(path)
    if ref is not None:
        return str((pod["metadata"].get(ref.group(1)) or {}).get(ref.group(2), ""))
    if path in ("metadata.name", "metadata.namespace", "metadata.uid"):
        return str(pod["metadata"][path.removeprefix("metadata.")])
    raise ValueError(f"fieldPath {path!r} is not one this test resolves")


def step_container(pod: Obj) -> Obj:
    """The container that runs the step: Argo's ``main``, else the pod's only container."""
    containers = pod["spec"]["containers"]
    mains = [c for c in containers if c["name"] == "main"]
    if mains:
        return mains[0]  # type: ignore[no-any-return]
    [only] = containers
    return only  # type: ignore[no-any-return]


def step_env(pod: Obj, secrets: dict[tuple[str, str], dict[str, str]]) -> dict[str, str]:
    """The environment the kubelet starts the step container of ``pod`` with.

    ``secrets``: (namespace, name) -> data.  A Secret the pod names must be in the pod's own
    namespace: otherwise the container never starts (CreateContainerConfigError).
    """
    env: dict[str, str] = {}
    namespace = pod["metadata"]["namespace"]
    for entry in step_container(pod).get("env", []):
        source = entry.get("valueFrom")
        if source is None:
            env[entry["name"]] = str(entry.get("value", ""))
        elif "fieldRef" in source:
            env[entry["name"]] = field_value(pod, source["fieldRef"]["fieldPath"])
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            data = secrets.get((namespace, ref["name"]))
            if data is None or ref["key"] not in data:
                raise LookupError(
                    f"{entry['name']}: Secret {namespace}/{ref['name']} with key {ref['key']!r} is not "
                    "there: the container would not start (CreateContainerConfigError)"
                )
            env[entry["name"]] = data[ref["key"]]
        else:
            raise ValueError(f"{entry['name']}: a valueFrom this test does not resolve: {sorted(source)}")
    return env


# ---- the API server ---------------------------------------------------------------------------------


def _unknown(given: Any, kept: Any, where: str = "") -> list[str]:
    if isinstance(given, dict):
        kept = kept if isinstance(kept, dict) else {}
        out = [f"{where}{key}" for key in given if key not in kept and given[key] not in (None, {}, [])]
        return out + [
            p for key in given if key in kept for p in _unknown(given[key], kept[key], f"{where}{key}.")
        ]
    if isinstance(given, list) and isinstance(kept, list):
        return [
            p
            for i, (a, b) in enumerate(zip(given, kept, strict=False))
            for p in _unknown(a, b, f"{where}[{i}].")
        ]
    return []


def model(manifest: Obj, kind: str) -> Any:
    """``manifest`` as the client's model ``kind`` (``V1Pod``...); a field it does not know is an error."""
    obj = _api.deserialize(json.dumps(manifest), kind, "application/json")
    unknown = _unknown(manifest, k.serialise(obj))
    if unknown:
        raise ValueError(f"{manifest['metadata'].get('name')}: fields {kind} does not know: {unknown}")
    return obj


def served(
    manifest: Obj,
    phase: str,
    *,
    created: float,
    started: float | None = None,
    exit_code: int | None = None,
    finished: float | None = None,
    node: str = "kind-worker",
) -> Obj:
    """The pod as the API serves it in ``phase``: a uid and creation time, and the step
    container's status (running, or terminated with ``exit_code`` at ``finished``)."""
    pod: Any = model(manifest, "V1Pod")  # a V1Pod; its optional fields are all set here
    pod.metadata.uid = pod.metadata.uid or f"uid-{pod.metadata.name}"
    pod.metadata.creation_timestamp = k.ts(created)
    pod.spec.node_name = node if started is not None else None
    step = step_container(manifest)["name"]
    statuses = []
    for container in pod.spec.containers:
        state = V1ContainerState()
        if container.name != step and exit_code is not None:
            state = V1ContainerState(terminated=V1ContainerStateTerminated(exit_code=0, reason="Completed"))
        elif exit_code is not None:
            assert finished is not None, "a terminated container has a finish time"
            terminated = V1ContainerStateTerminated(
                exit_code=exit_code,
                reason="Completed" if exit_code == 0 else "Error",
                started_at=k.ts(started or created),
                finished_at=k.ts(finished),
            )
            state = V1ContainerState(terminated=terminated)
        elif phase == "Running":
            state = V1ContainerState(running=V1ContainerStateRunning(started_at=k.ts(started or created)))
        statuses.append(
            V1ContainerStatus(
                name=container.name,
                image=container.image,
                image_id="",
                ready=phase == "Running",
                restart_count=0,
                state=state,
            )
        )
    pod.status = V1PodStatus(
        phase=phase, start_time=k.ts(started) if started else None, container_statuses=statuses
    )
    return k.serialise(pod)
