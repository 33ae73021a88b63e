"""docs/instrument.md's examples: shown verbatim, and valid for their frameworks' own tools.

* The doc shows every file of examples/instrument/ verbatim (a drift check).
* job.yaml and cronjob.yaml pass kubernetes-validate, strictly, at the Kubernetes versions the
  chart supports; argo_workflow.yaml is exactly what Argo's Workflow models (hera) read: a field
  they do not know is reported, where pydantic alone would drop it.
* The venvs in which the Kubeflow and Airflow examples are checked are pinned within their extras.

tests/test_instrument_runs.py builds the Kubeflow and Airflow examples with their frameworks and
follows every example's pods through the exporter and the SDK.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

import kubernetes_validate
import pydantic
import pytest
from hera.workflows.models import Workflow as ArgoWorkflow
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pipeline_sdk import contract as c
from tests.conftest import ROOT
from tests.support import instrument_pods as ip
from tests.support.instrument_runs import EXAMPLES, RELEASE_NS, SHARED_KEY, load
from tests.test_chart import KUBE_VERSIONS

DOC = ROOT / "docs" / "instrument.md"
EXAMPLE_FILES = ("job.yaml", "cronjob.yaml", "argo_workflow.yaml", "kfp_pipeline.py", "airflow_dag.py")


# ---- the doc shows the files -------------------------------------------------------------------------

_INCLUDE = re.compile(r"^<!-- example: (?P<path>\S+) -->$")
_FENCE = re.compile(r"^(`{3,})")


def shown_examples(text: str) -> dict[str, str]:
    """The code block after each ``<!-- example: PATH -->`` line (a not-run line may come between)."""
    lines = text.splitlines()
    shown: dict[str, str] = {}
    for i, line in enumerate(lines):
        include = _INCLUDE.match(line)
        if include is None:
            continue
        j = i + 1
        while j < len(lines) and lines[j].startswith("<!-- not-run:"):
            j += 1
        fence = _FENCE.match(lines[j]) if j < len(lines) else None
        if fence is None:
            raise ValueError(f"line {i + 1}: {line} is not followed by a code block")
        end = next((n for n in range(j + 1, len(lines)) if lines[n] == fence.group(1)), None)
        if end is None:
            raise ValueError(f"line {j + 1}: the code block of {include['path']} is not closed")
        shown[include["path"]] = "\n".join(lines[j + 1 : end]) + "\n"
    return shown


def drift(text: str) -> list[str]:
    """Every example file the doc does not show exactly as it is."""
    shown = shown_examples(text)
    problems = []
    for name in EXAMPLE_FILES:
        path = f"examples/instrument/{name}"
        body = (ROOT / path).read_text()
        if path not in shown:
            problems.append(f"{path}: not shown (add <!-- example: {path} --> and its code block)")
        elif shown[path] != body:
            copy, lines = shown[path].splitlines(), body.splitlines()
            pairs = enumerate(zip(copy, lines, strict=False), 1)
            diff = next((n for n, (a, b) in pairs if a != b), min(len(copy), len(lines)) + 1)
            problems.append(f"{path}: the doc's copy differs from line {diff}: copy the file again")
    problems += [
        f"{p}: shown, but no such example" for p in shown if p.rpartition("/")[2] not in EXAMPLE_FILES
    ]
    return problems


def test_the_doc_shows_every_example_as_it_is() -> None:
    assert drift(DOC.read_text()) == []
    assert sorted(p.name for p in EXAMPLES.glob("*.*") if not p.name.startswith("constraints-")) == sorted(
        EXAMPLE_FILES
    )


def test_a_copy_that_drifted_or_is_missing_is_reported() -> None:
    text = DOC.read_text()
    job = (EXAMPLES / "job.yaml").read_text().splitlines()
    n = next(i for i, line in enumerate(job) if line.strip().startswith(f"{c.LABEL_STEP}: fit"))
    changed = text.replace(job[n], job[n].replace("fit", "fitt"), 1)
    assert drift(changed) == [
        f"examples/instrument/job.yaml: the doc's copy differs from line {n + 1}: copy the file again"
    ]
    longer = text.replace(job[-1], job[-1] + "\n      extra: line", 1)
    assert drift(longer) == [
        f"examples/instrument/job.yaml: the doc's copy differs from line {len(job) + 1}: copy the file again"
    ]
    gone = text.replace("<!-- example: examples/instrument/cronjob.yaml -->", "")
    assert drift(gone) == [
        "examples/instrument/cronjob.yaml: not shown (add <!-- example: examples/instrument/cronjob.yaml --> "
        "and its code block)"
    ]
    with pytest.raises(
        ValueError, match=r"^line 2: <!-- example: a.yaml --> is not followed by a code block$"
    ):
        shown_examples("text\n<!-- example: a.yaml -->\nno block\n")
    with pytest.raises(ValueError, match=r"^line 3: the code block of a.yaml is not closed$"):
        shown_examples("<!-- example: a.yaml -->\n<!-- not-run: x -->\n```yaml\na: 1\n")


# ---- each example passes its framework's tooling -----------------------------------------------------


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("name", ["job.yaml", "cronjob.yaml"])
def test_the_kubernetes_examples_validate(name: str, kube: str) -> None:
    [doc] = load(name)
    used = kubernetes_validate.validate(doc, kube, strict=True)  # raises on an invalid object
    assert used == kube.rpartition(".")[0], "the schemas of that very version"


def test_a_misspelt_field_fails_validation() -> None:
    [job] = load("job.yaml")
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["terminationMesagePolicy"] = container.pop("terminationMessagePolicy")
    with pytest.raises(kubernetes_validate.ValidationError, match="terminationMesagePolicy"):
        kubernetes_validate.validate(job, KUBE_VERSIONS[0], strict=True)


def unknown_to_argo(raw: Any, kept: Any, where: str = "") -> list[str]:
    """Where ``raw`` has what Argo's models dropped (``kept``: the models' dump of it)."""
    if isinstance(raw, dict):
        return [
            p
            for key, value in raw.items()
            for p in (
                unknown_to_argo(value, kept[key], f"{where}.{key}")
                if isinstance(kept, dict) and key in kept
                else [f"{where}.{key}"]
            )
        ]
    if isinstance(raw, list):
        return [p for i, item in enumerate(raw) for p in unknown_to_argo(item, kept[i], f"{where}[{i}]")]
    return [] if raw == kept else [f"{where}: {raw!r} read as {kept!r}"]


def argo_problems(raw: dict[str, Any]) -> list[str]:
    """``raw`` through Argo's Workflow model (hera): its type errors, and what it does not know."""
    try:
        model = ArgoWorkflow.model_validate(raw)
    except pydantic.ValidationError as exc:
        return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    return unknown_to_argo(raw, model.model_dump(by_alias=True, exclude_none=True, mode="json"))


def test_the_argo_workflow_is_what_argos_models_read() -> None:
    [workflow] = load("argo_workflow.yaml")
    assert argo_problems(workflow) == []
    spec = ArgoWorkflow.model_validate(workflow).spec
    assert spec.pod_metadata is not None and spec.pod_metadata.labels == {
        c.LABEL_PIPELINE: "train",
        c.LABEL_RUN_ID: "{{workflow.name}}",
    }
    steps = {t.name: (t.metadata.labels if t.metadata else None) for t in spec.templates or []}
    assert steps == {"main": None, "prepare": {c.LABEL_STEP: "prepare"}, "fit": {c.LABEL_STEP: "fit"}}
    retries = {
        t.name: t.retry_strategy.model_dump(exclude_none=True, by_alias=True) if t.retry_strategy else None
        for t in spec.templates or []
    }
    assert retries == {"main": None, "prepare": None, "fit": {"limit": "2", "retryPolicy": "OnFailure"}}


def test_a_field_argo_does_not_know_is_reported() -> None:
    [workflow] = load("argo_workflow.yaml")
    workflow["spec"]["podMetdata"] = workflow["spec"].pop("podMetadata")
    workflow["spec"]["templates"][2]["retryStrategy"]["limit"] = ["2"]
    assert argo_problems(workflow) == [  # IntOrString: either reading fails
        "spec.templates.2.retryStrategy.limit.str: Input should be a valid string",
        "spec.templates.2.retryStrategy.limit.int: Input should be a valid integer",
    ]
    workflow["spec"]["templates"][2]["retryStrategy"]["limit"] = "2"
    assert argo_problems(workflow) == [".spec.podMetdata"]


def lock_problems(extra: list[str], lock: str) -> list[str]:
    """What of ``extra`` (pyproject requirements) ``lock`` (a pip freeze) does not pin, or pins outside
    the requirement's range."""
    pins = {}
    for line in lock.splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    problems = []
    for text in extra:
        req = Requirement(text)
        pinned = pins.get(canonicalize_name(req.name))
        if pinned is None:
            problems.append(f"{req.name}: not pinned")
        elif pinned not in req.specifier:
            problems.append(f"{req.name}: pinned {pinned}, outside {req.specifier}")
    return problems


@pytest.mark.parametrize("name", ["kfp", "airflow"])
def test_each_framework_venv_is_pinned_within_its_extra(name: str) -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    lock = (EXAMPLES / f"constraints-{name}.txt").read_text()
    assert lock_problems(extras[f"instrument-{name}"], lock) == []
    assert lock_problems(["kfp>=3", "numpy>=1"], "# a comment\nkfp==2.17.3\n") == [
        "kfp: pinned 2.17.3, outside >=3",
        "numpy: not pinned",
    ]


def test_a_secret_left_in_the_release_namespace_keeps_the_step_from_starting() -> None:
    [job] = load("job.yaml")
    pod = ip.job_pod(job, 0)
    chart_only = {(RELEASE_NS, "mlobs-fluentd-forward"): {"shared-key": SHARED_KEY}}
    with pytest.raises(
        LookupError, match=r"^MLOBS_FLUENTD_SHARED_KEY: Secret ml/mlobs-fluentd-forward with key"
    ):
        ip.step_env(pod, chart_only)
