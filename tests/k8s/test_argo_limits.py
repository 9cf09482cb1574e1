"""Argo's limits on the run itself, walked without a cluster: nesting depth, nodes per round, status size.

The "Scale" table of docs/kubernetes.md is checked here: each stated number of workers fits Argo's 1 MiB
Workflow size once the controller compresses the node statuses, and 10 % more does not (argo_limits.py says how the
status is built; `python tests/k8s/argo_limits.py` prints the exact boundaries).
"""

from __future__ import annotations

import json
import math
import re

import pytest

from argo_dryrun import MAX_STACK_DEPTH, MaxDepthExceeded, WorkflowWalker
from argo_limits import compressed_nodes_size, fits, run_size, status_nodes
from workflow_plan import plan_walk
from k8s_manifests import REPO_ROOT, load_yaml

OLD_WORKFLOW = REPO_ROOT / "tests" / "k8s" / "fixtures" / "batch-recursion-workflow.yaml"
# status.nodes of a real run: cluster/e2e.sh's step 3 (workers=3, rounds=2, gpus=0), Argo v4.1.4.
REAL_RUN = REPO_ROOT / "tests" / "k8s" / "fixtures" / "real-run-3-workers-2-rounds.json"
NAME = "mnist-federated-x7k2p"
MAX_ROUNDS = 96  # the README's and the rounds parameter's limit


def walk(workflow: dict, **parameters: str) -> WorkflowWalker:
    walker = WorkflowWalker(workflow, NAME, parameters, resolve_pods=False)
    plan_walk(walker)
    return walker


def nodes_per_round(walker: WorkflowWalker, round_number: int) -> int:
    """Status nodes of one round but the last: its steps, groups, sampling, trainers (retry + pod each),
    aggregation and evaluation, without the next round (whose node is the next-round step)."""
    (round_node,) = [node.name for node in walker.nodes if node.type == "Steps" and node.template == "round"
                     and node.inputs == {"round": str(round_number)}]
    next_round = f"{round_node}[4].next-round"
    return sum(1 for node in walker.nodes if node.name.startswith(round_node) and not node.name.startswith(next_round))


def test_a_thousand_workers_for_fifty_rounds_stay_inside_the_depth_limit(workflow):
    """The issue's scale: 1000 trainer pods per round, 50 rounds; 2 nodes per trainer (retry + pod) plus 15."""
    walker = walk(workflow, workers="1000", rounds="50")
    assert walker.max_depth == 50 + 3 < MAX_STACK_DEPTH
    trainers = [node for node in walker.nodes if node.type == "Pod" and node.template == "train-on-gpu"]
    assert len(trainers) == 1000 * 50
    assert [nodes_per_round(walker, round_number) for round_number in (1, 25, 49)] == [2 * 1000 + 15] * 3
    assert not fits(workflow, 1000, 50), "docs/kubernetes.md says this size needs node status offloading"


def test_rounds_stop_at_the_depth_limit(workflow):
    """Each round nests one call deeper: the rounds parameter's stated maximum runs, one more fails as in Argo."""
    assert walk(workflow, workers="2", rounds=str(MAX_ROUNDS)).max_depth == MAX_STACK_DEPTH - 1
    with pytest.raises(MaxDepthExceeded, match="Maximum recursion depth exceeded"):
        walk(workflow, workers="2", rounds=str(MAX_ROUNDS + 1))
    (rounds,) = [parameter for parameter in workflow["spec"]["arguments"]["parameters"] if parameter["name"] == "rounds"]
    assert f"at most {MAX_ROUNDS}" in rounds["description"]


def test_the_old_batch_recursion_fails_at_a_few_hundred_workers():
    """Guards the guard: the previous workflow, which recursed once per batch of `parallelism` trainers, fails
    Argo's depth limit at workers=300 (3 per batch), as the issue found on a cluster; 270 still passed."""
    old = load_yaml(OLD_WORKFLOW)
    walk(old, workers="270", parallelism="3", rounds="1")
    with pytest.raises(MaxDepthExceeded):
        walk(old, workers="300", parallelism="3", rounds="1")
    with pytest.raises(MaxDepthExceeded):
        walk(old, workers="1000", parallelism="3", rounds="50")


def documented_envelope() -> list[tuple[int, int]]:
    """(rounds, most workers) from the scale table of docs/kubernetes.md: rows like ``| 20 | 570 |``."""
    text = (REPO_ROOT / "docs" / "kubernetes.md").read_text()
    section = text[text.index("## Scale"):]
    section = section[:section.index("\n#", 1)]
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*([\d,]+)\s*\|", section, flags=re.MULTILINE)
    return [(int(rounds), int(workers.replace(",", ""))) for rounds, workers in rows]


def test_docs_state_the_size_envelope_computed_here(workflow):
    envelope = documented_envelope()
    assert [rounds for rounds, _ in envelope] == [5, 20, 50, MAX_ROUNDS]
    for rounds, workers in envelope:
        assert fits(workflow, workers, rounds), f"{rounds} rounds x {workers} workers is over Argo's size limit"
        assert not fits(workflow, math.ceil(workers * 1.1), rounds), f"{rounds} rounds: the docs understate"


def test_the_estimate_is_calibrated_on_a_real_run(workflow):
    """The walk gives the real controller's node tree with its node IDs, and the estimated status compresses
    to within 10 % of the real one, so the table above rests on what Argo actually stores."""
    real = json.loads(REAL_RUN.read_text())
    walker = WorkflowWalker(workflow, real["name"], {"workers": "3", "rounds": "2", "gpus": "0"}, resolve_pods=False)
    plan_walk(walker)
    (host,) = {node["hostNodeName"] for node in real["nodes"].values() if node["type"] == "Pod"}
    estimate = status_nodes(real["name"], walker.nodes, host=host)
    assert {node_id: node["name"] for node_id, node in estimate.items()} == {
        node_id: node["name"] for node_id, node in real["nodes"].items()}
    assert abs(compressed_nodes_size(estimate) / compressed_nodes_size(real["nodes"]) - 1) < 0.10


def test_size_estimate_grows_with_the_run(workflow):
    small, large = run_size(workflow, 3, 5), run_size(workflow, 30, 5)
    assert small["nodes"] < large["nodes"] and small["compressed"] < large["compressed"] < large["plain"]
