"""MNIST on disk: Keras's ``mnist.npz`` layout, training shards, and the model's input scaling. No TensorFlow."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.atomic import atomic_path

IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10


@dataclass(frozen=True)
class Mnist:
    """The four MNIST arrays: uint8 images (n, 28, 28) and uint8 labels (n,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def check_images_and_labels(images: np.ndarray, labels: np.ndarray, source: str) -> None:
    """Raise ValueError unless these are uint8 28x28 images with one label 0-9 each."""
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"{source}: images must be uint8 of shape (n, 28, 28), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"{source}: expected {images.shape[0]} labels, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or (labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES)):
        raise ValueError(f"{source}: labels must be integers 0-9")


def load_arrays(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Read the named arrays from an ``.npz`` without unpickling anything; clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a readable .npz file ({error})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: not an .npz archive")
    with archive:
        missing = [name for name in names if name not in archive.files]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing} (has {sorted(archive.files)})")
        try:
            return {name: archive[name] for name in names}
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
            # ValueError here means object arrays, which would need unpickling: never for data files.
            raise ValueError(f"{path}: not a readable .npz file ({error})") from None


def load_mnist(path: Path) -> Mnist:
    """Load and check an ``mnist.npz`` with x_train, y_train, x_test, y_test."""
    arrays = load_arrays(path, ("x_train", "y_train", "x_test", "y_test"))
    check_images_and_labels(arrays["x_train"], arrays["y_train"], f"{path} (train)")
    check_images_and_labels(arrays["x_test"], arrays["y_test"], f"{path} (test)")
    return Mnist(**arrays)


def load_test_set(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Only the 10k test images and labels (skips decompressing the training set)."""
    arrays = load_arrays(path, ("x_test", "y_test"))
    check_images_and_labels(arrays["x_test"], arrays["y_test"], f"{path} (test)")
    return arrays["x_test"], arrays["y_test"]


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    """Write arrays to an ``.npz`` atomically."""
    with atomic_path(path) as temporary_path:
        with open(temporary_path, "wb") as file:
            np.savez(file, **arrays)


def save_shard(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write one training shard (``x`` uint8 (n, 28, 28), ``y``) atomically."""
    check_images_and_labels(images, labels, str(path))
    save_arrays(path, x=images, y=labels)


def load_shard(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one training shard."""
    arrays = load_arrays(path, ("x", "y"))
    check_images_and_labels(arrays["x"], arrays["y"], str(path))
    if arrays["x"].shape[0] == 0:
        raise ValueError(f"{path}: shard is empty")
    return arrays["x"], arrays["y"]


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 (n, 28, 28) images -> float32 (n, 28, 28, 1) in [0, 1], the model's input."""
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]
