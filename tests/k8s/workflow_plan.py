"""What the project's pods would report to Argo, without running them: enough to plan a run.

The sample step's output is computed with the library it runs (common/sampling.py, pure numpy), so a planned
run fans out over exactly the workers a real one would; accuracies are placeholders.
"""

from __future__ import annotations

import json

from argo_dryrun import PodRun, WorkflowWalker
from common.sampling import sample_clients

PLACEHOLDER_ACCURACY = "0.9900"


def planned_outputs(walker: WorkflowWalker):
    """An ``on_pod`` for ``walker.walk`` that answers each pod's output parameters as the real step would."""
    parameters = {key.removeprefix("workflow.parameters."): value for key, value in walker.global_scope.items()
                  if key.startswith("workflow.parameters.")}

    def on_pod(pod: PodRun) -> dict[str, str]:
        declared = {parameter["name"] for parameter in walker.templates[pod.name].get("outputs", {}).get("parameters", [])}
        return {name: value for name, value in answers(pod).items() if name in declared}

    def answers(pod: PodRun) -> dict[str, str]:
        name = pod.name
        if name == "sample":
            per_round = parameters["clients-per-round"]
            clients = sample_clients(int(parameters["workers"]), None if per_round == "all" else int(per_round),
                                     int(parameters["seed"]), int(pod.inputs["round"]))
            return {"clients": json.dumps(clients)}
        if name == "evaluate":
            return {"accuracy": PLACEHOLDER_ACCURACY}
        if name == "accuracy-test":
            rounds = int(parameters["rounds"])
            return {"accuracy": PLACEHOLDER_ACCURACY, "accuracy-per-round": json.dumps([float(PLACEHOLDER_ACCURACY)] * rounds)}
        return {}

    return on_pod


def plan_walk(walker: WorkflowWalker) -> list[PodRun]:
    """Walk a workflow with planned outputs; returns the pods in order (``walker.nodes`` has the status nodes)."""
    return walker.walk(planned_outputs(walker))
