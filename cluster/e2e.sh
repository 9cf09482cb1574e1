#!/usr/bin/env bash
# The cluster end-to-end test: brings up the local single-node cluster (cluster/up.sh), runs the production
# commands of docs/kubernetes.md against it, and tears it down (cluster/down.sh) even when a step fails.
#   1 kubectl apply -k workflows/, with Pod Security `restricted` enforced on the namespace
#   2 the claim mnist-volume bound (cluster/local-volume/, the NFS claim's stand-in)
#   3 argo submit workflows/mnist.yaml: 3 workers, 2 rounds, 2 long-lived trainer pods: pods per run, progress
#   4 argo submit --from workflowtemplate/mnist-federated: 2 of 4 clients sampled, Dirichlet split
#   faults, each run checked against step 3's accuracy per round (exact resume): a trainer pod deleted mid-round
#   and later the coordinator's; a trainer pod force-deleted and later the Argo controller's pod; a client whose
#   shard is corrupt (min-clients goes on without it); a min-accuracy the model cannot reach; bad parameters;
#   an image that cannot be pulled
#   5 the web demo (deploy/ with the local image): /readyz, only models/ mounted (read-only, no runs/), the page,
#     a digit uploaded through a port-forward
#   6 workflows/accuracy-test.yaml as a Job: passes, and fails above the model's accuracy
# Prints one line per check and closes with "N passed, N failed"; exits non-zero if any check failed.
#
#   cluster/e2e.sh            (root; `make cluster-test` runs it after `make setup`)
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
# shellcheck source=config.sh
source "$here/config.sh"
# shellcheck source=e2e-privacy.sh
source "$here/e2e-privacy.sh"
cd "$repo"
PYTHON=${PYTHON:-$repo/.venv/bin/python}
export KUBECONFIG="$ADMIN_KUBECONFIG"
IMAGE_FLAGS=(-p "image=$PIPELINE_IMAGE" -p gpus=0)
# This node has 2 cores: trainers ask for half a core each (production asks 2), so the semaphore, not the
# node's CPU, decides how many run at once.
SMALL_NODE=(-p trainer-cpus=500m)
passed=0
failed=0
started=$SECONDS

say() { echo "[e2e $(date +%T)] $*"; }
# check NAME COMMAND...: one test; its output is shown only when it fails.
check() {
  local name=$1; shift
  local output
  if output=$("$@" 2>&1); then
    passed=$((passed + 1)); say "ok    $name"
  else
    failed=$((failed + 1)); say "FAIL  $name"; echo "$output" | tail -n 30 | sed 's/^/        /'
  fi
}

# fail NAME: a check that could not even start (its run was not submitted).
fail() { failed=$((failed + 1)); say "FAIL  $1"; }

finish() {
  local status=$?
  say "tearing down"
  "$here/down.sh" || failed=$((failed + 1))
  say "took $((SECONDS - started)) s"
  echo "$passed passed, $failed failed"
  [[ $failed -eq 0 && $status -eq 0 ]] || exit 1
}
trap finish EXIT
trap 'exit 1' INT TERM  # Ctrl-C or a kill: tear down all the same

workflow_phase() { kubectl -n mnist get workflow "$1" -o 'jsonpath={.status.phase}'; }
workflow_output() {
  kubectl -n mnist get workflow "$1" -o "jsonpath={.status.outputs.parameters[?(@.name==\"$2\")].value}"
}
# submit ARGS...: `argo submit -n mnist ARGS -o name`, waited for; prints the workflow's name.
submit() {
  local name
  name=$(argo submit -n mnist "$@" -o name) || return 1
  argo wait -n mnist "$name" >/dev/null 2>&1
  echo "$name"
}
expect_phase() { [[ "$(workflow_phase "$1")" == "$2" ]] || { argo get -n mnist "$1"; return 1; }; }
# pods_gone NAME: no pod of workflow NAME is left within a minute (Argo deletes them after the run).
pods_gone() {
  local _
  for _ in $(seq 60); do
    [[ -z "$(kubectl -n mnist get pods -l "workflows.argoproj.io/workflow=$1" -o name)" ]] && return 0
    sleep 1
  done
  kubectl -n mnist get pods -l "workflows.argoproj.io/workflow=$1"
  return 1
}
published_versions() { ls "$LOCAL_VOLUME/models/mnist" 2>/dev/null | grep -c '^[0-9]'; }

# Step 3's checks on the finished run NAME.
check_trained_run() {
  local name=$1 run="$LOCAL_VOLUME/runs/$1"
  check "3 workflow $name succeeded" expect_phase "$name" Succeeded
  local output
  for output in accuracy accuracy-per-round; do
    check "3 argo get shows the output $output: $(workflow_output "$name" "$output")" \
      sh -c "argo get -n mnist $name | sed -n '/^Output Parameters:/,/^[^ ]/p' | grep -q '^  $output: *[0-9[]'"
  done
  check "3 two rounds of three clients wrote their models as uid 10001" \
    test "$(stat -c %u "$run"/rounds/round-00{1,2}/client-*.h5 | sort | uniq -c | tr -s ' ')" == " 6 10001"
  check "3 the exit handler wrote summary.json" grep -q '"status": "Succeeded"' "$run/summary.json"
  check "3 a model was published" test "$(published_versions)" -ge 1
  check "3 its pods were garbage-collected (podGC: OnPodSuccess)" pods_gone "$name"
}

# pod_nodes NAME [TEMPLATE]: how many pods the workflow ran (of TEMPLATE, if given), from its nodes.
pod_nodes() {
  kubectl -n mnist get workflow "$1" -o json | "$PYTHON" -c '
import json, sys
nodes = json.load(sys.stdin)["status"]["nodes"].values()
print(sum(node["type"] == "Pod" and sys.argv[1] in ("", node.get("templateName")) for node in nodes))' "${2:-}"
}

# node_progress NAME TEMPLATE: the progress Argo recorded for the (last) pod of TEMPLATE, e.g. 2/2.
node_progress() {
  kubectl -n mnist get workflow "$1" -o json | "$PYTHON" -c '
import json, sys
nodes = [node for node in json.load(sys.stdin)["status"]["nodes"].values()
         if node["type"] == "Pod" and node.get("templateName") == sys.argv[1]]
print(nodes[-1].get("progress", "") if nodes else "")' "$2"
}

# The trainer pods of the workflow $2 seen at once and in all, sampled every second, into files $1.peak and $1.all.
watch_trainers() {
  local max=0 running
  while true; do
    kubectl -n mnist get pods -l "app.kubernetes.io/component=trainer,workflows.argoproj.io/workflow=$2" \
      -o 'jsonpath={range .items[*]}{.metadata.name}{"\n"}{end}' 2>/dev/null >>"$1.all"
    running=$(kubectl -n mnist get pods -l "app.kubernetes.io/component=trainer,workflows.argoproj.io/workflow=$2" \
      --field-selector=status.phase=Running -o name 2>/dev/null | wc -l)
    ((running > max)) && max=$running && echo "$max" >"$1.peak"
    sleep 1
  done
}

# The run all fault runs are compared with: its accuracy and loss per round, exactly as metrics.json holds them.
REFERENCE_FLAGS=(-p workers=3 -p rounds=2 -p trainers=2 -p min-accuracy=0.98)
REFERENCE_RUN=
round_results() {
  "$PYTHON" -c '
import json, pathlib, sys
run = pathlib.Path(sys.argv[1])
print([(json.loads(path.read_text())["accuracy"], json.loads(path.read_text())["loss"])
       for path in sorted(run.glob("rounds/round-*/metrics.json"))])' "$LOCAL_VOLUME/runs/$1"
}
same_results_as_reference() {
  local mine theirs
  mine=$(round_results "$1"); theirs=$(round_results "$REFERENCE_RUN")
  [[ "$mine" == "$theirs" && "$mine" == *,*,* ]] || { echo "$1: $mine"; echo "$REFERENCE_RUN: $theirs"; return 1; }
}

step_production_run() {
  check "1 kubectl apply -k workflows/" kubectl apply -k workflows/
  # Argo's executor runs restricted here (cluster/argo/), so the API server's Pod Security admission can
  # enforce `restricted` on every pod this test starts (workflows/namespace.yaml enforces baseline).
  check "1 namespace mnist enforces Pod Security restricted" \
    kubectl label namespace mnist pod-security.kubernetes.io/enforce=restricted --overwrite
  check "1 ... and the API server refuses a pod that is not restricted" \
    sh -c "kubectl -n mnist run psa-probe --image=$PAUSE_IMAGE --dry-run=server 2>&1 | grep -q 'violates PodSecurity'"
  check "2 kubectl apply -k cluster/local-volume/ (the NFS claim's local stand-in)" \
    kubectl apply -k cluster/local-volume/
  check "2 the claim mnist-volume is bound" \
    kubectl -n mnist wait --for=jsonpath='{.status.phase}'=Bound pvc/mnist-volume --timeout=60s
  local watched name
  watched=$(mktemp)
  echo 0 >"$watched.peak"
  name=$(argo submit -n mnist workflows/mnist.yaml "${REFERENCE_FLAGS[@]}" "${IMAGE_FLAGS[@]}" "${SMALL_NODE[@]}" -o name) ||
    { fail "3 argo submit workflows/mnist.yaml"; return; }
  watch_trainers "$watched" "$name" &
  local watcher=$!
  argo wait -n mnist "$name" >/dev/null 2>&1
  kill "$watcher"
  REFERENCE_RUN=$name
  say "3 argo submit workflows/mnist.yaml: $name"
  check_trained_run "$name"
  check "3 two trainer pods for the whole run, both running at once (peak $(cat "$watched.peak"), pods $(sort -u "$watched.all" | wc -l))" \
    test "$(cat "$watched.peak"):$(sort -u "$watched.all" | wc -l)" == "2:2"
  check "3 pods per run: 2 trainers + init, coordinator, accuracy test, publish, summary = $(pod_nodes "$name")" \
    test "$(pod_nodes "$name")" -eq 7
  check "3 argo get showed the coordinator's progress by round ($(node_progress "$name" coordinator))" \
    test "$(node_progress "$name" coordinator)" == 2/2
  rm -f "$watched" "$watched.peak" "$watched.all"
  argo get -n mnist "$name" >"$LOGS/e2e-$name.txt" 2>&1
}

step_template_run() {
  local name
  name=$(submit --from workflowtemplate/mnist-federated -p workers=4 -p clients-per-round=2 -p split=dirichlet \
    -p rounds=1 -p min-accuracy=0.5 "${IMAGE_FLAGS[@]}" "${SMALL_NODE[@]}") || { fail "4 argo submit --from workflowtemplate"; return; }
  check "4 argo submit --from workflowtemplate (2 of 4 clients, dirichlet) succeeded: $name" \
    expect_phase "$name" Succeeded
  check "4 it trained exactly the 2 sampled clients" \
    test "$(ls "$LOCAL_VOLUME/runs/$name/rounds/round-001/" | grep -c '^client-.*\.h5$')" -eq 2
}

# wait_for_file PATH: until it exists (at most 10 minutes).
wait_for_file() {
  local _
  for _ in $(seq 1200); do [[ -e "$1" ]] && return 0; sleep 0.5; done
  return 1
}
# running_pod NAME COMPONENT: the name of a running pod of that component in workflow NAME (waits up to 5 min).
running_pod() {
  local _ pod
  for _ in $(seq 300); do
    pod=$(kubectl -n mnist get pods -l "app.kubernetes.io/component=$2,workflows.argoproj.io/workflow=$1" \
      --field-selector=status.phase=Running -o name 2>/dev/null | head -n 1)
    [[ -n "$pod" ]] && { echo "$pod"; return 0; }
    sleep 1
  done
  return 1
}
# retried NAME TEMPLATE: the workflow's nodes show a retry of TEMPLATE (a second pod of the same node).
retried() { (( $(pod_nodes "$1" "$2") > $(kubectl -n mnist get workflow "$1" -o json | "$PYTHON" -c '
import json, sys
nodes = json.load(sys.stdin)["status"]["nodes"].values()
print(sum(node["type"] == "Retry" and node.get("templateName") == sys.argv[1] for node in nodes))' "$2") )); }

# start_fault_run ATTEMPTS: submits the reference run, waits until round 1's client has started (its
# rounds/round-001/ATTEMPTS file) and a few seconds into its training, and sets the caller's name, run and pod
# (a running trainer pod).
start_fault_run() {
  name=$(argo submit -n mnist workflows/mnist.yaml "${REFERENCE_FLAGS[@]}" "${IMAGE_FLAGS[@]}" "${SMALL_NODE[@]}" -o name) ||
    { fail "fault: argo submit workflows/mnist.yaml"; return 1; }
  run="$LOCAL_VOLUME/runs/$name"
  wait_for_file "$run/rounds/round-001/$1"
  sleep 3
  pod=$(running_pod "$name" trainer) || { fail "fault: no trainer pod of $name is running"; return 1; }
}

# A trainer pod deleted as an eviction or a drained node deletes it (SIGTERM) while it trains round 1, then the
# coordinator's pod once round 2 has begun: Argo retries both, and they resume from the volume.
fault_graceful_deletes() {
  local name run pod
  start_fault_run attempts-000.json || return
  check "fault: a trainer pod is deleted while it trains round 1 ($pod)" kubectl -n mnist delete "$pod" --wait=false
  wait_for_file "$run/rounds/round-001/metrics.json"
  # Succeeded pods are deleted (podGC), so their logs are read while they run.
  check "argo logs show round 1's accuracy (the coordinator) and which client each trainer trains" \
    sh -c "argo logs -n mnist $name 2>&1 | grep -q 'round 1/2: test accuracy' &&
      argo logs -n mnist $name 2>&1 | grep -q 'round 2: trainer [01] trains worker'"
  pod=$(running_pod "$name" coordinator)
  check "fault: the coordinator's pod is deleted in round 2 ($pod)" kubectl -n mnist delete "$pod" --wait=false
  argo wait -n mnist "$name" >/dev/null 2>&1
  check "fault: the run $name succeeded and published" expect_phase "$name" Succeeded
  check "fault: Argo retried the deleted trainer" retried "$name" trainer-on-cpu
  check "fault: Argo retried the deleted coordinator" retried "$name" coordinator
  check "fault: its accuracy per round is exactly the undisturbed run's" same_results_as_reference "$name"
}

# A trainer pod force-deleted (--grace-period=0 --force: gone from the API at once, its process killed later)
# while it trains round 1, then the Argo controller's own pod in round 2.
fault_forced_deletes() {
  local name run pod
  start_fault_run attempts-001.json || return
  check "fault: a trainer pod is force-deleted while it trains round 1 ($pod)" \
    kubectl -n mnist delete "$pod" --grace-period=0 --force
  wait_for_file "$run/rounds/round-002/clients.json"
  check "fault: the Argo controller's pod is deleted in round 2" \
    kubectl -n argo delete pod -l app=workflow-controller --wait=false
  argo wait -n mnist "$name" >/dev/null 2>&1
  check "fault: the run $name succeeded and published" expect_phase "$name" Succeeded
  check "fault: its accuracy per round is exactly the undisturbed run's" same_results_as_reference "$name"
  check "fault: the controller came back" kubectl -n argo rollout status deployment/workflow-controller --timeout=120s
}

# Partial rounds: worker 1's shard is corrupt (the run is started beforehand on the host with the workflow's own
# settings, and init keeps a finished split), so its trainer gives it up after two tries; with min-clients=2 the
# round goes on with workers 0 and 2.
PARTIAL_RUN=partial-round-$$
start_partial_round() {
  local run="$LOCAL_VOLUME/runs/$PARTIAL_RUN"
  "$PYTHON" -m trainer.init --volume "$LOCAL_VOLUME" --run-id "$PARTIAL_RUN" --workers 3 --rounds 1 --min-clients 2 \
    --data "$repo/volume/data/mnist.npz" >/dev/null 2>&1 &&
    head -c 4096 /dev/urandom >"$run/shards/shard-001.npz" && chown -R 10001:10001 "$run" &&
    argo submit -n mnist workflows/mnist.yaml --name "$PARTIAL_RUN" -p workers=3 -p rounds=1 -p min-clients=2 \
      -p min-accuracy=0.5 "${IMAGE_FLAGS[@]}" "${SMALL_NODE[@]}" >/dev/null
}
check_partial_round() {
  local run="$LOCAL_VOLUME/runs/$PARTIAL_RUN"
  argo wait -n mnist "$PARTIAL_RUN" >/dev/null 2>&1
  check "fault: a client that fails every try, min-clients=2: the run went on and published ($PARTIAL_RUN)" \
    expect_phase "$PARTIAL_RUN" Succeeded
  check "fault: its trainer gave worker 1 up after 2 tries, with the shard's error" \
    grep -q '"reason": "failed 2 times: .*shard' "$run/rounds/round-001/failed-001.json"
  check "fault: round 1 combined workers 0 and 2 and recorded worker 1 missing" "$PYTHON" -c "
import json, sys
record = json.load(open(sys.argv[1]))
assert record['clients'] == [0, 2] and [entry['worker'] for entry in record['missing']] == [1], record" \
    "$run/rounds/round-001/aggregate.json"
}

fault_unreachable_accuracy() {
  local before name
  before=$(published_versions)
  name=$(submit workflows/mnist.yaml -p workers=2 -p rounds=1 -p min-accuracy=0.9999 "${IMAGE_FLAGS[@]}" "${SMALL_NODE[@]}") ||
    { fail "fault: argo submit (min-accuracy 0.9999)"; return; }
  check "fault: min-accuracy 0.9999 fails the run $name" expect_phase "$name" Failed
  check "fault: it failed at the accuracy test" \
    sh -c "argo get -n mnist $name | grep -E 'accuracy-test.*(Failed|Error)'"
  check "fault: it published nothing" test "$(published_versions)" -eq "$before"
  check "fault: summary.json says Failed" grep -q '"status": "Failed"' "$LOCAL_VOLUME/runs/$name/summary.json"
}

# A bad parameter is refused by `argo submit`, or fails the run at its first step with one line in the log.
fault_bad_parameters() {
  local parameter name message
  for parameter in split=nonsense workers=0; do
    if ! name=$(submit workflows/mnist.yaml -p "$parameter" "${IMAGE_FLAGS[@]}" 2>/dev/null); then
      check "fault: -p $parameter is refused by argo submit" true
      continue
    fi
    check "fault: -p $parameter fails $name at its first step" \
      sh -c "argo get -n mnist $name | grep -E '[^-]init .*exit code 2'"
    # The init pod's own lines, without the executor's (argo=true) and emissary's exit line.
    message=$(argo logs -n mnist "$name" 2>&1 | grep -- '-init-' | grep -v 'argo=true' | grep -v 'Error: exit status' |
      sed -e 's/^[^:]*: //' -e 's/\x1b\[[0-9;]*m//g')
    say "        its log: $message"
    check "fault: -p $parameter: one line, no Python traceback" \
      sh -c '[ "$(echo "$0" | grep -c .)" -eq 1 ] && echo "$0" | grep -q "error:" && ! echo "$0" | grep -q Traceback' "$message"
  done
}

# An image tag that does not exist: the run fails within 5 minutes, and `argo get` names the pull error.
fault_bad_image() {
  local name started
  started=$SECONDS
  name=$(argo submit -n mnist workflows/mnist.yaml -p image=localhost/mnist-federated:no-such-tag -p gpus=0 -o name) ||
    { fail "fault: argo submit (an image that cannot be pulled)"; return; }
  argo wait -n mnist "$name" >/dev/null 2>&1
  check "fault: an image that cannot be pulled fails $name in $((SECONDS - started)) s (at most 300)" \
    sh -c "[ \"\$(kubectl -n mnist get workflow $name -o jsonpath='{.status.phase}')\" != Running ] && [ $((SECONDS - started)) -le 300 ]"
  check "fault: argo get names the pull error" sh -c "argo get -n mnist $name | grep -Eiq 'pull|ErrImage|image'"
  argo get -n mnist "$name" >"$LOGS/e2e-$name.txt" 2>&1
}

# A PNG of an MNIST test digit (from the data `make setup` fetched) and its label.
digit_png() {
  "$PYTHON" - "$1" <<'EOF'
import sys
import numpy as np
from PIL import Image
with np.load("volume/data/mnist.npz") as data:
    image, label = data["x_test"][0], int(data["y_test"][0])
Image.fromarray(image).save(sys.argv[1])
print(label)
EOF
}

step_serve() {
  check "5 kubectl apply -k cluster/deploy-local/ (deploy/ with the local image)" kubectl apply -k cluster/deploy-local/
  check "5 the web demo's rollout completes" kubectl -n mnist rollout status deployment/mnist-web --timeout=180s
  local port=18080 forward
  kubectl -n mnist port-forward service/mnist-web "$port:80" >"$LOGS/port-forward.log" 2>&1 &
  forward=$!
  for _ in $(seq 30); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 1; done
  check "5 /readyz answers 200" curl -fsS "http://127.0.0.1:$port/readyz"
  check "5 the demo pod mounts only models/, read-only: nothing under runs/ is reachable from it" \
    check_demo_cannot_read_runs
  check "5 the web demo's page loads" sh -c "curl -fsS http://127.0.0.1:$port/ | grep -qi '<html'"
  local png label answer
  png=$(mktemp --suffix=.png)
  label=$(digit_png "$png")
  answer=$(curl -fsS -H 'Content-Type: image/png' --data-binary "@$png" "http://127.0.0.1:$port/api/predict")
  check "5 an uploaded test digit ($label) comes back right" \
    sh -c "echo '$answer' | grep -q '\"digit\":$label'"
  kill "$forward" 2>/dev/null
  rm -f "$png"
}

# accuracy_job MIN_ACCURACY: workflows/accuracy-test.yaml with the local image and the given bar; prints its name.
accuracy_job() {
  kubectl -n mnist set image --local -f workflows/accuracy-test.yaml "evaluator=$PIPELINE_IMAGE" -o yaml |
    sed "s/--min-accuracy=0.99/--min-accuracy=$1/" | kubectl -n mnist create -f - -o name
}

# job_outcome JOB: Complete or Failed, once the Job is one of them (at most 10 minutes).
job_outcome() {
  local _ outcome
  for _ in $(seq 600); do
    outcome=$(kubectl -n mnist get "$1" -o 'jsonpath={.status.conditions[?(@.status=="True")].type}')
    case "$outcome" in *Complete*) echo Complete; return ;; *Failed*) echo Failed; return ;; esac
    sleep 1
  done
  echo "still running"
}

step_accuracy_job() {
  local job
  # The newest published model is the last passing run's (one round of two workers: about 97.8 %).
  job=$(accuracy_job 0.95)
  check "6 the accuracy-test Job (--min-accuracy=0.95) completes against the published model ($job)" \
    test "$(job_outcome "$job")" == Complete
  say "        its log: $(kubectl -n mnist logs "$job" 2>&1 | tail -n 1)"
  job=$(accuracy_job 0.9999)
  check "6 the accuracy-test Job fails with --min-accuracy=0.9999 ($job)" test "$(job_outcome "$job")" == Failed
  say "        its log: $(kubectl -n mnist logs "$job" 2>&1 | tail -n 1)"
}

main() {
  say "bringing the cluster up"
  if ! "$here/up.sh"; then
    failed=$((failed + 1)); say "FAIL  the cluster came up (logs: $LOGS)"; return 1
  fi
  passed=$((passed + 1)); say "ok    the cluster came up"
  step_production_run
  step_template_run
  # One run at a time: a run's trainer pods must all fit on the node at once (docs/kubernetes.md).
  if start_partial_round; then passed=$((passed + 1)); say "ok    fault: partial round submitted ($PARTIAL_RUN)"
  else failed=$((failed + 1)); say "FAIL  fault: partial round submitted"; fi
  check_partial_round
  fault_graceful_deletes
  fault_forced_deletes
  fault_unreachable_accuracy
  fault_bad_parameters
  fault_bad_image
  step_serve
  step_accuracy_job
}

main
