"""Every Kubernetes object validates as strictly as the API server would, and the objects fit together."""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest

from k8s_manifests import (
    ACCURACY_JOB_PATH,
    IMAGE_MNIST,
    IMAGE_USER,
    KUSTOMIZATIONS,
    NAMESPACE,
    NFS_CSI,
    NFS_NAMESPACE,
    NFS_STATIC,
    NFS_VARIANTS,
    REPO_ROOT,
    WORKFLOW_PATH,
    WORKFLOWS_DIR,
    kustomize_files,
    kustomize_objects,
    load_yaml,
)

# The oldest Kubernetes the README promises, and the newest schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ["1.32", kubernetes_validate.latest_version()]
# Kubernetes objects; the WorkflowTemplate (an Argo custom resource) is checked against Argo's schema instead.
OBJECT_FILES = sorted(path for path in {path for directory in KUSTOMIZATIONS for path in kustomize_files(directory)}
                      | {ACCURACY_JOB_PATH} if not load_yaml(path)["apiVersion"].startswith("argoproj.io/"))
POD_OWNERS = ("Deployment", "Job")
# Applied with `argo submit` or `kubectl create` (generated names), never by a kustomization.
SUBMITTED_FILES = {WORKFLOW_PATH, ACCURACY_JOB_PATH}


def relative(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def pod_spec(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]


def objects_of(kind: str) -> list[dict]:
    return [load_yaml(path) for path in OBJECT_FILES if load_yaml(path)["kind"] == kind]


def by_name(kind: str, name: str) -> dict:
    (found,) = [manifest for manifest in objects_of(kind) if manifest["metadata"]["name"] == name]
    return found


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", OBJECT_FILES, ids=relative)
def test_object_validates_strictly(path, version):
    """Unknown fields, wrong types and missing required fields fail, as `kubectl apply --validate=strict` would."""
    kubernetes_validate.validate(load_yaml(path), version, strict=True)


def test_strict_validation_catches_an_unknown_field():
    """Guards the guard: a misspelt field must not pass silently."""
    manifest = load_yaml(REPO_ROOT / "deploy" / "mnist-web-deployment.yaml")
    pod_spec(manifest)["containers"][0]["livenesProbe"] = {"httpGet": {"path": "/healthz", "port": 8080}}
    with pytest.raises(kubernetes_validate.ValidationError, match="livenesProbe"):
        kubernetes_validate.validate(manifest, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=relative)
def test_kustomization_is_plain(directory):
    """Only fields whose meaning is obvious, and a header comment, as in every manifest."""
    kustomization = load_yaml(directory / "kustomization.yaml")
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    assert set(kustomization) <= {"apiVersion", "kind", "namespace", "resources", "images"}


def test_every_manifest_file_is_applied():
    """No object file in nfs/ or deploy/ that `kubectl apply -k` would silently leave out."""
    on_disk = {path.resolve() for folder in ("nfs", "deploy", "workflows") for path in (REPO_ROOT / folder).rglob("*.yaml")
               if path.name != "kustomization.yaml" and path not in SUBMITTED_FILES}
    applied = {path for directory in KUSTOMIZATIONS for path in kustomize_files(directory)}
    assert on_disk == applied


@pytest.mark.parametrize("path", OBJECT_FILES + [directory / "kustomization.yaml" for directory in KUSTOMIZATIONS],
                         ids=relative)
def test_manifest_opens_with_a_comment(path):
    assert path.read_text().startswith("#"), f"{relative(path)}: start with a comment saying what it is and how to apply it"


def all_objects() -> list[dict]:
    return [manifest for directory in KUSTOMIZATIONS for manifest in kustomize_objects(directory)]


def test_namespaces_the_project_uses():
    """The NFS server alone in mnist-nfs (privileged), everything else in mnist: pods mount only claims of their
    own namespace, so the claim, the workflow's pods and the demo must share one."""
    for manifest in all_objects():
        if manifest["kind"] in ("Namespace", "PersistentVolume", "StorageClass"):
            continue
        expected = NFS_NAMESPACE if manifest["metadata"]["labels"].get("app.kubernetes.io/name") == "nfs-server" else NAMESPACE
        assert manifest["metadata"].get("namespace") == expected, (manifest["kind"], manifest["metadata"]["name"])
    namespaces = {manifest["metadata"]["name"]: manifest["metadata"]["labels"] for manifest in all_objects()
                  if manifest["kind"] == "Namespace"}
    assert set(namespaces) == {NAMESPACE, NFS_NAMESPACE}
    assert namespaces[NFS_NAMESPACE]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert namespaces[NAMESPACE]["pod-security.kubernetes.io/warn"] == "restricted"
    assert namespaces[NAMESPACE]["pod-security.kubernetes.io/audit"] == "restricted"
    assert namespaces[NAMESPACE]["pod-security.kubernetes.io/enforce"] in ("baseline", "restricted")


@pytest.mark.parametrize("directory", NFS_VARIANTS, ids=relative)
def test_nfs_variant_makes_the_shared_claim(directory):
    """nfs/ and nfs/static-pv/ both make a ReadWriteMany claim named mnist-volume that the workloads mount."""
    claims = [manifest for manifest in kustomize_objects(directory)
              if manifest["kind"] == "PersistentVolumeClaim" and "ReadWriteMany" in manifest["spec"]["accessModes"]]
    assert [(claim["metadata"]["name"], claim["metadata"]["namespace"]) for claim in claims] == [("mnist-volume", NAMESPACE)]


def nfs_service_address(directory: Path) -> str:
    (service,) = [manifest for manifest in kustomize_objects(directory) if manifest["kind"] == "Service"]
    return f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"


def test_static_volume_binds_to_the_claim_on_the_in_cluster_server():
    objects = {(manifest["kind"], manifest["metadata"]["name"]): manifest for manifest in kustomize_objects(NFS_STATIC)}
    volume = objects["PersistentVolume", "mnist-volume-nfs"]
    claim = objects["PersistentVolumeClaim", "mnist-volume"]
    assert volume["spec"]["accessModes"] == ["ReadWriteMany"]
    assert volume["spec"]["nfs"]["server"] == nfs_service_address(NFS_STATIC)
    assert volume["spec"]["claimRef"] == {"namespace": claim["metadata"]["namespace"], "name": "mnist-volume"}
    assert claim["spec"]["volumeName"] == volume["metadata"]["name"]
    assert claim["spec"]["storageClassName"] == volume["spec"]["storageClassName"] == ""


def test_default_volume_uses_the_csi_driver_nfs_storage_class():
    objects = {(manifest["kind"], manifest["metadata"]["name"]): manifest for manifest in kustomize_objects(NFS_CSI)}
    (storage_class,) = [manifest for (kind, _), manifest in objects.items() if kind == "StorageClass"]
    assert storage_class["provisioner"] == "nfs.csi.k8s.io"
    assert storage_class["parameters"]["server"] == nfs_service_address(NFS_CSI)
    assert objects["PersistentVolumeClaim", "mnist-volume"]["spec"]["storageClassName"] == storage_class["metadata"]["name"]


def test_nfs_server_exports_its_own_claim_to_the_image_user():
    deployment = by_name("Deployment", "nfs-server")
    spec = pod_spec(deployment)
    (storage,) = spec["volumes"]
    assert storage["persistentVolumeClaim"]["claimName"] == by_name("PersistentVolumeClaim", "nfs-server-storage")["metadata"]["name"]
    (init,) = spec["initContainers"]
    assert f"chown {IMAGE_USER}:{IMAGE_USER} /exports" in " ".join(init["command"])
    service = by_name("Service", "nfs-server")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("manifest", [load_yaml(path) for path in OBJECT_FILES if load_yaml(path)["kind"] in POD_OWNERS],
                         ids=lambda manifest: manifest["metadata"].get("name") or manifest["metadata"]["generateName"])
def test_every_container_requests_cpu_and_memory(manifest):
    spec = pod_spec(manifest)
    for container in spec.get("initContainers", []) + spec["containers"]:
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), container["name"]


@pytest.mark.parametrize("path", [REPO_ROOT / "deploy" / "mnist-web-deployment.yaml", ACCURACY_JOB_PATH], ids=relative)
def test_project_pods_run_as_the_image_user_and_mount_the_claim_read_only(path, claim_names):
    spec = pod_spec(load_yaml(path))
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == IMAGE_USER
    claims = {volume["name"]: volume["persistentVolumeClaim"] for volume in spec["volumes"] if "persistentVolumeClaim" in volume}
    assert {claim["claimName"] for claim in claims.values()} <= claim_names and claims
    assert all(claim.get("readOnly") for claim in claims.values())
    for container in spec["containers"]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        for mount in container["volumeMounts"]:
            if mount["name"] in claims:
                # Only the published models: nothing under runs/ (shards, raw updates, noise seeds) is in the pod.
                assert mount["readOnly"] is True and mount.get("subPath") == "models"
                assert mount["mountPath"] == "/mnt/volume/models"


def test_web_demo_runs_gunicorn_with_probes_on_the_published_models():
    deployment = load_yaml(REPO_ROOT / "deploy" / "mnist-web-deployment.yaml")
    (container,) = pod_spec(deployment)["containers"]
    assert container["command"] == ["gunicorn", "-c", "server/gunicorn.conf.py", "server:create_app()"]
    assert (REPO_ROOT / "server" / "gunicorn.conf.py").is_file(), "the Deployment runs server/gunicorn.conf.py"
    environment = {variable["name"]: variable["value"] for variable in container["env"]}
    (volume_mount,) = [mount for mount in container["volumeMounts"] if mount["name"] == "volume"]
    assert environment["MNIST_MODEL_DIR"] == f"{volume_mount['mountPath']}/mnist" and volume_mount["subPath"] == "models"
    (port,) = container["ports"]
    assert port["containerPort"] == int(environment["PORT"]) == 8080
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert deployment["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    service = load_yaml(REPO_ROOT / "deploy" / "mnist-web-service.yaml")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]


def test_accuracy_job_evaluates_the_published_model_once(accuracy_job):
    assert "generateName" in accuracy_job["metadata"], "made with `kubectl create -f`, once per test"
    assert accuracy_job["spec"]["backoffLimit"] == 0
    (container,) = pod_spec(accuracy_job)["containers"]
    assert container["command"] == ["python", "-m", "evaluator"]
    assert f"--data={IMAGE_MNIST}" in container["args"]
    assert any(argument.startswith("--min-accuracy=") for argument in container["args"])


# --- the image -----------------------------------------------------------------------------------------


def dockerfile() -> str:
    return (REPO_ROOT / "Dockerfile").read_text()


def test_image_bakes_mnist_where_the_manifests_read_it():
    assert f"RUN python -m dataset --out {IMAGE_MNIST}" in dockerfile()


def test_image_runs_as_the_numeric_user_of_the_manifests():
    users = re.findall(r"^USER\s+(\S+)", dockerfile(), flags=re.MULTILINE)  # one per stage (server, pipeline)
    assert users and {user.split(":")[0] for user in users} == {str(IMAGE_USER)}


def image_requirements(tensorflow: str) -> list[str]:
    """The requirement lines the pipeline stage installs for its TENSORFLOW build argument (the sed of the Dockerfile)."""
    (sed,) = re.findall(r'sed "s/\^tensorflow-cpu==/\$\{TENSORFLOW\}==/" requirements.txt', dockerfile())
    assert sed
    lines = (REPO_ROOT / "requirements.txt").read_text().splitlines()
    return [re.sub(r"^tensorflow-cpu==", f"{tensorflow}==", line) for line in lines]


def test_gpu_image_installs_tensorflow_and_cuda_at_the_pinned_version():
    """TensorFlow's documented pip route on the same slim base: tensorflow[and-cuda], the version of the CPU pin."""
    text = dockerfile()
    assert re.search(r"^ARG TENSORFLOW=tensorflow-cpu$", text, flags=re.MULTILINE)
    assert "--build-arg TENSORFLOW='tensorflow[and-cuda]'" in text
    # Both stages start from BASE_IMAGE, the official slim image unless a build passes another (cluster/images.sh).
    assert set(re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE)) == {"${BASE_IMAGE}"}
    assert re.search(r"^ARG BASE_IMAGE=python:3.11-slim-bookworm$", text, flags=re.MULTILINE)
    (cpu,) = [line for line in image_requirements("tensorflow-cpu") if line.startswith("tensorflow")]
    (gpu,) = [line for line in image_requirements("tensorflow[and-cuda]") if line.startswith("tensorflow")]
    version = cpu.split("#")[0].strip().removeprefix("tensorflow-cpu==")
    assert gpu.split("#")[0].strip() == f"tensorflow[and-cuda]=={version}"


def test_images_install_no_test_tools():
    """Tests, validation and benchmarks live in requirements-dev.txt, which no image installs."""
    runtime = (REPO_ROOT / "requirements.txt").read_text() + (REPO_ROOT / "requirements-server.txt").read_text()
    for tool in ("pytest", "playwright", "kubernetes-validate", "hera", "jsonschema"):
        assert not re.search(rf"^{tool}==", runtime, flags=re.MULTILINE), tool
    assert "requirements-dev.txt" not in dockerfile()


def test_dockerignore_keeps_every_package_the_manifests_run():
    ignored = {line.strip().rstrip("/") for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    needed = {"common", "dataset", "trainer", "splitter", "aggregator", "evaluator", "publisher", "server", "requirements.txt",
              "requirements-server.txt"}
    assert not needed & ignored


# --- RBAC and Pod Security -----------------------------------------------------------------------------

EXECUTOR_RULES = [{"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]}]


def workflow_objects(kind: str) -> list[dict]:
    return [manifest for manifest in kustomize_objects(WORKFLOWS_DIR) if manifest["kind"] == kind]


def test_workflow_pods_run_as_a_service_account_with_the_executors_minimum(workflow_template):
    """Argo's documented executor minimum ("Workflow RBAC", v3.4+), bound to the workflow's account, nothing more."""
    (account,) = workflow_objects("ServiceAccount")
    (role,) = workflow_objects("Role")
    (binding,) = workflow_objects("RoleBinding")
    assert workflow_template["spec"]["serviceAccountName"] == account["metadata"]["name"]
    assert role["rules"] == EXECUTOR_RULES
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": account["metadata"]["namespace"]}]
    assert not workflow_objects("ClusterRole") and not workflow_objects("ClusterRoleBinding")


# Pod Security's `restricted` profile is judged by the real API server: cluster/e2e.sh enforces it on the
# namespace mnist and runs every pod of the project there. The GPU trainer, which no CPU cluster runs, shares
# every container's securityContext through the &component anchor; tests/k8s/test_workflow.py checks each
# container's settings and that the two trainers differ only in resources.


def test_the_privileged_nfs_server_lives_in_its_own_namespace():
    """The one privileged pod (nfsd is a kernel server) stays out of mnist, which enforces Pod Security."""
    (server,) = [manifest for manifest in kustomize_objects(NFS_CSI) if manifest["metadata"]["name"] == "nfs-server"
                 and manifest["kind"] == "Deployment"]
    assert pod_spec(server)["containers"][0]["securityContext"]["privileged"] is True
    assert server["metadata"]["namespace"] == NFS_NAMESPACE
