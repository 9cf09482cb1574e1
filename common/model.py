"""The one model definition: a small convnet for 28x28 digits. Everything that builds a model imports this."""

from __future__ import annotations

import keras
from keras import layers

NUM_CLASSES = 10
INPUT_SHAPE = (28, 28, 1)


def build_model(seed: int | None = None) -> keras.Model:
    """A compiled convnet; ``seed`` makes its initial weights reproducible (every trainer must share them)."""
    if seed is not None:
        keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE),
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(NUM_CLASSES, activation="softmax"),
        ],
        name="mnist_convnet",
    )
    compile_model(model)
    return model


def compile_model(model: keras.Model) -> None:
    """Attach the optimizer, loss and metric every trainer uses (a fresh optimizer each round)."""
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])


def load_model(path) -> keras.Model:
    """Load an h5 model written by any component, compiled and ready to train or predict."""
    model = keras.models.load_model(path, compile=False)
    compile_model(model)
    return model
