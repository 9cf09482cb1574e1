"""The cluster's commands as processes on one directory: trainer.init, aggregator.coordinator and long-lived
trainer.serve processes, as the Argo workflow runs them (one pod each), meeting through the run's files.

They must train exactly as `make run` does, and a trainer or the coordinator killed mid-round (``kill -9``) and
started again, as Argo retries a pod, must resume to exactly the same accuracy per round.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.faults import processes_with_files_under
from common.layout import RunLayout
from common.data import save_arrays

REPO_ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ["--workers", "3", "--rounds", "2", "--batch-size", "32"]
TRAINERS = 2


def python(*arguments: str, **options) -> subprocess.Popen:
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, "-m", *arguments], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environment, **options)


def round_results(layout: RunLayout) -> list[tuple[float, float]]:
    results = []
    for round_number in (1, 2):
        metrics = json.loads(layout.metrics_path(round_number).read_text())
        results.append((metrics["accuracy"], metrics["loss"]))
    return results


def start_coordinator(layout: RunLayout, data: Path) -> subprocess.Popen:
    return python("aggregator.coordinator", "--volume", str(layout.volume), "--run-id", layout.run_id, "--data", str(data))


def start_trainer(layout: RunLayout, trainer: int) -> subprocess.Popen:
    return python("trainer.serve", "--volume", str(layout.volume), "--run-id", layout.run_id,
                  "--trainer", str(trainer), "--trainers", str(TRAINERS))


def finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def run_cluster_commands(layout: RunLayout, data: Path, interfere=None) -> list[tuple[float, float]]:
    """init, then the coordinator and the trainers at once; ``interfere(layout, processes)`` may kill and restart."""
    code, _, err = finish(python("trainer.init", "--volume", str(layout.volume), "--run-id", layout.run_id,
                                 "--data", str(data), *SETTINGS))
    assert code == 0, err
    processes = {"coordinator": start_coordinator(layout, data)}
    processes.update({f"trainer-{trainer}": start_trainer(layout, trainer) for trainer in range(TRAINERS)})
    if interfere is not None:
        interfere(layout, data, processes)
    for name, process in processes.items():
        code, out, err = finish(process)
        assert code == 0, f"{name}: {err}"
    return round_results(layout)


def kill_when(condition, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def shared_slice(tmp_path_factory, real_mnist_path) -> Path:
    """The first 6,000 training and 1,000 test images of real MNIST, shared by this module's runs."""
    from common.data import load_mnist

    mnist = load_mnist(real_mnist_path)
    path = tmp_path_factory.mktemp("data") / "slice.npz"
    save_arrays(path, x_train=mnist.x_train[:6000], y_train=mnist.y_train[:6000],
                x_test=mnist.x_test[:1000], y_test=mnist.y_test[:1000])
    return path


@pytest.fixture(scope="module")
def runner_results(tmp_path_factory, shared_slice) -> list[tuple[float, float]]:
    """Accuracy and loss per round of `python -m runner` with the same settings (two trainer processes)."""
    volume = tmp_path_factory.mktemp("runner")
    process = python("runner", "--volume", str(volume), "--data", str(shared_slice), *SETTINGS,
                     "--parallelism", str(TRAINERS), "--run-id", "local")
    code, _, err = finish(process)
    assert code == 0, err
    return round_results(RunLayout(volume, "local"))


@pytest.mark.e2e
def test_the_cluster_commands_train_exactly_as_the_runner(tmp_path, shared_slice, runner_results):
    layout = RunLayout(tmp_path / "cluster", "cluster-run")
    assert run_cluster_commands(layout, shared_slice) == runner_results
    assert runner_results[1][0] > 0.9  # it learns


@pytest.mark.e2e
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_trainer_and_a_killed_coordinator_resume_exactly(tmp_path, shared_slice, runner_results):
    kills = []

    def interfere(layout: RunLayout, data: Path, processes: dict) -> None:
        # A trainer dies while it trains a client of round 1 (it holds the client's TensorBoard file open):
        # started again, it trains that client again from the round's files.
        def a_trainer_is_training() -> bool:
            for name in ("trainer-0", "trainer-1"):
                pids = [processes[name].pid]
                log_dirs = [layout.tensorboard_dir(1, worker) for worker in range(3)]
                if any(log_dir.is_dir() and processes_with_files_under(set(pids), log_dir) for log_dir in log_dirs):
                    kills.append(name)
                    return True
            return False

        kill_when(a_trainer_is_training, "a trainer training round 1")
        victim = kills[-1]
        processes[victim].send_signal(signal.SIGKILL)
        processes[victim].wait()
        processes[victim] = start_trainer(layout, int(victim.split("-")[1]))
        # The coordinator dies once round 2 has begun, and is started again.
        kill_when(lambda: layout.sampled_clients_path(2).is_file(), "round 2 start")
        processes["coordinator"].send_signal(signal.SIGKILL)
        processes["coordinator"].wait()
        processes["coordinator"] = start_coordinator(layout, data)

    layout = RunLayout(tmp_path / "cluster", "cluster-run")
    assert run_cluster_commands(layout, shared_slice, interfere) == runner_results
    assert kills, "no trainer was killed"
    attempts = [json.loads(path.read_text())["attempts"] for path in layout.round_dir(1).glob("attempts-*.json")]
    assert max(attempts) == 2  # the killed trainer's client was started twice


def test_a_failed_init_stops_the_waiting_trainer_and_coordinator(tmp_path, tiny_mnist):
    layout = RunLayout(tmp_path, "bad-run")
    trainer = start_trainer(layout, 0)
    coordinator = start_coordinator(layout, tiny_mnist)
    code, _, err = finish(python("trainer.init", "--volume", str(tmp_path), "--run-id", "bad-run",
                                 "--data", str(tiny_mnist), "--workers", "0"))
    assert code == 2 and "workers must be a whole number of at least 1" in err
    assert "workers" in json.loads(layout.stop_path.read_text())["reason"]
    code, _, err = finish(trainer, timeout=60)
    assert code == 0 and "the run was stopped: init:" in err
    code, _, err = finish(coordinator, timeout=60)
    assert code == 1 and "the run was stopped" in err and "Traceback" not in err
