"""The local runner end to end on real MNIST: it learns, it publishes, and it resumes after interruptions."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from common.data import load_mnist, save_arrays
from common.layout import RunLayout, models_dir, published_versions
from runner.__main__ import main as runner_main

REPO_ROOT = Path(__file__).resolve().parents[2]


def published_info(volume: Path) -> dict:
    versions = published_versions(models_dir(volume))
    assert versions, "nothing was published"
    return json.loads((models_dir(volume) / str(versions[-1]) / "info.json").read_text())


@pytest.mark.e2e
def test_quick_configuration_learns(tmp_path, real_mnist_path, capsys):
    argv = ["--volume", str(tmp_path), "--data", str(real_mnist_path), "--workers", "3", "--rounds", "3", "--run-id", "quick"]
    assert runner_main(argv) == 0
    info = published_info(tmp_path)
    assert info["accuracy"] >= 0.985, info["history"]
    assert info["num_examples"] == 60000 and info["shard_sizes"] == [20000, 20000, 20000]
    assert [entry["round"] for entry in info["history"]] == [1, 2, 3]
    assert "final test accuracy" in capsys.readouterr().out
    layout = RunLayout(tmp_path, "quick")
    for round_number in (1, 2, 3):
        assert all(layout.client_model_path(round_number, worker).is_file() for worker in range(3))
        assert layout.metrics_path(round_number).is_file()
    # The same command again finds the run finished: nothing is retrained or republished.
    before = layout.client_model_path(1, 0).stat().st_mtime_ns
    assert runner_main(argv) == 0
    assert layout.client_model_path(1, 0).stat().st_mtime_ns == before
    assert published_versions(models_dir(tmp_path)) == [1]


@pytest.mark.slow
def test_default_configuration_reaches_99_percent(tmp_path, real_mnist_path):
    assert runner_main(["--volume", str(tmp_path), "--data", str(real_mnist_path)]) == 0
    info = published_info(tmp_path)
    assert info["config"]["workers"] == 3 and info["config"]["split"] == "iid"
    assert info["accuracy"] >= 0.990, info["history"]


def start_runner(volume: Path, data: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "runner", "--volume", str(volume), "--data", str(data), "--workers", "3",
               "--rounds", "3", "--batch-size", "32", "--run-id", "resume"]
    # Ctrl-C as a terminal sends it, even when this suite itself runs in the background (`make test &`), whose
    # shell makes its children ignore SIGINT: Python then installs no KeyboardInterrupt handler at all.
    return subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=restore_default_sigint)


def restore_default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for(condition, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting for the runner")


def trainer_pids(runner_pid: int) -> list[int]:
    children = Path(f"/proc/{runner_pid}/task/{runner_pid}/children").read_text().split()
    return [int(pid) for pid in children if "popen_loky_posix" in Path(f"/proc/{pid}/cmdline").read_text()]


@pytest.mark.e2e
def test_resumes_after_ctrl_c_and_after_a_killed_trainer(tmp_path, real_mnist_path):
    # Prepare: a 6,000-image slice of MNIST keeps each round to a few seconds.
    mnist = load_mnist(real_mnist_path)
    data = tmp_path / "slice.npz"
    save_arrays(data, x_train=mnist.x_train[:6000], y_train=mnist.y_train[:6000], x_test=mnist.x_test[:2000], y_test=mnist.y_test[:2000])
    volume = tmp_path / "volume"
    layout = RunLayout(volume, "resume")

    # Ctrl-C during round 1 stops the run cleanly.
    runner = start_runner(volume, data)
    wait_for(lambda: layout.round_dir(1).is_dir() and any(layout.tensorboard_dir(1, 0).rglob("events*")))
    os.killpg(runner.pid, signal.SIGINT)
    _, stderr = runner.communicate(timeout=60)
    assert runner.returncode == 130, stderr
    assert "run the same command again to resume" in stderr

    # Resumed, then a trainer is killed in round 2.
    runner = start_runner(volume, data)
    wait_for(lambda: layout.metrics_path(1).is_file() and layout.round_dir(2).is_dir() and trainer_pids(runner.pid))
    round_one_files = {path: path.stat().st_mtime_ns for path in layout.round_dir(1).iterdir()}
    os.kill(trainer_pids(runner.pid)[0], signal.SIGKILL)
    _, stderr = runner.communicate(timeout=60)
    assert runner.returncode == 1, stderr
    assert "trainer process died" in stderr and "Traceback" not in stderr

    # Resumed again: it finishes, without redoing round 1.
    runner = start_runner(volume, data)
    stdout, stderr = runner.communicate(timeout=300)
    assert runner.returncode == 0, stderr
    assert "round 1/3" in stdout and "done before" in stdout
    assert {path: path.stat().st_mtime_ns for path in round_one_files} == round_one_files
    info = published_info(volume)
    assert info["run_id"] == "resume" and [entry["round"] for entry in info["history"]] == [1, 2, 3]
    assert info["accuracy"] > 0.9
    assert not list(layout.run_dir.rglob(".*.tmp*"))
