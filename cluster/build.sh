#!/usr/bin/env bash
# Builds the Go programs of the local single-node cluster from their published Go modules, at the pins in
# cluster/versions.env, into a cache outside the repo: $CLUSTER_CACHE/bin/<project>-<version>/.
# A build is skipped when its folder is complete, so only a changed pin rebuilds.
#
#   cluster/build.sh [kubernetes|etcd|argo ...]      (default: all three, one after another)
#
# Kubernetes and etcd are consumed as modules through a small wrapper go.mod each (their own go.mod files have
# `replace` lines a dependent module does not inherit); Argo's CLI embeds ui/dist/app, which its module does
# not ship, so it builds in a writable copy of the module with Argo's own placeholder, as Argo's Makefile does
# (and the one symlink of Argo's repository that a module zip cannot carry).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=config.sh
source "$here/config.sh"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

KUBERNETES_PROGRAMS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
ARGO_PROGRAMS=(workflow-controller argoexec argo)

log() { echo "[build $(date +%T)] $*" >&2; }

# complete DIR PROGRAM... : every program is there (a build writes into a temporary folder, then renames it).
complete() {
  local dir=$1; shift
  local program
  for program in "$@"; do [[ -x "$dir/$program" ]] || return 1; done
}

build_kubernetes() {
  local out="$CLUSTER_CACHE/bin/kubernetes-$KUBERNETES_VERSION"
  complete "$out" "${KUBERNETES_PROGRAMS[@]}" && { log "kubernetes $KUBERNETES_VERSION: cached"; return; }
  local src="$CLUSTER_CACHE/src/kubernetes-$KUBERNETES_VERSION"
  local staging_version="v0${KUBERNETES_VERSION#v1}"
  mkdir -p "$src"
  # The staging modules are exactly what k8s.io/kubernetes requires at v0.0.0; each gets its published twin.
  local kubernetes_mod
  kubernetes_mod=$(module_file GoMod "k8s.io/kubernetes@$KUBERNETES_VERSION")
  {
    echo "module local/cluster/kubernetes"
    echo
    echo "go 1.24"
    echo
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    echo "replace ("
    awk '$2 == "v0.0.0" && $1 ~ /^k8s.io\// {print $1}' "$kubernetes_mod" | sort -u |
      while read -r module; do echo "	$module => $module $staging_version"; done
    echo ")"
  } > "$src/go.mod"
  local major=${KUBERNETES_VERSION#v}; major=${major%%.*}
  local minor=${KUBERNETES_VERSION#v*.}; minor=${minor%%.*}
  local ldflags="-s -w"
  local package
  for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $package.gitVersion=$KUBERNETES_VERSION -X $package.gitMajor=$major -X $package.gitMinor=$minor"
    ldflags+=" -X $package.gitTreeState=clean"
  done
  log "kubernetes $KUBERNETES_VERSION: building ${KUBERNETES_PROGRAMS[*]}"
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  (cd "$src" && go build -trimpath -ldflags "$ldflags" -o "$out.tmp/" \
    "${KUBERNETES_PROGRAMS[@]/#/k8s.io/kubernetes/cmd/}")
  rm -rf "$out" && mv "$out.tmp" "$out"
  log "kubernetes $KUBERNETES_VERSION: done"
}

build_etcd() {
  local out="$CLUSTER_CACHE/bin/etcd-$ETCD_VERSION"
  complete "$out" etcd && { log "etcd $ETCD_VERSION: cached"; return; }
  local src="$CLUSTER_CACHE/src/etcd-$ETCD_VERSION"
  mkdir -p "$src"
  printf 'module local/cluster/etcd\n\ngo 1.23\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > "$src/go.mod"
  log "etcd $ETCD_VERSION: building"
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  (cd "$src" && go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3)
  rm -rf "$out" && mv "$out.tmp" "$out"
  log "etcd $ETCD_VERSION: done"
}

build_argo() {
  local out="$CLUSTER_CACHE/bin/argo-$ARGO_VERSION"
  complete "$out" "${ARGO_PROGRAMS[@]}" && { log "argo $ARGO_VERSION: cached"; return; }
  local module=github.com/argoproj/argo-workflows/v4
  local module_dir src="$CLUSTER_CACHE/src/argo-$ARGO_VERSION"
  module_dir=$(module_file Dir "$module@$ARGO_VERSION")
  rm -rf "$src" && cp -r "$module_dir" "$src" && chmod -R u+w "$src"
  mkdir -p "$src/ui/dist/app" && touch "$src/ui/dist/app/placeholder"
  # In Argo's repository the executor's Linux signal code is a symlink to the Darwin file, and Go module zips
  # carry no symlinks (argoproj/argo-workflows#9590, #13534): put the repository's link back.
  ln -sfn signal_darwin.go "$src/workflow/executor/osspecific/signal_linux.go"
  local ldflags="-s -w -X $module.version=$ARGO_VERSION -X $module.gitTag=$ARGO_VERSION -X $module.gitTreeState=clean"
  log "argo $ARGO_VERSION: building ${ARGO_PROGRAMS[*]}"
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  (cd "$src" && GOFLAGS="-mod=mod -tags=kubernetes_protomessage_one_more_release" \
    go build -trimpath -ldflags "$ldflags" -o "$out.tmp/" "${ARGO_PROGRAMS[@]/#/./cmd/}")
  rm -rf "$out" && mv "$out.tmp" "$out"
  log "argo $ARGO_VERSION: done"
}

main() {
  local targets=("$@")
  [[ ${#targets[@]} -gt 0 ]] || targets=(kubernetes etcd argo)
  local target
  for target in "${targets[@]}"; do
    case "$target" in
      kubernetes|etcd|argo) "build_$target" ;;
      *) echo "build.sh: unknown target '$target' (kubernetes, etcd or argo)" >&2; return 2 ;;
    esac
  done
}

main "$@"
