"""Classification metrics from predicted probabilities: pure numpy, no TensorFlow."""

from __future__ import annotations

import numpy as np

NUM_CLASSES = 10


def classification_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, mean cross-entropy loss, per-class accuracy and the confusion matrix (rows: true label)."""
    if probabilities.ndim != 2 or probabilities.shape != (len(labels), NUM_CLASSES):
        raise ValueError(f"expected probabilities of shape ({len(labels)}, {NUM_CLASSES}), got {probabilities.shape}")
    if len(labels) == 0:
        raise ValueError("cannot evaluate on an empty test set")
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(confusion, (labels.astype(np.int64), predicted), 1)
    per_class_totals = confusion.sum(axis=1)
    per_class_accuracy = np.divide(
        np.diag(confusion), per_class_totals, out=np.zeros(NUM_CLASSES), where=per_class_totals > 0
    )
    # Clip as Keras does, so one confident mistake cannot make the loss infinite.
    true_class_probability = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
    return {
        "accuracy": float((predicted == labels).mean()),
        "loss": float(-np.log(true_class_probability).mean()),
        "num_examples": int(len(labels)),
        "per_class_accuracy": [round(float(value), 6) for value in per_class_accuracy],
        "confusion_matrix": confusion.tolist(),
    }
