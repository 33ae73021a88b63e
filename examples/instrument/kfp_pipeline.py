"""A Kubeflow Pipelines v2 pipeline whose tasks mlobs tracks (kfp and kfp-kubernetes 2.17).

Edit the lines marked EDIT, then compile with ``python kfp_pipeline.py`` and upload
``train_pipeline.yaml`` to Kubeflow Pipelines.

``report_to_mlobs`` labels a task's pod with the pipeline and the step, and hands the SDK
its identity and Fluentd's address.  Kubeflow fixes a pod label's value when the pipeline
is compiled, so no label can carry the run's id: mlobs takes each task's pod name as its run
id (the exporter falls back to it when the pod has no mlobs.io/run-id label), and the step
logs Kubeflow's own run id as the parameter ``kfp_run_id``.
"""

from kfp import compiler, dsl, kubernetes

PIPELINE = "train"  # EDIT: your pipeline, as mlobs shows it
IMAGE = "registry.example.com/ml/train:1.0"  # EDIT: your image, with the mlobs SDK installed
FLUENTD_HOST = "mlobs-fluentd-forwarder.mlobs.svc"  # node-local Fluentd of release mlobs (namespace mlobs)
FORWARD_SECRET = "mlobs-fluentd-forward"  # the Forward key, copied into your Kubeflow namespace

FROM_POD = {  # environment variable -> the pod field the Downward API reads it from
    "MLOBS_PIPELINE": "metadata.labels['mlobs.io/pipeline']",
    "MLOBS_STEP": "metadata.labels['mlobs.io/step']",
    "MLOBS_RUN_ID": "metadata.name",  # the pod's name: see above
    "MLOBS_POD_NAME": "metadata.name",
    "KFP_RUN_ID": "metadata.labels['pipeline/runid']",  # Kubeflow labels every pod with its run
}


def report_to_mlobs(task: dsl.PipelineTask, step: str) -> dsl.PipelineTask:
    """Make ``task``'s pod a run of ``step`` in mlobs."""
    kubernetes.add_pod_label(task, "mlobs.io/pipeline", PIPELINE)
    kubernetes.add_pod_label(task, "mlobs.io/step", step)
    for name, field_path in FROM_POD.items():
        kubernetes.use_field_path_as_env(task, name, field_path)
    kubernetes.use_secret_as_env(task, FORWARD_SECRET, {"shared-key": "MLOBS_FLUENTD_SHARED_KEY"})
    task.set_env_variable("MLOBS_FLUENTD_HOST", FLUENTD_HOST)
    task.set_env_variable("MLOBS_FLUENTD_PORT", "24224")
    task.set_env_variable("MLOBS_HOME", "/tmp/mlobs")
    task.set_caching_options(False)  # a cached task runs no pod, and mlobs would see no run
    return task


@dsl.component(base_image=IMAGE)
def prepare(rows: int) -> int:
    import os

    import pipeline_sdk

    with pipeline_sdk.run(params={"rows": rows, "kfp_run_id": os.environ["KFP_RUN_ID"]}) as run:
        run.log_metric("rows_kept", rows * 0.9)  # EDIT: your step
    return int(rows * 0.9)


@dsl.component(base_image=IMAGE)
def fit(rows: int, epochs: int) -> float:
    import os

    import pipeline_sdk

    with pipeline_sdk.run(params={"epochs": epochs, "kfp_run_id": os.environ["KFP_RUN_ID"]}) as run:
        loss = 1.0
        for epoch in range(epochs):  # EDIT: your step
            loss = loss * 0.8
            run.log_metric("loss", loss, step=epoch)
    return loss


@dsl.pipeline(name=PIPELINE)
def train_pipeline(rows: int = 10_000, epochs: int = 5) -> None:
    prepared = report_to_mlobs(prepare(rows=rows), "prepare")
    fitted = report_to_mlobs(fit(rows=prepared.output, epochs=epochs), "fit")
    fitted.set_retry(num_retries=2)  # each retry: a new pod, so a run of its own in mlobs


if __name__ == "__main__":
    compiler.Compiler().compile(train_pipeline, "train_pipeline.yaml")
