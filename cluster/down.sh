#!/usr/bin/env bash
# Tears down the local cluster of cluster/up.sh and removes only what it made, never another cluster's
# (kind, Docker, another kubelet on this machine):
#   - processes: the pids up.sh recorded, each only while it is still the process up.sh started (the start
#     time recorded with it); the containers through runc's state under $CLUSTER_RUN; the containerd shims
#     whose command line names this cluster's containerd socket; whatever is left in the pods' cgroup root;
#   - mounts under $CLUSTER_STATE and $CLUSTER_RUN;
#   - what up.sh recorded in $CLUSTER_RUN/created: its links (and the veths on its bridge), its firewall chain,
#     its cgroup root /$CGROUP_ROOT (the kubelet's cgroupRoot, so all of kubepods), the sysctls it changed, and
#     the KUBE-*/CNI-* iptables chains that did not exist when it started (its kubelet's, kube-proxy's and CNI
#     plugins': they are stopped first, so none is made again), with the rules that jump to them.
# Safe to run twice, or after a crash; what it cannot remove it names, and it keeps the record for the next try.
# Images ($CLUSTER_CACHE, containerd's store) and the local volume stay.
#
#   cluster/down.sh [--quiet]
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=config.sh
source "$here/config.sh"
quiet=false
[[ "${1:-}" == --quiet ]] && quiet=true
log() { $quiet || echo "[cluster $(date +%T)] $*" >&2; }
problem() { echo "cluster/down.sh: $*" >&2; }

# recorded FILE: the lines of $CREATED/FILE (nothing when up.sh made none).
recorded() { cat "$CREATED/$1" 2>/dev/null; }

# same_process PID START: whether PID is still the process that started at START.
same_process() { [[ -n "$2" && "$(process_start "$1")" == "$2" ]]; }

# stop NAME: TERM the recorded process, KILL it after 10 s; a pid now used by another process is left alone.
stop() {
  local name=$1 pid start
  read -r pid start 2>/dev/null <"$PIDS/$name.pid" || [[ -n "${pid:-}" ]] || return 0
  if same_process "$pid" "${start:-}"; then
    kill "$pid" 2>/dev/null
    local tries
    for tries in $(seq 20); do same_process "$pid" "$start" || break; sleep 0.5; done
    same_process "$pid" "$start" && kill -9 "$pid" 2>/dev/null
    log "$name stopped (pid $pid)"
  elif [[ -n "$(process_start "$pid")" ]]; then
    log "$name: pid $pid is now another process (not the one started at ${start:-?}); left alone"
  fi
  rm -f "$PIDS/$name.pid"
}

# shim_of_this_cluster PID: whether PID is a containerd shim started with `-address $CONTAINERD_SOCKET`.
shim_of_this_cluster() {
  local -a args
  mapfile -d '' -t args 2>/dev/null <"/proc/$1/cmdline" || return 1
  [[ "${args[0]:-}" == *containerd-shim* ]] || return 1
  local i
  for ((i = 1; i + 1 < ${#args[@]}; i++)); do
    [[ "${args[i]}" == -address && "${args[i + 1]}" == "$CONTAINERD_SOCKET" ]] && return 0
  done
  return 1
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
  local proc pid
  for proc in /proc/[0-9]*; do
    pid=${proc#/proc/}
    shim_of_this_cluster "$pid" && kill -9 "$pid" 2>/dev/null
  done
}

# Whatever still runs in the pods' cgroup root: only this cluster's kubelet puts processes there.
kill_cgroup_processes() {
  local root pids _
  for _ in $(seq 20); do
    pids=$(recorded cgroups | while read -r root; do
      [[ -d "$root" ]] && find "$root" -name cgroup.procs -exec cat {} + 2>/dev/null
    done | sort -u)
    [[ -n "$pids" ]] || return 0
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null
    sleep 0.5
  done
  problem "processes remain in the cgroup root /$CGROUP_ROOT: ${pids//$'\n'/ }"
}

unmount_all() {
  local mountpoint
  # Deepest first; a mount that stays busy is detached lazily so that nothing is left in the mount table.
  awk '{print $2}' /proc/mounts | grep -E "^($CLUSTER_STATE|$CLUSTER_RUN)(/|$)" | sort -r |
    while read -r mountpoint; do umount "$mountpoint" 2>/dev/null || umount -l "$mountpoint"; done
}

# new_chains: "TOOL TABLE CHAIN" for each KUBE-*/CNI-* chain that exists now but did not when up.sh started.
new_chains() {
  [[ -f "$CREATED/chains.before" ]] || return 0
  host_chains | grep -E ' (KUBE-|CNI-)[^ ]*$' | grep -vxF -f "$CREATED/chains.before"
}

# remove_chains TOOL TABLE CHAIN...: the rules of other chains that jump to these, then the chains themselves.
remove_chains() {
  local tool=$1 table=$2; shift 2
  local -A ours=()
  local chain rule
  for chain in "$@"; do ours[$chain]=1; done
  "$tool" -w 5 -t "$table" -S 2>/dev/null | while read -r rule; do
    [[ "$rule" =~ ^-A\ ([^ ]+)\ .*-[jg]\ ([^ ]+) ]] || continue
    [[ -z "${ours[${BASH_REMATCH[1]}]:-}" && -n "${ours[${BASH_REMATCH[2]}]:-}" ]] || continue
    eval "$tool -w 5 -t $table -D ${rule#-A }"
  done
  for chain in "$@"; do "$tool" -w 5 -t "$table" -F "$chain"; done
  for chain in "$@"; do "$tool" -w 5 -t "$table" -X "$chain"; done
}

firewall() {
  local tool table chains
  new_chains | awk '{print $1, $2}' | sort -u | while read -r tool table; do
    chains=$(new_chains | awk -v t="$tool" -v tb="$table" '$1 == t && $2 == tb {print $3}')
    # shellcheck disable=SC2086
    remove_chains "$tool" "$table" $chains
  done
  local chain
  for chain in $(recorded chains); do
    while iptables -w 5 -D FORWARD -j "$chain" 2>/dev/null; do :; done
    iptables -w 5 -F "$chain" 2>/dev/null && iptables -w 5 -X "$chain" 2>/dev/null
  done
  # iptables-nft makes a table when it is first used: one that did not exist before up.sh and is now empty
  # (no chain or rule of its own, every policy ACCEPT) goes too.
  [[ -f "$CREATED/nft-tables.before" ]] && command -v nft >/dev/null || return 0
  local family name tool rules
  nft list tables 2>/dev/null | grep -vxF -f "$CREATED/nft-tables.before" | while read -r _ family name; do
    case "$family" in ip) tool=iptables ;; ip6) tool=ip6tables ;; *) continue ;; esac
    [[ "$name" =~ ^(filter|nat|mangle|raw)$ ]] || continue
    rules=$("$tool" -w 5 -t "$name" -S 2>/dev/null) || continue
    [[ -n "$rules" ]] || continue
    grep -qvE '^-P [A-Z]+ ACCEPT$' <<<"$rules" || nft delete table "$family" "$name" 2>/dev/null
  done
}

network() {
  firewall
  local link veth
  for link in $(recorded links); do
    ip link show "$link" >/dev/null 2>&1 || continue
    # The pods' veths on the cluster's bridge (their pods' network namespaces went with the containers).
    for veth in $(ip -o link show master "$link" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
      ip link del "$veth" 2>/dev/null
    done
    ip link del "$link"
  done
  local path value
  recorded sysctls | while read -r path value; do echo "$value" >"$path"; done
}

# The cgroup root /$CGROUP_ROOT in each hierarchy, deepest first, once its processes are gone.
remove_cgroups() {
  local root
  for root in $(recorded cgroups); do
    [[ -d "$root" ]] && find "$root" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
}

# leftovers: what was to be removed but is still there, one a line.
leftovers() {
  awk '{print $2}' /proc/mounts | grep -E "^($CLUSTER_STATE|$CLUSTER_RUN)(/|$)" | sed 's/^/mount /'
  local link chain root
  for link in $(recorded links); do ip link show "$link" >/dev/null 2>&1 && echo "link $link"; done
  for chain in $(recorded chains); do iptables -w 5 -S "$chain" >/dev/null 2>&1 && echo "iptables chain $chain"; done
  new_chains | sed 's/^/chain /'
  for root in $(recorded cgroups); do [[ -d "$root" ]] && echo "cgroup $root"; done
  return 0
}

# Names of config.sh that exist without a record: not this run's to remove (an older up.sh's, or another's).
unrecorded() {
  [[ -d "$CREATED" ]] && return
  local link mount
  for link in "$NODE_LINK" "$BRIDGE"; do
    ip link show "$link" >/dev/null 2>&1 && problem "left alone, not recorded as this cluster's: link $link"
  done
  iptables -w 5 -S "$GUARD_CHAIN" >/dev/null 2>&1 && problem "left alone, not recorded as this cluster's: chain $GUARD_CHAIN"
  for mount in $(cgroup_mounts); do
    [[ -e "$mount/$CGROUP_ROOT" ]] && problem "left alone, not recorded as this cluster's: cgroup $mount/$CGROUP_ROOT"
  done
  return 0
}

main() {
  local name
  for name in workflow-controller kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop "$name"
  done
  stop_containers
  stop containerd
  kill_cgroup_processes
  unmount_all
  network
  remove_cgroups
  unrecorded
  local left
  left=$(leftovers)
  if [[ -n "$left" ]]; then
    problem "could not remove (the record stays in $CREATED for the next cluster/down.sh):"
    echo "$left" | sed 's/^/  /' >&2
    return 1
  fi
  rm -rf "$CLUSTER_RUN"
  log "down"
}

main "$@"
