"""workflows/mnist.yaml against Argo's typed models, and what the controller would make of it (no pods run)."""

from __future__ import annotations

import copy
import re
import tempfile

import pytest
import yaml
from hera.workflows.models import Workflow, WorkflowTemplate

from common.sampling import sample_clients
from workflow_plan import plan_walk
from argo_dryrun import TAG, WorkflowError, WorkflowWalker, is_true, substitute
from k8s_manifests import IMAGE_MNIST, IMAGE_USER, POD_SCRATCH, WORKFLOWS_DIR, load_yaml, local_arguments, parse_arguments, python_module

WORKFLOW_NAME = "mnist-federated-x7k2p"  # what generateName "mnist-federated-" becomes
MOUNT_PATH = "/mnt/volume"
REQUIRED_PARAMETERS = {"workers", "rounds", "epochs", "batch-size", "split", "alpha", "seed", "image", "gpus",
                       "pvc", "min-accuracy", "clients-per-round", "model", "strategy", "server-learning-rate",
                       "server-momentum", "server-beta1", "server-beta2", "server-tau", "aggregation", "trim-fraction",
                       "proximal-mu", "client-optimizer", "learning-rate", "learning-rate-decay",
                       "learning-rate-anneal"}
# Parameter sets the plan is checked with: defaults, CPU, several GPUs and workers, Dirichlet, sampled clients
# with a server optimizer and robust aggregation, the paper's pathological split and CNN with FedProx.
PLANS = [
    {},
    {"gpus": "0", "workers": "2", "rounds": "2"},
    {"gpus": "2", "workers": "5", "rounds": "3"},
    {"split": "dirichlet", "alpha": "0.1", "rounds": "1", "workers": "1"},
    {"workers": "10", "clients-per-round": "3", "rounds": "3", "strategy": "fedadam", "server-learning-rate": "0.01",
     "aggregation": "trimmed-mean", "trim-fraction": "0.34"},
    {"workers": "100", "clients-per-round": "10", "rounds": "2", "split": "pathological", "model": "fedavg-cnn",
     "proximal-mu": "0.01", "strategy": "fedavgm", "server-momentum": "0.9", "client-optimizer": "sgd",
     "learning-rate": "0.05", "learning-rate-decay": "1", "learning-rate-anneal": "cosine"},
]
RETRIED_TEMPLATES = ["sample", "train-on-gpu", "train-on-cpu", "aggregate", "evaluate"]
TRAINER_TEMPLATES = ["train-on-gpu", "train-on-cpu"]


def templates(workflow: dict) -> dict[str, dict]:
    return {template["name"]: template for template in workflow["spec"]["templates"]}


def plan(workflow: dict, parameters: dict[str, str]):
    """The pods the controller would start, in order, without running them."""
    return plan_walk(WorkflowWalker(workflow, WORKFLOW_NAME, parameters))


def pod_arguments(pod) -> tuple[str, list[str]]:
    """The pod's module and arguments with its paths mapped (which checks that each path exists in the pod)."""
    module, arguments = python_module(pod.container)
    mounts = {mount["mountPath"]: "/volume-in-test" for mount in pod.container["volumeMounts"]}
    return module, local_arguments(arguments, {**mounts, IMAGE_MNIST: "/image/mnist.npz", POD_SCRATCH: tempfile.gettempdir()})


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


def test_workflow_template_matches_argos_typed_model_exactly(workflow_template):
    assert dump_differences(workflow_template, WorkflowTemplate.model_validate(workflow_template).model_dump(
        by_alias=True, exclude_none=True, mode="json")) == []


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
    integer_fields = {"activeDeadlineSeconds", "runAsUser", "runAsGroup", "secondsAfterSuccess", "secondsAfterFailure"}
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
    assert set(names) - referenced == {workflow["spec"]["entrypoint"], workflow["spec"]["onExit"]}, "a template nothing calls"


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
    {{item}} appears only in a step that fans out, {{steps.s.outputs.parameters.x}} names a step of an earlier
    group (or, in the template's outputs, any step) whose template declares that output, {{outputs.parameters.x}} and {{status}} only in a template's metrics, and
    {{workflow.status}} only in the exit handler."""
    global_names = {f"workflow.parameters.{parameter['name']}" for parameter in workflow["spec"]["arguments"]["parameters"]}
    global_names.add("workflow.name")
    all_templates = templates(workflow)
    for name, template in all_templates.items():
        inputs = {f"inputs.parameters.{parameter['name']}" for parameter in template.get("inputs", {}).get("parameters", [])}
        outputs = {f"outputs.parameters.{parameter['name']}" for parameter in template.get("outputs", {}).get("parameters", [])}
        exit_names = {"workflow.status"} if name == workflow["spec"].get("onExit") else set()
        steps = [step for group in template.get("steps", []) for step in group]
        step_outputs = {f"steps.{step['name']}.outputs.parameters.{parameter['name']}" for step in steps
                        for parameter in all_templates[step["template"]].get("outputs", {}).get("parameters", [])}
        body = {key: value for key, value in template.items() if key not in ("steps", "outputs", "metrics")}
        for text in strings_in(body):
            assert set(names_in(text)) <= global_names | inputs | exit_names, f"template {name}: {text}"
        for text in strings_in(template.get("outputs", {})):
            assert set(names_in(text)) <= step_outputs, f"template {name} outputs: {text}"
        for text in strings_in(template.get("metrics", {})):
            assert set(names_in(text)) <= global_names | inputs | outputs | {"status"}, f"template {name} metrics: {text}"
        earlier_outputs: set[str] = set()
        for group in template.get("steps", []):
            for step in group:
                fans_out = any(key in step for key in ("withSequence", "withParam", "withItems"))
                allowed = global_names | inputs | earlier_outputs | ({"item"} if fans_out else set())
                for text in strings_in(step):
                    assert set(names_in(text)) <= allowed, f"template {name}, step {step['name']}: {text}"
            earlier_outputs |= {output for output in step_outputs
                                if output.split(".")[1] in {step["name"] for step in group}}


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
    """Pods and Workflow objects are cleaned up, the run and every pod have a deadline, an exit handler reports."""
    spec = workflow["spec"]
    assert spec["podGC"]["strategy"] in ("OnPodSuccess", "OnPodCompletion", "OnWorkflowSuccess")
    assert spec["activeDeadlineSeconds"] > 0
    assert int(spec["ttlStrategy"]["secondsAfterSuccess"]) > 0 and int(spec["ttlStrategy"]["secondsAfterFailure"]) > 0
    assert spec["onExit"] in templates(workflow)
    for name, template in templates(workflow).items():
        if "container" in template:
            # A hung NFS mount must not hold a node (or a GPU) until the whole run's deadline.
            assert 0 < int(template["activeDeadlineSeconds"]) <= 3600, name


def test_results_are_outputs_and_metrics(workflow):
    """`argo get` shows the final accuracy and the accuracy per round; each round's accuracy is a Prometheus gauge."""
    all_templates = templates(workflow)
    outputs = {parameter["name"]: parameter["valueFrom"]["parameter"]
               for parameter in all_templates[workflow["spec"]["entrypoint"]]["outputs"]["parameters"]}
    assert outputs == {"accuracy": "{{steps.accuracy-test.outputs.parameters.accuracy}}",
                       "accuracy-per-round": "{{steps.accuracy-test.outputs.parameters.accuracy-per-round}}"}
    for name in ("evaluate", "accuracy-test"):
        files = {parameter["name"]: parameter["valueFrom"]["path"] for parameter in all_templates[name]["outputs"]["parameters"]}
        arguments = all_templates[name]["container"]["args"]
        assert f"--accuracy-file={files['accuracy']}" in arguments, name
        if "accuracy-per-round" in files:
            assert f"--history-file={files['accuracy-per-round']}" in arguments
    (gauge,) = all_templates["evaluate"]["metrics"]["prometheus"]
    assert gauge["gauge"] == {"realtime": False, "value": "{{outputs.parameters.accuracy}}"}
    assert {"key": "round", "value": "{{inputs.parameters.round}}"} in gauge["labels"]


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
    """init, split, then per round the sample, each sampled worker once, the aggregation, the evaluation; then
    the accuracy test, publish and, as the exit handler, the summary."""
    values = WorkflowWalker(workflow, WORKFLOW_NAME, parameters).global_scope
    workers, rounds = int(values["workflow.parameters.workers"]), int(values["workflow.parameters.rounds"])
    trainer = "train-on-gpu" if int(values["workflow.parameters.gpus"]) > 0 else "train-on-cpu"
    expected = [("init", {}), ("split", {})]
    per_round = values["workflow.parameters.clients-per-round"]
    seed = int(values["workflow.parameters.seed"])
    for round_number in range(1, rounds + 1):
        clients = sample_clients(workers, None if per_round == "all" else int(per_round), seed, round_number)
        expected += [("sample", {"round": str(round_number)})]
        expected += [(trainer, {"round": str(round_number), "worker": str(worker)}) for worker in clients]
        expected += [("aggregate", {"round": str(round_number)}), ("evaluate", {"round": str(round_number)})]
    expected += [("accuracy-test", {}), ("publish", {}), ("summary", {})]
    assert [(pod.name, pod.inputs) for pod in plan(workflow, parameters)] == expected


@pytest.mark.parametrize("per_round, expected", [("all", list(range(7))), ("3", sample_clients(7, 3, 0, 1))])
def test_the_sampled_workers_of_a_round_fan_out_from_one_step(workflow, per_round, expected):
    """One withParam over the sample step's list: every trainer of a round is a sibling (no recursion per batch)."""
    walker = WorkflowWalker(workflow, WORKFLOW_NAME, {"workers": "7", "rounds": "1", "clients-per-round": per_round})
    plan_walk(walker)
    groups = {}
    for node in walker.nodes:
        if node.type == "Retry" and node.template in TRAINER_TEMPLATES:
            groups.setdefault(node.name.rsplit(".", 1)[0], []).append(node.inputs["worker"])
    assert list(groups.values()) == [[str(worker) for worker in expected]]


def test_run_configuration_reaches_trainer_init(workflow):
    """Every parameter that shapes the run is a flag of trainer.init, so run.json records it (and a resubmitted
    run with other values is refused)."""
    (pod,) = [pod for pod in plan(workflow, PLANS[4]) if pod.name == "init"]
    parsed = parse_arguments(*pod_arguments(pod))
    assert (parsed.clients_per_round, parsed.strategy, parsed.server_learning_rate, parsed.aggregation,
            parsed.trim_fraction, parsed.server_tau) == (3, "fedadam", 0.01, "trimmed-mean", 0.34, None)


def test_every_run_setting_is_a_workflow_parameter(workflow):
    """Each flag the local runner takes to shape a run reaches trainer.init from a workflow parameter of the same name."""
    import argparse

    from common.runconfig import add_config_arguments

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    flags = {option for action in parser._actions for option in action.option_strings if option.startswith("--")}
    init_arguments = templates(workflow)["init"]["container"]["args"]
    passed = {argument.split("=", 1)[0] for argument in init_arguments}
    declared = {parameter["name"] for parameter in workflow["spec"]["arguments"]["parameters"]}
    assert flags - {"--start-model", "--help"} <= passed
    assert {flag[2:] for flag in passed - {"--volume", "--run-id"}} <= declared


def test_a_failed_trainer_leaves_the_decision_to_the_aggregate_step(workflow):
    """Partial rounds on Argo: the fan-out continues past a trainer that failed its retries; the aggregator then
    goes on with min-clients, or fails naming the missing workers."""
    for fan_out in ("train-workers-on-gpu", "train-workers-on-cpu"):
        ((step,),) = templates(workflow)[fan_out]["steps"]
        assert step["continueOn"] == {"failed": True}, fan_out
    aggregate_steps = [step for group in templates(workflow)["round"]["steps"] for step in group if step["name"] == "aggregate"]
    assert len(aggregate_steps) == 1 and "continueOn" not in aggregate_steps[0]


@pytest.mark.parametrize("name", TRAINER_TEMPLATES)
def test_trainers_hold_the_semaphore_of_the_limits_config_map(workflow, name):
    """How many trainers run at once is a semaphore whose limit lives in workflows/limits.yaml."""
    limits = load_yaml(WORKFLOWS_DIR / "limits.yaml")
    (semaphore,) = templates(workflow)[name]["synchronization"]["semaphores"]
    reference = semaphore["configMapKeyRef"]
    assert reference["name"] == limits["metadata"]["name"]
    assert int(limits["data"][reference["key"]]) >= 1


def pod_spec_patch(pod) -> dict:
    return yaml.safe_load(pod.template["podSpecPatch"])


@pytest.mark.parametrize("gpus", ["1", "2"])
def test_gpu_trainers_request_gpus_and_tolerate_the_gpu_taint(workflow, gpus):
    """The GPU count is patched into the pod spec, after substitution, as a quantity."""
    trainers = [pod for pod in plan(workflow, {"gpus": gpus}) if pod.name.startswith("train-on-")]
    for pod in trainers:
        assert pod.name == "train-on-gpu"
        (patched,) = pod_spec_patch(pod)["containers"]
        assert patched == {"name": "main", "resources": {"limits": {"nvidia.com/gpu": gpus}}}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod.template["tolerations"]


@pytest.mark.parametrize("trainer_cpus", [None, "500m"])
def test_cpu_trainers_ask_for_no_gpu_and_trainer_cpus_cores(workflow, trainer_cpus):
    """No GPU, no GPU toleration; the CPU request is the trainer-cpus parameter (default 2), patched in."""
    parameters = {"gpus": "0"} | ({"trainer-cpus": trainer_cpus} if trainer_cpus else {})
    trainers = [pod for pod in plan(workflow, parameters) if pod.name.startswith("train-on-")]
    for pod in trainers:
        assert pod.name == "train-on-cpu"
        assert not any("gpu" in resource for kind in pod.container["resources"].values() for resource in kind)
        assert "tolerations" not in pod.template
        (patched,) = pod_spec_patch(pod)["containers"]
        assert patched == {"name": "main", "resources": {"requests": {"cpu": trainer_cpus or "2"}}}
        assert pod.container["resources"]["requests"]["cpu"] == "2"  # the literal the patch overrides


def test_gpu_and_cpu_trainers_run_the_same_command(workflow):
    gpu, cpu = templates(workflow)["train-on-gpu"], templates(workflow)["train-on-cpu"]
    without_resources = [{key: value for key, value in template["container"].items() if key != "resources"}
                         for template in (gpu, cpu)]
    assert without_resources[0] == without_resources[1]
    assert gpu["inputs"] == cpu["inputs"]


def test_trainer_conditions_are_exclusive(workflow):
    """For any gpus value exactly one of the two trainer fan-outs runs in a round."""
    (train_steps,) = [group for group in templates(workflow)["round"]["steps"]
                      if {step["name"] for step in group} == {"train-on-gpu", "train-on-cpu"}]
    for gpus in ("0", "1", "4"):
        scope = WorkflowWalker(workflow, WORKFLOW_NAME, {"gpus": gpus}).global_scope
        chosen = [step["template"] for step in train_steps if is_true(substitute(step["when"], scope))]
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
