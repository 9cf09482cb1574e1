"""Wall time of a run on the local single-node cluster (`argo submit`) ÷ the same run as local processes.

    make cluster && source cluster/env.sh
    .venv/bin/python -m bench.cluster_vs_local [--pairs 2] [--rounds 5] [--workers 3]

Both sides are the production commands on this machine: `python -m runner --rounds R --workers W` (what
`make run ARGS=...` calls) on a fresh volume, and `argo submit -n mnist workflows/mnist.yaml ... ` waited for
(`argo wait`), with two trainer pods (trainers=2, trainer-cpus=500m, so they and the coordinator fit the
2-core node), as the runner's default --parallelism gives it two trainer processes. Interleaved pairs; medians
and their ratio are printed, and each side's per-round orchestration overhead (bench/round_overhead.py).

Where the cluster's extra time goes, from its Workflow's node records and its pods (watched, since succeeded
pods are deleted): for each kind of step, the pod's start (scheduling, sandbox, Argo's init
container, until the main container runs), the main container (Python start and the step's work) and its
completion (from main's exit until Argo marks the step done: the wait container reporting outputs); and the
time in which no pod of the run existed at all (the controller between steps); and the CPU seconds the cluster's
own processes (API server, etcd, kubelet, containerd, the Argo controller...) used during each side's runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from bench.round_overhead import median_overhead
from common.layout import data_path

REPO_ROOT = Path(__file__).resolve().parents[1]
CLUSTER_IMAGE = "localhost/mnist-federated:cpu"  # cluster/config.sh PIPELINE_IMAGE


def timestamp(text: str) -> float:
    """Seconds since the epoch of a Kubernetes RFC 3339 time."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


TRAINERS = 2  # the runner's default --parallelism on this 2-core machine, and the cluster's trainer pods


def accuracies(run_dir: Path) -> list[float]:
    """The run's test accuracy per round, from its metrics.json files."""
    return [json.loads(path.read_text())["accuracy"] for path in sorted(run_dir.glob("rounds/round-*/metrics.json"))]


def run_local(data: Path, rounds: int, workers: int, extra: list[str]) -> tuple[float, float, list[float]]:
    """Wall seconds of a local run, its p50 per-round overhead and its accuracy per round."""
    with tempfile.TemporaryDirectory() as volume:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "runner", "--volume", volume, "--data", str(data), "--rounds", str(rounds),
                        "--workers", str(workers), "--parallelism", str(TRAINERS), "--run-id", "local", *extra],
                       cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        run_dir = Path(volume) / "runs" / "local"
        return seconds, median_overhead(run_dir, min(TRAINERS, workers)), accuracies(run_dir)


def kubectl_json(*args: str) -> dict:
    result = subprocess.run(["kubectl", "-n", "mnist", *args, "-o", "json"], check=True, capture_output=True, text=True)
    return json.loads(result.stdout)


class PodRecorder(threading.Thread):
    """The last state seen of every pod of one workflow, from one watch (a poll would load the cluster it measures)."""

    def __init__(self, workflow: str) -> None:
        super().__init__(daemon=True)
        self.pods: dict[str, dict] = {}
        self.process = subprocess.Popen(
            ["kubectl", "-n", "mnist", "get", "pods", "-l", f"workflows.argoproj.io/workflow={workflow}", "--watch",
             "-o", "json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def run(self) -> None:
        decoder, buffer = json.JSONDecoder(), ""
        for line in self.process.stdout:
            buffer += line
            try:
                pod, end = decoder.raw_decode(buffer.lstrip())
            except json.JSONDecodeError:
                continue  # an object spans many lines
            buffer = buffer.lstrip()[end:]
            self.pods[pod["metadata"]["name"]] = pod

    def stop(self) -> None:
        self.process.terminate()
        self.join()


# The cluster's own programs by their kernel names (/proc/PID/stat's, cut at 15 characters): the control plane,
# the node, the Argo controller (workflow-controller), Argo's executors in the pods, and the CLIs.
CLUSTER_PROGRAMS = ("etcd", "kube-apiserver", "kube-controller", "kube-scheduler", "kubelet", "kube-proxy",
                    "containerd", "workflow-contro", "argoexec", "kubectl", "argo")


def cluster_cpu_by_process() -> dict[tuple[int, int], float]:
    """CPU seconds used so far by each live process of the cluster's own programs, by (pid, start time)."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        name, fields = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
        if name.startswith(CLUSTER_PROGRAMS):
            used[int(stat.parent.name), int(fields[19])] = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return used


class ClusterCpu(threading.Thread):
    """CPU seconds the cluster's own processes use from now until stopped, sampled every second, so that
    processes which end meanwhile (a pod's executor, a CLI) count too, less their last second (an undercount)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.at_start = cluster_cpu_by_process()
        self.last_seen = dict(self.at_start)
        self.stopped = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.stopped.wait(1):
            self.last_seen.update(cluster_cpu_by_process())

    def stop(self) -> float:
        self.stopped.set()
        self.join()
        self.last_seen.update(cluster_cpu_by_process())
        return sum(used - self.at_start.get(process, 0.0) for process, used in self.last_seen.items())


def run_cluster(rounds: int, workers: int, parameters: list[str], min_accuracy: float) -> tuple[float, dict, dict]:
    started = time.perf_counter()
    name = subprocess.run(
        ["argo", "submit", "-n", "mnist", "workflows/mnist.yaml", "-o", "name", "-p", f"workers={workers}",
         "-p", f"rounds={rounds}", "-p", "gpus=0", "-p", f"trainers={TRAINERS}", "-p", "trainer-cpus=500m",
         "-p", f"min-accuracy={min_accuracy}", "-p", f"image={CLUSTER_IMAGE}", *parameters],
        cwd=REPO_ROOT, check=True, capture_output=True, text=True).stdout.strip()
    recorder = PodRecorder(name)
    recorder.start()
    subprocess.run(["argo", "wait", "-n", "mnist", name], stdout=subprocess.DEVNULL)  # the phase is checked below
    seconds = time.perf_counter() - started
    recorder.stop()
    workflow = kubectl_json("get", "workflow", name)
    if workflow["status"]["phase"] != "Succeeded":
        raise RuntimeError(f"{name}: {workflow['status']['phase']}: {workflow['status'].get('message')}")
    return seconds, workflow, recorder.pods


def main_container_times(pod: dict) -> tuple[float, float] | None:
    for status in pod.get("status", {}).get("containerStatuses", []):
        terminated = status.get("state", {}).get("terminated")
        if status["name"] == "main" and terminated:
            return timestamp(terminated["startedAt"]), timestamp(terminated["finishedAt"])
    return None


def breakdown(workflow: dict, pods: dict) -> tuple[dict[str, list[tuple[float, float, float]]], float]:
    """Per step kind: (pod start, main, completion) seconds of each pod; and the seconds no pod existed."""
    by_kind: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    intervals = []
    pods_by_node = {pod["metadata"]["annotations"].get("workflows.argoproj.io/node-id"): pod for pod in pods.values()}
    for node_id, node in workflow["status"]["nodes"].items():
        pod = pods_by_node.get(node_id)
        if node["type"] != "Pod" or pod is None or not node.get("finishedAt"):
            continue
        created, finished = timestamp(pod["metadata"]["creationTimestamp"]), timestamp(node["finishedAt"])
        intervals.append((created, finished))
        main = main_container_times(pod)
        if main:
            by_kind[node["templateName"]].append((main[0] - created, main[1] - main[0], finished - main[1]))
    started, finished = timestamp(workflow["status"]["startedAt"]), timestamp(workflow["status"]["finishedAt"])
    covered, reach = 0.0, started
    for begin, end in sorted(intervals):
        begin, end = max(begin, reach), max(end, reach)
        covered, reach = covered + end - begin, end
    return by_kind, (finished - started) - covered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2, help="interleaved local/cluster pairs")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--clients-per-round", default="all")
    parser.add_argument("--data", type=Path, default=data_path(REPO_ROOT / "volume"))
    parser.add_argument("--cluster-volume", type=Path, default=Path("/var/lib/mnist-cluster/volume"),
                        help="the cluster's volume on this machine (cluster/config.sh LOCAL_VOLUME)")
    parser.add_argument("--skip-local", action="store_true", help="only the cluster side (e.g. a scale run)")
    parser.add_argument("--min-accuracy", type=float, default=0.9,
                        help="the cluster run's gate (a run below it fails, and so does this benchmark)")
    args = parser.parse_args(argv)
    extra = ["--clients-per-round", args.clients_per_round]
    trainers = min(TRAINERS, args.workers if args.clients_per_round == "all" else int(args.clients_per_round))
    local, cluster, idle, local_overhead, cluster_overhead, pods_per_run, sizes = [], [], [], [], [], [], []
    cluster_cpu, cluster_cpu_local = [], []  # CPU seconds of the cluster's own processes during each side's runs
    kinds: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for pair in range(args.pairs):
        if not args.skip_local:
            cpu = ClusterCpu()
            seconds, overhead, local_accuracy = run_local(args.data, args.rounds, args.workers, extra)
            local.append(seconds)
            local_overhead.append(overhead)
            cluster_cpu_local.append(cpu.stop())
        cpu = ClusterCpu()
        seconds, workflow, pods = run_cluster(args.rounds, args.workers, ["-p", f"clients-per-round={args.clients_per_round}"],
                                              args.min_accuracy)
        cluster.append(seconds)
        cluster_cpu.append(cpu.stop())
        name = workflow["metadata"]["name"]
        cluster_overhead.append(median_overhead(args.cluster_volume / "runs" / name, trainers))
        cluster_accuracy = accuracies(args.cluster_volume / "runs" / name)
        pods_per_run.append(sum(node["type"] == "Pod" for node in workflow["status"]["nodes"].values()))
        sizes.append(len(json.dumps(workflow)))
        by_kind, no_pod = breakdown(workflow, pods)
        idle.append(no_pod)
        for kind, rows in by_kind.items():
            kinds[kind].extend(rows)
        local_text = "" if args.skip_local else (f"local {local[-1]:.1f} s (overhead p50 {local_overhead[-1]:.2f} s; "
                                                  f"the idle cluster's CPU {cluster_cpu_local[-1]:.0f} s), ")
        print(f"pair {pair + 1}: {local_text}cluster {cluster[-1]:.1f} s (overhead p50 {cluster_overhead[-1]:.2f} s; "
              f"{name}, {pods_per_run[-1]} pods, Workflow object {sizes[-1] / 1024:.0f} KiB, "
              f"{no_pod:.0f} s without a pod; the cluster's own CPU {cluster_cpu[-1]:.0f} s)", flush=True)
        same = "" if args.skip_local else f"; the same as local: {cluster_accuracy == local_accuracy}"
        print(f"  accuracy per round: {', '.join(f'{100 * value:.2f}' for value in cluster_accuracy)}{same}", flush=True)
    cluster_median = statistics.median(cluster)
    if local:
        local_median = statistics.median(local)
        print(f"\nmedian: local {local_median:.1f} s, cluster {cluster_median:.1f} s, "
              f"ratio {cluster_median / local_median:.2f}x")
        print(f"per-round orchestration overhead, p50 over rounds, median over pairs: local "
              f"{statistics.median(local_overhead):.2f} s, cluster {statistics.median(cluster_overhead):.2f} s")
    else:
        print(f"\nmedian: cluster {cluster_median:.1f} s; per-round overhead p50 {statistics.median(cluster_overhead):.2f} s")
    print(f"median time without any pod of the run (the controller between steps): {statistics.median(idle):.1f} s")
    print("\nper step kind, median seconds over all pairs: pod start | main container | completion | pods")
    for kind, rows in sorted(kinds.items()):
        start, main_run, completion = (statistics.median(column) for column in zip(*rows))
        print(f"  {kind:14s} {start:6.1f} | {main_run:6.1f} | {completion:6.1f} | {len(rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
