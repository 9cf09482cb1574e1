#!/usr/bin/env bash
# Tears down the local cluster of cluster/up.sh: stops every process it started, by the pids it recorded
# (and the containers, through runc's state under $CLUSTER_RUN), unmounts whatever is still mounted under
# its folders, and removes its links, firewall rules and pod cgroups. Safe to run twice, or after a crash;
# images ($CLUSTER_CACHE, containerd's store) and the local volume stay.
#
#   cluster/down.sh [--quiet]
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=config.sh
source "$here/config.sh"
quiet=false
[[ "${1:-}" == --quiet ]] && quiet=true
log() { $quiet || echo "[cluster $(date +%T)] $*" >&2; }

# stop NAME: TERM the recorded pid, KILL it after 10 s.
stop() {
  local name=$1 pid
  pid=$(cat "$PIDS/$name.pid" 2>/dev/null) || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    local tries
    for tries in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null
    log "$name stopped (pid $pid)"
  fi
  rm -f "$PIDS/$name.pid"
}

# Every container the cluster's containerd started, killed and deleted through runc's own state.
stop_containers() {
  local namespace_root container
  for namespace_root in "$RUNC_ROOT"/*/; do
    [[ -d "$namespace_root" ]] || continue
    for container in $(runc --root "$namespace_root" list -q 2>/dev/null); do
      runc --root "$namespace_root" kill --all "$container" KILL 2>/dev/null
      runc --root "$namespace_root" delete --force "$container" 2>/dev/null
    done
  done
  # containerd's shims for this socket (they outlive a killed containerd).
  local pid
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCKET"); do kill -9 "$pid" 2>/dev/null; done
}

unmount_all() {
  local mountpoint
  # Deepest first; a mount that stays busy is detached lazily so that nothing is left in the mount table.
  awk '{print $2}' /proc/mounts | grep -E "^($CLUSTER_STATE|$CLUSTER_RUN)(/|$)" | sort -r |
    while read -r mountpoint; do umount "$mountpoint" 2>/dev/null || umount -l "$mountpoint"; done
}

network() {
  if [[ -x "$KUBERNETES_BIN/kube-proxy" ]] && iptables -t nat -S 2>/dev/null | grep -q KUBE-; then
    "$KUBERNETES_BIN/kube-proxy" --cleanup >/dev/null 2>&1
  fi
  # The kubelet's own chains (KUBE-FIREWALL, KUBE-KUBELET-CANARY), which kube-proxy --cleanup leaves.
  local tool table chain rule
  for tool in iptables ip6tables; do
    for table in filter nat mangle; do
      "$tool" -t "$table" -S 2>/dev/null | grep -E '^-A [A-Z]+ .*-j KUBE-' | grep -vE '^-A KUBE-' | sed 's/^-A/-D/' |
        while read -r rule; do eval "$tool -t $table $rule"; done
      for chain in $("$tool" -t "$table" -S 2>/dev/null | awk '/^-N KUBE-/ {print $2}'); do "$tool" -t "$table" -F "$chain"; done
      for chain in $("$tool" -t "$table" -S 2>/dev/null | awk '/^-N KUBE-/ {print $2}'); do "$tool" -t "$table" -X "$chain"; done
    done
  done
  while iptables -D FORWARD -j "$GUARD_CHAIN" 2>/dev/null; do :; done
  iptables -F "$GUARD_CHAIN" 2>/dev/null && iptables -X "$GUARD_CHAIN" 2>/dev/null
  ip link del "$BRIDGE" 2>/dev/null
  ip link del "$NODE_LINK" 2>/dev/null
  if [[ -f "$CLUSTER_RUN/ip_forward.saved" ]]; then
    cat "$CLUSTER_RUN/ip_forward.saved" >/proc/sys/net/ipv4/ip_forward
    rm -f "$CLUSTER_RUN/ip_forward.saved"
  fi
}

# The kubelet's pod cgroups (kubepods*), deepest first, once their processes are gone.
remove_cgroups() {
  local controller
  for controller in /sys/fs/cgroup/*/; do
    [[ -d "$controller/kubepods" ]] || continue
    find "$controller/kubepods" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
}

main() {
  local name
  for name in workflow-controller kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop "$name"
  done
  stop_containers
  stop containerd
  unmount_all
  network
  remove_cgroups
  rm -rf "$CLUSTER_RUN"
  local left
  left=$(awk '{print $2}' /proc/mounts | grep -cE "^($CLUSTER_STATE|$CLUSTER_RUN)(/|$)")
  if [[ "$left" -gt 0 ]]; then echo "cluster/down.sh: $left mounts remain under $CLUSTER_STATE" >&2; return 1; fi
  log "down"
}

main "$@"
