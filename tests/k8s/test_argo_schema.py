"""The Workflow and its WorkflowTemplate against Argo's own schema (full CRDs of v3.7 and v4.1), and every
resource quantity against the Kubernetes grammar: what `argo submit` and the API server check first."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from argo_schema import ARGO_VERSIONS, quantity_pattern, schema_errors, typed_templates
from k8s_manifests import (
    KUSTOMIZATIONS,
    WORKFLOW_PATH,
    WORKFLOW_TEMPLATE_PATH,
    WORKFLOWS_DIR,
    kustomize_objects,
    load_yaml,
    substitute,
    templates_by_name,
    workflow_values,
)

# Parameter sets whose resources are checked after substitution: the defaults, CPU only with a fraction of a
# core, several GPUs.
QUANTITY_PARAMETERS = [{}, {"gpus": "0", "trainer-cpus": "500m"}, {"gpus": "4"}]


@pytest.mark.parametrize("version", ARGO_VERSIONS)
@pytest.mark.parametrize("path", [WORKFLOW_PATH, WORKFLOW_TEMPLATE_PATH], ids=lambda path: path.name)
def test_validates_against_argos_full_crd(path, version):
    assert schema_errors(load_yaml(path), version) == []


@pytest.mark.parametrize("version", ARGO_VERSIONS)
def test_crd_check_refuses_a_templated_gpu_quantity(workflow_template, version):
    """Guards the guard: a GPU count templated into the container's limits (what Argo refused at submit
    before podSpecPatch carried it) fails here, with exactly that one error."""
    broken = copy.deepcopy(workflow_template)
    index = [template["name"] for template in broken["spec"]["templates"]].index("trainer-on-gpu")
    broken["spec"]["templates"][index]["container"]["resources"]["limits"]["nvidia.com/gpu"] = "{{workflow.parameters.gpus}}"
    (error,) = schema_errors(broken, version)
    assert error.startswith(f"spec/templates/{index}/container/resources/limits/nvidia.com/gpu: "
                            "'{{workflow.parameters.gpus}}' does not match")


@pytest.mark.parametrize("version", ARGO_VERSIONS)
@pytest.mark.parametrize("path", [WORKFLOW_PATH, WORKFLOW_TEMPLATE_PATH], ids=lambda path: path.name)
def test_no_integer_or_quantity_field_holds_a_template(path, version):
    """Argo decodes into Go types before substituting: a {{...}} in an integer or quantity field never decodes."""
    assert typed_templates(load_yaml(path), version) == []


def test_typed_template_check_fails_on_what_the_schema_lets_through(workflow_template):
    """A templated spec.parallelism is a string where Argo wants an integer; the memory limit is a quantity."""
    broken = copy.deepcopy(workflow_template)
    broken["spec"]["parallelism"] = "{{workflow.parameters.trainers}}"
    templates_by_name(broken)["init"]["container"]["resources"]["limits"]["memory"] = "{{workflow.parameters.workers}}Gi"
    found = typed_templates(broken, ARGO_VERSIONS[-1])
    assert any(path.startswith("/spec/parallelism") for path in found)
    assert any("/resources/limits/memory" in path for path in found)


def quantities_in(resources: dict, where: str) -> list[tuple[str, str]]:
    return [(f"{where}/{kind}/{name}", value) for kind, values in resources.items() for name, value in values.items()]


def template_quantities(workflow_template: dict, parameters: dict[str, str]) -> list[tuple[str, str]]:
    """Every quantity a pod of the template would get with these parameters: its container's resources and
    those its podSpecPatch sets, after substitution."""
    values = workflow_values(workflow_template, "mnist-federated-q7x2z", parameters)
    found = []
    for name, template in templates_by_name(workflow_template).items():
        if "container" in template:
            found += quantities_in(template["container"].get("resources", {}), name)
        if "podSpecPatch" in template:
            patch = yaml.safe_load(substitute(template["podSpecPatch"], values))
            for container in patch.get("containers", []):
                found += quantities_in(container.get("resources", {}), f"{name} podSpecPatch")
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


@pytest.mark.parametrize("parameters", QUANTITY_PARAMETERS, ids=str)
def test_every_workflow_quantity_matches_the_grammar_after_substitution(workflow_template, parameters):
    quantities = template_quantities(workflow_template, parameters)
    assert any("podSpecPatch" in where for where, _ in quantities)
    assert quantities and bad_quantities(quantities) == []


def test_quantity_check_refuses_a_bad_parameter(workflow_template):
    """Guards the guard: a trainer-cpus that is no quantity fails once substituted into the patch."""
    assert bad_quantities(template_quantities(workflow_template, {"gpus": "0", "trainer-cpus": "two"})) == [
        "trainer-on-cpu podSpecPatch/requests/cpu: 'two'"]


def test_every_object_quantity_matches_the_grammar():
    objects = [manifest for directory in KUSTOMIZATIONS for manifest in kustomize_objects(directory)]
    quantities = [quantity for manifest in objects + [load_yaml(WORKFLOWS_DIR / "accuracy-test.yaml")]
                  for quantity in object_quantities(manifest)]
    assert len(quantities) > 10 and bad_quantities(quantities) == []


def test_quantity_check_refuses_a_templated_gpu_count():
    """Guards the guard: a template left in a quantity is refused, real quantities pass."""
    assert bad_quantities([("limit", "{{workflow.parameters.gpus}}"), ("limit", "1.5Gi"), ("limit", "500m")]) == [
        "limit: '{{workflow.parameters.gpus}}'"]
