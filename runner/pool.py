"""Long-lived worker processes: each imports Keras once and keeps its compiled model for the whole run.

The runner itself never imports TensorFlow: the trainers (trainer/serve.py, one process each, as one pod each
on Kubernetes), the initial model and the accuracy test all run in these processes.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from pathlib import Path

from loky import ProcessPoolExecutor
from loky.backend.context import get_context

from common.layout import RunLayout
from common.runconfig import RunConfig

# Linux's prctl option that delivers a signal to a process when its parent dies.
PR_SET_PDEATHSIG = 1
WORKER_MEMORY_GROWTH_ALLOWED = 16 << 30  # bytes


class WorkerState:
    """What one pool process keeps between tasks: where to report progress, and the model its accuracy tests load."""

    def __init__(self, progress_queue) -> None:
        self.progress_queue = progress_queue
        self.evaluation_model = None


# One per pool process, set by ``start_worker_process``: the pool's tasks are plain functions, and this is
# the state that outlives a task (the point of long-lived workers).
_worker_state: WorkerState | None = None


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to kill this process when the runner dies, even by ``kill -9`` (no orphans holding memory)."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the runner died before the request took effect
        os._exit(1)


def start_worker_process(parent_pid: int, num_threads: int, progress_queue) -> None:
    """Pool initializer: die with the runner, quiet logs, cap threads, import Keras now (once per process)."""
    global _worker_state
    die_with_parent(parent_pid)
    # Ctrl-C goes to the whole process group; only the runner decides what to do about it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from common.backend import start_backend

    # TensorFlow's start-up INFO lines ignore TF_CPP_MIN_LOG_LEVEL; warnings and errors still reach stderr.
    start_backend(num_threads)
    _worker_state = WorkerState(progress_queue)


def initialize_in_pool(volume: str, run_id: str, config: RunConfig) -> str:
    """Pool task: write the run's configuration and initial model."""
    from trainer.initial import initialize_run

    return str(initialize_run(RunLayout(Path(volume), run_id), config))


def evaluate_in_pool(model_path: str, data: str) -> dict:
    """Pool task: the accuracy test of one model file, loading its weights into this process's kept model."""
    from common.model import load_model
    from evaluator.evaluate import evaluate

    state = _worker_state
    if state.evaluation_model is None:
        state.evaluation_model = load_model(Path(model_path))
    return evaluate(Path(model_path), Path(data), state.evaluation_model)


def serve_in_pool(volume: str, run_id: str, trainer: int, trainers: int) -> int:
    """Pool task for the whole run: trainer ``trainer`` of ``trainers`` (trainer/serve.py), batch progress to the runner."""
    from trainer.serve import LongLivedTrainer

    state = _worker_state

    def progress_of(worker: int):
        last_report = 0.0

        def report(done: int, total: int) -> None:
            nonlocal last_report
            now = time.monotonic()
            if done in (0, total) or now - last_report > 0.2:
                state.progress_queue.put((worker, done, total))
                last_report = now

        return report

    trainer_process = LongLivedTrainer(RunLayout(Path(volume), run_id), trainer, trainers, log=lambda line: None,
                                       progress=progress_of)
    return trainer_process.serve()


def threads_per_process(parallelism: int) -> int:
    """Twice a fair share of the cores, so trainers still running use the cores idle ones leave."""
    cores = os.cpu_count() or 1
    # When fewer trainers than processes are left (the 3rd of 3 workers on 2 processes), the ones still
    # running use the idle cores; while all run, two threads per core cost little.
    # Measured on 2 cores, 3 workers, 2 rounds: 67-71 s with 2 threads per process, 79-81 s with 1.
    return min(cores, 2 * max(1, cores // parallelism))


def make_progress_queue():
    """A queue the pool's processes can write progress to (made in the pool's own process context)."""
    return get_context("loky").Queue()


def make_worker_pool(parallelism: int, progress_queue, processes: int | None = None) -> ProcessPoolExecutor:
    """``processes`` worker processes (default ``parallelism``), each with its share of cores among ``parallelism``."""
    return ProcessPoolExecutor(
        max_workers=processes or parallelism,
        # loky starts fresh interpreters (never forks a process that has imported TensorFlow), notices a
        # dead worker (BrokenProcessPool), and can kill its workers through its public API.
        context=get_context("loky"),
        initializer=start_worker_process,
        initargs=(os.getpid(), threads_per_process(parallelism), progress_queue),
        # loky restarts a worker whose memory grew 300 MB past its size after the first task, taking it for a
        # leak; ours grow on purpose (the kept model, the test set) and a restart would throw that away.
        env={"LOKY_MAX_MEMORY_LEAK_SIZE": str(WORKER_MEMORY_GROWTH_ALLOWED)},
    )
