# `source cluster/env.sh`: this shell's kubectl and argo are the pinned builds, talking to the local cluster.
# shellcheck shell=bash
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/config.sh"
export KUBECONFIG="$ADMIN_KUBECONFIG"
