"""Walk an Argo ``Workflow`` the way the controller would, without a cluster.

The walker substitutes parameters (``{{workflow.parameters.x}}``, ``{{inputs.parameters.x}}``,
``{{workflow.name}}``, ``{{workflow.status}}``, ``{{item}}``), evaluates the small subset of Argo expressions
the project uses (``{{=asInt(a) + asInt(b)}}``) and ``when`` conditions, expands ``withSequence`` /
``withParam`` / ``withItems`` fan-outs, follows templates that call themselves, runs the ``onExit`` handler
last, and hands every container step, in order, to a callback as a ``PodRun``. Steps of one parallel group
are handed over one after another.

It keeps Argo's limits: the controller counts every nested template call (the entrypoint is 1) and fails
the workflow with "Maximum recursion depth exceeded" when the count reaches 100
(workflow/controller/operator.go, maxAllowedStackDepth). And it records the nodes Argo would put in the
Workflow's status (``ArgoNode``: Steps, StepGroup, Retry, Pod, Skipped), whose size Argo caps (argo_limits.py).

Strict where Argo is lenient, so that a mistake in the YAML fails here rather than in the cluster:
an unknown ``{{...}}`` tag, an argument for an undeclared input, a missing input, or a parameter value
outside its ``enum`` raises ``WorkflowError``.
"""

from __future__ import annotations

import ast
import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

TAG = re.compile(r"\{\{\s*(=?)\s*(.*?)\s*\}\}")
AFTER_THE_POD = ("inputs", "outputs", "metrics")  # template keys a pod's spec does not take
MAX_STACK_DEPTH = 100  # Argo's maxAllowedStackDepth: a template call at this depth fails the workflow


class WorkflowError(Exception):
    """The workflow would not run as written."""


class MaxDepthExceeded(WorkflowError):
    """Argo's "Maximum recursion depth exceeded": too many nested template calls."""


@dataclass
class ArgoNode:
    """One entry of the Workflow's status.nodes, as the controller names and types it."""

    name: str  # e.g. "mnist-federated-x7k2p[2].rounds[0].train-on-gpu[0].train(1:1)"
    display_name: str
    type: str  # Steps, StepGroup, Retry, Pod or Skipped
    template: str | None
    inputs: dict[str, str] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)  # names of the child nodes
    outputs: dict[str, str] = field(default_factory=dict)  # output parameters


@dataclass
class PodRun:
    """One container step as its pod would see it: every ``{{...}}`` resolved."""

    node: str  # the step path, e.g. "pipeline.rounds.train.train-on-cpu(0)"
    template: dict  # the template, parameters substituted (container, tolerations, retryStrategy...)
    inputs: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.template["name"]

    @property
    def container(self) -> dict:
        return self.template["container"]


# --- expressions -------------------------------------------------------------------------------------

ALLOWED_BINARY = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b}
ALLOWED_COMPARE = {
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
}


def as_int(value: object) -> int:
    """Argo's asInt: a string holding a whole number, as an int."""
    try:
        return int(str(value))
    except ValueError:
        raise WorkflowError(f"asInt({value!r}): not a whole number") from None


def as_float(value: object) -> float:
    """Argo's asFloat."""
    try:
        return float(str(value))
    except ValueError:
        raise WorkflowError(f"asFloat({value!r}): not a number") from None


FUNCTIONS = {"asInt": as_int, "asFloat": as_float}


def dotted_name(node: ast.AST) -> str:
    """``inputs.parameters.round`` or ``workflow.parameters['batch-size']`` as one dotted name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted_name(node.value)}.{node.attr}"
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        return f"{dotted_name(node.value)}.{node.slice.value}"
    raise WorkflowError(f"unsupported expression part {ast.dump(node)}")


def evaluate(expression: str, scope: dict[str, str]) -> object:
    """Evaluate the expr-lang / govaluate subset: numbers, strings, names, asInt/asFloat, + - *, comparisons, && ||."""
    python_source = expression.replace("&&", " and ").replace("||", " or ")
    try:
        tree = ast.parse(python_source, mode="eval")
    except SyntaxError as error:
        raise WorkflowError(f"cannot parse expression {expression!r}: {error}") from None

    def value_of(node: ast.AST) -> object:
        if isinstance(node, ast.Expression):
            return value_of(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value_of(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in ALLOWED_BINARY:
            return ALLOWED_BINARY[type(node.op)](value_of(node.left), value_of(node.right))
        if isinstance(node, ast.BoolOp):
            values = [bool(value_of(operand)) for operand in node.values]
            return all(values) if isinstance(node.op, ast.And) else any(values)
        if isinstance(node, ast.Compare):
            left = value_of(node.left)
            for operator, comparator in zip(node.ops, node.comparators):
                if type(operator) not in ALLOWED_COMPARE:
                    raise WorkflowError(f"unsupported comparison in {expression!r}")
                right = value_of(comparator)
                if not ALLOWED_COMPARE[type(operator)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS:
            if len(node.args) != 1 or node.keywords:
                raise WorkflowError(f"{node.func.id} takes one argument in {expression!r}")
            return FUNCTIONS[node.func.id](value_of(node.args[0]))
        if isinstance(node, (ast.Name, ast.Attribute, ast.Subscript)):
            name = dotted_name(node)
            if name not in scope:
                raise WorkflowError(f"expression {expression!r} names {name!r}, which is not defined here")
            return scope[name]
        raise WorkflowError(f"unsupported expression {expression!r}")

    return value_of(tree)


def substitute(text: str, scope: dict[str, str]) -> str:
    """Replace every ``{{tag}}`` and ``{{=expression}}`` in ``text``; an unknown tag raises."""

    def replace(match: re.Match) -> str:
        is_expression, body = match.group(1), match.group(2)
        if is_expression:
            result = evaluate(body, scope)
            return str(int(result)) if isinstance(result, float) and result.is_integer() else str(result)
        if body not in scope:
            raise WorkflowError(f"{{{{{body}}}}} is not defined here (defined: {', '.join(sorted(scope))})")
        return scope[body]

    return TAG.sub(replace, text)


def substitute_all(value: object, scope: dict[str, str]) -> object:
    """``substitute`` on every string inside a YAML value (a copy; the original is untouched)."""
    if isinstance(value, str):
        return substitute(value, scope)
    if isinstance(value, list):
        return [substitute_all(item, scope) for item in value]
    if isinstance(value, dict):
        return {key: substitute_all(item, scope) for key, item in value.items()}
    return copy.deepcopy(value)


def is_true(condition: str) -> bool:
    """A resolved ``when`` condition (govaluate: numbers and comparisons, && and ||)."""
    result = evaluate(condition, {})
    if not isinstance(result, bool):
        raise WorkflowError(f"when {condition!r} is not a condition")
    return result


# --- the walk ----------------------------------------------------------------------------------------


def workflow_parameters(workflow: dict, overrides: dict[str, str]) -> dict[str, str]:
    """The global parameters after ``argo submit -p name=value``: defaults, overrides, enum checks."""
    declared = {parameter["name"]: parameter for parameter in workflow["spec"]["arguments"]["parameters"]}
    unknown = set(overrides) - set(declared)
    if unknown:
        raise WorkflowError(f"no workflow parameter named {sorted(unknown)}")
    values = {}
    for name, parameter in declared.items():
        value = str(overrides.get(name, parameter.get("value", "")))
        if "enum" in parameter and value not in parameter["enum"]:
            raise WorkflowError(f"parameter {name}={value!r} is not one of {parameter['enum']}")
        values[name] = value
    return values


def expand_items(step: dict, scope: dict[str, str]) -> list[str | None]:
    """The ``{{item}}`` values of a step's fan-out, or ``[None]`` for a step without one."""
    if "withSequence" in step:
        sequence = {key: as_int(substitute(str(value), scope)) for key, value in step["withSequence"].items()
                    if key in ("count", "start", "end")}
        start = sequence.get("start", 0)
        if "count" in sequence:
            numbers = range(start, start + sequence["count"])
        elif "end" in sequence:
            step_by = 1 if sequence["end"] >= start else -1
            numbers = range(start, sequence["end"] + step_by, step_by)
        else:
            raise WorkflowError(f"step {step['name']}: withSequence needs count or end")
        return [str(number) for number in numbers]
    if "withParam" in step:
        items = json.loads(substitute(step["withParam"], scope))
        return [item if isinstance(item, str) else json.dumps(item) for item in items]
    if "withItems" in step:
        return [item if isinstance(item, str) else json.dumps(item) for item in step["withItems"]]
    return [None]


OnPod = Callable[[PodRun], "dict[str, str] | None"]


class WorkflowWalker:
    """Follows a Workflow's steps from its entrypoint, calling ``on_pod`` for every container step.

    ``on_pod`` may return the pod's output parameters (``{name: value}``); later steps of the same template
    see them as ``{{steps.<step>.outputs.parameters.<name>}}`` (a ``withParam`` fan-out over a step's output,
    say), and a steps template's own outputs are resolved from them. After a walk, ``nodes`` holds the status
    nodes Argo would have made, ``max_depth`` the deepest template call as Argo counts it, and ``outputs`` the
    entrypoint's output parameters (what `argo get` shows).
    """

    def __init__(self, workflow: dict, name: str, parameters: dict[str, str] | None = None,
                 resolve_pods: bool = True) -> None:
        self.workflow = workflow
        self.resolve_pods = resolve_pods  # False: hand over templates as written (enough to count nodes, faster)
        self.name = name
        self.templates = {template["name"]: template for template in workflow["spec"]["templates"]}
        self.global_scope = {"workflow.name": name}
        for key, value in workflow_parameters(workflow, parameters or {}).items():
            self.global_scope[f"workflow.parameters.{key}"] = value
        self.nodes: list[ArgoNode] = []
        self.max_depth = 0
        self.outputs: dict[str, str] = {}
        self.pods: list[PodRun] = []
        self.on_pod: OnPod = lambda pod: None

    def walk(self, on_pod: OnPod, entrypoint: str | None = None, arguments: dict[str, str] | None = None,
             status: str = "Succeeded") -> list[PodRun]:
        """Run the workflow (or one template of it) in Argo's order; returns the pods in that order.

        The ``onExit`` handler runs after the whole workflow (not after a single template), with
        ``{{workflow.status}}`` set to ``status``.
        """
        self.nodes, self.max_depth, self.pods, self.on_pod = [], 0, [], on_pod
        start = entrypoint or self.workflow["spec"]["entrypoint"]
        self.outputs = self.visit(start, arguments or {}, self.name, self.name, depth=1)
        exit_handler = self.workflow["spec"].get("onExit")
        if entrypoint is None and exit_handler:
            self.global_scope["workflow.status"] = status
            try:
                self.visit(exit_handler, {}, f"{self.name}.onExit", "onExit", depth=1)
            finally:
                del self.global_scope["workflow.status"]
        return self.pods

    def template_scope(self, template: dict, arguments: dict[str, str], node: str) -> dict[str, str]:
        declared = {parameter["name"]: parameter for parameter in template.get("inputs", {}).get("parameters", [])}
        undeclared = set(arguments) - set(declared)
        if undeclared:
            raise WorkflowError(f"{node}: template {template['name']} has no input {sorted(undeclared)}")
        scope = dict(self.global_scope)
        for name, parameter in declared.items():
            if name in arguments:
                scope[f"inputs.parameters.{name}"] = arguments[name]
            elif "value" in parameter or "default" in parameter:
                scope[f"inputs.parameters.{name}"] = str(parameter.get("value", parameter.get("default")))
            else:
                raise WorkflowError(f"{node}: template {template['name']} needs input {name!r}")
        return scope

    def add_node(self, name: str, display_name: str, node_type: str, template: str | None,
                 inputs: dict[str, str] | None = None) -> ArgoNode:
        node = ArgoNode(name, display_name, node_type, template, dict(inputs or {}))
        self.nodes.append(node)
        return node

    def visit(self, template_name: str, arguments: dict[str, str], node: str, display_name: str,
              depth: int) -> dict[str, str]:
        """One template call (executeTemplate in Argo): a node, and for steps its groups and their steps.

        Returns the template's output parameters.
        """
        if depth >= MAX_STACK_DEPTH:
            raise MaxDepthExceeded(f"{node}: Maximum recursion depth exceeded ({depth} nested template calls; "
                                   f"Argo stops at {MAX_STACK_DEPTH})")
        self.max_depth = max(self.max_depth, depth)
        if template_name not in self.templates:
            raise WorkflowError(f"{node}: no template named {template_name!r}")
        template = self.templates[template_name]
        scope = self.template_scope(template, arguments, node)
        if "container" in template:
            # Outputs and metrics are resolved after the pod ran ({{status}}, {{outputs.parameters.x}}).
            pod_template = {key: value for key, value in template.items() if key not in AFTER_THE_POD}
            resolved = substitute_all(pod_template, scope) if self.resolve_pods else pod_template
            if "retryStrategy" in template:
                retry = self.add_node(node, display_name, "Retry", template_name, arguments)
                retry.children.append(f"{node}(0)")
                pod_nodes = [retry, self.add_node(f"{node}(0)", f"{display_name}(0)", "Pod", template_name, arguments)]
            else:
                pod_nodes = [self.add_node(node, display_name, "Pod", template_name, arguments)]
            pod = PodRun(node=node, template=resolved, inputs=arguments)
            self.pods.append(pod)
            outputs = self.on_pod(pod) or {}
            declared = {parameter["name"] for parameter in template.get("outputs", {}).get("parameters", [])}
            if set(outputs) != declared and outputs:
                raise WorkflowError(f"{node}: outputs {sorted(outputs)}, the template declares {sorted(declared)}")
            for pod_node in pod_nodes:  # a retry node carries its last try's outputs
                pod_node.outputs = outputs
            return outputs
        if "steps" in template:
            steps_node = self.add_node(node, display_name, "Steps", template_name, arguments)
            for index, group in enumerate(template["steps"]):
                group_name = f"{node}[{index}]"
                steps_node.children.append(group_name)
                group_node = self.add_node(group_name, f"[{index}]", "StepGroup", None)
                group_outputs = {}
                for step in group:
                    for name, value in self.visit_step(step, scope, group_node, depth).items():
                        group_outputs[f"steps.{step['name']}.outputs.parameters.{name}"] = value
                scope = {**scope, **group_outputs}  # visible to the later groups only, as in Argo
            return {parameter["name"]: substitute(parameter["valueFrom"]["parameter"], scope)
                    for parameter in template.get("outputs", {}).get("parameters", [])}
        raise WorkflowError(f"{node}: template {template_name} is neither steps nor a container")

    def visit_step(self, step: dict, scope: dict[str, str], group: ArgoNode, depth: int) -> dict[str, str]:
        """The step's call (or its fan-out); returns its output parameters when it ran once."""
        outputs: dict[str, str] = {}
        items = expand_items(step, scope)
        for index, item in enumerate(items):
            item_scope = scope if item is None else {**scope, "item": item}
            display_name = step["name"] if item is None else f"{step['name']}({index}:{item})"
            node = f"{group.name}.{display_name}"
            group.children.append(node)
            if "when" in step and not is_true(substitute(step["when"], item_scope)):
                self.add_node(node, display_name, "Skipped", step["template"])
                continue
            step_arguments = {
                parameter["name"]: substitute(str(parameter["value"]), item_scope)
                for parameter in step.get("arguments", {}).get("parameters", [])
            }
            outputs = self.visit(step["template"], step_arguments, node, display_name, depth + 1)
        return outputs if len(items) == 1 else {}
