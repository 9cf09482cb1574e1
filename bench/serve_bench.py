"""Throughput, p50/p99 latency, start-up time and memory of the model server, measured in one run against two others.

Three servers, started side by side on loopback ports:
- ``simple``: this tree's server as deployed (gunicorn's stock gthread worker, server/gunicorn.conf.py, LiteRT model);
- ``previous`` (with ``--previous-repo DIR``, a checkout of an older commit): that commit's gunicorn server, e.g. the
  custom least-connections worker of 058c128, so the cost of the simpler server is a number;
- ``baseline``: what the original demo did: Flask's development server and ``model.predict`` for each request (the
  image resized to 28x28, no MNIST preprocessing; TF-Serving JSON straight into ``model.predict``).

Requests: a 280x280 dark-on-light PNG of a test digit uploaded as multipart/form-data (``/api/predict``; the
baseline's ``/predict``), and the same digit as TF-Serving JSON (``/v1/models/mnist:predict``). Closed-loop clients
(each sends its next request when the last answer arrives, over one keep-alive connection) at 1, 8 and 32 at a time.
Every round measures every server at every level, in an order that rotates from round to round, so a slow moment of
this shared machine hits all of them; after each measurement the script waits until the server is idle. Reported:
medians over rounds, and ratios as the median of per-round ratios. Loopback only.

Start-up and memory (``--startup-runs``, before the load): each gunicorn server is started that many times,
interleaved; start-up is the time from starting the process until every worker has logged "serving model version"
(its model loaded and run once), memory the resident set (VmRSS) of each worker after answering a few requests.

The load generator is Debian's ``wrk`` when it is installed (``apt-get install -y wrk``), else Python threads
(``--load-generator python``, which on a small machine takes CPU and GIL time from the servers).

    .venv/bin/python bench/serve_bench.py --model-dir volume/models/mnist
    git worktree add /tmp/previous 058c128      # the custom-worker server, for --previous-repo
    .venv/bin/python bench/serve_bench.py --model-dir volume/models/mnist --previous-repo /tmp/previous
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from common.layout import models_dir, newest_version_dir, published_model_path  # noqa: E402

LOOPBACK = "127.0.0.1"
BOUNDARY = uuid.uuid4().hex


# ---------------------------------------------------------------------------------------------------------------
# The baseline server: what the original demo did (dev server, model.predict per request, resize to 28x28).
# ---------------------------------------------------------------------------------------------------------------


def run_baseline_server(port: int, model_path: Path) -> None:
    """Flask's development server with ``model.predict`` per request (threaded, as Flask's default is)."""
    from flask import Flask, jsonify, request
    from PIL import Image

    from common.model import load_model

    model = load_model(model_path)
    app = Flask("baseline")

    @app.post("/predict")
    def predict():
        image = Image.open(request.files["image"].stream).convert("L").resize((28, 28))
        pixels = np.asarray(image, dtype=np.float32).reshape(1, 28, 28, 1) / 255.0
        probabilities = model.predict(pixels)[0]
        return jsonify(digit=int(probabilities.argmax()), confidence=float(probabilities.max()))

    @app.post("/v1/models/mnist:predict")
    def tfserving():
        pixels = np.asarray(request.get_json()["instances"], dtype=np.float32).reshape(-1, 28, 28, 1)
        return jsonify(predictions=model.predict(pixels).tolist())

    app.run(host=LOOPBACK, port=port, threaded=True)


# ---------------------------------------------------------------------------------------------------------------
# Load generation
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    port: int
    path: str
    body: bytes
    content_type: str


@dataclass
class Result:
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds


def measure(target: Target, clients: int, max_requests: int, max_seconds: float) -> Result:
    """``clients`` closed-loop Python threads until ``max_requests`` answers or ``max_seconds``, whichever first."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    remaining = [max_requests]
    started = time.perf_counter()
    deadline = started + max_seconds

    def client() -> None:
        connection = http.client.HTTPConnection(LOOPBACK, target.port, timeout=60)
        headers = {"Content-Type": target.content_type, "Connection": "keep-alive"}
        try:
            while time.perf_counter() < deadline:
                with lock:
                    if remaining[0] <= 0:
                        return
                    remaining[0] -= 1
                sent = time.perf_counter()
                try:
                    connection.request("POST", target.path, body=target.body, headers=headers)
                    response = connection.getresponse()
                    response.read()
                    ok = response.status == 200
                    if response.getheader("Connection", "").lower() == "close":
                        connection.close()
                except (OSError, http.client.HTTPException):
                    ok = False
                    connection.close()
                elapsed = time.perf_counter() - sent
                with lock:
                    if ok:
                        latencies.append(elapsed)
                    else:
                        errors[0] += 1
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    p50, p99 = (float(value) * 1000 for value in np.percentile(latencies, [50, 99])) if latencies else (np.nan, np.nan)
    return Result(len(latencies), errors[0], time.perf_counter() - started, p50, p99)


WRK_SCRIPT = """
local file = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.method = "POST"
wrk.body = file:read("*all")
file:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
"""
WRK_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def measure_with_wrk(target: Target, clients: int, seconds: float, scratch: Path) -> Result:
    """``clients`` keep-alive connections from one ``wrk`` thread for ``seconds``; its own latency percentiles."""
    body, script = scratch / f"{target.name}.body", scratch / "post.lua"
    body.write_bytes(target.body)
    script.write_text(WRK_SCRIPT)
    env = dict(os.environ, BENCH_BODY=str(body), BENCH_CONTENT_TYPE=target.content_type)
    command = ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "10s",
               "-s", str(script), f"http://{LOOPBACK}:{target.port}{target.path}"]
    finished = subprocess.run(command, env=env, capture_output=True, text=True)
    try:
        return parse_wrk(finished.stdout)
    except AttributeError:  # a figure missing from the report: wrk failed
        reason = finished.stderr or finished.stdout
        raise RuntimeError(f"wrk failed (exit status {finished.returncode}): {reason}") from None


def parse_wrk(output: str) -> Result:
    """The figures of ``wrk --latency``'s report: answers with status 2xx/3xx count, the rest are errors."""
    def duration_ms(value: str, unit: str) -> float:
        return float(value) * WRK_UNITS_MS[unit]

    def latency_ms(percent: str) -> float:
        return duration_ms(*re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M).groups())

    answers, value, unit = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)\b", output).groups()
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    failed = int(non_2xx.group(1)) if non_2xx else 0
    socket_errors = sum(int(n) for n in re.findall(r"\b(?:connect|read|write|timeout) (\d+)", output))
    return Result(int(answers) - failed, failed + socket_errors, duration_ms(value, unit) / 1000,
                  latency_ms("50"), latency_ms("99"))


# ---------------------------------------------------------------------------------------------------------------
# Servers as subprocesses
# ---------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def wait_until_ready(port: int, path: str, process: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            connection = http.client.HTTPConnection(LOOPBACK, port, timeout=2)
            connection.request("GET", path)
            if connection.getresponse().status in (200, 405):
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server on port {port} not ready after {timeout} s:\n{log.read_text()[-3000:]}")


@contextmanager
def server_process(command: list[str], env: dict, port: int, ready_path: str, log: Path, cwd: Path = REPO_ROOT):
    with open(log, "w") as log_file:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(port, ready_path, process, log)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cpu_seconds(pid: int) -> float:
    """CPU time used so far by process ``pid`` and its children (gunicorn's workers); Linux /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_path.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # the process just ended
        if stat_path.parent.name == str(pid) or fields[1] == str(pid):  # fields[1] is the parent's pid
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return total


def wait_until_idle(pid: int, timeout: float = 30.0) -> None:
    """Wait until a server has finished the requests a measurement left behind (a load generator stops sending,
    but a slow server still works through what it has read, and would slow down the next measurement)."""
    if not Path("/proc/self/stat").exists():
        time.sleep(2.0)
        return
    deadline = time.monotonic() + timeout
    before = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = cpu_seconds(pid)
        if now - before < 0.01:  # under 5 % of a core for 0.2 s: idle
            return
        before = now


def multipart(field: str, filename: str, data: bytes) -> bytes:
    return (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
        f"Content-Type: image/png\r\n\r\n"
    ).encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def digit_png(data_path: Path) -> tuple[bytes, np.ndarray, int]:
    """A 280x280 dark-on-light PNG of MNIST's first test digit (like a drawing or a scan), its pixels, its label."""
    from PIL import Image

    from common.data import load_test_set

    images, labels = load_test_set(data_path)
    picture = Image.fromarray(255 - images[0]).resize((280, 280), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue(), images[0], int(labels[0])


# ---------------------------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench/serve_bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=models_dir(REPO_ROOT / "volume"))
    parser.add_argument("--data", type=Path, default=REPO_ROOT / "volume/data/mnist.npz")
    parser.add_argument("--quick-model", action="store_true", help="train and serve a throwaway model (~10 s)")
    parser.add_argument("--previous-repo", type=Path,
                        help="a checkout of an older commit whose gunicorn server to measure too (e.g. 058c128)")
    parser.add_argument("--api", nargs="+", choices=["upload", "tfserving"], default=["upload", "tfserving"])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians are over rounds")
    parser.add_argument("--seconds", type=float, default=3.0, help="at most this long per measurement")
    parser.add_argument("--max-requests", type=int, default=3000,
                        help="at most this many requests per measurement (Python client)")
    parser.add_argument("--startup-runs", type=int, default=3, help="start-ups of each server command (0: none)")
    parser.add_argument("--skip-baseline", action="store_true", help="leave out the development-server baseline")
    parser.add_argument(
        "--load-generator",
        choices=["wrk", "python"],
        default="wrk" if shutil.which("wrk") else "python",
        help="wrk (the default when installed: 0.04 ms of CPU per request here) or Python threads (0.2 ms)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--baseline-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return parser


@dataclass
class Server:
    """How to start one of the servers under test."""

    name: str
    command: list[str]
    cwd: Path
    ready_path: str
    paths: dict[str, str]  # api -> URL path
    workers: int  # processes that each load the model (gunicorn's workers; 1 for a single process)


def summary(results: list[Result]) -> dict:
    return {
        "throughput": statistics.median(r.throughput for r in results),
        "p50_ms": statistics.median(r.p50_ms for r in results),
        "p99_ms": statistics.median(r.p99_ms for r in results),
        "requests": sum(r.requests for r in results),
        "errors": sum(r.errors for r in results),
    }


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except RuntimeError as error:  # a server that did not start, wrk that failed: the reason, not a traceback
        print(f"serve_bench: {error}", file=sys.stderr)
        return 1


def gunicorn_command(port: int) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "-c", "server/gunicorn.conf.py", "--bind", f"{LOOPBACK}:{port}",
            "server:create_app()"]


def make_servers(args, version_dir: Path) -> list[Server]:
    """The servers to compare, each on its own free port."""
    gunicorn_paths = {"upload": "/api/predict", "tfserving": "/v1/models/mnist:predict"}
    workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
    servers = [Server("simple", gunicorn_command(free_port()), REPO_ROOT, "/readyz", gunicorn_paths, workers)]
    if args.previous_repo:
        servers.append(Server("previous", gunicorn_command(free_port()), args.previous_repo.resolve(), "/readyz",
                              gunicorn_paths, workers))
    if not args.skip_baseline:
        port = free_port()
        command = [sys.executable, str(Path(__file__).resolve()), "--baseline-server", "--port", str(port),
                   "--model-dir", str(published_model_path(version_dir))]
        servers.append(Server("baseline", command, REPO_ROOT, "/predict",
                              {"upload": "/predict", "tfserving": "/v1/models/mnist:predict"}, 1))
    return servers


def startup_commands(servers: list[Server], model_directory: Path) -> list[Server]:
    """The gunicorn servers, and the same trees' ``python -m server`` (one process, Flask's threaded server)."""
    commands = []
    for server in servers:
        if server.name != "baseline":
            single = [sys.executable, "-m", "server", "--port", str(free_port()), "--model-dir", str(model_directory)]
            commands += [server, Server(f"{server.name} -m server", single, server.cwd, "/readyz", server.paths, 1)]
    return commands


def port_of(server: Server) -> int:
    return int(server.command[server.command.index("--bind") + 1].rpartition(":")[2]) if "--bind" in server.command \
        else int(server.command[server.command.index("--port") + 1])


def requests_for(args, server: Server) -> dict[str, Target]:
    """The upload and the TF-Serving request of one digit, addressed to ``server``."""
    png, pixels, _ = digit_png(args.data)
    bodies = {
        "upload": (multipart("image", "digit.png", png), f"multipart/form-data; boundary={BOUNDARY}"),
        "tfserving": (json.dumps({"instances": [np.round(pixels / 255.0, 4).tolist()]}).encode(), "application/json"),
    }
    return {api: Target(server.name, port_of(server), server.paths[api], *bodies[api]) for api in args.api}


def worker_pids(pid: int) -> list[int]:
    """gunicorn's workers (the children of ``pid``), or the process itself when it has none."""
    children = []
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_path.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[1] == str(pid):
            children.append(int(stat_path.parent.name))
    return sorted(children) or [pid]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure_startup(server: Server, env: dict, targets: dict[str, Target], log: Path) -> tuple[float, float, list[float]]:
    """Seconds from starting ``server`` until each worker logged its loaded model, the CPU seconds the processes used
    until then (less sensitive than wall time to other load on the machine), and each worker's RSS (MiB) after a
    few requests."""
    started = time.perf_counter()
    with open(log, "w") as log_file:
        process = subprocess.Popen(server.command, cwd=server.cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        while log.read_text().count("serving model version") < server.workers:
            if process.poll() is not None or time.perf_counter() - started > 120:
                raise RuntimeError(f"{server.name} did not load its model:\n{log.read_text()[-3000:]}")
            time.sleep(0.01)
        seconds, cpu = time.perf_counter() - started, cpu_seconds(process.pid)
        for target in targets.values():
            measure(target, 2 * server.workers, 20, 10)  # enough connections to reach every worker
        return seconds, cpu, [rss_mib(pid) for pid in worker_pids(process.pid)]
    finally:
        process.terminate()
        process.wait(timeout=30)


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.baseline_server:
        run_baseline_server(args.port, Path(args.model_dir))
        return 0
    if args.load_generator == "wrk" and not shutil.which("wrk"):
        print("wrk is not installed: apt-get install -y wrk, or pass --load-generator python", file=sys.stderr)
        return 2
    if args.previous_repo and not (args.previous_repo / "server" / "gunicorn.conf.py").is_file():
        print(f"--previous-repo {args.previous_repo}: no server/gunicorn.conf.py there", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="serve-bench-") as scratch:
        scratch = Path(scratch)
        model_directory = args.model_dir
        if args.quick_model:
            from server.quick_model import train_and_publish

            model_directory = scratch / "models"
            train_and_publish(model_directory, args.data, version=1)
        version_dir = newest_version_dir(model_directory)
        if version_dir is None:
            print(f"no published model in {model_directory}: run the pipeline first, or pass --quick-model",
                  file=sys.stderr)
            return 2
        env = dict(os.environ, MNIST_MODEL_DIR=str(model_directory), PYTHONUNBUFFERED="1")
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        servers = make_servers(args, version_dir)
        report = {"load_generator": args.load_generator, "startup": {}, "load": {}}

        startup_servers = startup_commands(servers, model_directory)
        startups: dict[str, list[tuple[float, float, list[float]]]] = {server.name: [] for server in startup_servers}
        for run_number in range(args.startup_runs):
            order = startup_servers if run_number % 2 == 0 else startup_servers[::-1]
            for server in order:
                startups[server.name].append(measure_startup(server, env, requests_for(args, server),
                                                             scratch / f"{server.name}-startup.log"))
        for name, runs in startups.items():
            seconds = statistics.median(run[0] for run in runs)
            cpu = statistics.median(run[1] for run in runs)
            rss = statistics.median(max(run[2]) for run in runs)
            report["startup"][name] = {"seconds": seconds, "cpu_seconds": cpu, "max_worker_rss_mib": rss,
                                       "runs": [{"seconds": s, "cpu_seconds": c, "worker_rss_mib": r}
                                                for s, c, r in runs]}
            print(f"start-up {name:17s}: {seconds:5.2f} s to a loaded model in every process (runs: "
                  f"{', '.join(f'{run[0]:.2f}' for run in runs)}), {cpu:5.2f} CPU s; RSS per worker {rss:4.0f} MiB "
                  f"(largest worker, median of runs; all: {', '.join('/'.join(f'{v:.0f}' for v in run[2]) for run in runs)})",
                  flush=True)
        if not args.clients or not args.rounds:
            return finish(args, report)

        with contextlib.ExitStack() as stack:
            processes = {server.name: stack.enter_context(server_process(
                server.command, env, port_of(server), server.ready_path, scratch / f"{server.name}.log", server.cwd))
                for server in servers}
            targets = {server.name: requests_for(args, server) for server in servers}
            for server in servers:  # warm up every worker (each loads its own model) before measuring anything
                for target in targets[server.name].values():
                    measure(target, 1, 5, 30)
                    measure(target, max(args.clients), 10 * max(args.clients), 2)
                wait_until_idle(processes[server.name].pid)
            results: dict[tuple[str, str, int], list[Result]] = {}
            for round_number in range(args.rounds):
                for clients in args.clients:
                    for api in args.api:
                        shift = (round_number + clients + len(api)) % len(servers)
                        for server in servers[shift:] + servers[:shift]:  # rotate who goes first
                            target = targets[server.name][api]
                            if args.load_generator == "wrk":
                                result = measure_with_wrk(target, clients, args.seconds, scratch)
                            else:
                                result = measure(target, clients, args.max_requests, args.seconds)
                            wait_until_idle(processes[server.name].pid)
                            results.setdefault((server.name, api, clients), []).append(result)
                            print(f"round {round_number + 1} {api:9s} {server.name:8s} {clients:2d} clients: "
                                  f"{result.throughput:7.1f} req/s  p50 {result.p50_ms:7.1f} ms  "
                                  f"p99 {result.p99_ms:7.1f} ms  ({result.requests} ok, {result.errors} errors)",
                                  flush=True)
        print_load_table(args, servers, results, report)
        return finish(args, report)


def print_load_table(args, servers: list[Server], results: dict, report: dict) -> None:
    names = [server.name for server in servers]
    print("\nmedians over rounds; ratios: median of per-round ratios (simple / other)")
    print(f"{'api':9s} {'clients':>7} | " + " | ".join(f"{name + ' req/s':>14} {'p50':>6} {'p99':>6}" for name in names)
          + " | " + " ".join(f"{'x ' + name:>11}" for name in names[1:]))
    for api in args.api:
        for clients in args.clients:
            row = {name: summary(results[(name, api, clients)]) for name in names}
            for name in names[1:]:
                row[f"simple_over_{name}"] = statistics.median(
                    ours.throughput / theirs.throughput if theirs.throughput else float("inf")
                    for ours, theirs in zip(results[("simple", api, clients)], results[(name, api, clients)]))
            report["load"].setdefault(api, {})[clients] = row
            print(f"{api:9s} {clients:>7} | "
                  + " | ".join(f"{row[name]['throughput']:14.1f} {row[name]['p50_ms']:6.1f} {row[name]['p99_ms']:6.1f}"
                               for name in names)
                  + " | " + " ".join(f"{row[f'simple_over_{name}']:10.2f}x" for name in names[1:]))


def finish(args, report: dict) -> int:
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
