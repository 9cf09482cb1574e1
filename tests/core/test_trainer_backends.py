"""The trainer on tiny synthetic data: a reused trainer trains like a fresh one, and JAX clients average with TensorFlow ones."""

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from aggregator.__main__ import main as aggregator_main
from common.layout import RunLayout
from common.modelfile import open_model_file, read_weights
from splitter.__main__ import main as splitter_main
from trainer.init import main as init_main
from trainer.train import ClientTrainer

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_ID = "backends"


@pytest.fixture
def layout(tiny_mnist) -> RunLayout:
    """A tiny run with its initial model and two shards (trainer.init writes both; the splitter leaves them)."""
    volume = tiny_mnist.parent.parent
    run = ["--volume", str(volume), "--run-id", RUN_ID]
    # Batch size and seed as the trainer's command line will read them from run.json.
    assert init_main(run + ["--workers", "2", "--seed", "1", "--rounds", "1", "--batch-size", "32"]) == 0
    assert splitter_main(run) == 0
    return RunLayout(volume, RUN_ID)


def client_weights(layout: RunLayout, worker: int) -> dict[str, np.ndarray]:
    with open_model_file(layout.client_model_path(1, worker)) as handle:
        return read_weights(handle)


def test_a_reused_trainer_trains_a_client_as_a_fresh_one_does(layout):
    # Prepare: a trainer that has already trained worker 0 (its model, optimizer and seeds are used).
    reused = ClientTrainer()
    reused.train(layout, 1, 0, epochs=1, batch_size=32, seed=1)

    # Execute: worker 1 by the reused trainer, then by a fresh one.
    reused.train(layout, 1, 1, epochs=1, batch_size=32, seed=1)
    from_reused = client_weights(layout, 1)
    ClientTrainer().train(layout, 1, 1, epochs=1, batch_size=32, seed=1)
    from_fresh = client_weights(layout, 1)

    # Assert
    assert from_reused.keys() == from_fresh.keys()
    for name, array in from_fresh.items():
        np.testing.assert_allclose(from_reused[name], array, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("other_run_flags", [[], ["--model", "fedavg-cnn"]], ids=["renamed-layers", "paper-cnn"])
def test_one_trainer_trains_clients_of_different_runs(layout, other_run_flags):
    # Prepare: another run on the same volume, initialized in this process after other models were built, so
    # its layers have other names (or another architecture altogether).
    volume = str(layout.volume)
    other = ["--volume", volume, "--run-id", "other"]
    assert init_main(other + ["--workers", "2", "--seed", "2", "--rounds", "1", *other_run_flags]) == 0
    assert splitter_main(other) == 0

    # Execute: one trainer (as one pool process) takes a client of the first run, then both of the other's.
    trainer = ClientTrainer()
    trainer.train(layout, 1, 0, epochs=1, batch_size=32, seed=1)
    other_layout = RunLayout(layout.volume, "other")
    for worker in (0, 1):
        trainer.train(other_layout, 1, worker, epochs=1, batch_size=32, seed=2)

    # Assert: the aggregator takes the other run's clients as of its starting model's architecture.
    assert aggregator_main(["--volume", volume, "--run-id", "other", "--round", "1"]) == 0


def test_later_clients_leave_the_global_random_seed_alone(layout, monkeypatch):
    # Prepare: a trainer past its first client (building the model may seed it), then any global reseed fails.
    # On TensorFlow a global reseed makes every compiled train step retrace: 0.25 s per 600-example client.
    import keras
    import tensorflow as tf

    trainer = ClientTrainer()
    trainer.train(layout, 1, 0, epochs=1, batch_size=32, seed=1)

    def refuse(seed):
        raise AssertionError("a client reset the global random seed")

    monkeypatch.setattr(keras.utils, "set_random_seed", refuse)
    monkeypatch.setattr(tf.random, "set_seed", refuse)

    # Execute and assert: the next client trains (its own seeded generators draw dropout and shuffling).
    assert trainer.train(layout, 1, 1, epochs=1, batch_size=32, seed=1)["num_examples"] == 150


# Runs the trainer's CLI with TensorFlow unimportable, as in an image built for JAX or PyTorch alone.
WITHOUT_TENSORFLOW = (
    "import sys; sys.modules['tensorflow'] = None; "
    "from trainer.__main__ import main; sys.exit(main(sys.argv[1:]))"
)


def run_trainer(layout: RunLayout, worker: int, backend: str) -> None:
    """``python -m trainer`` for one client under the given Keras backend, on the CPU; TensorFlow only for its own.
    Its batch size (32) and seed (1) come from the run's run.json."""
    environment = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": "",
                   "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)}
    program = ["-m", "trainer"] if backend == "tensorflow" else ["-c", WITHOUT_TENSORFLOW]
    command = [sys.executable, *program, "--volume", str(layout.volume), "--run-id", RUN_ID,
               "--round", "1", "--worker", str(worker)]
    result = subprocess.run(command, cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_a_jax_trained_client_averages_with_a_tensorflow_trained_one(layout):
    # Execute: worker 0 trains under JAX, worker 1 under TensorFlow, then FedAvg of both.
    run_trainer(layout, 0, "jax")
    run_trainer(layout, 1, "tensorflow")
    assert aggregator_main(["--volume", str(layout.volume), "--run-id", RUN_ID, "--round", "1"]) == 0

    # Assert: the same weight names and shapes from both backends, each trained away from the start,
    # and the global model is their average (equal shards of 150 examples).
    jax_client, tensorflow_client = client_weights(layout, 0), client_weights(layout, 1)
    assert {name: array.shape for name, array in jax_client.items()} == {
        name: array.shape for name, array in tensorflow_client.items()
    }
    with open_model_file(layout.global_model_path(0)) as handle:
        start = read_weights(handle)
    with open_model_file(layout.global_model_path(1)) as handle:
        averaged = read_weights(handle)
    for name, array in start.items():
        assert not np.array_equal(jax_client[name], array) or "bias" in name, f"JAX client did not train {name}"
        np.testing.assert_allclose(averaged[name], (jax_client[name] + tensorflow_client[name]) / 2, rtol=1e-5, atol=1e-7)
    with h5py.File(layout.client_model_path(1, 0)) as handle:
        assert handle.attrs["num_examples"] == 150 and handle.attrs["round"] == 1
    assert list(layout.tensorboard_dir(1, 0).rglob("events.out.tfevents.*")), "the JAX client wrote no TensorBoard log"


@pytest.mark.parametrize("earlier_run", [False, True], ids=["fresh-trainer", "after-an-adam-run"])
def test_sgd_clients_take_one_plain_gradient_step(tiny_mnist, earlier_run):
    """--client-optimizer sgd: one full-batch step moves every weight by exactly -lr * gradient (hand computed)."""
    import tensorflow as tf

    from common.data import load_shard, to_model_input
    from common.model import load_model

    # Prepare: the paper's CNN (no dropout, so the gradient is deterministic), one step per epoch on shard 0.
    volume = tiny_mnist.parent.parent
    trainer = ClientTrainer()

    def start_and_train(run_id: str, *flags: str) -> None:
        run = ["--volume", str(volume), "--run-id", run_id]
        assert init_main(run + ["--workers", "2", "--seed", "1", "--rounds", "1", "--model", "fedavg-cnn",
                                "--learning-rate", "0.1", *flags]) == 0
        assert splitter_main(run) == 0
        trainer.train(RunLayout(volume, run_id), 1, 0, epochs=1, batch_size=1000, seed=1)

    start_flags = []
    if earlier_run:
        # The SGD run then starts from this run's model, so the trainer keeps its compiled model.
        start_and_train("adam-run", "--client-optimizer", "adam")
        start_flags = ["--start-model", str(RunLayout(volume, "adam-run").global_model_path(0))]

    # Execute
    start_and_train("sgd-run", "--client-optimizer", "sgd", *start_flags)
    layout = RunLayout(volume, "sgd-run")

    # Assert: the hand computation, from the round's starting model and the whole shard.
    start = load_model(layout.global_model_path(0))
    images, labels = load_shard(layout.shard_path(0))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(labels, start(to_model_input(images))))
    gradients = tape.gradient(loss, [variable.value for variable in start.trainable_variables])
    trained = load_model(layout.client_model_path(1, 0)).get_weights()
    expected = [variable.numpy() - 0.1 * gradient.numpy()
                for variable, gradient in zip(start.trainable_variables, gradients)]
    assert len(trained) == len(expected)
    for got, want in zip(trained, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
