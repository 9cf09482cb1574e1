"""Fixtures for the Kubernetes manifest tests: the manifests and the claim names of nfs/."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The helper modules beside this file (argo_schema, k8s_manifests), whatever pytest's import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from k8s_manifests import (  # noqa: E402
    ACCURACY_JOB_PATH,
    NFS_VARIANTS,
    WORKFLOW_PATH,
    WORKFLOW_TEMPLATE_PATH,
    kustomize_objects,
    load_yaml,
)


@pytest.fixture(scope="session")
def workflow() -> dict:
    """workflows/mnist.yaml: a run of the WorkflowTemplate."""
    return load_yaml(WORKFLOW_PATH)


@pytest.fixture(scope="session")
def workflow_template() -> dict:
    """workflows/mnist-template.yaml: the WorkflowTemplate mnist-federated, where the steps are."""
    return load_yaml(WORKFLOW_TEMPLATE_PATH)


@pytest.fixture(scope="session")
def accuracy_job() -> dict:
    return load_yaml(ACCURACY_JOB_PATH)


@pytest.fixture(scope="session")
def claim_names() -> set[str]:
    """Names of the ReadWriteMany claims nfs/ and nfs/static-pv/ create (the one every pod must mount)."""
    names = set()
    for directory in NFS_VARIANTS:
        for manifest in kustomize_objects(directory):
            if manifest["kind"] == "PersistentVolumeClaim" and "ReadWriteMany" in manifest["spec"]["accessModes"]:
                names.add(manifest["metadata"]["name"])
    return names
