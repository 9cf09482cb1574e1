#!/usr/bin/env bash
# Builds the images the local cluster runs, with buildah and no registry, as OCI archives in
# $CLUSTER_CACHE/images/ (cluster/up.sh imports them into containerd):
#   localhost/mnist-federated:cpu         the Dockerfile's pipeline target (every workflow step)
#   localhost/mnist-federated-server:cpu  the Dockerfile's server target (deploy/)
#   localhost/argoexec:$ARGO_VERSION      Argo's executor, from the binary cluster/build.sh built
#   localhost/workflow-controller:$ARGO_VERSION  Argo's controller, likewise
#   localhost/pause:3.10                  the pod sandbox, from Kubernetes' own build/pause/linux/pause.c
# The Dockerfile builds unchanged on a local base: Debian $BASE_SUITE bootstrapped from the Debian mirror apt
# already uses, with python3 and pip, passed as BASE_IMAGE (production keeps the official python image).
# Builds reuse buildah's layer cache, so a rebuild after a code change redoes only the layers after COPY.
#
#   cluster/images.sh [base|pipeline|server|argoexec|controller|pause ...]   (default: all)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
# shellcheck source=config.sh
source "$here/config.sh"
IMAGES="$CLUSTER_CACHE/images"
BASE_IMAGE=localhost/python:3.11-$BASE_SUITE-local
# pip and apt inside a build reach the registries through this machine's TLS egress, whose CA is in the
# host's bundle: mounted read-only into RUN steps, never copied into an image.
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

buildah() { command buildah --root "$CLUSTER_CACHE/buildah/storage" --runroot "$CLUSTER_CACHE/buildah/run" \
  --storage-driver overlay "$@"; }
log() { echo "[images $(date +%T)] $*" >&2; }

# export_image IMAGE FILE: the image as an OCI archive, rewritten only when the image changed.
export_image() {
  local image=$1 file="$IMAGES/$2.tar" id
  id=$(buildah inspect --type image --format '{{.FromImageID}}' "$image")
  if [[ -f "$file" && "$(cat "$file.id" 2>/dev/null)" == "$id" ]]; then return; fi
  mkdir -p "$IMAGES"
  rm -f "$file.tmp"
  buildah push --quiet "$image" "oci-archive:$file.tmp:$image" >/dev/null
  mv "$file.tmp" "$file" && echo "$id" > "$file.id"
  log "$image -> $file"
}

# from_folder IMAGE FOLDER [buildah config args...]: an image whose file system is FOLDER.
from_folder() {
  local image=$1 folder=$2; shift 2
  local container mountpoint
  container=$(buildah from scratch)
  mountpoint=$(buildah mount "$container")
  cp -a "$folder/." "$mountpoint/"
  buildah umount "$container" >/dev/null
  buildah config "$@" "$container"
  buildah commit --quiet --rm "$container" "$image" >/dev/null
}

build_base() {
  local rootfs="$CLUSTER_CACHE/base-$BASE_SUITE"
  if buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then log "$BASE_IMAGE: cached"; return; fi
  if [[ ! -d "$rootfs" ]]; then
    local mirror
    mirror=$(sed -n 's/^URIs: *\(\S*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
    mirror=${mirror:-http://deb.debian.org/debian}
    log "$BASE_IMAGE: debootstrap $BASE_SUITE from $mirror"
    rm -rf "$rootfs.tmp"
    debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates,netbase,tzdata \
      "$BASE_SUITE" "$rootfs.tmp" "$mirror" >"$CLUSTER_CACHE/debootstrap.log"
    mv "$rootfs.tmp" "$rootfs"
  fi
  # The official python image's contract: `python` and `pip` on PATH, pip free to install system-wide.
  rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
  ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
  ln -sf /usr/bin/pip3 "$rootfs/usr/local/bin/pip"
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
  from_folder "$BASE_IMAGE" "$rootfs" --env LANG=C.UTF-8 \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd python3
  log "$BASE_IMAGE: done"
}

# build_target TARGET IMAGE: one target of the project's Dockerfile.
build_target() {
  local target=$1 image=$2
  log "$image: Dockerfile target $target"
  buildah bud --quiet --layers --isolation chroot --build-arg "BASE_IMAGE=$BASE_IMAGE" --target "$target" \
    --volume "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro" -t "$image" -f "$repo/Dockerfile" "$repo" >/dev/null
}

build_pipeline() { build_base; build_target pipeline "$PIPELINE_IMAGE"; export_image "$PIPELINE_IMAGE" pipeline; }
build_server() { build_base; build_target server "$SERVER_IMAGE"; export_image "$SERVER_IMAGE" server; }

# Argo's images hold one static binary and the few /etc files it reads (Argo's Dockerfile), and run as
# Argo's user 8737.
# argo_image PROGRAM IMAGE
argo_image() {
  local program=$1 image=$2 binary="$ARGO_BIN/$1" folder
  [[ -x "$binary" ]] || { echo "images.sh: $binary missing: run cluster/build.sh argo first" >&2; return 1; }
  if [[ "$IMAGES/$program.tar" -nt "$binary" ]]; then log "$image: cached"; return; fi
  folder=$(mktemp -d)
  mkdir -p "$folder/bin" "$folder/etc" "$folder/tmp" && chmod 1777 "$folder/tmp"
  install -m 0755 "$binary" "$folder/bin/$program"
  [[ -f /etc/mime.types ]] && cp /etc/mime.types "$folder/etc/"
  echo "hosts: files dns" > "$folder/etc/nsswitch.conf"
  from_folder "$image" "$folder" --entrypoint "[\"/bin/$program\"]" --user 8737
  rm -rf "$folder"
  export_image "$image" "$program"
}

build_argoexec() { argo_image argoexec "$ARGOEXEC_IMAGE"; }
build_controller() { argo_image workflow-controller "$CONTROLLER_IMAGE"; }

# The pod sandbox's pause process, compiled from the Kubernetes module's own source.
build_pause() {
  local source folder
  if [[ -f "$IMAGES/pause.tar" ]]; then log "$PAUSE_IMAGE: cached"; return; fi
  source=$(module_file Dir "k8s.io/kubernetes@$KUBERNETES_VERSION")/build/pause/linux/pause.c
  folder=$(mktemp -d)
  gcc -Os -Wall -Werror -static -DVERSION=v3.10-local -o "$folder/pause" "$source"
  strip "$folder/pause"
  from_folder "$PAUSE_IMAGE" "$folder" --entrypoint '["/pause"]' --user 65535:65535
  rm -rf "$folder"
  export_image "$PAUSE_IMAGE" pause
}

main() {
  local targets=("$@")
  [[ ${#targets[@]} -gt 0 ]] || targets=(pause argoexec controller server pipeline)
  local target
  for target in "${targets[@]}"; do
    case "$target" in
      base|pipeline|server|argoexec|controller|pause) "build_$target" ;;
      *) echo "images.sh: unknown image '$target' (base, pipeline, server, argoexec, controller or pause)" >&2; return 2 ;;
    esac
  done
}

main "$@"
