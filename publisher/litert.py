"""Convert a published Keras model to LiteRT (``model.tflite``) once, so the server never needs TensorFlow.

The publisher calls ``write_litert`` while it builds a version, so every version it publishes has ``model.tflite``
beside ``model.h5``. Versions published before that are converted in place by

    python -m publisher.litert --volume volume          # every published version without model.tflite

(the file appears atomically; the server picks it up without a restart).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from common.atomic import atomic_path
from common.cli import ArgumentParser, user_errors
from common.layout import models_dir, published_litert_path, published_model_path, published_versions
from common.litert import LiteRtModel
from common.native_log import min_log_level_on_stderr

# Largest difference in any probability between Keras and LiteRT that a conversion may show on the check images.
# Measured on the 10k MNIST test images: at most ~1e-6 (tests/server/test_server_litert.py); 1e-4 leaves room
# for other CPUs while still catching a wrong conversion (those differ by tenths).
TOLERANCE = 1e-4
CHECK_IMAGES = 32


def to_litert(keras_model) -> bytes:
    """A Keras model -> the LiteRT flatbuffer (float32, no quantization: the same probabilities)."""
    import keras
    import tensorflow as tf

    # The converter exports a SavedModel first, and Keras prints "Saved artifact at ..." to stdout unless its
    # messages go to the log instead.
    was_interactive = keras.config.is_interactive_logging_enabled()
    keras.config.disable_interactive_logging()
    try:
        return tf.lite.TFLiteConverter.from_keras_model(keras_model).convert()
    finally:
        if was_interactive:
            keras.config.enable_interactive_logging()


def max_difference(keras_model, litert_model: LiteRtModel, images: np.ndarray) -> float:
    """Largest absolute difference between the two models' probabilities on ``images`` (float32 (n, 28, 28, 1))."""
    expected = keras_model.predict(images, batch_size=1000, verbose=0)
    return float(np.abs(litert_model.predict(images) - expected).max())


def check_images(count: int = CHECK_IMAGES, seed: int = 0) -> np.ndarray:
    """Reproducible inputs for the publish-time check: random pixels in [0, 1], no data set needed."""
    return np.random.default_rng(seed).random((count, 28, 28, 1), dtype=np.float32)


def write_litert(model_path: Path, litert_path: Path) -> float:
    """Convert the h5 model at ``model_path`` and write ``litert_path`` atomically, after checking that both give
    the same probabilities; returns the largest difference seen."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's INFO lines say nothing to an operator
    # Importing TensorFlow and the first LiteRT interpreter print INFO lines that ignore the setting.
    with min_log_level_on_stderr():
        from common.model import load_model  # imports TensorFlow

        keras_model = load_model(model_path)
        flatbuffer = to_litert(keras_model)
        difference = max_difference(keras_model, LiteRtModel(flatbuffer), check_images())
    if not difference <= TOLERANCE:
        raise ValueError(f"{model_path}: the LiteRT conversion differs from the Keras model by {difference:.2g} "
                         f"(at most {TOLERANCE:g} allowed); nothing written")
    with atomic_path(litert_path, suffix=".tflite") as temporary_path:
        temporary_path.write_bytes(flatbuffer)
    return difference


def convert_missing(models_directory: Path) -> list[int]:
    """Write ``model.tflite`` for every published version that lacks it; returns those versions."""
    converted = []
    for version in published_versions(models_directory):
        version_dir = Path(models_directory) / str(version)
        if not published_litert_path(version_dir).is_file():
            write_litert(published_model_path(version_dir), published_litert_path(version_dir))
            converted.append(version)
    return converted


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m publisher.litert",
        description="Add model.tflite to every published version that was published without it.",
    )
    parser.add_argument("--volume", type=Path, required=True, help="the shared volume (local directory or NFS mount)")
    return parser


@user_errors("publisher.litert")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    directory = models_dir(args.volume)
    if not published_versions(directory):
        raise ValueError(f"{directory}: no published version")
    converted = convert_missing(directory)
    if converted:
        print(f"wrote model.tflite for version(s) {', '.join(map(str, converted))} in {directory}")
    else:
        print(f"every version in {directory} already has model.tflite")
    return 0


if __name__ == "__main__":
    sys.exit(main())
