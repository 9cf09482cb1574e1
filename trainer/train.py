"""Local training of one client: global model in, client model (with its example count) out."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.data import load_shard, to_model_input
from common.layout import RunLayout
from common.modelfile import open_model_file, read_model_config, save_model_with_metadata, sha256_of_file
from common.runconfig import RunConfig, load_config

ProgressCallback = Callable[[int, int], None]


def client_seed(seed: int, round_number: int, worker: int) -> int:
    """A distinct, reproducible seed for each worker and round (shuffling and dropout)."""
    return seed * 1_000_003 + round_number * 1_009 + worker


def check_task(round_number: int, worker: int, epochs: int, batch_size: int) -> None:
    """Refuse numbers no task can have, with the flag's name."""
    if round_number < 1:
        raise ValueError(f"--round must be at least 1 (round 0 is the initial model), got {round_number}")
    if worker < 0:
        raise ValueError(f"--worker must be 0 or more, got {worker}")
    if epochs < 1 or batch_size < 1:
        raise ValueError("--epochs and --batch-size must be at least 1")


class ClientTrainer:
    """Trains clients one after another in one process, keeping the compiled model between them.

    Building, compiling and tracing a Keras model costs far more than training a tiny shard, so a
    long-lived process loads the architecture once and then, per client, only sets the starting
    weights, a fresh optimizer state and this client's random seeds. Every client, first or later,
    goes through the same reset, so a client trains the same way whichever process gets it.
    """

    def __init__(self) -> None:
        self.model = None
        self.model_config: dict | None = None
        self.optimizer: str | None = None
        self.start_sha256: str | None = None
        self.start_weights: list | None = None

    def prepare(self, start_model_path: Path, learning_rate: float, seed: int, optimizer: str = "adam") -> str:
        """Put the model in its starting state for one client; returns the start model's sha256."""
        from common.model import compile_model, load_model

        # Hash before loading, so the recorded hash is of exactly the bytes this client started from.
        start_sha256 = sha256_of_file(start_model_path)
        if start_sha256 != self.start_sha256:
            with open_model_file(start_model_path) as handle:
                model_config = read_model_config(handle)
            # A new round keeps the compiled model; another run's model (another architecture, or the same
            # one under other layer names, which the aggregator checks) is loaded as it is in its file.
            if self.model is None or model_config != self.model_config:
                self.model = load_model(start_model_path, learning_rate, optimizer)
                self.model_config, self.optimizer = model_config, optimizer
            self.model.load_weights(start_model_path)
            self.start_weights, self.start_sha256 = self.model.get_weights(), start_sha256
        else:
            self.model.set_weights(self.start_weights)
        if optimizer != self.optimizer:  # a run with another client optimizer than the kept model's
            compile_model(self.model, learning_rate, optimizer)
            self.optimizer = optimizer
        # Dropout and shuffling draw from their own seeded generators. No global seed here: on TensorFlow,
        # tf.random.set_seed makes every compiled step retrace (0.12 s per batch shape, per client).
        reset_training_state(self.model, learning_rate, seed)
        return start_sha256

    def train(
        self,
        layout: RunLayout,
        round_number: int,
        worker: int,
        epochs: int,
        batch_size: int,
        seed: int,
        progress: ProgressCallback | None = None,
    ) -> dict:
        """Train worker ``worker``'s shard from round ``round_number - 1``'s global model; write its client model."""
        check_task(round_number, worker, epochs, batch_size)
        start_model_path = layout.global_model_path(round_number - 1)
        if not start_model_path.is_file():
            raise ValueError(f"{start_model_path}: the round's starting model is missing")
        images, labels = load_shard(layout.shard_path(worker))

        started = time.monotonic()
        config = run_config(layout)
        learning_rate = config.learning_rate_for_round(round_number)
        start_sha256 = self.prepare(
            start_model_path, learning_rate, client_seed(seed, round_number, worker), config.client_optimizer
        )
        with EpochSummaries(layout.tensorboard_dir(round_number, worker), learning_rate) as log:
            logs = train_epochs(
                self.model, to_model_input(images), labels, epochs, batch_size,
                shuffle_seed=client_seed(seed, round_number, worker), on_epoch_end=log.write, progress=progress,
                proximal_step=make_proximal_step(self.model, config.proximal_mu, learning_rate),
            )
        metadata = {
            "run_id": layout.run_id,
            "round": round_number,
            "worker": worker,
            "num_examples": int(len(labels)),
            "global_sha256": start_sha256,
        }
        save_model_with_metadata(self.model, layout.client_model_path(round_number, worker), metadata)
        return {
            **metadata,
            "train_loss": logs["loss"],
            "train_accuracy": logs["accuracy"],
            "seconds": time.monotonic() - started,
        }


class EpochSummaries:
    """TensorBoard scalars of each local epoch (epoch_loss, epoch_accuracy, epoch_learning_rate) under ``log_dir/train``.

    Written with TensorBoard's own numpy-only writer rather than Keras's TensorBoard callback, which needs
    TensorFlow installed whatever the backend: this way a JAX or PyTorch trainer image logs the same events.
    """

    def __init__(self, log_dir: Path, learning_rate: float) -> None:
        from tensorboard.summary import Writer

        self.writer = Writer(str(Path(log_dir) / "train"))
        self.learning_rate = learning_rate

    def write(self, epoch: int, logs: dict[str, float]) -> None:
        """Record one finished epoch's training metrics."""
        for name, value in {**logs, "learning_rate": self.learning_rate}.items():
            self.writer.add_scalar(f"epoch_{name}", value, step=epoch)

    def __enter__(self) -> "EpochSummaries":
        return self

    def __exit__(self, *exc_info) -> None:
        self.writer.close()


def run_config(layout: RunLayout) -> RunConfig:
    """The run's run.json (the client optimizer, step size and FedProx mu); the defaults for a run without one."""
    return load_config(layout.config_path) if layout.config_path.is_file() else RunConfig()


def reset_training_state(model, learning_rate: float, seed: int) -> None:
    """A fresh optimizer (zero moments and step count) at ``learning_rate``, and dropout masks seeded by ``seed``."""
    for variable in model.optimizer.variables:
        variable.assign(np.zeros(variable.shape, dtype=variable.dtype))
    model.optimizer.learning_rate = learning_rate
    for layer in model.layers:
        seed_generator = getattr(layer, "seed_generator", None)
        if seed_generator is not None:
            seed_generator.state.assign(np.array([seed, 0], dtype=seed_generator.state.dtype))


def make_proximal_step(model, mu: float, learning_rate: float) -> Callable[[], None] | None:
    """FedProx's pull toward the round's starting weights: a step on (mu / 2) * ||w - w_start||^2 after each update.

    Li et al. add this term to each client's loss. It is taken here as its own gradient step, decoupled from
    the optimizer as AdamW decouples weight decay, so Adam's scaling never shrinks it; mu = 0 is plain training.
    """
    if mu == 0:
        return None
    import keras

    anchors = [keras.ops.copy(variable.value) for variable in model.trainable_variables]
    shrink = learning_rate * mu

    def step() -> None:
        for variable, anchor in zip(model.trainable_variables, anchors):
            variable.assign(variable.value - shrink * (variable.value - anchor))

    return step


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


def train_epochs(
    model,
    inputs: np.ndarray,
    labels: np.ndarray,
    epochs: int,
    batch_size: int,
    shuffle_seed: int,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    progress: ProgressCallback | None = None,
    proximal_step: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Minibatch training as ``model.fit`` does it (reshuffled every epoch); returns the last epoch's metrics.

    ``fit`` builds a new input pipeline on every call (about 0.7 s on TensorFlow, measured with cProfile),
    which costs more than training a tiny client; batches from numpy go straight to the kept train step.
    ``on_epoch_end(epoch, metrics)`` is told of each epoch; ``proximal_step`` (FedProx) runs after every update.
    """
    steps_per_epoch = -(-len(labels) // batch_size)
    shuffler = np.random.default_rng(shuffle_seed)
    total_steps, logs = epochs * steps_per_epoch, {}
    if progress is not None:
        progress(0, total_steps)
    for epoch in range(epochs):
        model.reset_metrics()
        order = shuffler.permutation(len(labels))
        for step in range(steps_per_epoch):
            batch = order[step * batch_size : (step + 1) * batch_size]
            logs = model.train_on_batch(inputs[batch], labels[batch], return_dict=True)
            if proximal_step is not None:
                proximal_step()
            if progress is not None:
                progress(epoch * steps_per_epoch + step + 1, total_steps)
        logs = {name: float(value) for name, value in logs.items()}
        if on_epoch_end is not None:
            on_epoch_end(epoch, logs)
    return logs
