"""workflows/mnist.yaml against Argo's typed models, and what the controller would make of it (no pods run)."""

from __future__ import annotations

import copy
import re

import pytest
from hera.workflows.models import Workflow

from argo_dryrun import TAG, WorkflowError, WorkflowWalker, is_true, substitute
from k8s_manifests import IMAGE_MNIST, IMAGE_USER, local_arguments, parse_arguments, python_module

WORKFLOW_NAME = "mnist-federated-x7k2p"  # what generateName "mnist-federated-" becomes
MOUNT_PATH = "/mnt/volume"
REQUIRED_PARAMETERS = {"workers", "rounds", "epochs", "batch-size", "split", "alpha", "seed", "image", "gpus",
                       "pvc", "min-accuracy", "parallelism"}
# Parameter sets the plan is checked with: defaults, CPU, more workers than fit in one batch, Dirichlet.
PLANS = [
    {},
    {"gpus": "0", "workers": "2", "rounds": "2", "parallelism": "1"},
    {"gpus": "2", "workers": "5", "rounds": "3", "parallelism": "2"},
    {"split": "dirichlet", "alpha": "0.1", "rounds": "1", "workers": "1"},
]
RETRIED_TEMPLATES = ["train-on-gpu", "train-on-cpu", "aggregate"]


def templates(workflow: dict) -> dict[str, dict]:
    return {template["name"]: template for template in workflow["spec"]["templates"]}


def plan(workflow: dict, parameters: dict[str, str]):
    """The pods the controller would start, in order, without running them."""
    return WorkflowWalker(workflow, WORKFLOW_NAME, parameters).walk(lambda pod: None)


def pod_arguments(pod) -> tuple[str, list[str]]:
    """The pod's module and arguments with its paths mapped (which checks that each path exists in the pod)."""
    module, arguments = python_module(pod.container)
    mounts = {mount["mountPath"]: "/volume-in-test" for mount in pod.container["volumeMounts"]}
    return module, local_arguments(arguments, {**mounts, IMAGE_MNIST: "/image/mnist.npz"})


# --- schema ------------------------------------------------------------------------------------------------


def dump_differences(original, round_tripped, path="") -> list[str]:
    """Where two YAML values differ: keys the model dropped (unknown) or values it coerced (wrong type)."""
    if isinstance(original, dict) and isinstance(round_tripped, dict):
        differences = [f"{path}/{key}: unknown to Argo's schema" for key in original if key not in round_tripped]
        for key in original.keys() & round_tripped.keys():
            differences += dump_differences(original[key], round_tripped[key], f"{path}/{key}")
        return differences
    if isinstance(original, list) and isinstance(round_tripped, list) and len(original) == len(round_tripped):
        return [difference for index, (left, right) in enumerate(zip(original, round_tripped))
                for difference in dump_differences(left, right, f"{path}[{index}]")]
    if original != round_tripped or type(original) is not type(round_tripped):
        return [f"{path}: {original!r} is read as {round_tripped!r}"]
    return []


def round_trip(manifest: dict) -> list[str]:
    model = Workflow.model_validate(manifest)
    return dump_differences(manifest, model.model_dump(by_alias=True, exclude_none=True, mode="json"))


def test_workflow_matches_argos_typed_model_exactly(workflow):
    """hera's pydantic models of Argo's API: no unknown key (a typo) and no value read as another type."""
    assert round_trip(workflow) == []


def test_round_trip_catches_a_typo_and_a_quoted_integer(workflow):
    broken = copy.deepcopy(workflow)
    broken["spec"]["templates"][0]["stepz"] = []
    broken["spec"]["activeDeadlineSeconds"] = "43200"
    differences = round_trip(broken)
    assert any("stepz: unknown" in difference for difference in differences)
    assert any("activeDeadlineSeconds: '43200' is read as 43200" in difference for difference in differences)


def numbers_in(value, path="") -> list[str]:
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in numbers_in(item, f"{path}/{key}")]
    if isinstance(value, list):
        return [found for index, item in enumerate(value) for found in numbers_in(item, f"{path}[{index}]")]
    return [path] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def test_numbers_are_quoted_except_where_argo_types_an_integer(workflow):
    """Int-or-string fields (withSequence, retry limits, GPU counts...) get strings, as in Argo's examples;
    the round trip above fails the integer-only fields if they are quoted."""
    integer_fields = {"activeDeadlineSeconds", "runAsUser", "runAsGroup"}
    assert [path for path in numbers_in(workflow) if path.rsplit("/", 1)[-1] not in integer_fields] == []


def test_workflow_is_submittable_many_times(workflow):
    assert workflow["apiVersion"] == "argoproj.io/v1alpha1" and workflow["kind"] == "Workflow"
    assert workflow["metadata"]["generateName"].endswith("-") and "name" not in workflow["metadata"]


# --- references --------------------------------------------------------------------------------------------


def test_parameters_are_declared_with_string_defaults(workflow):
    parameters = {parameter["name"]: parameter for parameter in workflow["spec"]["arguments"]["parameters"]}
    assert REQUIRED_PARAMETERS <= set(parameters)
    assert all(isinstance(parameter["value"], str) for parameter in parameters.values())
    assert parameters["workers"]["value"] == "3" and parameters["gpus"]["value"] == "1"


def test_entrypoint_and_every_referenced_template_exist(workflow):
    names = templates(workflow)
    assert workflow["spec"]["entrypoint"] in names
    referenced = {step["template"] for template in names.values() for group in template.get("steps", [])
                  for step in group}
    assert referenced <= set(names)
    assert set(names) - referenced == {workflow["spec"]["entrypoint"]}, "a template nothing calls"


def names_in(text: str) -> list[str]:
    """The names a ``{{...}}`` tag or ``{{=expression}}`` refers to."""
    names = []
    for is_expression, body in TAG.findall(text):
        if is_expression:
            names += [name.replace("['", ".").rstrip("']") for name in
                      re.findall(r"[A-Za-z_][\w]*(?:\.[\w-]+|\['[\w-]+'\])+|\bitem\b", body)]
        else:
            names.append(body)
    return names


def strings_in(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [text for item in value for text in strings_in(item)]
    if isinstance(value, dict):
        return [text for item in value.values() for text in strings_in(item)]
    return []


def test_every_parameter_reference_is_declared(workflow):
    """{{inputs.parameters.x}} is an input of its template, {{workflow.parameters.x}} a workflow parameter,
    {{item}} appears only in a step that fans out."""
    global_names = {f"workflow.parameters.{parameter['name']}" for parameter in workflow["spec"]["arguments"]["parameters"]}
    global_names.add("workflow.name")
    for name, template in templates(workflow).items():
        inputs = {f"inputs.parameters.{parameter['name']}" for parameter in template.get("inputs", {}).get("parameters", [])}
        steps = [step for group in template.get("steps", []) for step in group]
        body = {key: value for key, value in template.items() if key != "steps"}
        for text in strings_in(body):
            assert set(names_in(text)) <= global_names | inputs, f"template {name}: {text}"
        for step in steps:
            fans_out = any(key in step for key in ("withSequence", "withParam", "withItems"))
            allowed = global_names | inputs | ({"item"} if fans_out else set())
            for text in strings_in(step):
                assert set(names_in(text)) <= allowed, f"template {name}, step {step['name']}: {text}"


def test_every_pod_mounts_the_claim_of_nfs_at_one_path(workflow, claim_names):
    (volume,) = workflow["spec"]["volumes"]
    default_claim = substitute(volume["persistentVolumeClaim"]["claimName"],
                               WorkflowWalker(workflow, WORKFLOW_NAME).global_scope)
    assert default_claim in claim_names
    for name, template in templates(workflow).items():
        if "container" in template:
            assert template["container"]["volumeMounts"] == [{"name": volume["name"], "mountPath": MOUNT_PATH}], name


def test_every_container_runs_the_image_with_requests(workflow):
    for name, template in templates(workflow).items():
        if "container" in template:
            container = template["container"]
            assert container["image"] == "{{workflow.parameters.image}}", name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name


def test_pods_run_as_the_image_user(workflow):
    security = workflow["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == IMAGE_USER


def test_run_bounds_and_cleanup(workflow):
    assert workflow["spec"]["podGC"]["strategy"] in ("OnPodSuccess", "OnPodCompletion", "OnWorkflowSuccess")
    assert workflow["spec"]["activeDeadlineSeconds"] > 0


@pytest.mark.parametrize("name", RETRIED_TEMPLATES)
def test_idempotent_steps_retry_with_backoff(workflow, name):
    retry = templates(workflow)[name]["retryStrategy"]
    assert int(retry["limit"]) >= 1
    assert {"duration", "factor"} <= set(retry["backoff"])


# --- what the controller would run ----------------------------------------------------------------------------


@pytest.mark.parametrize("parameters", PLANS, ids=str)
def test_every_command_is_accepted_by_its_modules_parser(workflow, parameters):
    """Each pod runs `python -m <module of this repo>` with arguments that module's own build_parser() accepts,
    every path it names is mounted or baked into the image, and every step writes under runs/<workflow name>."""
    for pod in plan(workflow, parameters):
        module, arguments = pod_arguments(pod)
        parsed = parse_arguments(module, arguments)
        assert parsed.run_id == WORKFLOW_NAME, pod.node
        assert str(parsed.volume) == "/volume-in-test", pod.node


@pytest.mark.parametrize("parameters", PLANS, ids=str)
def test_pipeline_order(workflow, parameters):
    """init, split, then per round every worker once, FedAvg, evaluation; finally the accuracy test and publish."""
    values = WorkflowWalker(workflow, WORKFLOW_NAME, parameters).global_scope
    workers, rounds = int(values["workflow.parameters.workers"]), int(values["workflow.parameters.rounds"])
    trainer = "train-on-gpu" if int(values["workflow.parameters.gpus"]) > 0 else "train-on-cpu"
    expected = [("init", {}), ("split", {})]
    for round_number in range(1, rounds + 1):
        expected += [(trainer, {"round": str(round_number), "worker": str(worker)}) for worker in range(workers)]
        expected += [("aggregate", {"round": str(round_number)}), ("evaluate", {"round": str(round_number)})]
    expected += [("accuracy-test", {}), ("publish", {})]
    assert [(pod.name, pod.inputs) for pod in plan(workflow, parameters)] == expected


def test_trainers_run_in_batches_of_parallelism(workflow):
    """Argo cannot take spec.parallelism from a parameter, so a round trains `parallelism` workers per batch."""
    pods = plan(workflow, {"workers": "5", "parallelism": "2", "rounds": "1"})
    batches = [pod.node.rsplit(".", 1)[0] for pod in pods if pod.name.startswith("train-on-")]
    assert [batches.count(batch) for batch in dict.fromkeys(batches)] == [2, 2, 1]


@pytest.mark.parametrize("gpus", ["1", "2"])
def test_gpu_trainers_request_gpus_and_tolerate_the_gpu_taint(workflow, gpus):
    trainers = [pod for pod in plan(workflow, {"gpus": gpus}) if pod.name.startswith("train-on-")]
    for pod in trainers:
        assert pod.name == "train-on-gpu"
        assert pod.container["resources"]["limits"]["nvidia.com/gpu"] == gpus
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod.template["tolerations"]


def test_cpu_trainers_ask_for_no_gpu(workflow):
    trainers = [pod for pod in plan(workflow, {"gpus": "0"}) if pod.name.startswith("train-on-")]
    for pod in trainers:
        assert pod.name == "train-on-cpu"
        assert not any("gpu" in resource for kind in pod.container["resources"].values() for resource in kind)
        assert "tolerations" not in pod.template


def test_gpu_and_cpu_trainers_run_the_same_command(workflow):
    gpu, cpu = templates(workflow)["train-on-gpu"], templates(workflow)["train-on-cpu"]
    without_resources = [{key: value for key, value in template["container"].items() if key != "resources"}
                         for template in (gpu, cpu)]
    assert without_resources[0] == without_resources[1]
    assert gpu["inputs"] == cpu["inputs"]


def test_trainer_conditions_are_exclusive(workflow):
    """For any gpus value exactly one of the two trainer steps runs each worker."""
    (batch_steps, _) = templates(workflow)["train-batch"]["steps"]
    for gpus in ("0", "1", "4"):
        scope = {**WorkflowWalker(workflow, WORKFLOW_NAME, {"gpus": gpus}).global_scope, "item": "0"}
        chosen = [step["template"] for step in batch_steps if is_true(substitute(step["when"], scope))]
        assert len(chosen) == 1, (gpus, chosen)


# --- the checks above fail on the mistakes they exist for --------------------------------------------------


def edited(workflow: dict, template_name: str, old: str, new: str) -> dict:
    broken = copy.deepcopy(workflow)
    (template,) = [template for template in broken["spec"]["templates"] if template["name"] == template_name]
    args = template["container"]["args"]
    index = next(position for position, argument in enumerate(args) if old in argument)
    args[index] = args[index].replace(old, new)
    return broken


@pytest.mark.parametrize(
    "template_name, old, new, message",
    [
        ("train-on-cpu", "--batch-size=", "--batchsize=", "rejects"),
        ("aggregate", "--expect=", "--workers=", "rejects"),
        ("split", "/opt/mnist/mnist.npz", "/opt/mnist.npz", "not a path the pod has"),
        ("init", "--volume=/mnt/volume", "--volume=/mnt/volumes", "not a path the pod has"),
    ],
)
def test_a_typo_in_a_flag_or_path_fails(workflow, template_name, old, new, message):
    broken = edited(workflow, template_name, old, new)
    with pytest.raises(AssertionError, match=message):
        for pod in plan(broken, {"gpus": "0"}):
            parse_arguments(*pod_arguments(pod))


def test_an_undeclared_parameter_fails(workflow):
    broken = edited(workflow, "aggregate", "{{inputs.parameters.round}}", "{{inputs.parameters.rnd}}")
    with pytest.raises(WorkflowError, match="inputs.parameters.rnd"):
        plan(broken, {})
    with pytest.raises(WorkflowError, match="no workflow parameter"):
        plan(workflow, {"worker": "2"})
