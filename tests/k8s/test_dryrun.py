"""Dry run: workflows/mnist.yaml walked as Argo would, each pod's command run locally on tiny MNIST, in order.

The claim's mount path maps to a temporary directory, the image's /opt/mnist/mnist.npz to 600 training and
200 test images and each pod's /tmp to its own directory; 2 workers, 2 rounds, CPU trainers, then the exit
handler. Real TensorFlow training: about a minute. Output parameters are read from the files the steps leave,
as Argo reads them. Then the accuracy-test Job and the web demo Deployment run their commands on what it published.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import h5py
import pytest

from argo_dryrun import PodRun, WorkflowWalker, substitute
from common.layout import RunLayout, models_dir, newest_version_dir, published_info_path, published_versions
from k8s_manifests import (
    ACCURACY_JOB_PATH,
    IMAGE_MNIST,
    POD_SCRATCH,
    REPO_ROOT,
    load_yaml,
    local_arguments,
    map_path,
    parse_arguments,
    python_module,
)

pytestmark = pytest.mark.e2e  # real TensorFlow training on tiny MNIST: about a minute

WORKFLOW_NAME = "mnist-federated-dry7x"
PARAMETERS = {
    "workers": "3",
    "clients-per-round": "2",  # each round trains the 2 workers its sample step drew, as the aggregator expects
    "rounds": "2",
    "epochs": "1",
    "batch-size": "32",
    "gpus": "0",  # the CPU trainer template; the GPU one is checked statically in test_workflow.py
    "min-accuracy": "0.2",  # tiny data: well above chance (0.1), well below what 600 images can reach
}
STEP_TIMEOUT = 300  # seconds; a step that hangs fails the test instead of the CI job


@dataclass
class StepRun:
    pod: PodRun
    module: str
    arguments: object  # argparse.Namespace of the local arguments
    output: str
    progress_file: Path  # the pod's $ARGO_PROGRESS_FILE
    outputs: dict[str, str]  # output parameters, read from the files the template names


@dataclass
class DryRun:
    volume: Path  # what the claim held at the end
    steps: list[StepRun]
    outputs: dict[str, str]  # the workflow's output parameters (`argo get`)


def component_environment(**extra: str) -> dict[str, str]:
    """The environment of a component process: no GPU, quiet TensorFlow, the repository importable."""
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)}
    return {**environment, **extra}


def run_module(module: str, arguments: list[str], environment: dict[str, str]) -> subprocess.CompletedProcess:
    """``python -m module arguments`` from the repository root (the image's WORKDIR)."""
    return subprocess.run([sys.executable, "-m", module, *arguments], cwd=REPO_ROOT, env=environment,
                          capture_output=True, text=True, timeout=STEP_TIMEOUT)


def outputs_of(module: str, arguments, layout: RunLayout) -> list[Path]:
    """The files a step leaves on the volume for the next one (common/layout.py names them)."""
    if module == "trainer.init":
        return [layout.config_path, layout.global_model_path(0)]
    if module == "splitter":
        return [layout.manifest_path] + [layout.shard_path(worker) for worker in range(arguments.workers)]
    if module == "trainer":
        return [layout.client_model_path(arguments.round, arguments.worker)]
    if module == "aggregator":
        return [layout.global_model_path(arguments.round)]
    if module == "evaluator":
        return [layout.metrics_path(arguments.round)]
    if module == "evaluator.summary":
        return [layout.summary_path]
    if module == "aggregator.sample":
        return [layout.sampled_clients_path(arguments.round)]
    if module == "publisher":
        version_dir = newest_version_dir(models_dir(layout.volume))
        assert version_dir is not None, "publisher published nothing"
        return [version_dir / "model.h5", published_info_path(version_dir)]
    raise AssertionError(f"the dry run does not know what python -m {module} writes")


@pytest.fixture(scope="module")
def dry_run(workflow, claim_names, tiny_mnist, tmp_path_factory) -> DryRun:
    """Run the whole workflow; returns the volume directory and each step's run, in order."""
    volume = tmp_path_factory.mktemp("volume")
    progress_dir = tmp_path_factory.mktemp("progress")
    layout = RunLayout(volume, WORKFLOW_NAME)
    walker = WorkflowWalker(workflow, WORKFLOW_NAME, PARAMETERS)
    claims = {spec_volume["name"]: substitute(spec_volume["persistentVolumeClaim"]["claimName"], walker.global_scope)
              for spec_volume in workflow["spec"]["volumes"]}
    steps: list[StepRun] = []

    def run_pod(pod: PodRun) -> dict[str, str]:
        mounts = {}
        for mount in pod.container["volumeMounts"]:
            assert claims.get(mount["name"]) in claim_names, f"{pod.node}: mounts {mount['name']}, not the claim of nfs/"
            mounts[mount["mountPath"]] = volume
        scratch = tmp_path_factory.mktemp("pod-tmp")  # the container's own /tmp
        path_map = {**mounts, IMAGE_MNIST: tiny_mnist, POD_SCRATCH: scratch}
        module, pod_arguments = python_module(pod.container)
        arguments = local_arguments(pod_arguments, path_map)
        parsed = parse_arguments(module, arguments)
        # Argo sets ARGO_PROGRESS_FILE in every pod; here each pod gets its own file to check afterwards.
        progress_file = progress_dir / f"{pod.node}.txt"
        result = run_module(module, arguments, component_environment(ARGO_PROGRESS_FILE=str(progress_file)))
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{pod.node}: python -m {module} {' '.join(arguments)} failed:\n{output[-3000:]}"
        for path in outputs_of(module, parsed, layout):
            assert path.is_file(), f"{pod.node}: python -m {module} did not write {path.relative_to(volume)}"
        declared = walker.templates[pod.name].get("outputs", {}).get("parameters", [])
        outputs = {parameter["name"]: map_path(parameter["valueFrom"]["path"], path_map).read_text().strip()
                   for parameter in declared}
        steps.append(StepRun(pod, module, parsed, output, progress_file, outputs))
        return outputs  # Argo hands them to the later steps (the trainers' fan-out over the sampled clients)

    walker.walk(run_pod)
    return DryRun(volume, steps, walker.outputs)


def test_every_step_runs_in_order(dry_run):
    steps = dry_run.steps
    rounds = [["aggregator.sample", "trainer", "trainer", "aggregator", "evaluator"]] * int(PARAMETERS["rounds"])
    expected = ["trainer.init", "splitter"] + [module for round_modules in rounds for module in round_modules]
    assert [step.module for step in steps] == expected + ["evaluator", "publisher", "evaluator.summary"]


def test_each_round_trains_from_the_previous_rounds_model(dry_run):
    volume, steps = dry_run.volume, dry_run.steps
    layout = RunLayout(volume, WORKFLOW_NAME)
    for step in steps:
        if step.module == "trainer":
            start_model = layout.global_model_path(step.arguments.round - 1)
            with h5py.File(layout.client_model_path(step.arguments.round, step.arguments.worker)) as client:
                assert client.attrs["global_sha256"] == hashlib.sha256(start_model.read_bytes()).hexdigest()
                assert int(client.attrs["worker"]) == step.arguments.worker


def test_trainers_report_progress_to_argo(dry_run):
    trainers = [step for step in dry_run.steps if step.module == "trainer"]
    assert len(trainers) == int(PARAMETERS["clients-per-round"]) * int(PARAMETERS["rounds"])
    for step in trainers:
        done, total = map(int, re.fullmatch(r"(\d+)/(\d+)\s*", step.progress_file.read_text()).groups())
        assert done == total > 0, step.pod.node


def test_published_model_describes_this_run(dry_run):
    volume = dry_run.volume
    assert published_versions(models_dir(volume)) == [1]
    info = json.loads(published_info_path(newest_version_dir(models_dir(volume))).read_text())
    assert info["run_id"] == WORKFLOW_NAME
    assert info["round"] == int(PARAMETERS["rounds"])
    assert info["config"]["workers"] == int(PARAMETERS["workers"])
    assert info["config"]["batch_size"] == int(PARAMETERS["batch-size"])
    assert [entry["round"] for entry in info["history"]] == list(range(1, int(PARAMETERS["rounds"]) + 1))


def test_output_parameters_and_summary_report_the_accuracy(dry_run):
    """What `argo get` shows (the steps' output parameters) and summary.json agree with the metrics on the volume."""
    layout = RunLayout(dry_run.volume, WORKFLOW_NAME)
    rounds = int(PARAMETERS["rounds"])
    history = [round(json.loads(layout.metrics_path(number).read_text())["accuracy"], 4) for number in range(1, rounds + 1)]
    evaluations = [step for step in dry_run.steps if step.pod.name == "evaluate"]
    assert [float(step.outputs["accuracy"]) for step in evaluations] == history
    (accuracy_test,) = [step for step in dry_run.steps if step.pod.name == "accuracy-test"]
    assert float(accuracy_test.outputs["accuracy"]) == history[-1]
    assert json.loads(accuracy_test.outputs["accuracy-per-round"]) == history
    assert float(dry_run.outputs["accuracy"]) == history[-1] and json.loads(dry_run.outputs["accuracy-per-round"]) == history
    for number in range(1, rounds + 1):
        sampled = json.loads(layout.sampled_clients_path(number).read_text())
        trained = [step.arguments.worker for step in dry_run.steps if step.module == "trainer" and step.arguments.round == number]
        assert trained == sampled and len(sampled) == int(PARAMETERS["clients-per-round"])
    summary = json.loads(layout.summary_path.read_text())
    assert summary["status"] == "Succeeded" and summary["published_version"] == 1
    assert [entry["round"] for entry in summary["history"]] == list(range(1, rounds + 1))


def test_accuracy_test_job_checks_the_published_model(dry_run, tiny_mnist):
    """The Job's command, as written, evaluates the newest published model and exits 1 below its bar."""
    volume = dry_run.volume
    (container,) = load_yaml(ACCURACY_JOB_PATH)["spec"]["template"]["spec"]["containers"]
    mounts = {mount["mountPath"]: volume for mount in container["volumeMounts"] if mount["name"] == "volume"}
    module, pod_arguments = python_module(container)
    arguments = local_arguments(pod_arguments, {**mounts, IMAGE_MNIST: tiny_mnist})
    parsed = parse_arguments(module, arguments)
    result = run_module(module, arguments, component_environment())
    accuracy = float(re.search(r"test accuracy ([0-9.]+)", result.stdout).group(1))
    assert "models/mnist/1/model.h5" in result.stdout
    assert result.returncode == (1 if accuracy < parsed.min_accuracy else 0), result.stdout + result.stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def test_web_demo_deployment_serves_the_published_model(dry_run):
    """The Deployment's command and environment, with its mount mapped: /healthz answers, then /readyz says ready."""
    volume = dry_run.volume
    deployment = load_yaml(REPO_ROOT / "deploy" / "mnist-web-deployment.yaml")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (mount,) = [mount for mount in container["volumeMounts"] if mount["name"] == "volume"]
    port = free_port()
    environment = {variable["name"]: variable["value"] for variable in container["env"]}
    environment["MNIST_MODEL_DIR"] = str(local_arguments([environment["MNIST_MODEL_DIR"]], {mount["mountPath"]: volume})[0])
    environment["PORT"] = str(port)
    executable = Path(sys.executable).parent / container["command"][0]
    server = subprocess.Popen([str(executable), *container["command"][1:]], cwd=REPO_ROOT,
                              env=component_environment(**environment), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        liveness = container["livenessProbe"]["httpGet"]["path"]
        readiness = container["readinessProbe"]["httpGet"]["path"]
        deadline = time.monotonic() + 90
        statuses = (None, None)
        while time.monotonic() < deadline and server.poll() is None:
            statuses = (get_status(f"http://127.0.0.1:{port}{liveness}"), get_status(f"http://127.0.0.1:{port}{readiness}"))
            if statuses == (200, 200):
                break
            time.sleep(1)
    finally:
        server.terminate()
        try:
            output = server.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired:
            server.kill()
            output = server.communicate()[0]
    assert statuses == (200, 200), f"probes answered {statuses}; server output:\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]
