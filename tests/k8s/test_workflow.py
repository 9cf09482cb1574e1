"""workflows/mnist-template.yaml (the WorkflowTemplate mnist-federated) and workflows/mnist.yaml (a run of it):
Argo's typed models, the DAG's shape, what each step is given and what its module makes of it, pod security.

No pods run and no controller is imitated: what Argo does with the DAG (the order, the fan-out over init's
output, retries, exit handler) is judged by the real controller in cluster/e2e.sh. Here the YAML is read as
Argo reads it (anchors and merge keys resolved) and each step's arguments are parsed by its own module.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import tempfile

import pytest
import yaml
from hera.workflows.models import Workflow, WorkflowTemplate

from common.runconfig import CONFIG_FLAGS, RunConfig, config_from_arguments, flag_name
from k8s_manifests import (
    IMAGE_MNIST,
    IMAGE_USER,
    POD_SCRATCH,
    TAG,
    WORKFLOW_PARAMETER,
    WORKFLOW_TEMPLATE_PATH,
    WORKFLOWS_DIR,
    kustomize_files,
    local_arguments,
    module_parser,
    parameter_defaults,
    parse_arguments,
    python_module,
    substitute,
    templates_by_name,
    workflow_values,
)
from trainer.init import build_parser as init_parser

WORKFLOW_NAME = "mnist-federated-x7k2p"  # what generateName "mnist-federated-" becomes
MOUNT_PATH = "/mnt/volume"
TRAINER_TEMPLATES = ["trainer-on-gpu", "trainer-on-cpu"]
LONG_LIVED_TEMPLATES = [*TRAINER_TEMPLATES, "coordinator"]  # run for the whole run, retried when a pod goes
# The RunConfig fields the workflow does not offer, and why. start_model names a local .h5 file to continue
# from; a run on Argo always starts from trainer.init's fresh seeded model.
NOT_WORKFLOW_PARAMETERS = {"start_model"}
RUN_SETTINGS = [field.name for field in dataclasses.fields(RunConfig) if field.name not in NOT_WORKFLOW_PARAMETERS]
# What the steps other than init are told: where the run is, which trainer they are, how long a round waits,
# the accuracy bar and where to leave their outputs. Everything else they read from runs/<name>/run.json.
NOT_RUN_SETTINGS = {"--volume", "--run-id", "--data", "--trainer", "--trainers", "--round-timeout", "--last-round",
                    "--min-accuracy", "--accuracy-file", "--history-file", "--status"}
INIT_OWN_FLAGS = {"--volume", "--run-id", "--data", "--trainers", "--trainers-file"}
# The DAG: each task and the tasks it waits for.
PIPELINE = {"init": set(), "trainer-gpu": {"init"}, "trainer-cpu": {"init"}, "coordinator": {"init"},
            "accuracy-test": {"coordinator"}, "publish": {"coordinator"}}
# The values Argo gives a step's own tags in a default run (trainer 0 of 3; the exit handler after success).
STEP_VALUES = {"inputs.parameters.trainer": "0", "inputs.parameters.trainers": "3", "workflow.status": "Succeeded"}
# Runs far from the defaults, and the RunConfig each must give: every setting of RunConfig changed in one of them.
SETTINGS = [
    ({"workers": "100", "rounds": "2", "epochs": "3", "batch-size": "32", "split": "pathological", "seed": "7",
      "model": "fedavg-cnn", "clients-per-round": "10", "strategy": "fedadam", "server-learning-rate": "0.01",
      "server-beta1": "0.8", "server-beta2": "0.95", "server-tau": "0.001", "aggregation": "trimmed-mean",
      "trim-fraction": "0.3", "min-clients": "8", "proximal-mu": "0.01", "client-optimizer": "sgd",
      "learning-rate": "0.05", "learning-rate-decay": "1", "learning-rate-anneal": "cosine"},
     RunConfig(workers=100, rounds=2, epochs=3, batch_size=32, split="pathological", seed=7, model="fedavg-cnn",
               clients_per_round=10, strategy="fedadam", server_learning_rate=0.01, server_beta1=0.8,
               server_beta2=0.95, server_tau=0.001, aggregation="trimmed-mean", trim_fraction=0.3, min_clients=8,
               proximal_mu=0.01, client_optimizer="sgd", learning_rate=0.05, learning_rate_decay=1.0,
               learning_rate_anneal="cosine")),
    ({"workers": "10", "strategy": "fedavgm", "server-momentum": "0.5", "aggregation": "multi-krum",
      "byzantine-clients": "2"},
     RunConfig(workers=10, strategy="fedavgm", server_momentum=0.5, aggregation="multi-krum", byzantine_clients=2)),
    ({"workers": "20", "split": "dirichlet", "alpha": "0.1", "dp-clip": "adaptive", "dp-noise-multiplier": "1.1",
      "dp-delta": "1e-5", "dp-initial-clip": "0.5", "dp-target-quantile": "0.7", "dp-clip-learning-rate": "0.1",
      "dp-clipped-count-stddev": "2", "dp-epsilon-budget": "50"},
     RunConfig(workers=20, split="dirichlet", alpha=0.1, dp_clip="adaptive", dp_noise_multiplier=1.1, dp_delta=1e-5,
               dp_initial_clip=0.5, dp_target_quantile=0.7, dp_clip_learning_rate=0.1, dp_clipped_count_stddev=2.0,
               dp_epsilon_budget=50.0)),
]


def container_templates(workflow_template: dict) -> dict[str, dict]:
    return {name: template for name, template in templates_by_name(workflow_template).items() if "container" in template}


def pipeline_tasks(workflow_template: dict) -> dict[str, dict]:
    pipeline = templates_by_name(workflow_template)[workflow_template["spec"]["entrypoint"]]
    return {task["name"]: task for task in pipeline["dag"]["tasks"]}


def flag_of(argument: str) -> str:
    return argument.split("=", 1)[0]


def step_arguments(workflow_template: dict, template: dict, parameters: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """The step's module and its arguments as its pod gets them (parameters substituted, ``-p parameters``
    over the defaults), with the pod's paths mapped to local ones (which fails for a path the pod lacks)."""
    module, arguments = python_module(template["container"])
    values = workflow_values(workflow_template, WORKFLOW_NAME, parameters) | STEP_VALUES
    arguments = [substitute(argument, values) for argument in arguments]
    assert not any("{{" in argument for argument in arguments), arguments
    mounts = {mount["mountPath"]: "/volume-in-test" for mount in template["container"]["volumeMounts"]}
    return module, local_arguments(arguments, {**mounts, IMAGE_MNIST: "/image/mnist.npz", POD_SCRATCH: tempfile.gettempdir()})


# --- Argo's typed models -----------------------------------------------------------------------------------


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
    model = {"Workflow": Workflow, "WorkflowTemplate": WorkflowTemplate}[manifest["kind"]].model_validate(manifest)
    return dump_differences(manifest, model.model_dump(by_alias=True, exclude_none=True, mode="json"))


def test_workflow_matches_argos_typed_model_exactly(workflow):
    """hera's pydantic models of Argo's API: no unknown key (a typo) and no value read as another type."""
    assert round_trip(workflow) == []


def test_workflow_template_matches_argos_typed_model_exactly(workflow_template):
    assert round_trip(workflow_template) == []


def test_round_trip_catches_a_typo_and_a_quoted_integer(workflow_template):
    broken = copy.deepcopy(workflow_template)
    templates_by_name(broken)["pipeline"]["dag"]["taskz"] = []
    broken["spec"]["activeDeadlineSeconds"] = "43200"
    differences = round_trip(broken)
    assert any("taskz: unknown" in difference for difference in differences)
    assert any("activeDeadlineSeconds: '43200' is read as 43200" in difference for difference in differences)


def numbers_in(value, path="") -> list[str]:
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in numbers_in(item, f"{path}/{key}")]
    if isinstance(value, list):
        return [found for index, item in enumerate(value) for found in numbers_in(item, f"{path}[{index}]")]
    return [path] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def test_numbers_are_quoted_except_where_argo_types_an_integer(workflow_template):
    """Int-or-string fields (retry limits, template deadlines...) get strings, as in Argo's examples; the round
    trip above fails the integer-only fields if they are quoted."""
    integer_fields = {"activeDeadlineSeconds", "runAsUser", "runAsGroup", "secondsAfterSuccess", "secondsAfterFailure"}
    assert [path for path in numbers_in(workflow_template) if path.rsplit("/", 1)[-1] not in integer_fields] == []


# --- mnist.yaml runs the installed template ------------------------------------------------------------------


def test_workflow_only_runs_the_installed_template(workflow, workflow_template):
    """mnist.yaml holds no steps and no defaults of its own: `argo submit -p` overrides the template's, and
    `kubectl apply -k workflows/` installs the template under the name mnist.yaml refers to."""
    assert workflow["apiVersion"] == workflow_template["apiVersion"] == "argoproj.io/v1alpha1"
    assert workflow["kind"] == "Workflow" and workflow_template["kind"] == "WorkflowTemplate"
    assert workflow["metadata"]["generateName"].endswith("-") and "name" not in workflow["metadata"]
    assert workflow["spec"] == {"workflowTemplateRef": {"name": workflow_template["metadata"]["name"]}}
    assert "generateName" not in workflow_template["metadata"]
    assert WORKFLOW_TEMPLATE_PATH in kustomize_files(WORKFLOWS_DIR)


# --- parameters: only init takes the run's settings ------------------------------------------------------------


def test_parameters_are_declared_once_with_string_defaults(workflow_template):
    parameters = workflow_template["spec"]["arguments"]["parameters"]
    names = [parameter["name"] for parameter in parameters]
    assert len(names) == len(set(names))
    for parameter in parameters:
        assert isinstance(parameter["value"], str), parameter["name"]
        assert parameter["value"] in parameter.get("enum", [parameter["value"]]), parameter["name"]


def test_every_parameter_is_used(workflow_template):
    """A declared parameter that no step reads would be silently ignored on `argo submit -p`."""
    spec = {key: value for key, value in workflow_template["spec"].items() if key != "arguments"}
    used = {match.group(1) for match in WORKFLOW_PARAMETER.finditer(yaml.safe_dump(spec))}
    assert set(parameter_defaults(workflow_template)) - used == set()


def test_run_config_flags_are_its_fields():
    """The flags below are those of RunConfig's fields (common/runconfig.py builds them from CONFIG_FLAGS)."""
    assert set(CONFIG_FLAGS) == {field.name for field in dataclasses.fields(RunConfig)}
    assert NOT_WORKFLOW_PARAMETERS <= set(CONFIG_FLAGS)


@pytest.mark.parametrize("setting", RUN_SETTINGS)
def test_every_run_setting_is_a_parameter_passed_to_init_with_its_flag(workflow_template, setting):
    """Each RunConfig field is a workflow parameter of the flag's name, passed to trainer.init as that flag."""
    flag = flag_name(setting)
    assert flag in parameter_defaults(workflow_template)
    init_arguments = templates_by_name(workflow_template)["init"]["container"]["args"]
    assert init_arguments.count(f"--{flag}={{{{workflow.parameters.{flag}}}}}") == 1


def test_a_parameters_choices_are_its_flags(workflow_template):
    """`argo submit` refuses a value outside a parameter's enum: the enum must be exactly the flag's choices."""
    enums = {parameter["name"]: parameter["enum"] for parameter in workflow_template["spec"]["arguments"]["parameters"]
             if "enum" in parameter}
    choices = {flag_name(setting): list(CONFIG_FLAGS[setting]["choices"]) for setting in RUN_SETTINGS
               if "choices" in CONFIG_FLAGS[setting]}
    assert enums == choices


def test_init_takes_the_run_settings_and_nothing_else(workflow_template):
    init_flags = [flag_of(argument) for argument in templates_by_name(workflow_template)["init"]["container"]["args"]]
    assert len(init_flags) == len(set(init_flags))
    assert set(init_flags) == INIT_OWN_FLAGS | {f"--{flag_name(setting)}" for setting in RUN_SETTINGS}


def test_init_with_the_defaults_gives_the_default_run_config(workflow_template):
    """The template's defaults are RunConfig's: `argo submit workflows/mnist.yaml` runs the default run."""
    module, arguments = step_arguments(workflow_template, templates_by_name(workflow_template)["init"])
    assert module == "trainer.init"
    parsed = init_parser().parse_args(arguments)
    assert config_from_arguments(parsed) == RunConfig()
    assert parsed.trainers == int(parameter_defaults(workflow_template)["trainers"])


@pytest.mark.parametrize("parameters, config", SETTINGS, ids=[str(index) for index in range(len(SETTINGS))])
def test_init_with_other_settings_gives_their_run_config(workflow_template, parameters, config):
    """Every value gets through: a run with settings changed records exactly them."""
    _, arguments = step_arguments(workflow_template, templates_by_name(workflow_template)["init"], parameters)
    assert config_from_arguments(init_parser().parse_args(arguments)) == config


def test_the_settings_above_change_every_run_setting():
    changed = {field.name for _, config in SETTINGS for field in dataclasses.fields(RunConfig)
               if getattr(config, field.name) != getattr(RunConfig(), field.name)}
    assert changed == set(RUN_SETTINGS)


@pytest.mark.parametrize("name", ["coordinator", *TRAINER_TEMPLATES, "accuracy-test", "publish", "summary"])
def test_no_other_step_takes_a_run_setting(workflow_template, name):
    """Every other step reads the settings from run.json: two sources could disagree."""
    template = templates_by_name(workflow_template)[name]
    assert {flag_of(argument) for argument in template["container"]["args"]} <= NOT_RUN_SETTINGS
    settings = {flag_name(setting) for setting in RUN_SETTINGS}
    assert not {match.group(1) for match in WORKFLOW_PARAMETER.finditer(yaml.safe_dump(template))} & settings


# --- every step runs a module of this repository that accepts its arguments ------------------------------------


@pytest.mark.parametrize("parameters", [{}, {"gpus": "0", "trainers": "1", "round-timeout": "60", "min-accuracy": "0.5"},
                                        SETTINGS[0][0]], ids=["defaults", "cpu", "settings"])
def test_every_step_is_accepted_by_its_modules_parser(workflow_template, parameters):
    """Each pod runs `python -m <module of this repo>` with arguments that module's own build_parser() accepts,
    every path it names is mounted or baked into the image, and every step works on runs/<workflow name>."""
    for name, template in container_templates(workflow_template).items():
        parsed = parse_arguments(*step_arguments(workflow_template, template, parameters))
        assert parsed.run_id == WORKFLOW_NAME, name
        assert str(parsed.volume) == "/volume-in-test", name


def test_step_outputs_are_files_the_step_is_told_to_write(workflow_template):
    """Argo reads each output parameter from a file: the step's own flag must name that file."""
    flags = {("init", "trainers"): "--trainers-file", ("accuracy-test", "accuracy"): "--accuracy-file",
             ("accuracy-test", "accuracy-per-round"): "--history-file"}
    found = {(name, parameter["name"]) for name, template in container_templates(workflow_template).items()
             for parameter in template.get("outputs", {}).get("parameters", [])}
    assert found == set(flags)
    for (name, output), flag in flags.items():
        template = templates_by_name(workflow_template)[name]
        (path,) = [parameter["valueFrom"]["path"] for parameter in template["outputs"]["parameters"]
                   if parameter["name"] == output]
        assert path.startswith(POD_SCRATCH + "/") and f"{flag}={path}" in template["container"]["args"], (name, output)


def edited(workflow_template: dict, template_name: str, old: str, new: str) -> dict:
    broken = copy.deepcopy(workflow_template)
    args = templates_by_name(broken)[template_name]["container"]["args"]
    index = next(position for position, argument in enumerate(args) if old in argument)
    args[index] = args[index].replace(old, new)
    return broken


@pytest.mark.parametrize(
    "template_name, old, new, message",
    [
        ("init", "--batch-size=", "--batchsize=", "rejects"),
        ("trainer-on-cpu", "--trainers=", "--trainer-count=", "rejects"),
        ("coordinator", "--round-timeout=", "--timeout=", "rejects"),
        ("coordinator", "/opt/mnist/mnist.npz", "/opt/mnist.npz", "not a path the pod has"),
        ("publish", "--volume=/mnt/volume", "--volume=/mnt/volumes", "not a path the pod has"),
        ("summary", "{{workflow.status}}", "{{workflow.parameters.status}}", "no such workflow parameter"),
    ],
)
def test_a_typo_in_a_flag_path_or_parameter_fails(workflow_template, template_name, old, new, message):
    broken = edited(workflow_template, template_name, old, new)
    with pytest.raises(AssertionError, match=message):
        for template in container_templates(broken).values():
            parse_arguments(*step_arguments(broken, template))


# --- the DAG ------------------------------------------------------------------------------------------------


def test_the_dag_runs_init_then_trainers_and_coordinator_then_the_accuracy_test_and_publish(workflow_template):
    tasks = pipeline_tasks(workflow_template)
    # `dependencies`, not `depends`: the API server refuses continueOn (the trainers') beside `depends`.
    assert not any("depends" in task for task in tasks.values())
    assert {name: set(task.get("dependencies", [])) for name, task in tasks.items()} == PIPELINE
    assert workflow_template["spec"]["entrypoint"] == "pipeline"
    assert workflow_template["spec"]["onExit"] == "summary"


def test_every_template_is_used_and_every_used_template_exists(workflow_template):
    names = set(templates_by_name(workflow_template))
    referenced = {task["template"] for task in pipeline_tasks(workflow_template).values()}
    assert referenced <= names
    spec = workflow_template["spec"]
    assert names - referenced == {spec["entrypoint"], spec["onExit"]}, "a template nothing runs"


def test_trainers_fan_out_over_inits_count_and_may_fail(workflow_template):
    """As many trainer pods as init wrote (min(trainers, clients per round)), numbered by {{item}}; a trainer that
    fails after its retries does not fail the run (min-clients decides, in the coordinator)."""
    tasks = pipeline_tasks(workflow_template)
    (count,) = [parameter for parameter in templates_by_name(workflow_template)["init"]["outputs"]["parameters"]]
    assert count["name"] == "trainers"
    for name, template in (("trainer-gpu", "trainer-on-gpu"), ("trainer-cpu", "trainer-on-cpu")):
        task = tasks[name]
        assert task["template"] == template
        assert task["withSequence"] == {"count": "{{tasks.init.outputs.parameters.trainers}}"}, name
        assert task["continueOn"] == {"failed": True}, name
        assert task["arguments"]["parameters"] == [{"name": "trainer", "value": "{{item}}"},
                                                   {"name": "trainers", "value": "{{tasks.init.outputs.parameters.trainers}}"}]
        inputs = templates_by_name(workflow_template)[template]["inputs"]["parameters"]
        assert [parameter["name"] for parameter in inputs] == ["trainer", "trainers"]
    for name in set(tasks) - {"trainer-gpu", "trainer-cpu"}:
        assert "continueOn" not in tasks[name] and "when" not in tasks[name], name


def when_is_true(condition: str) -> bool:
    """Argo's `when` for the comparison of two integers that the trainer tasks use."""
    match = re.fullmatch(r"\s*(-?\d+)\s*(==|!=|>=|<=|>|<)\s*(-?\d+)\s*", condition)
    assert match, f"not a comparison of two integers: {condition!r}"
    left, operator, right = int(match.group(1)), match.group(2), int(match.group(3))
    return {"==": left == right, "!=": left != right, ">=": left >= right, "<=": left <= right,
            ">": left > right, "<": left < right}[operator]


@pytest.mark.parametrize("gpus, expected", [("0", "trainer-cpu"), ("1", "trainer-gpu"), ("4", "trainer-gpu")])
def test_exactly_one_kind_of_trainer_runs(workflow_template, gpus, expected):
    values = workflow_values(workflow_template, WORKFLOW_NAME, {"gpus": gpus})
    tasks = pipeline_tasks(workflow_template)
    assert [name for name in ("trainer-gpu", "trainer-cpu") if when_is_true(substitute(tasks[name]["when"], values))] == [expected]


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


def upstream(tasks: dict[str, dict], name: str) -> set[str]:
    """The tasks that finish before ``name`` starts (its dependencies, transitively)."""
    direct = set(tasks[name].get("dependencies", []))
    return direct.union(*(upstream(tasks, task) for task in direct)) if direct else set()


def test_every_tag_refers_to_something_declared(workflow_template):
    """{{workflow.parameters.x}} is declared; {{inputs.parameters.x}} is an input of its template;
    {{tasks.t.outputs.parameters.x}} names a task that finished before (or, in the DAG's outputs, any task) whose
    template declares that output; {{item}} is only in a task that fans out; {{outputs.parameters.x}} and
    {{status}} only in a template's metrics; {{workflow.status}} only in the exit handler."""
    spec = workflow_template["spec"]
    global_names = {f"workflow.parameters.{name}" for name in parameter_defaults(workflow_template)} | {"workflow.name"}
    all_templates = templates_by_name(workflow_template)
    tasks = pipeline_tasks(workflow_template)
    task_outputs = {name: {f"tasks.{name}.outputs.parameters.{parameter['name']}"
                           for parameter in all_templates[task["template"]].get("outputs", {}).get("parameters", [])}
                    for name, task in tasks.items()}
    for text in strings_in({key: value for key, value in spec.items() if key != "templates"}):
        assert set(names_in(text)) <= global_names, text
    for name, template in all_templates.items():
        inputs = {f"inputs.parameters.{parameter['name']}" for parameter in template.get("inputs", {}).get("parameters", [])}
        outputs = {f"outputs.parameters.{parameter['name']}" for parameter in template.get("outputs", {}).get("parameters", [])}
        exit_names = {"workflow.status"} if name == spec["onExit"] else set()
        body = {key: value for key, value in template.items() if key not in ("dag", "outputs", "metrics")}
        for text in strings_in(body):
            assert set(names_in(text)) <= global_names | inputs | exit_names, f"template {name}: {text}"
        for text in strings_in(template.get("metrics", {})):
            assert set(names_in(text)) <= global_names | inputs | outputs | {"status"}, f"template {name} metrics: {text}"
        if "dag" in template:
            for text in strings_in(template.get("outputs", {})):
                assert set(names_in(text)) <= set().union(*task_outputs.values()), f"template {name} outputs: {text}"
            for task_name, task in tasks.items():
                finished = set().union(*(task_outputs[before] for before in upstream(tasks, task_name)))
                allowed = global_names | inputs | finished | ({"item"} if "withSequence" in task else set())
                for text in strings_in(task):
                    assert set(names_in(text)) <= allowed, f"task {task_name}: {text}"


def test_a_tag_of_a_task_that_has_not_finished_fails(workflow_template):
    """Guards the guard: the coordinator does not wait for the accuracy test."""
    broken = copy.deepcopy(workflow_template)
    coordinator = pipeline_tasks(broken)["coordinator"]
    coordinator["arguments"] = {"parameters": [{"name": "x", "value": "{{tasks.accuracy-test.outputs.parameters.accuracy}}"}]}
    with pytest.raises(AssertionError, match="task coordinator"):
        test_every_tag_refers_to_something_declared(broken)


# --- the long-lived pods ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LONG_LIVED_TEMPLATES)
def test_long_lived_pods_are_labelled_and_retried(workflow_template, name):
    """A trainer or coordinator pod that is deleted or fails is retried and resumes from the volume. Argo marks a
    deleted pod as an Error, which its default retryPolicy (OnFailure) does not retry: Always does."""
    template = templates_by_name(workflow_template)[name]
    component = "coordinator" if name == "coordinator" else "trainer"
    assert template["metadata"]["labels"] == {"app.kubernetes.io/component": component}
    retry = template["retryStrategy"]
    assert int(retry["limit"]) >= 1 and retry["retryPolicy"] == "Always"
    assert {"duration", "factor"} <= set(retry["backoff"])


def test_gpu_and_cpu_trainers_run_the_same_command(workflow_template):
    gpu, cpu = (templates_by_name(workflow_template)[name] for name in TRAINER_TEMPLATES)
    without_resources = [{key: value for key, value in template["container"].items() if key != "resources"}
                         for template in (gpu, cpu)]
    assert without_resources[0] == without_resources[1]
    assert python_module(gpu["container"])[0] == "trainer.serve"
    assert (gpu["inputs"], gpu["metadata"], gpu["retryStrategy"]) == (cpu["inputs"], cpu["metadata"], cpu["retryStrategy"])


def pod_spec_patch(workflow_template: dict, name: str, parameters: dict[str, str]) -> dict:
    template = templates_by_name(workflow_template)[name]
    return yaml.safe_load(substitute(template["podSpecPatch"], workflow_values(workflow_template, WORKFLOW_NAME, parameters)))


@pytest.mark.parametrize("gpus", ["1", "2"])
def test_the_gpu_trainer_requests_gpus_and_tolerates_the_gpu_taint(workflow_template, gpus):
    """The GPU count is patched into the pod spec, a string substituted after decoding, as a quantity."""
    template = templates_by_name(workflow_template)["trainer-on-gpu"]
    assert pod_spec_patch(workflow_template, "trainer-on-gpu", {"gpus": gpus}) == {
        "containers": [{"name": "main", "resources": {"limits": {"nvidia.com/gpu": gpus}}}]}
    assert template["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


@pytest.mark.parametrize("trainer_cpus", [None, "500m"])
def test_the_cpu_trainer_asks_for_trainer_cpus_cores(workflow_template, trainer_cpus):
    """The CPU request is the trainer-cpus parameter, patched in; the literal it overrides is its default."""
    template = templates_by_name(workflow_template)["trainer-on-cpu"]
    parameters = {"gpus": "0"} | ({"trainer-cpus": trainer_cpus} if trainer_cpus else {})
    default = parameter_defaults(workflow_template)["trainer-cpus"]
    assert pod_spec_patch(workflow_template, "trainer-on-cpu", parameters) == {
        "containers": [{"name": "main", "resources": {"requests": {"cpu": trainer_cpus or default}}}]}
    assert template["container"]["resources"]["requests"]["cpu"] == default


def test_only_the_gpu_trainer_touches_gpus(workflow_template):
    """No other pod asks for a GPU or may land on a GPU node's taint; only the trainers patch their pod spec."""
    for name, template in templates_by_name(workflow_template).items():
        if name != "trainer-on-gpu":
            assert "gpu" not in yaml.safe_dump({key: value for key, value in template.items() if key != "dag"}), name
            assert "tolerations" not in template, name
        if name not in TRAINER_TEMPLATES:
            assert "podSpecPatch" not in template, name
    assert "podSpecPatch" not in workflow_template["spec"] and "tolerations" not in workflow_template["spec"]


# --- pods: image, volume, security, bounds ------------------------------------------------------------------


def all_containers(template: dict) -> list[dict]:
    return ([template[key] for key in ("container", "script") if key in template]
            + template.get("initContainers", []) + template.get("sidecars", []))


def keys_in(value) -> set[str]:
    if isinstance(value, dict):
        return set(value).union(*(keys_in(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(keys_in(item) for item in value))
    return set()


def test_no_semaphore_or_mutex_anywhere(workflow_template):
    """The trainers and the coordinator live for the whole run: a semaphore or mutex shared by runs would let one
    run's trainers hold every slot while its coordinator (or another run's) waits for them, a deadlock."""
    assert not {"synchronization", "semaphore", "semaphores", "mutex", "mutexes"} & keys_in(workflow_template)


def test_pods_run_as_the_image_user_under_runtime_default_seccomp(workflow_template):
    security = workflow_template["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == IMAGE_USER
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}


def test_every_container_meets_pod_security_restricted(workflow_template):
    """Pod Security `restricted` as the API server enforces it on the namespace mnist: no privilege escalation,
    every capability dropped, and nothing in a template that would undo the pod-level settings."""
    containers = 0
    for name, template in templates_by_name(workflow_template).items():
        assert "securityContext" not in template, f"{name}: a template-level securityContext replaces the workflow's"
        for container in all_containers(template):
            containers += 1
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"] == {"drop": ["ALL"]}, name
            assert not {"privileged", "runAsUser", "runAsNonRoot", "runAsGroup", "seccompProfile"} & set(security), name
        if "podSpecPatch" in template:
            assert "securityContext" not in template["podSpecPatch"] and "hostPath" not in template["podSpecPatch"], name
    assert containers == len(container_templates(workflow_template))


def test_every_container_runs_the_image_with_requests_and_mounts_the_volume(workflow_template):
    (volume,) = workflow_template["spec"]["volumes"]
    for name, template in container_templates(workflow_template).items():
        container = template["container"]
        assert container["image"] == "{{workflow.parameters.image}}", name
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
        assert "memory" in container["resources"]["limits"], name
        assert container["volumeMounts"] == [{"name": volume["name"], "mountPath": MOUNT_PATH}], name


def test_the_volume_is_the_claim_of_nfs(workflow_template, claim_names):
    (volume,) = workflow_template["spec"]["volumes"]
    values = workflow_values(workflow_template, WORKFLOW_NAME)
    assert substitute(volume["persistentVolumeClaim"]["claimName"], values) in claim_names


def test_run_bounds_and_cleanup(workflow_template):
    """Pods and Workflow objects are cleaned up, the run has a deadline, an exit handler reports; each short
    step has its own (an image that cannot be pulled, a hung mount, fail within minutes), the long-lived pods
    live within the run's."""
    spec = workflow_template["spec"]
    assert spec["podGC"]["strategy"] in ("OnPodSuccess", "OnPodCompletion", "OnWorkflowSuccess")
    assert spec["activeDeadlineSeconds"] > 0
    assert int(spec["ttlStrategy"]["secondsAfterSuccess"]) > 0 and int(spec["ttlStrategy"]["secondsAfterFailure"]) > 0
    for name, template in container_templates(workflow_template).items():
        if name in LONG_LIVED_TEMPLATES:
            assert int(template.get("activeDeadlineSeconds", spec["activeDeadlineSeconds"])) <= spec["activeDeadlineSeconds"], name
        else:
            assert 0 < int(template["activeDeadlineSeconds"]) <= 3600, name


def test_results_are_outputs_and_a_metric(workflow_template):
    """`argo get` shows the final accuracy and the accuracy per round: a globalName on the accuracy test's own
    outputs puts them in the workflow's outputs (the real controller exports a DAG task's, not the DAG's);
    the final accuracy is a Prometheus gauge."""
    all_templates = templates_by_name(workflow_template)
    outputs = {parameter["name"]: (parameter.get("globalName"), parameter["valueFrom"]["path"])
               for parameter in all_templates["accuracy-test"]["outputs"]["parameters"]}
    assert outputs == {"accuracy": ("accuracy", "/tmp/accuracy"),
                       "accuracy-per-round": ("accuracy-per-round", "/tmp/accuracy-per-round")}
    assert "outputs" not in all_templates[workflow_template["spec"]["entrypoint"]]
    (gauge,) = all_templates["accuracy-test"]["metrics"]["prometheus"]
    assert gauge["gauge"] == {"realtime": False, "value": "{{outputs.parameters.accuracy}}"}
    assert {"key": "run", "value": "{{workflow.name}}"} in gauge["labels"]


def test_the_exit_handler_reports_the_status(workflow_template):
    summary = templates_by_name(workflow_template)[workflow_template["spec"]["onExit"]]
    assert python_module(summary["container"])[0] == "evaluator.summary"
    assert "--status={{workflow.status}}" in summary["container"]["args"]
    assert module_parser("evaluator.summary").parse_args(["--volume=/v", "--run-id=r", "--status=Failed"]).status == "Failed"
