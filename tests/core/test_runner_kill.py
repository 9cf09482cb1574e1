"""``kill -9`` of the runner mid-round: none of its processes outlives it, and the same command then finishes the run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.faults import descendants
from common.layout import RunLayout, models_dir, published_versions

REPO_ROOT = Path(__file__).resolve().parents[2]
# What "outlives it by more than a few seconds" allows.
SECONDS_CHILDREN_MAY_OUTLIVE_THE_RUNNER = 5.0


def is_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


def start_runner(volume: Path, data: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "runner", "--volume", str(volume), "--data", str(data), "--workers", "3",
               "--rounds", "2", "--batch-size", "32", "--run-id", "killed"]
    return subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.e2e
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_runner_killed_mid_round_leaves_no_process_and_resumes(tmp_path, mnist_slice):
    # Prepare: a 6,000-image slice keeps each round to a few seconds.
    data = mnist_slice
    volume = tmp_path / "volume"
    layout = RunLayout(volume, "killed")
    runner = start_runner(volume, data)

    # Execute: kill -9 the runner alone (not its process group) while its trainers write round 1's logs.
    deadline = time.monotonic() + 180
    while not any(layout.tensorboard_dir(1, 0).rglob("events*")):
        assert runner.poll() is None, runner.communicate()[1]
        assert time.monotonic() < deadline, "the runner never started training"
        time.sleep(0.1)
    children = descendants(runner.pid)
    assert children, "the runner has no worker processes"
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait(timeout=30)  # not communicate(): surviving children would hold its pipes open
    killed_at = time.monotonic()
    while any(is_running(pid) for pid in children) and time.monotonic() - killed_at < 60:
        time.sleep(0.1)
    seconds_survived = time.monotonic() - killed_at

    # Assert: every child was gone within a few seconds; the same command finishes the run.
    assert not [pid for pid in children if is_running(pid)], "processes still alive a minute after the runner died"
    assert seconds_survived <= SECONDS_CHILDREN_MAY_OUTLIVE_THE_RUNNER, f"children outlived the runner by {seconds_survived:.1f} s"
    assert not layout.metrics_path(1).is_file()
    runner.stdout.close()
    runner.stderr.close()
    runner = start_runner(volume, data)
    _, stderr = runner.communicate(timeout=300)
    assert runner.returncode == 0, stderr
    assert published_versions(models_dir(volume)) == [1]
    assert all(layout.client_model_path(2, worker).is_file() for worker in range(3))
    assert not list(layout.run_dir.rglob(".*.tmp*"))
