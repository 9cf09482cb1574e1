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
# The kubelet's cgroupRoot: every pod's cgroup lies under /$CGROUP_ROOT in each cgroup hierarchy, apart from
# other kubelets' /kubepods.
CGROUP_ROOT=${CGROUP_ROOT:-mnist-cluster}

KUBERNETES_BIN="$CLUSTER_CACHE/bin/kubernetes-$KUBERNETES_VERSION"
ETCD_BIN="$CLUSTER_CACHE/bin/etcd-$ETCD_VERSION"
ARGO_BIN="$CLUSTER_CACHE/bin/argo-$ARGO_VERSION"
PKI="$CLUSTER_STATE/pki"
LOGS="$CLUSTER_STATE/logs"
PIDS="$CLUSTER_RUN/pids"       # NAME.pid: "PID STARTTIME" (/proc/PID/stat), so a reused pid is never stopped
CREATED="$CLUSTER_RUN/created" # what up.sh found and made on the host; down.sh removes exactly what it records
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

# process_start PID: the process's start time (clock ticks after boot, field 22 of /proc/PID/stat); nothing
# when there is no such process or it is a zombie. A pid recorded with its start time names that process only.
process_start() {
  local stat fields
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  read -ra fields <<<"${stat##*) }"  # the fields after the command name, which may hold spaces and ')'
  [[ "${fields[0]}" != Z ]] && echo "${fields[19]}"
  return 0
}

# host_chains: the user-defined iptables chains of this machine, "TOOL TABLE CHAIN" a line (ip and ip6).
host_chains() {
  local tool table
  for tool in iptables ip6tables; do
    for table in filter nat mangle raw; do
      "$tool" -w 5 -t "$table" -S 2>/dev/null | awk -v prefix="$tool $table" '$1 == "-N" {print prefix, $2}'
    done
  done
}

# cgroup_mounts: every cgroup hierarchy's mount point (v1 controllers, named hierarchies, the v2 tree).
cgroup_mounts() { awk '$3 == "cgroup" || $3 == "cgroup2" {print $2}' /proc/mounts; }
