"""The LiteRT (TensorFlow Lite) interpreter behind Keras's ``predict_on_batch``: what the server runs. No TensorFlow.

The publisher converts each model to ``model.tflite`` once (publisher/litert.py) and the server loads it with this
module, which lives in ``common/`` beside the model-file format: the publisher needs nothing from the server's
package. Loading that file takes milliseconds: a gunicorn worker measured 64 MiB and its server 0.5 s to a loaded
model, where importing TensorFlow to convert the model in every worker had taken ~720 MiB per worker and many
seconds (bench/README.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


class LiteRtModel:
    """A converted model: float32 (n, 28, 28, 1) in [0, 1] -> probabilities (n, 10); not thread-safe."""

    def __init__(self, model_content: bytes, threads: int = 1):
        """``threads`` per model call: one is fastest here, as the server's own threads keep the cores busy."""
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_content=model_content, num_threads=threads)
        input_details = self._interpreter.get_input_details()
        output_details = self._interpreter.get_output_details()
        if (len(input_details), len(output_details)) != (1, 1):
            raise ValueError(f"expected a model with one input and one output, got {len(input_details)} and "
                             f"{len(output_details)}")
        input_shape, output_shape = tuple(input_details[0]["shape"][1:]), tuple(output_details[0]["shape"][1:])
        if input_shape != INPUT_SHAPE or output_shape != (NUM_CLASSES,):
            raise ValueError(f"expected a model from (n, 28, 28, 1) to (n, 10), got {input_shape} -> {output_shape}")
        self._input = input_details[0]["index"]
        self._output = output_details[0]["index"]
        self._batch_size = 0  # no tensors allocated yet

    @classmethod
    def from_file(cls, path: Path, threads: int = 1) -> LiteRtModel:
        """Load a ``model.tflite``; a file that is not a LiteRT model is a ValueError."""
        return cls(Path(path).read_bytes(), threads=threads)

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for a batch (LoadedModel makes one call at a time)."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if len(batch) != self._batch_size:  # re-planning the tensors costs ~10 us; the model call dominates
            self._interpreter.resize_tensor_input(self._input, batch.shape)
            self._interpreter.allocate_tensors()
            self._batch_size = len(batch)
        self._interpreter.set_tensor(self._input, batch)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output)

    def predict(self, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Probabilities for any number of images, ``batch_size`` per call (for checks on the whole test set)."""
        return np.concatenate([self.predict_on_batch(images[start : start + batch_size])
                               for start in range(0, len(images), batch_size)])
