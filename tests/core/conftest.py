"""Fixtures for the pipeline's unit tests: tiny synthetic data and fake Keras h5 files (no TensorFlow)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from common.data import save_arrays

FAKE_MODEL_CONFIG = json.dumps({"class_name": "Sequential", "config": {"name": "fake", "layers": ["dense"]}})


def write_fake_model(path: Path, weights: dict[str, np.ndarray], metadata: dict, model_config: str = FAKE_MODEL_CONFIG) -> Path:
    """An h5 file shaped like Keras's legacy format: a model_config attribute and a model_weights group."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle.attrs["model_config"] = model_config
        handle.attrs["keras_version"] = "3.15.1"
        group = handle.create_group("model_weights")
        for name, array in weights.items():
            group.create_dataset(name, data=array)
        for key, value in metadata.items():
            handle.attrs[key] = value
    return path


@pytest.fixture
def fake_model():
    return write_fake_model


@pytest.fixture
def tiny_mnist(tmp_path: Path) -> Path:
    """A 300-train / 50-test npz in Keras's mnist layout, labels 0-9 in a known pattern."""
    rng = np.random.default_rng(0)
    path = tmp_path / "data" / "mnist.npz"
    save_arrays(
        path,
        x_train=rng.integers(0, 256, size=(300, 28, 28), dtype=np.uint8),
        y_train=(np.arange(300) % 10).astype(np.uint8),
        x_test=rng.integers(0, 256, size=(50, 28, 28), dtype=np.uint8),
        y_test=(np.arange(50) % 10).astype(np.uint8),
    )
    return path


@pytest.fixture
def mnist_slice(tmp_path: Path, real_mnist_path: Path) -> Path:
    """The first 6,000 training and 1,000 test images of real MNIST: a round of a few seconds that still learns."""
    from common.data import load_mnist

    mnist = load_mnist(real_mnist_path)
    path = tmp_path / "slice.npz"
    save_arrays(path, x_train=mnist.x_train[:6000], y_train=mnist.y_train[:6000],
                x_test=mnist.x_test[:1000], y_test=mnist.y_test[:1000])
    return path
