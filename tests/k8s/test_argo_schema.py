"""The Workflow and its WorkflowTemplate against Argo's own schema (full CRDs of v3.7 and v4.1), and every
resource quantity against the Kubernetes grammar: what `argo submit` and the API server check first."""

from __future__ import annotations

import copy
import re
import sys

import pytest
import yaml

from argo_dryrun import WorkflowWalker
from workflow_plan import plan_walk
from argo_schema import ARGO_VERSIONS, quantity_pattern, schema_errors, typed_templates
from k8s_manifests import KUSTOMIZATIONS, REPO_ROOT, WORKFLOW_PATH, WORKFLOW_TEMPLATE_PATH, WORKFLOWS_DIR, kustomize_objects, load_yaml

sys.path.insert(0, str(WORKFLOWS_DIR))
from make_template import template_text  # noqa: E402

OLD_WORKFLOW = REPO_ROOT / "tests" / "k8s" / "fixtures" / "batch-recursion-workflow.yaml"
GPU_QUANTITY_ERROR = "spec/templates/5/container/resources/limits/nvidia.com/gpu: '{{workflow.parameters.gpus}}' does not match"
# Parameter sets whose resources are checked after substitution: the defaults, CPU only, several GPUs.
QUANTITY_PLANS = [{}, {"gpus": "0"}, {"gpus": "4", "workers": "5"}]


@pytest.mark.parametrize("version", ARGO_VERSIONS)
@pytest.mark.parametrize("path", [WORKFLOW_PATH, WORKFLOW_TEMPLATE_PATH], ids=lambda path: path.name)
def test_validates_against_argos_full_crd(path, version):
    assert schema_errors(load_yaml(path), version) == []


@pytest.mark.parametrize("version", ARGO_VERSIONS)
def test_crd_check_refuses_the_templated_gpu_quantity(version):
    """Guards the guard: the workflow Argo refused at submit fails here, with exactly that one error."""
    (error,) = schema_errors(load_yaml(OLD_WORKFLOW), version)
    assert error.startswith(GPU_QUANTITY_ERROR)


@pytest.mark.parametrize("version", ARGO_VERSIONS)
@pytest.mark.parametrize("path", [WORKFLOW_PATH, WORKFLOW_TEMPLATE_PATH], ids=lambda path: path.name)
def test_no_integer_or_quantity_field_holds_a_template(path, version):
    """Argo decodes into Go types before substituting: a {{...}} in an integer or quantity field never decodes."""
    assert typed_templates(load_yaml(path), version) == []


def test_typed_template_check_fails_on_what_the_schema_lets_through():
    """A templated spec.parallelism is a string where Argo wants an integer; the memory limit is a quantity."""
    broken = copy.deepcopy(load_yaml(WORKFLOW_PATH))
    broken["spec"]["parallelism"] = "{{workflow.parameters.workers}}"
    (init,) = [template for template in broken["spec"]["templates"] if template["name"] == "init"]
    init["container"]["resources"]["limits"]["memory"] = "{{workflow.parameters.workers}}Gi"
    found = typed_templates(broken, ARGO_VERSIONS[-1])
    assert any(path.startswith("/spec/parallelism") for path in found)
    assert any("/resources/limits/memory" in path for path in found)


def test_workflow_template_is_generated_from_the_workflow():
    """workflows/mnist-template.yaml is exactly what workflows/make_template.py makes of workflows/mnist.yaml."""
    expected = template_text(WORKFLOW_PATH.read_text())
    assert WORKFLOW_TEMPLATE_PATH.read_text() == expected, "run `python workflows/make_template.py`"
    workflow, template = load_yaml(WORKFLOW_PATH), load_yaml(WORKFLOW_TEMPLATE_PATH)
    assert template["kind"] == "WorkflowTemplate" and template["spec"] == workflow["spec"]


def quantities_in(resources: dict, where: str) -> list[tuple[str, str]]:
    return [(f"{where}/{kind}/{name}", value) for kind, values in resources.items() for name, value in values.items()]


def pod_quantities(pod) -> list[tuple[str, str]]:
    """Every quantity a workflow pod would get: its container's resources and those podSpecPatch adds."""
    found = quantities_in(pod.container.get("resources", {}), pod.node)
    if "podSpecPatch" in pod.template:
        for container in yaml.safe_load(pod.template["podSpecPatch"]).get("containers", []):
            found += quantities_in(container.get("resources", {}), f"{pod.node} podSpecPatch")
    return found


def object_quantities(manifest: dict) -> list[tuple[str, str]]:
    """The quantities of a Kubernetes object: container resources, claim requests, volume capacity."""
    found = []
    where = f"{manifest['kind']}/{manifest['metadata'].get('name')}"
    spec = manifest.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    for container in pod.get("initContainers", []) + pod.get("containers", []):
        found += quantities_in(container.get("resources", {}), f"{where}/{container['name']}")
    found += quantities_in(spec.get("resources", {}), where) if manifest["kind"] == "PersistentVolumeClaim" else []
    found += [(f"{where}/capacity/{name}", value) for name, value in spec.get("capacity", {}).items()]
    return found


def bad_quantities(quantities: list[tuple[str, str]]) -> list[str]:
    return [f"{where}: {value!r}" for where, value in quantities if not re.fullmatch(quantity_pattern(), str(value))]


@pytest.mark.parametrize("parameters", QUANTITY_PLANS, ids=str)
def test_every_workflow_quantity_matches_the_grammar_after_substitution(workflow, parameters):
    pods = plan_walk(WorkflowWalker(workflow, "mnist-federated-q7x2z", parameters))
    quantities = [quantity for pod in pods for quantity in pod_quantities(pod)]
    assert quantities and bad_quantities(quantities) == []


def test_every_object_quantity_matches_the_grammar():
    objects = [manifest for directory in KUSTOMIZATIONS for manifest in kustomize_objects(directory)]
    quantities = [quantity for manifest in objects + [load_yaml(WORKFLOWS_DIR / "accuracy-test.yaml")]
                  for quantity in object_quantities(manifest)]
    assert len(quantities) > 10 and bad_quantities(quantities) == []


def test_quantity_check_refuses_a_templated_gpu_count():
    """Guards the guard: a template left in a quantity is refused, real quantities pass."""
    assert bad_quantities([("limit", "{{workflow.parameters.gpus}}"), ("limit", "1.5Gi"), ("limit", "500m")]) == [
        "limit: '{{workflow.parameters.gpus}}'"]
