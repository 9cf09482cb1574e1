"""How large a Workflow object grows: the size limit Argo enforces on the status of a run.

Argo keeps a Workflow's node statuses in the Workflow object itself. When the object's JSON exceeds
MAX_WORKFLOW_SIZE (1 MiB; workflow/packer/packer.go) the controller gzips and base64-encodes the nodes into
``status.compressedNodes``; when even that is too large, the workflow fails with "workflow is longer than
maximum allowed size", unless node status offloading (``persistence.nodeStatusOffLoad`` with a database) is
on. ``workflow_size`` builds the status a finished run would have, with node statuses shaped as Argo's
NodeStatus (pkg/apis/workflow/v1alpha1/workflow_types.go: id, name, displayName, type, templateName,
templateScope, phase, boundaryID, startedAt, finishedAt, progress, resourcesDuration, inputs, outputs,
children, outboundNodes, hostNodeName), and measures it the way the packer does. Its node tree, IDs and fields
are those of a real run of this workflow on the local cluster (fixtures/real-run-3-workers-2-rounds.json), and
its compressed size is within 10 % of that run's (tests/k8s/test_argo_limits.py).
"""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from datetime import datetime, timedelta, timezone

from argo_dryrun import ArgoNode

MAX_WORKFLOW_SIZE = 1024 * 1024  # bytes of the Workflow's JSON (packer.getMaxWorkflowSize's default)
STARTED_AT = datetime(2026, 11, 27, 10, 0, 0, tzinfo=timezone.utc)
STEP_SECONDS = 7  # a pod step's typical length on the local cluster (TensorFlow's start dominates)
HOST_NODE_NAME = "gke-mnist-gpu-pool-4f6a2c1e-k8zt"  # a managed cluster's node name, longer than the local one


def fnv1a_32(text: str) -> int:
    """32-bit FNV-1a, the hash Argo's Workflow.NodeID uses (Go's hash/fnv New32a)."""
    value = 0x811C9DC5
    for byte in text.encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def node_id(workflow_name: str, node_name: str) -> str:
    """A node ID as Argo makes it: the workflow name and the FNV-1a hash of the node name, in decimal."""
    if node_name == workflow_name:
        return workflow_name
    return f"{workflow_name}-{fnv1a_32(node_name)}"


def timestamp(seconds: int) -> str:
    return (STARTED_AT + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_status(workflow_name: str, node: ArgoNode, boundary: str, index: int, host: str = HOST_NODE_NAME) -> dict:
    """The NodeStatus JSON of a node after a successful run; ``index`` orders the nodes in time."""
    status = {
        "id": node_id(workflow_name, node.name),
        "name": node.name,
        "displayName": node.display_name,
        "type": node.type,
        "templateScope": f"local/{workflow_name}",
        "phase": "Skipped" if node.type == "Skipped" else "Succeeded",
        "boundaryID": node_id(workflow_name, boundary),
        "startedAt": timestamp(index),
        "finishedAt": timestamp(index + STEP_SECONDS),
    }
    if node.template:
        status["templateName"] = node.template
    if node.type == "Skipped":
        status["message"] = "when 'false' evaluated false"
        return status
    status["progress"] = "1/1"
    status["resourcesDuration"] = {"cpu": index % 97, "memory": 7 * index % 1009}
    if node.inputs:
        status["inputs"] = {"parameters": [{"name": key, "value": value} for key, value in node.inputs.items()]}
    if node.outputs:
        status["outputs"] = {"parameters": [{"name": key, "value": value, "valueFrom": {"path": f"/tmp/{key}"}}
                                            for key, value in node.outputs.items()]}
    if node.type == "Pod":
        status["outputs"] = {**status.get("outputs", {}), "exitCode": "0"}
        status["hostNodeName"] = host
        status["taskResultSynced"] = True
        if node.name.endswith(")") and node.display_name.endswith("(0)"):
            status["nodeFlag"] = {"retried": True}
    if node.children:
        status["children"] = [node_id(workflow_name, child) for child in node.children]
    if node.type in ("Steps", "Retry"):
        status["outboundNodes"] = [node_id(workflow_name, node.children[-1])] if node.children else []
    return status


def status_nodes(workflow_name: str, nodes: list[ArgoNode], host: str = HOST_NODE_NAME) -> dict[str, dict]:
    """status.nodes of a finished run, keyed by node ID (a Steps node is the boundary of what it contains)."""
    boundaries: dict[str, str] = {}
    for node in nodes:  # parents come before their children
        for child in node.children:
            boundaries[child] = node.name if node.type == "Steps" else boundaries.get(node.name, workflow_name)
    return {node_id(workflow_name, node.name): node_status(workflow_name, node, boundaries.get(node.name, workflow_name),
                                                           index, host)
            for index, node in enumerate(nodes)}


def compressed_nodes_size(nodes: dict[str, dict]) -> int:
    """Bytes of status.compressedNodes for these node statuses."""
    return len(compressed(json.dumps(nodes, separators=(",", ":"))))


def compressed(text: str) -> str:
    """What Argo stores in status.compressedNodes: gzip (default level) then base64 (util/file)."""
    return base64.b64encode(gzip.compress(text.encode(), compresslevel=zlib.Z_DEFAULT_COMPRESSION)).decode()


def workflow_size(workflow: dict, workflow_name: str, nodes: list[ArgoNode]) -> dict[str, int]:
    """Bytes of the Workflow object with its nodes as they are and as Argo would compress them."""
    shell = {key: value for key, value in workflow.items() if key != "status"}
    shell["metadata"] = {**workflow["metadata"], "name": workflow_name}
    nodes_json = json.dumps(status_nodes(workflow_name, nodes), separators=(",", ":"))
    base = len(json.dumps(shell, separators=(",", ":"))) + len('{"status":{"phase":"Succeeded","nodes":}}')
    return {"nodes": len(nodes), "plain": base + len(nodes_json), "compressed": base + len(compressed(nodes_json))}


def run_size(workflow: dict, workers: int, rounds: int, gpus: str = "1") -> dict[str, int]:
    """``workflow_size`` of a finished run with this many workers and rounds (no container runs)."""
    from argo_dryrun import WorkflowWalker
    from workflow_plan import plan_walk

    name = "mnist-federated-x7k2p"
    walker = WorkflowWalker(workflow, name, {"workers": str(workers), "rounds": str(rounds), "gpus": gpus},
                            resolve_pods=False)
    plan_walk(walker)
    return workflow_size(workflow, name, walker.nodes)


def fits(workflow: dict, workers: int, rounds: int) -> bool:
    """Whether a finished run of this size stays under Argo's size limit without node status offloading."""
    return run_size(workflow, workers, rounds)["compressed"] <= MAX_WORKFLOW_SIZE


def max_workers(workflow: dict, rounds: int) -> int:
    """The most workers a run of ``rounds`` rounds can have without node status offloading.

    The size grows almost linearly in the workers: a line through two runs gives the first guess, and a
    binary search between measured runs around it finds the boundary.
    """
    small, large = (run_size(workflow, workers, rounds)["compressed"] for workers in (1, 101))
    guess = max(1, int(1 + (MAX_WORKFLOW_SIZE - small) * 100 / (large - small)))
    low, high = max(1, guess - guess // 20), guess + guess // 20 + 1
    while low > 1 and not fits(workflow, low, rounds):
        low, high = max(1, low - guess // 10), low
    while fits(workflow, high, rounds):
        low, high = high, high + guess // 10 + 1
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(workflow, middle, rounds) else (low, middle)
    return low


if __name__ == "__main__":
    # The envelope table of docs/kubernetes.md: `python tests/k8s/argo_limits.py` (about a minute).
    import sys
    from pathlib import Path

    import yaml

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    mnist_workflow = yaml.safe_load((Path(__file__).resolve().parents[2] / "workflows" / "mnist.yaml").read_text())
    for round_count in (5, 20, 50, 96):
        most = max_workers(mnist_workflow, round_count)
        print(f"rounds {round_count}: at most {most} workers ({run_size(mnist_workflow, most, round_count)})")
