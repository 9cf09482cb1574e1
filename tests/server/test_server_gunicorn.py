"""The production server: gunicorn with server/gunicorn.conf.py (stock gthread worker), two workers, on a free
loopback port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from conftest import REPO_ROOT, publish


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture(scope="module")
def gunicorn_url(tmp_path_factory, trained_versions):
    models_dir = tmp_path_factory.mktemp("gunicorn") / "models" / "mnist"
    models_dir.mkdir(parents=True)
    port = free_port()
    log = tmp_path_factory.mktemp("logs") / "gunicorn.log"
    # gunicorn's access log, with the answering worker's pid on each line, shows which workers answered.
    access_log = tmp_path_factory.mktemp("access") / "access.log"
    env = dict(os.environ, MNIST_MODEL_DIR=str(models_dir), WEB_CONCURRENCY="2", GUNICORN_THREADS="4",
               GUNICORN_ACCESSLOG=str(access_log), GUNICORN_CMD_ARGS="--access-logformat='%(p)s %(U)s'")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with open(log, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "server/gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
             "server:create_app()"],
            cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if get(f"{url}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not start:\n{log.read_text()}")
            time.sleep(0.2)
        yield url, models_dir, trained_versions, log, access_log
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "Traceback" not in log.read_text(), log.read_text()


def test_gunicorn_is_live_before_a_model_and_ready_after_one_is_published(gunicorn_url, mnist_test_set):
    url, models_dir, trained_versions, *_ = gunicorn_url
    assert get(f"{url}/readyz")[0] == 503

    publish(trained_versions, models_dir, 1)
    deadline = time.monotonic() + 60
    while get(f"{url}/readyz")[0] != 200:
        assert time.monotonic() < deadline, "not ready 60 s after publishing"
        time.sleep(0.2)

    instances = (mnist_test_set[0][:4] / 255.0).tolist()
    request = urllib.request.Request(f"{url}/v1/models/mnist:predict", data=json.dumps({"instances": instances}).encode(),
                                     headers={"Content-Type": "application/json"})
    # Several requests, so both workers answer some (each loads the model on its own).
    for _ in range(6):
        with urllib.request.urlopen(request, timeout=30) as response:
            predictions = json.loads(response.read())["predictions"]
        assert [max(range(10), key=row.__getitem__) for row in predictions][:3] == list(mnist_test_set[1][:3])
    v2_request = {"inputs": [{"name": "input", "shape": [4, 28, 28], "datatype": "FP32", "data": instances}]}
    request = urllib.request.Request(f"{url}/v2/models/mnist/infer", data=json.dumps(v2_request).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        (output,) = json.loads(response.read())["outputs"]
    assert output["shape"] == [4, 10]
    rows = [output["data"][10 * n : 10 * n + 10] for n in range(4)]
    assert [max(range(10), key=row.__getitem__) for row in rows][:3] == list(mnist_test_set[1][:3])


def test_gunicorn_runs_its_stock_gthread_worker(gunicorn_url):
    url, _, _, log, *_ = gunicorn_url

    assert get(f"{url}/v2/health/live") == (200, b'{"live":true}\n')
    assert "Using worker: gthread" in log.read_text()


def requests_counted(url: str) -> float:
    """/healthz requests answered, as /metrics reports them (every worker's, added up)."""
    _, body = get(f"{url}/metrics")
    line = next(line for line in body.decode().splitlines()
                if line.startswith('mnist_http_requests_total{endpoint="/healthz",method="GET",status="200"}'))
    return float(line.split()[-1])


def answering_workers(access_log) -> set[str]:
    """The pids of the workers that answered /healthz, from gunicorn's access log."""
    lines = [line.split() for line in access_log.read_text().splitlines()]
    return {fields[0].strip("<>") for fields in lines if fields[-1] == "/healthz"}


def test_metrics_add_up_all_workers(gunicorn_url):
    url, _, _, _, access_log = gunicorn_url
    before = requests_counted(url)
    sent = 0
    # Which worker accepts a connection is the kernel's choice: ask until both have answered (or 400 tries).
    while len(answering_workers(access_log)) < 2 and sent < 400:
        assert get(f"{url}/healthz")[0] == 200
        sent += 1

    assert len(answering_workers(access_log)) == 2, "one worker answered every request"
    # Either worker's /metrics counts both workers' requests: every one sent, none twice.
    assert [requests_counted(url) - before for _ in range(4)] == [sent] * 4
