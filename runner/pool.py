"""Long-lived trainer processes: each imports TensorFlow once and then trains any (round, worker) it is given."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# Set in each pool process by ``start_trainer_process``.
_progress_queue = None


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Hide what native code writes to stderr meanwhile (TensorFlow's start-up notices ignore TF_CPP_MIN_LOG_LEVEL)."""
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and run one operation (its notices come at both moments) without the noise."""
    with quiet_native_stderr():
        import tensorflow as tf

        tf.constant(0)


def start_trainer_process(num_threads: int, progress_queue) -> None:
    """Pool initializer: quiet TF logs, cap threads, import TF now so the first task does not pay for it."""
    global _progress_queue
    _progress_queue = progress_queue
    # Ctrl-C goes to the whole process group; only the runner decides what to do about it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_native_stderr():
        from trainer.train import configure_threads

        configure_threads(num_threads)
    import_tensorflow_quietly()  # its start-up cost is paid here, once per process


def train_in_pool(volume: str, run_id: str, round_number: int, worker: int, epochs: int, batch_size: int, seed: int) -> dict:
    """Pool task: train one client and report batch progress to the runner."""
    from common.layout import RunLayout
    from trainer.train import train_client

    last_report = 0.0

    def report(done: int, total: int) -> None:
        nonlocal last_report
        now = time.monotonic()
        if _progress_queue is not None and (done in (0, total) or now - last_report > 0.2):
            _progress_queue.put((worker, done, total))
            last_report = now

    return train_client(RunLayout(Path(volume), run_id), round_number, worker, epochs, batch_size, seed, progress=report)


def make_trainer_pool(parallelism: int, progress_queue) -> ProcessPoolExecutor:
    """A pool of ``parallelism`` trainer processes sharing the machine's cores between them."""
    cores = os.cpu_count() or 1
    # Twice a fair share of the cores: when fewer trainers than processes are left (the 3rd of 3 workers on
    # 2 processes), the ones still running use the idle cores; while all run, two threads per core cost little.
    # Measured on 2 cores, 3 workers, 2 rounds: 67-71 s with 2 threads per process, 79-81 s with 1.
    threads_per_process = min(cores, 2 * max(1, cores // parallelism))
    return ProcessPoolExecutor(
        max_workers=parallelism,
        # spawn, not fork: forking a process that has already imported TensorFlow is unsafe.
        mp_context=multiprocessing.get_context("spawn"),
        initializer=start_trainer_process,
        initargs=(threads_per_process, progress_queue),
    )
