"""The model definitions: our small convnet for 28x28 digits (the default), the FedAvg paper's MNIST CNN, and
how they are trained each round.

Everything that builds, trains or loads a model imports this file; nothing else defines layers.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

from common.runconfig import CLIENT_OPTIMIZERS, MODEL_ARCHITECTURES, RunConfig

NUM_CLASSES = 10
INPUT_SHAPE = (28, 28, 1)
# The default round-1 step size; a run's clients take theirs, round by round, from its RunConfig.
LEARNING_RATE = RunConfig().learning_rate


def build_model(seed: int | None = None, architecture: str = "convnet") -> keras.Model:
    """A compiled model of ``architecture``; ``seed`` makes its initial weights reproducible (trainers share them)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"model must be one of {', '.join(MODEL_ARCHITECTURES)}, got {architecture!r}")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    model = ARCHITECTURES[architecture]()
    compile_model(model)
    return model


def convnet_layers() -> keras.Sequential:
    """Our convnet (the default)."""
    return keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE),
            # Two 3x3 convolutions before each pooling see 5x5 at the cost of 3x3s (as in VGG).
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(NUM_CLASSES, activation="softmax"),
        ],
        name="mnist_convnet",
    )


def fedavg_cnn_layers() -> keras.Sequential:
    """The MNIST CNN of McMahan et al. 2017 ("Communication-Efficient Learning...", section 3): 1,663,370 weights."""
    return keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE),
            # "same" padding keeps 28x28 -> 14x14 -> 7x7, which gives the paper's parameter count.
            layers.Conv2D(32, kernel_size=(5, 5), padding="same", activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Conv2D(64, kernel_size=(5, 5), padding="same", activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Flatten(),
            layers.Dense(512, activation="relu"),
            layers.Dense(NUM_CLASSES, activation="softmax"),
        ],
        name="mnist_fedavg_cnn",
    )


# The names RunConfig accepts (--model), each with its layers.
ARCHITECTURES = {"convnet": convnet_layers, "fedavg-cnn": fedavg_cnn_layers}


def learning_rate_for_round(round_number: int) -> float:
    """The clients' step size in ``round_number`` (1 for the first round) of a run with the default settings."""
    return RunConfig().learning_rate_for_round(round_number)


# The names RunConfig accepts (--client-optimizer), each with its Keras optimizer.
OPTIMIZERS = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}


def compile_model(model: keras.Model, learning_rate: float = LEARNING_RATE, optimizer: str = "adam") -> None:
    """Attach a fresh ``optimizer``, the loss and the metric (each round's trainers start a new optimizer)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"client-optimizer must be one of {', '.join(CLIENT_OPTIMIZERS)}, got {optimizer!r}")
    model.compile(
        optimizer=OPTIMIZERS[optimizer](learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def load_model(path: Path, learning_rate: float = LEARNING_RATE, optimizer: str = "adam") -> keras.Model:
    """Load an h5 model written by any component, compiled and ready to train or predict."""
    model = keras.models.load_model(path, compile=False)
    compile_model(model, learning_rate, optimizer)
    return model
