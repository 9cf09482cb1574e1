"""Numbers sent as JSON (TF-Serving instances, Open Inference Protocol tensors) -> the model's input batch, or a
4xx that says what is wrong with them."""

from __future__ import annotations

import numpy as np
from flask import abort

INSTANCE_SHAPES = ((28, 28), (28, 28, 1), (784,))  # one image, already in MNIST form
SHAPES_TEXT = "28x28, 28x28x1 or 784"


def number_array(values, what: str) -> np.ndarray:
    """Nested JSON lists of numbers -> a numpy array; 400 for ragged lists, strings, null, booleans, objects, nesting
    deeper than numpy's 64 dimensions and integers beyond 64 bits."""
    try:
        array = np.asarray(values)
    except (ValueError, TypeError, OverflowError):
        array = None
    if array is None or array.dtype.kind not in "iuf":
        abort(400, description=f"{what} must hold numbers only, every image with the same shape: {SHAPES_TEXT}")
    return array


def model_batch(array: np.ndarray, what: str, limit: int) -> np.ndarray:
    """(n, 28, 28), (n, 28, 28, 1) or (n, 784) numbers in [0, 1] -> float32 (n, 28, 28, 1); 4xx otherwise."""
    if array.ndim == 0 or len(array) == 0:
        abort(400, description=f"{what} must hold at least one image")
    if len(array) > limit:
        abort(413, description=f"too many images ({len(array)}); at most {limit} per request")
    if array.shape[1:] not in INSTANCE_SHAPES:
        abort(400, description=f"each image must be {SHAPES_TEXT} numbers; got shape {list(array.shape[1:])}")
    if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
        abort(400, description="pixel values must be numbers in [0, 1] (0 = background, 1 = ink)")
    return array.reshape(-1, 28, 28, 1).astype(np.float32)
