"""The one module that knows the model-file format: Keras ``.h5`` files read with h5py (weights as named numpy
arrays, our metadata as root attributes) and written atomically. No TensorFlow: saving takes a built Keras model."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from types import EllipsisType
from typing import Any

import h5py
import numpy as np

from common.atomic import atomic_path

WEIGHTS_GROUP = "model_weights"
# Root attributes we add to Keras's own; Keras ignores unknown root attributes when loading.
METADATA_KEYS = ("run_id", "round", "worker", "num_examples", "num_clients", "global_sha256")


def sha256_of_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def open_model_file(path: Path) -> h5py.File:
    """Open a Keras h5 model for reading; a missing, truncated or non-HDF5 file raises a clear ValueError."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"{path}: not a readable HDF5 model file (truncated or corrupt?): {error}") from None
    if WEIGHTS_GROUP not in handle or "model_config" not in handle.attrs:
        handle.close()
        raise ValueError(f"{path}: not a Keras h5 model (no {WEIGHTS_GROUP!r} group or model_config)")
    return handle


def decode_attribute(value: Any) -> Any:
    """h5py attribute -> plain Python value."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_metadata(handle: h5py.File) -> dict[str, Any]:
    """Our root attributes (run_id, round, num_examples, ...) that are present in an open model file."""
    return {key: decode_attribute(handle.attrs[key]) for key in METADATA_KEYS if key in handle.attrs}


def read_model_config(handle: h5py.File) -> dict[str, Any]:
    """The architecture Keras stored, as a dict (used to tell whether two models can be averaged)."""
    config = decode_attribute(handle.attrs["model_config"])
    return json.loads(config)


def read_weights(handle: h5py.File) -> dict[str, np.ndarray]:
    """Every weight array under ``model_weights``, keyed by its path in the file."""
    weights: dict[str, np.ndarray] = {}

    def collect(name: str, item: Any) -> None:
        if isinstance(item, h5py.Dataset):
            weights[name] = item[()]

    try:
        handle[WEIGHTS_GROUP].visititems(collect)
    except (OSError, RuntimeError, KeyError) as error:
        raise ValueError(f"{handle.filename}: weights unreadable (truncated or corrupt?): {error}") from None
    return weights


def write_metadata(path: Path, metadata: Mapping[str, Any]) -> None:
    """Set our root attributes on a model file in place (only on a file not yet visible to others)."""
    with h5py.File(path, "r+") as handle:
        for key, value in metadata.items():
            if key not in METADATA_KEYS:
                raise ValueError(f"unknown model metadata key {key!r}")
            handle.attrs[key] = value


def save_model_with_metadata(model, path: Path, metadata: Mapping[str, Any]) -> None:
    """Save a Keras model as h5 with our root attributes, atomically (readers never see a partial file)."""
    # h5 on purpose (the aggregator reads it with h5py, no TensorFlow): silence Keras's "legacy format" notice.
    logging.getLogger("absl").setLevel(logging.ERROR)
    with atomic_path(path, suffix=".tmp.h5") as temporary_path:
        model.save(temporary_path, include_optimizer=False)
        write_metadata(temporary_path, metadata)


def read_file_metadata(path: Path) -> dict[str, Any]:
    """Our root attributes of the model file at ``path`` (ValueError if it is not a readable model file)."""
    with open_model_file(path) as handle:
        return read_metadata(handle)


def write_averaged_model(
    template_path: Path, output_path: Path, weights: Mapping[str, np.ndarray], metadata: Mapping[str, Any]
) -> None:
    """Write ``output_path`` atomically: ``template_path``'s architecture with ``weights`` and ``metadata``."""
    with atomic_path(output_path) as temporary_path:
        with h5py.File(template_path, "r") as template, h5py.File(temporary_path, "w") as output:
            for key, value in template.attrs.items():
                if key not in METADATA_KEYS:
                    output.attrs[key] = value
            template.copy(template[WEIGHTS_GROUP], output, name=WEIGHTS_GROUP)
            for name, array in weights.items():
                output[WEIGHTS_GROUP][name][...] = array
            for key, value in metadata.items():
                output.attrs[key] = value


def read_weight_specs(handle: h5py.File) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Every weight's (shape, dtype) under ``model_weights``, without reading its values."""
    specs: dict[str, tuple[tuple[int, ...], np.dtype]] = {}

    def collect(name: str, item: Any) -> None:
        if isinstance(item, h5py.Dataset):
            specs[name] = (tuple(item.shape), item.dtype)

    try:
        handle[WEIGHTS_GROUP].visititems(collect)
    except (OSError, RuntimeError, KeyError) as error:
        raise ValueError(f"{handle.filename}: weights unreadable (truncated or corrupt?): {error}") from None
    return specs


def read_weight_block(handle: h5py.File, name: str, block: slice | EllipsisType) -> np.ndarray:
    """Rows ``block`` (a slice of the first axis, or ``...`` for all) of one weight, read from the file alone."""
    try:
        return handle[WEIGHTS_GROUP][name][block]
    except (OSError, RuntimeError, KeyError) as error:
        raise ValueError(f"{handle.filename}: weight {name!r} unreadable (truncated or corrupt?): {error}") from None
