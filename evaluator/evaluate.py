"""The accuracy test as a library: evaluate a model file on the 10k MNIST test set (Keras's public API only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.data import load_test_set, to_model_input
from evaluator.metrics import classification_metrics

PREDICTION_BATCH_SIZE = 1000


def predict_probabilities(model_path: Path, images: np.ndarray, model=None) -> np.ndarray:
    """Softmax outputs of the model at ``model_path`` for uint8 images, in batches.

    ``model``: a built model of the same architecture to load the weights into, instead of building one.
    """
    if not Path(model_path).is_file():
        raise ValueError(f"{model_path}: model file not found")
    from common.model import load_model

    try:
        if model is None:
            model = load_model(model_path)
        else:
            model.load_weights(model_path)
    except Exception as error:  # Keras raises many types for a file it cannot read
        raise ValueError(f"{model_path}: not a loadable Keras model ({error})") from None
    inputs = to_model_input(images)
    batches = [
        np.asarray(model.predict_on_batch(inputs[start : start + PREDICTION_BATCH_SIZE]))
        for start in range(0, len(inputs), PREDICTION_BATCH_SIZE)
    ]
    return np.concatenate(batches)


def evaluate(model_path: Path, data: Path, model=None) -> dict:
    """The accuracy-test metrics of one model file on the MNIST test set (``model``: as predict_probabilities)."""
    images, labels = load_test_set(data)
    metrics = classification_metrics(predict_probabilities(model_path, images, model), labels)
    return {"model": str(model_path), **metrics}

