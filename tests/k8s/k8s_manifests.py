"""Reading the manifests (built by the real `kubectl kustomize`) and running their commands: ``python -m <module> args``."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS_DIR = REPO_ROOT / "workflows"
WORKFLOW_PATH = WORKFLOWS_DIR / "mnist.yaml"
WORKFLOW_TEMPLATE_PATH = WORKFLOWS_DIR / "mnist-template.yaml"
ACCURACY_JOB_PATH = WORKFLOWS_DIR / "accuracy-test.yaml"
NFS_CSI = REPO_ROOT / "nfs"  # the default shared volume (csi-driver-nfs)
NFS_STATIC = REPO_ROOT / "nfs" / "static-pv"  # the alternative: a static PersistentVolume
NFS_VARIANTS = [NFS_CSI, NFS_STATIC]
KUSTOMIZATIONS = [NFS_CSI, NFS_STATIC, WORKFLOWS_DIR, REPO_ROOT / "deploy"]
# Everything of the project runs here, except the NFS server (privileged) in NFS_NAMESPACE.
NAMESPACE = "mnist"
NFS_NAMESPACE = "mnist-nfs"
# Where the image puts MNIST (Dockerfile: python -m dataset --out ...); pods read it from there.
IMAGE_MNIST = "/opt/mnist/mnist.npz"
IMAGE_USER = 10001  # Dockerfile's USER; every pod's runAsUser
POD_SCRATCH = "/tmp"  # the container's own scratch space, where steps leave their output parameters for Argo


def load_yaml(path: Path) -> dict:
    """One YAML document (anchors and merge keys resolved, as kubectl and argo read them)."""
    with open(path) as stream:
        documents = [document for document in yaml.safe_load_all(stream) if document is not None]
    assert len(documents) == 1, f"{path}: one object per file, found {len(documents)}"
    return documents[0]


def kustomize_files(directory: Path) -> list[Path]:
    """The object files a kustomization lists, following directory resources (the files, not the build)."""
    kustomization = load_yaml(directory / "kustomization.yaml")
    files = []
    for resource in kustomization.get("resources", []):
        path = (directory / resource).resolve()
        if path.is_dir():
            files.extend(kustomize_files(path))
        else:
            assert path.is_file(), f"{directory}/kustomization.yaml lists {resource}, which does not exist"
            files.append(path)
    return files


def kubectl() -> str | None:
    """The kubectl cluster/build.sh built at the pinned version, else one on PATH, else None."""
    pins = dict(line.split("=", 1) for line in (REPO_ROOT / "cluster" / "versions.env").read_text().splitlines()
                if line and not line.startswith("#"))
    cache = Path(os.environ.get("CLUSTER_CACHE", Path.home() / ".cache" / "mnist-cluster"))
    pinned = cache / "bin" / f"kubernetes-{pins['KUBERNETES_VERSION']}" / "kubectl"
    return str(pinned) if pinned.is_file() else shutil.which("kubectl")


def kustomize_objects(directory: Path) -> list[dict]:
    """The objects `kubectl kustomize` builds from a kustomization: what `kubectl apply -k` sends."""
    binary = kubectl()
    if binary is None:
        pytest.skip("no kubectl: `cluster/build.sh kubernetes` builds the pinned one")
    built = subprocess.run([binary, "kustomize", str(directory)], check=True, capture_output=True, text=True).stdout
    return [manifest for manifest in yaml.safe_load_all(built) if manifest is not None]


def module_parser(module: str) -> argparse.ArgumentParser:
    """The argument parser of ``python -m <module>``: ``build_parser()`` of ``<pkg>/__main__.py`` or of the module."""
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"python -m {module}: no such module in the repository"
    entry = f"{module}.__main__" if spec.submodule_search_locations is not None else module
    assert importlib.util.find_spec(entry) is not None, f"python -m {module}: {entry} is missing"
    assert Path(importlib.util.find_spec(entry).origin).resolve().is_relative_to(REPO_ROOT), (
        f"python -m {module} would run {entry} from outside this repository"
    )
    loaded = importlib.import_module(entry)
    assert hasattr(loaded, "build_parser"), f"{entry} has no build_parser()"
    return loaded.build_parser()


def parse_arguments(module: str, arguments: list[str]) -> argparse.Namespace:
    """Parse ``arguments`` with the module's own parser; a rejected flag fails the test with argparse's message."""
    parser = module_parser(module)
    message = io.StringIO()
    try:
        with contextlib.redirect_stderr(message):
            return parser.parse_args(arguments)
    except SystemExit:
        raise AssertionError(f"python -m {module} rejects {arguments}: {message.getvalue().strip()}") from None


def python_module(container: dict) -> tuple[str, list[str]]:
    """``(module, arguments)`` of a container that runs ``python -m module args...``."""
    command = list(container.get("command", [])) + list(container.get("args", []))
    assert command[:2] == ["python", "-m"] and len(command) >= 3, f"not a `python -m <module>` command: {command}"
    return command[2], command[3:]


def local_arguments(arguments: list[str], path_map: dict[str, Path]) -> list[str]:
    """The pod's arguments with its paths mapped to local ones; a path the pod would not have fails.

    ``path_map`` maps a mount path (a directory) or an image file to where it is in the test.
    Arguments are ``--flag=value`` or ``--flag value``; any value that is an absolute path must lie
    under one of the mapped paths, so a typo such as ``/mnt/volum`` or ``/opt/mnist/mnist.np`` fails.
    """
    mapped = []
    for argument in arguments:
        flag, separator, value = argument.partition("=") if argument.startswith("--") else ("", "", argument)
        if value.startswith("/"):
            value = str(map_path(value, path_map))
        mapped.append(f"{flag}{separator}{value}" if separator else (flag or value))
    return mapped


def map_path(pod_path: str, path_map: dict[str, Path]) -> Path:
    """Where a path inside the pod is in the test; fails for a path the pod does not have."""
    for pod_prefix, local in path_map.items():
        if pod_path == pod_prefix:
            return Path(local)
        if pod_path.startswith(pod_prefix.rstrip("/") + "/") and Path(local).is_dir():
            return Path(local) / pod_path[len(pod_prefix.rstrip("/")) + 1:]
    raise AssertionError(f"{pod_path}: not a path the pod has (mounted or baked in: {sorted(path_map)})")


# --- the WorkflowTemplate --------------------------------------------------------------------------------

TAG = re.compile(r"\{\{\s*(=?)\s*(.*?)\s*\}\}")  # Argo's {{name}} and {{=expression}} tags
WORKFLOW_PARAMETER = re.compile(r"\{\{\s*workflow\.parameters\.([\w-]+)\s*\}\}")


def templates_by_name(manifest: dict) -> dict[str, dict]:
    return {template["name"]: template for template in manifest["spec"]["templates"]}


def parameter_defaults(manifest: dict) -> dict[str, str]:
    return {parameter["name"]: parameter["value"] for parameter in manifest["spec"]["arguments"]["parameters"]}


def substitute(text: str, values: dict[str, str]) -> str:
    """``text`` with each ``{{name}}`` of ``values`` replaced, as Argo does; ``values`` maps the full tag name
    (``workflow.parameters.gpus``, ``workflow.name``, ``item``...). A ``workflow.parameters`` tag that
    ``values`` lacks is an error (Argo would leave it, or fail the step); other tags are left as they are."""

    def replace(match: re.Match) -> str:
        is_expression, name = match.groups()
        if not is_expression and name in values:
            return values[name]
        assert not name.startswith("workflow.parameters."), f"{match.group(0)}: no such workflow parameter"
        return match.group(0)

    return TAG.sub(replace, text)


def workflow_values(manifest: dict, workflow_name: str, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """The global tags of a run of ``manifest`` with ``-p`` ``overrides``: its parameters and its name."""
    defaults = parameter_defaults(manifest)
    unknown = set(overrides or {}) - set(defaults)
    assert not unknown, f"no workflow parameter {sorted(unknown)}"
    values = {f"workflow.parameters.{name}": value for name, value in (defaults | (overrides or {})).items()}
    return values | {"workflow.name": workflow_name}
