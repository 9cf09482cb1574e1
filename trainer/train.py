"""Local training of one client: global model in, client model (with its example count) out."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from aggregator.h5weights import sha256_of_file, write_metadata
from common.atomic import atomic_path
from common.data import load_shard, to_model_input
from common.layout import RunLayout

ProgressCallback = Callable[[int, int], None]


def configure_threads(num_threads: int | None) -> None:
    """Share the machine between several trainer processes; call before any TF work.

    CPU threads are capped at ``num_threads``; on a GPU, memory grows on demand instead of each
    process reserving all of it, so several trainers fit on one card.
    """
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)
    if num_threads:
        tf.config.threading.set_intra_op_parallelism_threads(num_threads)
        tf.config.threading.set_inter_op_parallelism_threads(num_threads)


def client_seed(seed: int, round_number: int, worker: int) -> int:
    """A distinct, reproducible seed for each worker and round (shuffling and dropout)."""
    return seed * 1_000_003 + round_number * 1_009 + worker


def save_model_with_metadata(model, path: Path, metadata: dict) -> None:
    """Save a Keras model as h5 with our root attributes, atomically (readers never see a partial file)."""
    # h5 on purpose (the aggregator reads it with h5py, no TensorFlow): silence Keras's "legacy format" notice.
    logging.getLogger("absl").setLevel(logging.ERROR)
    with atomic_path(path, suffix=".tmp.h5") as temporary_path:
        model.save(temporary_path, include_optimizer=False)
        write_metadata(temporary_path, metadata)


def train_client(
    layout: RunLayout,
    round_number: int,
    worker: int,
    epochs: int,
    batch_size: int,
    seed: int,
    progress: ProgressCallback | None = None,
) -> dict:
    """Train worker ``worker``'s shard from round ``round_number - 1``'s global model; write its client model."""
    if round_number < 1:
        raise ValueError(f"--round must be at least 1 (round 0 is the initial model), got {round_number}")
    if worker < 0:
        raise ValueError(f"--worker must be 0 or more, got {worker}")
    if epochs < 1 or batch_size < 1:
        raise ValueError("--epochs and --batch-size must be at least 1")
    start_model_path = layout.global_model_path(round_number - 1)
    if not start_model_path.is_file():
        raise ValueError(f"{start_model_path}: the round's starting model is missing")
    images, labels = load_shard(layout.shard_path(worker))

    import keras

    from common.model import learning_rate_for_round, load_model

    started = time.monotonic()
    keras.utils.set_random_seed(client_seed(seed, round_number, worker))
    # Hash before loading, so the recorded hash is of exactly the bytes this client started from.
    start_model_sha256 = sha256_of_file(start_model_path)
    model = load_model(start_model_path, learning_rate_for_round(round_number))
    callbacks = [
        keras.callbacks.TensorBoard(
            log_dir=str(layout.tensorboard_dir(round_number, worker)), write_graph=False, profile_batch=0
        )
    ]
    if progress is not None:
        callbacks.append(make_progress_callback(progress, epochs))
    history = model.fit(
        to_model_input(images), labels, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=callbacks
    )
    metadata = {
        "run_id": layout.run_id,
        "round": round_number,
        "worker": worker,
        "num_examples": int(len(labels)),
        "global_sha256": start_model_sha256,
    }
    save_model_with_metadata(model, layout.client_model_path(round_number, worker), metadata)
    return {
        **metadata,
        "train_loss": float(history.history["loss"][-1]),
        "train_accuracy": float(history.history["accuracy"][-1]),
        "seconds": time.monotonic() - started,
    }


def argo_progress_writer() -> ProgressCallback | None:
    """A progress callback that writes ``done/total`` to $ARGO_PROGRESS_FILE, if Argo set it."""
    progress_file = os.environ.get("ARGO_PROGRESS_FILE")
    if not progress_file:
        return None
    last_write = 0.0

    def write(done: int, total: int) -> None:
        nonlocal last_write
        now = time.monotonic()
        # Argo polls the file every few seconds; writing on every batch would only cost I/O.
        if done == total or now - last_write >= 1.0:
            Path(progress_file).write_text(f"{done}/{total}\n")
            last_write = now

    return write


def make_progress_callback(report: ProgressCallback, epochs: int):
    """A Keras callback that reports (batches done, batches in all epochs) after every batch."""
    import keras

    class BatchProgress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.total = epochs * (self.params.get("steps") or 0)
            self.done = 0
            report(0, self.total)

        def on_train_batch_end(self, batch, logs=None):
            self.done += 1
            report(self.done, self.total)

    return BatchProgress()
