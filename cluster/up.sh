#!/usr/bin/env bash
# Brings up a real single-node Kubernetes cluster with Argo Workflows on this machine, the way Kubernetes'
# own hack/local-up-cluster.sh does: each component a local process with its flags spelled out, one log per
# component in $CLUSTER_STATE/logs, pids in $CLUSTER_RUN/pids (cluster/down.sh stops exactly those).
# What it makes on the host (the links, the firewall chain, the cgroup root of the pods, sysctls) it records in
# $CLUSTER_RUN/created with the host's iptables chains as they were before, and cluster/down.sh removes exactly
# that: the chains the kubelet, kube-proxy and the CNI plugins add are the KUBE-*/CNI-* ones that are new.
#   etcd, kube-apiserver (RBAC, Node authorizer, Pod Security admission), kube-controller-manager,
#   kube-scheduler, kubelet on containerd + runc with the CNI bridge, kube-proxy (iptables), and Argo's
#   workflow-controller as the Deployment of Argo's own manifests, with its CRDs and RBAC.
# Builds what is missing first (cluster/build.sh, cluster/images.sh); once built it needs no network.
# A fresh cluster each time (etcd, certificates, kubelet state); images and the local volume are kept.
#
#   cluster/up.sh      then   source cluster/env.sh   (kubectl, argo and KUBECONFIG in this shell)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=config.sh
source "$here/config.sh"

log() { echo "[cluster $(date +%T)] $*" >&2; }
fail() { echo "cluster/up.sh: $*" >&2; exit 1; }
step="starting"  # what main is doing, for the failure message

# wait_for WHAT SECONDS COMMAND...: retry COMMAND once a second until it succeeds; an error (an object that
# does not exist yet, or has no status yet) is one more try. Fails with the last try's output.
wait_for() {
  local what=$1 seconds=$2; shift 2
  local deadline=$((SECONDS + seconds)) output
  until output=$("$@" 2>&1); do
    if ((SECONDS >= deadline)); then
      [[ -z "$output" ]] || echo "$output" | tail -n 5 >&2
      [[ ! -f "$LOGS/$what.log" ]] || { echo "--- $LOGS/$what.log:" >&2; tail -n 10 "$LOGS/$what.log" >&2; }
      fail "$what not ready after ${seconds}s (logs: $LOGS)"
    fi
    sleep 1
  done
}

# condition_true OBJECT TYPE: whether OBJECT's status has the condition TYPE and it is True; false (not an
# error to stop at) while the object or its status.conditions do not exist yet.
condition_true() {
  local status
  status=$(kubectl --kubeconfig "$ADMIN_KUBECONFIG" get "$1" \
    -o "jsonpath={.status.conditions[?(@.type==\"$2\")].status}" 2>&1) || { echo "$status"; return 1; }
  [[ "$status" == True ]] || { echo "$1: condition $2 is '${status:-absent}'"; return 1; }
}

# start NAME COMMAND...: a component in the background, its log, pid and start time recorded.
start() {
  local name=$1; shift
  step="starting $name"
  "$@" >"$LOGS/$name.log" 2>&1 &
  local pid=$!
  echo "$pid $(process_start "$pid")" >"$PIDS/$name.pid"
  log "$name started (pid $pid, log $LOGS/$name.log)"
}

# record FILE LINE: one more thing up.sh made, for cluster/down.sh to remove ($CREATED/FILE).
record() { echo "$2" >>"$CREATED/$1"; }

# claim: what up.sh will make must not exist yet, else it is not this cluster's to use or to remove (an earlier
# run's would have been removed by down.sh). Records the host's iptables chains as they are before anything
# starts: down.sh removes the KUBE-*/CNI-* chains that are new since.
claim() {
  [[ ! -e "$CREATED" ]] || fail "$CREATED remains from a run that cluster/down.sh could not clean up"
  local link mount
  for link in "$NODE_LINK" "$BRIDGE"; do
    ! ip link show "$link" >/dev/null 2>&1 ||
      fail "network link $link exists but this cluster did not make it (ip link del $link if it is a leftover)"
  done
  ! iptables -w 5 -S "$GUARD_CHAIN" >/dev/null 2>&1 ||
    fail "iptables chain $GUARD_CHAIN exists but this cluster did not make it"
  for mount in $(cgroup_mounts); do
    [[ ! -e "$mount/$CGROUP_ROOT" ]] ||
      fail "cgroup $mount/$CGROUP_ROOT exists but this cluster did not make it (rmdir it if it is a leftover)"
  done
  mkdir -p "$CREATED"
  host_chains >"$CREATED/chains.before"
  if command -v nft >/dev/null; then nft list tables >"$CREATED/nft-tables.before" 2>/dev/null; fi
  record links "$BRIDGE"  # made by the CNI bridge plugin at the first pod, with a veth per pod on it
}

# The pods' cgroup root (the kubelet's cgroupRoot) in every hierarchy: the kubelet puts kubepods under it.
cgroups() {
  local mount
  for mount in $(cgroup_mounts); do
    record cgroups "$mount/$CGROUP_ROOT"
    [[ -d "$mount/$CGROUP_ROOT" ]] || mkdir "$mount/$CGROUP_ROOT"  # a hierarchy mounted twice has it already
    if [[ -f "$mount/cpuset.cpus" ]]; then  # a cpuset without CPUs and memory nodes takes no process
      cat "$mount/cpuset.cpus" >"$mount/$CGROUP_ROOT/cpuset.cpus"
      cat "$mount/cpuset.mems" >"$mount/$CGROUP_ROOT/cpuset.mems"
    fi
  done
}

# set_sysctl PATH VALUE: the setting, its earlier value recorded for down.sh to restore.
set_sysctl() {
  record sysctls "$1 $(cat "$1")"
  echo "$2" >"$1"
}

preflight() {
  [[ $(id -u) == 0 ]] || fail "must run as root (it starts containerd and the kubelet)"
  [[ -e /dev/kmsg ]] || fail "/dev/kmsg is missing; the kubelet needs it"
  local tool
  for tool in containerd runc ctr buildah debootstrap iptables conntrack openssl; do
    command -v "$tool" >/dev/null || fail "$tool missing: apt-get install containerd runc buildah debootstrap iptables conntrack containernetworking-plugins openssl"
  done
  [[ -x /usr/lib/cni/bridge ]] || fail "CNI plugins missing: apt-get install containernetworking-plugins"
  command -v go >/dev/null || fail "go missing: cluster/build.sh builds Kubernetes, etcd and Argo with Go 1.26"
  command -v gcc >/dev/null || fail "gcc missing: cluster/images.sh compiles Kubernetes' pause.c (apt-get install gcc libc6-dev)"
  # The Go builds and the project's image builds overlap (the CPU-bound compile beside the download-bound
  # pip installs); Argo's two images need the Go build.
  mkdir -p "$CLUSTER_CACHE"
  "$here/images.sh" pause server pipeline >"$CLUSTER_CACHE/images.log" 2>&1 &
  local images=$!
  "$here/build.sh"
  wait "$images" || { tail -n 20 "$CLUSTER_CACHE/images.log" >&2; fail "image build failed ($CLUSTER_CACHE/images.log)"; }
  "$here/images.sh" argoexec controller
}

network() {
  # A bridge without ports: a local link that sends nothing anywhere (this kernel has no dummy driver).
  record links "$NODE_LINK"
  ip link add "$NODE_LINK" type bridge
  ip addr add "$NODE_IP/32" dev "$NODE_LINK"
  ip link set "$NODE_LINK" up
  # The service range ends here, never at the default route: an address kube-proxy has not translated is
  # dropped on this machine.
  ip route add "$SERVICE_CIDR" dev "$NODE_LINK"
  set_sysctl /proc/sys/net/ipv4/ip_forward 1
  set_sysctl /proc/sys/net/bridge/bridge-nf-call-iptables 1
  # Pods reach the node and each other; whatever a pod sends to any other address is dropped.
  record chains "$GUARD_CHAIN"
  iptables -N "$GUARD_CHAIN"
  iptables -A "$GUARD_CHAIN" -i "$BRIDGE" -o "$BRIDGE" -j RETURN
  iptables -A "$GUARD_CHAIN" -i "$BRIDGE" -j DROP
  iptables -I FORWARD 1 -j "$GUARD_CHAIN"
  mkdir -p "$CLUSTER_STATE/cni/net.d"
  cat >"$CLUSTER_STATE/cni/net.d/10-mnist.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "mnist-cluster",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$CLUSTER_STATE/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

# certificate NAME CN ORGANIZATION SUBJECT_ALT_NAMES: a key and a certificate signed by the cluster's CA.
certificate() {
  local name=$1 cn=$2 organization=$3 alt_names=$4
  local subject="/CN=$cn"
  [[ -z "$organization" ]] || subject+="/O=$organization"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -subj "$subject" -out "$PKI/$name.csr" 2>/dev/null
  local extensions="extendedKeyUsage=serverAuth,clientAuth"
  [[ -z "$alt_names" ]] || extensions+=$'\n'"subjectAltName=$alt_names"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 365 \
    -extfile <(echo "$extensions") -out "$PKI/$name.crt" 2>/dev/null
  rm "$PKI/$name.csr"
}

# kubeconfig NAME: a kubeconfig for the client certificate NAME.
kubeconfig() {
  local name=$1
  cat >"$CLUSTER_STATE/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: mnist-local
    cluster: {server: "https://$NODE_IP:6443", certificate-authority: "$PKI/ca.crt"}
users:
  - name: $name
    user: {client-certificate: "$PKI/$name.crt", client-key: "$PKI/$name.key"}
contexts:
  - name: mnist-local
    context: {cluster: mnist-local, user: $name}
current-context: mnist-local
EOF
}

pki() {
  mkdir -p "$PKI" && chmod 700 "$PKI"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 365 \
    -subj "/CN=mnist-local-ca" 2>/dev/null
  openssl genrsa -out "$PKI/service-account.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/service-account.key" -pubout -out "$PKI/service-account.pub" 2>/dev/null
  certificate kube-apiserver kube-apiserver "" \
    "IP:$NODE_IP,IP:$API_SERVICE_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  certificate admin kubernetes-admin system:masters ""
  certificate kube-controller-manager system:kube-controller-manager "" ""
  certificate kube-scheduler system:kube-scheduler "" ""
  certificate kube-proxy system:kube-proxy "" ""
  certificate kubelet "system:node:$NODE_NAME" system:nodes "IP:$NODE_IP,DNS:$NODE_NAME"
  certificate kubelet-client kube-apiserver-kubelet-client system:masters ""
  local name
  for name in admin kube-controller-manager kube-scheduler kube-proxy kubelet; do kubeconfig "$name"; done
}

start_containerd() {
  mkdir -p "$CLUSTER_STATE/containerd"
  cat >"$CLUSTER_STATE/containerd.toml" <<EOF
version = 2
root = "$CLUSTER_STATE/containerd"
state = "$CLUSTER_RUN/containerd"
[grpc]
  address = "$CONTAINERD_SOCKET"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  netns_mounts_under_state_dir = true
  # root here lacks CAP_SYS_RESOURCE, so no process may lower its OOM score: the sandbox's -998 (and a
  # Guaranteed pod's -997) would fail runc's start; clamp them at containerd's own score instead.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    Root = "$RUNC_ROOT"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CLUSTER_STATE/cni/net.d"
EOF
  start containerd containerd --config "$CLUSTER_STATE/containerd.toml"
  wait_for containerd 30 ctr --address "$CONTAINERD_SOCKET" version
}

# The image archives of cluster/images.sh into containerd's k8s.io namespace, each once per change.
import_images() {
  local archive name id
  for archive in "$CLUSTER_CACHE"/images/*.tar; do
    name=$(basename "$archive" .tar)
    id=$(cat "$archive.id")
    [[ "$(cat "$CLUSTER_STATE/containerd/$name.imported" 2>/dev/null)" == "$id" ]] && continue
    log "importing $name"
    ctr --address "$CONTAINERD_SOCKET" -n k8s.io images import "$archive" >/dev/null
    echo "$id" >"$CLUSTER_STATE/containerd/$name.imported"
  done
}

start_control_plane() {
  start etcd etcd --name mnist-local --data-dir "$CLUSTER_STATE/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster mnist-local=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381
  wait_for etcd 30 curl -fsS http://127.0.0.1:2379/health

  start kube-apiserver kube-apiserver --etcd-servers=http://127.0.0.1:2379 \
    --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port=6443 \
    --tls-cert-file="$PKI/kube-apiserver.crt" --tls-private-key-file="$PKI/kube-apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --kubelet-client-certificate="$PKI/kubelet-client.crt" --kubelet-client-key="$PKI/kubelet-client.key" \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$PKI/service-account.pub" \
    --service-account-signing-key-file="$PKI/service-account.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --kubelet-preferred-address-types=InternalIP \
    --allow-privileged=false --profiling=false
  wait_for kube-apiserver 90 kubectl --kubeconfig "$ADMIN_KUBECONFIG" get --raw /readyz
  start kube-controller-manager kube-controller-manager \
    --kubeconfig="$CLUSTER_STATE/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="$CLUSTER_STATE/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="$CLUSTER_STATE/kube-controller-manager.kubeconfig" \
    --service-account-private-key-file="$PKI/service-account.key" --root-ca-file="$PKI/ca.crt" \
    --use-service-account-credentials --service-cluster-ip-range="$SERVICE_CIDR" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false
  start kube-scheduler kube-scheduler --kubeconfig="$CLUSTER_STATE/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$CLUSTER_STATE/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$CLUSTER_STATE/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false
}

start_node() {
  mkdir -p "$CLUSTER_STATE/kubelet"
  cat >"$CLUSTER_STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: "$NODE_IP"
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: Webhook}
tlsCertFile: "$PKI/kubelet.crt"
tlsPrivateKeyFile: "$PKI/kubelet.key"
containerRuntimeEndpoint: "unix://$CONTAINERD_SOCKET"
cgroupDriver: cgroupfs
cgroupRoot: "/$CGROUP_ROOT"
failSwapOn: false
failCgroupV1: false
resolvConf: /etc/resolv.conf
# Thresholds for a developer's disk, as local-up-cluster sets them explicitly.
evictionHard: {memory.available: 100Mi, nodefs.available: 2%, nodefs.inodesFree: 2%, imagefs.available: 2%}
imageGCHighThresholdPercent: 98
imageGCLowThresholdPercent: 97
serializeImagePulls: false
EOF
  start kubelet kubelet --config="$CLUSTER_STATE/kubelet.yaml" \
    --kubeconfig="$CLUSTER_STATE/kubelet.kubeconfig" --root-dir="$CLUSTER_STATE/kubelet" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP"

  cat >"$CLUSTER_STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$CLUSTER_STATE/kube-proxy.kubeconfig"}
hostnameOverride: "$NODE_NAME"
mode: iptables
clusterCIDR: "$POD_CIDR"
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
conntrack: {maxPerCore: 0}
EOF
  start kube-proxy kube-proxy --config="$CLUSTER_STATE/kube-proxy.yaml"
  step="waiting for node $NODE_NAME to be Ready"
  wait_for kubelet 120 condition_true "node/$NODE_NAME" Ready
}

# Argo from its own manifests in the pinned module: full CRDs (server-side, they are large), the controller's
# RBAC and Deployment, with our images (cluster/argo/kustomization.yaml).
install_argo() {
  local module_dir
  module_dir=$(cd "$CLUSTER_CACHE/src/argo-$ARGO_VERSION" && pwd)
  step="installing Argo's CRDs"
  kubectl --kubeconfig "$ADMIN_KUBECONFIG" apply --server-side -k "$module_dir/manifests/base/crds/full" >/dev/null
  local crd
  for crd in workflows workflowtemplates workflowtaskresults; do
    step="waiting for CRD $crd.argoproj.io to be Established"
    wait_for "CRD $crd.argoproj.io" 60 condition_true "crd/$crd.argoproj.io" Established
  done
  step="installing Argo's workflow-controller"
  mkdir -p "$CLUSTER_STATE/argo"
  cp "$here"/argo/*.yaml "$CLUSTER_STATE/argo/"
  ln -sfn "$module_dir/manifests" "$CLUSTER_STATE/argo/argo-manifests"  # kustomize takes relative paths only
  sed -i "s|@ARGO_VERSION@|$ARGO_VERSION|g" "$CLUSTER_STATE"/argo/*.yaml
  kubectl --kubeconfig "$ADMIN_KUBECONFIG" kustomize --load-restrictor LoadRestrictionsNone "$CLUSTER_STATE/argo" |
    kubectl --kubeconfig "$ADMIN_KUBECONFIG" apply -f - >/dev/null
  step="waiting for Argo's workflow-controller to roll out"
  wait_for workflow-controller 180 \
    kubectl --kubeconfig "$ADMIN_KUBECONFIG" -n argo rollout status deployment/workflow-controller --timeout=10s
}

# A start that fails half-way leaves nothing running; the logs stay for reading.
on_exit() {
  local status=$?
  ((status == 0)) && return
  log "failed at: $step (exit status $status; logs: $LOGS); tearing down what was started"
  "$here/down.sh" --quiet
}

main() {
  local started=$SECONDS
  trap on_exit EXIT
  step="checking the tools, building what is missing (cluster/build.sh, cluster/images.sh)"
  preflight
  step="removing what an earlier run left (cluster/down.sh)"
  "$here/down.sh" --quiet  # whatever a killed run left behind: processes, mounts, links, firewall rules
  step="checking that the cluster's links, chain and cgroups are free"
  rm -rf "$CLUSTER_STATE/etcd" "$CLUSTER_STATE/kubelet" "$PKI" "$LOGS" "$CLUSTER_STATE/cni"
  mkdir -p "$CLUSTER_STATE" "$LOGS" "$PIDS"
  claim
  mkdir -p "$LOCAL_VOLUME" && chown 10001:10001 "$LOCAL_VOLUME"  # the export's owner, as nfs/server sets it
  step="making the pods' cgroup root"
  cgroups
  step="making the network (links, firewall chain)"
  network
  step="making the certificates"
  pki
  start_containerd
  step="importing the images into containerd"
  import_images
  start_control_plane
  start_node
  install_argo
  log "ready in $((SECONDS - started)) s: source cluster/env.sh, then kubectl and argo talk to it"
}

main "$@"
