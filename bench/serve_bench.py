"""Throughput and p50/p99 latency of the production server (gunicorn) against a baseline like the original demo.

The baseline does what the system this grew from did: Flask's development server and ``model.predict`` for each
request (image resized to 28x28, no MNIST preprocessing). Both get the same request: a 280x280 PNG of a test digit,
dark on light, uploaded as multipart/form-data. Closed-loop clients (each sends its next request when the last
answer arrives, over one keep-alive connection) at 1, 8 and 32 at a time; the two servers are measured alternately
in every round, so a slow moment of this shared machine hits both. Reported: medians over rounds, and the median of
the per-round ratios. Loopback only; each measurement is bounded in seconds (and, with the Python client, requests).

The load generator is Debian's ``wrk`` when it is installed (``apt-get install -y wrk``), else Python threads
(``--load-generator python``). The choice matters on a small machine, where client and server share the cores:
measured on 2 cores, the Python client costs 0.2 ms of CPU per request and wrk 0.04 ms, and the Python client's
threads wait for their own GIL, which shows up as server latency.

    .venv/bin/python bench/serve_bench.py --model-dir volume/models/mnist          # after the pipeline published
    .venv/bin/python bench/serve_bench.py --quick-model                            # trains a model in ~5 s first

Target: at 32 clients, >= 10x the baseline's throughput and p99 < 50 ms.
"""

from __future__ import annotations

import argparse
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

from common.layout import models_dir, newest_version_dir  # noqa: E402

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
def server_process(command: list[str], env: dict, port: int, ready_path: str, log: Path):
    with open(log, "w") as log_file:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
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
    parser.add_argument("--quick-model", action="store_true", help="train and serve a throwaway model (~5 s)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds; medians are over rounds")
    parser.add_argument("--seconds", type=float, default=4.0, help="at most this long per measurement")
    parser.add_argument("--max-requests", type=int, default=3000,
                        help="at most this many requests per measurement (Python client)")
    parser.add_argument("--workers", type=int, default=None, help="gunicorn workers (default: gunicorn.conf.py's)")
    parser.add_argument("--threads", type=int, default=None, help="gunicorn threads (default: gunicorn.conf.py's)")
    parser.add_argument("--worker-class", default=None,
                        help="gunicorn worker class, e.g. gthread for the stock one (default: gunicorn.conf.py's)")
    parser.add_argument("--skip-baseline", action="store_true", help="measure only the production server")
    parser.add_argument(
        "--api",
        choices=["upload", "tfserving"],
        default="upload",
        help="what the production server gets: the PNG upload (/api/predict, as the baseline) or the same digit "
        "as TF-Serving JSON (/v1/models/mnist:predict, 28x28 numbers in [0, 1])",
    )
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


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.baseline_server:
        run_baseline_server(args.port, Path(args.model_dir))
        return 0
    if args.load_generator == "wrk" and not shutil.which("wrk"):
        print("wrk is not installed: apt-get install -y wrk, or pass --load-generator python", file=sys.stderr)
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

        png, pixels, label = digit_png(args.data)
        body = multipart("image", "digit.png", png)
        content_type = f"multipart/form-data; boundary={BOUNDARY}"
        ours_port, baseline_port = free_port(), free_port()
        if args.api == "upload":
            ours = Target("gunicorn", ours_port, "/api/predict", body, content_type)
        else:
            instances = json.dumps({"instances": [np.round(pixels / 255.0, 4).tolist()]}).encode()
            ours = Target("gunicorn", ours_port, "/v1/models/mnist:predict", instances, "application/json")
        baseline = Target("baseline", baseline_port, "/predict", body, content_type)

        env = dict(os.environ, MNIST_MODEL_DIR=str(model_directory), PYTHONUNBUFFERED="1")
        if args.workers:
            env["WEB_CONCURRENCY"] = str(args.workers)
        if args.threads:
            env["GUNICORN_THREADS"] = str(args.threads)
        gunicorn = [sys.executable, "-m", "gunicorn", "-c", "server/gunicorn.conf.py",
                    "--bind", f"{LOOPBACK}:{ours_port}", "server:create_app()"]
        if args.worker_class:
            gunicorn[3:3] = ["--worker-class", args.worker_class]
        baseline_command = [sys.executable, str(Path(__file__).resolve()), "--baseline-server",
                            "--port", str(baseline_port), "--model-dir", str(published_model(version_dir))]

        with server_process(gunicorn, env, ours_port, "/readyz", scratch / "gunicorn.log") as ours_process, \
                (server_process(baseline_command, env, baseline_port, "/predict", scratch / "baseline.log")
                 if not args.skip_baseline else _nothing()) as baseline_process:
            targets = [ours] if args.skip_baseline else [baseline, ours]
            pids = {"gunicorn": ours_process.pid, "baseline": baseline_process.pid if baseline_process else None}
            for target in targets:  # warm up every worker (each loads its own model) before measuring anything
                measure(target, 1, 5, 30)
                measure(target, max(args.clients), 10 * max(args.clients), 2)
                wait_until_idle(pids[target.name])
            answer = json.loads(_post(ours, ours.body))["predictions"][0]
            digit = answer["digit"] if args.api == "upload" else int(np.argmax(answer))
            print(f"model {version_dir}; {ours.path}: test digit {label} -> {digit}; load from {args.load_generator}")

            results: dict[tuple[str, int], list[Result]] = {}
            for round_number in range(args.rounds):
                for clients in args.clients:
                    order = targets if round_number % 2 == 0 else targets[::-1]  # alternate who goes first
                    for target in order:
                        if args.load_generator == "wrk":
                            result = measure_with_wrk(target, clients, args.seconds, scratch)
                        else:
                            result = measure(target, clients, args.max_requests, args.seconds)
                        wait_until_idle(pids[target.name])
                        results.setdefault((target.name, clients), []).append(result)
                        print(f"round {round_number + 1} {target.name:8s} {clients:2d} clients: "
                              f"{result.throughput:7.1f} req/s  p50 {result.p50_ms:6.1f} ms  "
                              f"p99 {result.p99_ms:6.1f} ms  ({result.requests} ok, {result.errors} errors)",
                              flush=True)

        report = {"load_generator": args.load_generator, "clients": {}}
        print("\nmedians over rounds" + ("" if args.skip_baseline else "; ratio = median of per-round ratios"))
        print(f"{'clients':>7} | {'gunicorn req/s':>14} {'p50 ms':>7} {'p99 ms':>7} | "
              f"{'baseline req/s':>14} {'p50 ms':>7} {'p99 ms':>7} | {'throughput x':>12}")
        for clients in args.clients:
            row = {"gunicorn": summary(results[("gunicorn", clients)])}
            line = (f"{clients:>7} | {row['gunicorn']['throughput']:14.1f} {row['gunicorn']['p50_ms']:7.1f} "
                    f"{row['gunicorn']['p99_ms']:7.1f} | ")
            if not args.skip_baseline:
                row["baseline"] = summary(results[("baseline", clients)])
                ratios = [o.throughput / b.throughput for o, b in
                          zip(results[("gunicorn", clients)], results[("baseline", clients)])]
                row["throughput_ratio"] = statistics.median(ratios)
                line += (f"{row['baseline']['throughput']:14.1f} {row['baseline']['p50_ms']:7.1f} "
                         f"{row['baseline']['p99_ms']:7.1f} | {row['throughput_ratio']:11.1f}x")
            print(line)
            report["clients"][clients] = row
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def published_model(version_dir: Path) -> Path:
    from common.layout import published_model_path

    return published_model_path(version_dir)


def _post(target: Target, body: bytes) -> bytes:
    connection = http.client.HTTPConnection(LOOPBACK, target.port, timeout=30)
    connection.request("POST", target.path, body=body, headers={"Content-Type": target.content_type})
    return connection.getresponse().read()


@contextmanager
def _nothing():
    yield None


if __name__ == "__main__":
    raise SystemExit(main())
