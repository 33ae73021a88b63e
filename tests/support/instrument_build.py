"""What the Kubeflow and Airflow examples of docs/instrument.md produce, built by the real frameworks.

kfp pins ``kubernetes<31`` and the Airflow provider ``kubernetes`` 36, while the exporter's tests
run 37, so ``make test`` installs each framework in a venv of its own (``.venv/instrument-kfp``,
``.venv/instrument-airflow``) and tests/test_instrument.py runs this script with that venv's
interpreter.  It imports nothing of mlobs: it only writes what the framework makes of the example.

    python tests/support/instrument_build.py kfp OUT.yaml
        compiles examples/instrument/kfp_pipeline.py's pipeline to OUT.yaml (kfp's IR, with
        the Kubernetes platform spec that kfp-kubernetes adds)
    python tests/support/instrument_build.py airflow OUT.json RUN_ID TRIES
        the pod (as the Kubernetes API's JSON) of every task of examples/instrument/airflow_dag.py
        at each try 1..TRIES of Airflow's run RUN_ID, templates rendered, built without a cluster
        by KubernetesPodOperator.build_pod_request_obj: a list of {"task", "try", "retries", "pod"};
        AIRFLOW_HOME should be a scratch folder
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "instrument"


def load(name: str) -> ModuleType:
    """Import examples/instrument/<name>.py as a module (the folder is no package)."""
    spec = importlib.util.spec_from_file_location(f"mlobs_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_kfp(out: Path) -> None:
    from kfp import compiler

    example = load("kfp_pipeline")
    compiler.Compiler().compile(example.train_pipeline, str(out))


def build_airflow(out: Path, run_id: str, tries: int) -> None:
    from kubernetes.client import ApiClient

    pods: list[dict[str, Any]] = []
    for try_number in range(1, tries + 1):
        dag = load("airflow_dag").dag  # a fresh DAG for each try: rendering changes the tasks
        for task in dag.tasks:
            # The context the task would run with: what the example's templates and the
            # operator's own labels read (dag, task, run_id, ti).
            ti = SimpleNamespace(dag_id=dag.dag_id, task_id=task.task_id, map_index=-1, try_number=try_number)
            context = {"dag": dag, "task": task, "run_id": run_id, "ti": ti}
            task.render_template_fields(context)
            pod = task.build_pod_request_obj(context, dry_run=True)
            serialised = ApiClient().sanitize_for_serialization(pod)  # type: ignore[no-untyped-call]
            pods.append({"task": task.task_id, "try": try_number, "retries": task.retries, "pod": serialised})
    out.write_text(json.dumps(pods, indent=1))


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "kfp":
        build_kfp(Path(argv[1]))
    elif len(argv) == 4 and argv[0] == "airflow":
        build_airflow(Path(argv[1]), argv[2], int(argv[3]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
