# shellcheck shell=bash
# Privacy checks for the cluster test, sourced by cluster/e2e.sh (issue 24): bash functions only, nothing runs
# when this file is sourced. Needs kubectl on the local cluster and the web demo deployed (deploy/, step 5).

# check_demo_cannot_read_runs: the internet-facing demo pod mounts only the volume's models/ (subPath, read-only):
# nothing under runs/ (shards, raw client updates, DP's noise seeds in aggregate.json) is reachable from inside it.
# Prints one line and returns non-zero on the first thing it finds.
check_demo_cannot_read_runs() {
  local listing
  # The mount holds the published models only: models/mnist/<version>/..., nothing else.
  listing=$(kubectl -n mnist exec deploy/mnist-web -- ls -A /mnt/volume/models) || {
    echo "check_demo_cannot_read_runs: cannot list /mnt/volume/models in deploy/mnist-web" >&2
    return 1
  }
  if [ "$listing" != "mnist" ]; then
    echo "check_demo_cannot_read_runs: /mnt/volume/models in the demo pod holds more than mnist: ${listing//$'\n'/ }" >&2
    return 1
  fi
  # Neither the claim's root nor its runs/ may be visible anywhere in the pod: /mnt/volume is only the mount point.
  listing=$(kubectl -n mnist exec deploy/mnist-web -- ls -A /mnt/volume) || return 1
  if [ "$listing" != "models" ]; then
    echo "check_demo_cannot_read_runs: /mnt/volume in the demo pod holds more than models: ${listing//$'\n'/ }" >&2
    return 1
  fi
  if ! kubectl -n mnist exec deploy/mnist-web -- sh -c 'test ! -e /mnt/volume/runs && test ! -e /mnt/volume/models/../runs && ! grep -q " /mnt/volume " /proc/mounts'; then
    echo "check_demo_cannot_read_runs: runs/ (or the whole claim) is reachable from the demo pod" >&2
    return 1
  fi
  # Read-only: the pod cannot write into models/ either.
  if kubectl -n mnist exec deploy/mnist-web -- sh -c 'touch /mnt/volume/models/.write-test' 2>/dev/null; then
    echo "check_demo_cannot_read_runs: the demo pod can write to the models/ mount" >&2
    return 1
  fi
}
