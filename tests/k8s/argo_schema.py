"""Argo's own Workflow schema: the openAPIV3Schema of its full CRD, as the API server enforces it.

The Workflow CRDs of Argo Workflows v3.7 and v4.1 (Apache-2.0) are in ../shared/argo/ beside this repository
(ARGO_CRD_DIR overrides). Their schema types what Argo's Go code parses strictly, before it substitutes a
single parameter: a resource quantity must match the Kubernetes quantity grammar, an integer must be an
integer. ``typed_templates`` finds what the schema alone cannot: a ``{{...}}`` in such a field, which the
schema would accept in an int-or-string field and Argo would still refuse to decode.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import jsonschema
import yaml

from k8s_manifests import REPO_ROOT

CRD_DIR = Path(os.environ.get("ARGO_CRD_DIR", REPO_ROOT.parent / "shared" / "argo"))
ARGO_VERSIONS = ["v3.7", "v4.1"]


def crd_path(version: str) -> Path:
    return CRD_DIR / f"argoproj.io_workflows-{version}.yaml"


def without_kubernetes_extensions(node: object) -> object:
    """The schema as plain JSON Schema: x-kubernetes-int-or-string becomes integer-or-string, the rest goes."""
    if isinstance(node, list):
        return [without_kubernetes_extensions(item) for item in node]
    if not isinstance(node, dict):
        return node
    plain = {key: without_kubernetes_extensions(value) for key, value in node.items()
             if not key.startswith("x-kubernetes-") and key != "nullable"}
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in node:
        plain.pop("type", None)
        plain["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return plain


@functools.cache
def workflow_schema(version: str) -> dict:
    """The Workflow CRD's openAPIV3Schema for an Argo version (``v3.7``, ``v4.1``)."""
    path = crd_path(version)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Argo's Workflow CRD is missing (expected in ../shared/argo/, or set ARGO_CRD_DIR)")
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return without_kubernetes_extensions(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def as_workflow(manifest: dict) -> dict:
    """A WorkflowTemplate as the Workflow it makes (the same spec), for the Workflow schema."""
    if manifest["kind"] == "Workflow":
        return manifest
    return {**manifest, "kind": "Workflow", "metadata": {"generateName": f"{manifest['metadata']['name']}-"}}


def schema_errors(manifest: dict, version: str) -> list[str]:
    """Every violation of Argo's schema, as ``path: message``."""
    validator = jsonschema.Draft7Validator(workflow_schema(version))
    return sorted(f"{'/'.join(map(str, error.path))}: {error.message}" for error in validator.iter_errors(as_workflow(manifest)))


def strictly_typed(schema: dict) -> bool:
    """A field Argo decodes into a number or a quantity: integer, number or boolean, or a pattern (quantities)."""
    return schema.get("type") in ("integer", "number", "boolean") or "pattern" in schema


def child_schema(schema: dict, key: object) -> dict | None:
    if isinstance(key, int):
        return schema.get("items")
    if key in schema.get("properties", {}):
        return schema["properties"][key]
    additional = schema.get("additionalProperties")
    return additional if isinstance(additional, dict) else None


def typed_templates(manifest: dict, version: str) -> list[str]:
    """Paths of fields Argo types as an integer or a quantity that hold a ``{{...}}`` template."""
    found = []

    def visit(value: object, schema: dict | None, path: str) -> None:
        if schema is None:
            return
        if isinstance(value, dict):
            for key, item in value.items():
                visit(item, child_schema(schema, key), f"{path}/{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                visit(item, child_schema(schema, index), f"{path}[{index}]")
        elif isinstance(value, str) and "{{" in value and strictly_typed(schema):
            found.append(f"{path}: {value!r}")

    visit(as_workflow(manifest), workflow_schema(version), "")
    return found


@functools.cache
def quantity_pattern() -> str:
    """The Kubernetes quantity grammar, as Argo's CRD states it for resource limits."""
    container = workflow_schema(ARGO_VERSIONS[-1])["properties"]["spec"]["properties"]["templates"]["items"]["properties"]["container"]
    return container["properties"]["resources"]["properties"]["limits"]["additionalProperties"]["pattern"]
