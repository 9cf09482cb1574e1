# Settings of the local single-node cluster, shared by up.sh, down.sh and e2e.sh (sourced, not run).
# Every address is on this machine: the node IP and the service range sit on a local link, the pods on a
# bridge, and a firewall chain drops whatever a pod sends anywhere else.
# shellcheck shell=bash
cluster_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$cluster_dir/versions.env"

CLUSTER_CACHE=${CLUSTER_CACHE:-$HOME/.cache/mnist-cluster}  # Go builds and image archives, kept across runs
CLUSTER_STATE=${CLUSTER_STATE:-/var/lib/mnist-cluster}       # etcd, certificates, kubelet, containerd, logs
CLUSTER_RUN=${CLUSTER_RUN:-/run/mnist-cluster}               # sockets and pid files
NODE_NAME=${NODE_NAME:-mnist-node}
NODE_IP=${NODE_IP:-10.200.0.1}            # API server, kubelet and NodePorts: on the local link NODE_LINK
SERVICE_CIDR=${SERVICE_CIDR:-10.201.0.0/24}
API_SERVICE_IP=${API_SERVICE_IP:-10.201.0.1}  # the `kubernetes` Service: the first address of SERVICE_CIDR
POD_CIDR=${POD_CIDR:-10.202.0.0/24}
NODE_LINK=${NODE_LINK:-mnist0}
BRIDGE=${BRIDGE:-mnist-cni0}
GUARD_CHAIN=MNIST-CLUSTER-GUARD

KUBERNETES_BIN="$CLUSTER_CACHE/bin/kubernetes-$KUBERNETES_VERSION"
ETCD_BIN="$CLUSTER_CACHE/bin/etcd-$ETCD_VERSION"
ARGO_BIN="$CLUSTER_CACHE/bin/argo-$ARGO_VERSION"
PKI="$CLUSTER_STATE/pki"
LOGS="$CLUSTER_STATE/logs"
PIDS="$CLUSTER_RUN/pids"
CONTAINERD_SOCKET="$CLUSTER_RUN/containerd.sock"
RUNC_ROOT="$CLUSTER_RUN/runc"
ADMIN_KUBECONFIG="$CLUSTER_STATE/admin.kubeconfig"
LOCAL_VOLUME="$CLUSTER_STATE/volume"  # the hostPath behind cluster/local-volume/, the NFS export's stand-in

# The images the cluster runs (cluster/images.sh builds them, up.sh imports them into containerd).
PIPELINE_IMAGE=localhost/mnist-federated:cpu
SERVER_IMAGE=localhost/mnist-federated-server:cpu
ARGOEXEC_IMAGE=localhost/argoexec:$ARGO_VERSION
CONTROLLER_IMAGE=localhost/workflow-controller:$ARGO_VERSION
PAUSE_IMAGE=localhost/pause:3.10

export PATH="$KUBERNETES_BIN:$ETCD_BIN:$ARGO_BIN:$PATH"

# module_file FIELD MODULE@VERSION: a field of `go mod download -json` (Dir: the module's read-only source in
# the module cache; GoMod: its go.mod), fetching the module from the Go module proxy when it is not cached.
module_file() {
  GOTOOLCHAIN=local go mod download -json "$2" | sed -n "s/.*\"$1\": \"\(.*\)\",/\1/p"
}
