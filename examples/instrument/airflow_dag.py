"""An Airflow DAG whose KubernetesPodOperator tasks mlobs tracks.

Needs apache-airflow-providers-cncf-kubernetes (checked with 10.25 on Airflow 3.3).  Edit the
lines marked EDIT and put the file in your DAGs folder.

``mlobs()`` gives a task the pod labels and the environment of an mlobs run: the DAG is the
pipeline, the task the step and Airflow's run id the run id, made a valid label value the way
the provider makes its own ``run_id`` label.  Each try of a task runs in a new pod, which
mlobs shows as a new attempt of the same run.
"""

from datetime import datetime
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.pod_generator import make_safe_label_value
from airflow.providers.cncf.kubernetes.secret import Secret
from airflow.sdk import DAG
from kubernetes.client import models as k8s

NAMESPACE = "ml"  # EDIT: a namespace Fluentd admits (see "Before you start")
IMAGE = "registry.example.com/ml/train:1.0"  # EDIT: your image, with the mlobs SDK installed
FLUENTD_HOST = "mlobs-fluentd-forwarder.mlobs.svc"  # node-local Fluentd of release mlobs (namespace mlobs)
FORWARD_SECRET = "mlobs-fluentd-forward"  # the Forward key, copied into NAMESPACE

FROM_POD = {  # environment variable -> the pod field the Downward API reads it from
    "MLOBS_PIPELINE": "metadata.labels['mlobs.io/pipeline']",
    "MLOBS_STEP": "metadata.labels['mlobs.io/step']",
    "MLOBS_RUN_ID": "metadata.labels['mlobs.io/run-id']",
    "MLOBS_POD_NAME": "metadata.name",  # names the attempt: each try is a new pod
}


def mlobs() -> dict[str, Any]:
    """The KubernetesPodOperator arguments that make a task's pod an mlobs run (new objects each call)."""
    env = [
        k8s.V1EnvVar(
            name=name, value_from=k8s.V1EnvVarSource(field_ref=k8s.V1ObjectFieldSelector(field_path=path))
        )
        for name, path in FROM_POD.items()
    ]
    env += [
        k8s.V1EnvVar(name="MLOBS_FLUENTD_HOST", value=FLUENTD_HOST),
        k8s.V1EnvVar(name="MLOBS_FLUENTD_PORT", value="24224"),
        k8s.V1EnvVar(name="MLOBS_HOME", value="/tmp/mlobs"),
    ]
    return {
        "labels": {  # templated: rendered when the task runs
            "mlobs.io/pipeline": "{{ dag.dag_id | label_safe }}",
            "mlobs.io/step": "{{ task.task_id | label_safe }}",
            "mlobs.io/run-id": "{{ run_id | label_safe }}",
        },
        "env_vars": env,
        "secrets": [Secret("env", "MLOBS_FLUENTD_SHARED_KEY", FORWARD_SECRET, "shared-key")],
        # A failed container's last log lines become its termination message (kubectl describe pod).
        "termination_message_policy": "FallbackToLogsOnError",
    }


with DAG(
    dag_id="train",  # EDIT: the pipeline, as mlobs shows it
    schedule="@daily",  # EDIT
    start_date=datetime(2026, 1, 1),
    catchup=False,
    user_defined_filters={"label_safe": make_safe_label_value},
) as dag:
    prepare = KubernetesPodOperator(
        task_id="prepare",  # the step, as mlobs shows it
        name="train-prepare",
        namespace=NAMESPACE,
        image=IMAGE,
        cmds=["python", "-m", "prepare"],  # EDIT
        container_resources=k8s.V1ResourceRequirements(
            requests={"cpu": "250m", "memory": "512Mi"}, limits={"cpu": "1", "memory": "1Gi"}
        ),
        **mlobs(),
    )
    fit = KubernetesPodOperator(
        task_id="fit",
        name="train-fit",
        namespace=NAMESPACE,
        image=IMAGE,
        cmds=["python", "-m", "train"],  # EDIT
        container_resources=k8s.V1ResourceRequirements(
            requests={"cpu": "1", "memory": "2Gi"}, limits={"cpu": "2", "memory": "4Gi"}
        ),
        retries=2,  # each retry: a new pod, a new attempt of the same run in mlobs
        **mlobs(),
    )
    prepare >> fit
