"""The server optimizer's state file: one HDF5 file per round, ``rounds/round-K/server-state.h5``.

    attrs   format (1), run_id, round, strategy, settings (JSON of the strategy's settings)
    <slot>/<weight name>   float64 arrays, one group per slot (fedavgm: momentum; fedadagrad, fedadam, fedyogi: m, v),
                           named like the weights under the model file's ``model_weights``

Written atomically before the round's global model, so a global model always has its state beside it, and a
retried aggregation recomputes both from the previous round's files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from aggregator.server import ServerOptimizer, State
from common.atomic import atomic_path
from common.modelfile import decode_attribute

FORMAT_VERSION = 1


def write_server_state(path: Path, optimizer: ServerOptimizer, state: State, run_id: str, round_number: int) -> None:
    """Write the state after ``round_number`` atomically."""
    with atomic_path(path, suffix=".tmp.h5") as temporary_path:
        with h5py.File(temporary_path, "w") as handle:
            handle.attrs["format"] = FORMAT_VERSION
            handle.attrs["run_id"] = run_id
            handle.attrs["round"] = round_number
            handle.attrs["strategy"] = optimizer.strategy
            handle.attrs["settings"] = json.dumps(optimizer.settings(), sort_keys=True)
            for slot, arrays in state.items():
                group = handle.create_group(slot)
                for name, array in arrays.items():
                    group.create_dataset(name, data=np.asarray(array, dtype=np.float64))


def read_server_state(
    path: Path, optimizer: ServerOptimizer, run_id: str, round_number: int, shapes: Mapping[str, tuple[int, ...]]
) -> State:
    """The state after ``round_number``, refused unless it is this run's, this strategy's and fits ``shapes``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: server state of round {round_number} is missing (was it aggregated with {optimizer.strategy}?)")
    try:
        with h5py.File(path, "r") as handle:
            header = {key: decode_attribute(handle.attrs.get(key)) for key in ("format", "run_id", "round", "strategy", "settings")}
            check_header(path, header, optimizer, run_id, round_number)
            state = {slot: read_slot(handle, slot) if slot in handle else None for slot in optimizer.slots}
    except (OSError, RuntimeError, KeyError) as error:
        raise ValueError(f"{path}: not a readable server state (truncated or corrupt?): {error}") from None
    for slot, arrays in state.items():
        if arrays is None:
            raise ValueError(f"{path}: no {slot!r} in the server state")
        found = {name: array.shape for name, array in arrays.items()}
        if found != dict(shapes):
            raise ValueError(f"{path}: its {slot!r} does not fit the round's starting model (different architecture)")
        if not all(np.all(np.isfinite(array)) for array in arrays.values()):
            raise ValueError(f"{path}: its {slot!r} contains NaN or Inf")
    return state


def check_header(path: Path, header: dict[str, Any], optimizer: ServerOptimizer, run_id: str, round_number: int) -> None:
    """Refuse a state file from another format, run, round, strategy or settings."""
    if header["format"] != FORMAT_VERSION:
        raise ValueError(f"{path}: server state format {header['format']!r}, expected {FORMAT_VERSION}")
    if header["run_id"] != run_id or header["round"] != round_number:
        raise ValueError(
            f"{path}: server state of run {header['run_id']!r} round {header['round']!r}, "
            f"expected run {run_id!r} round {round_number}"
        )
    if header["strategy"] != optimizer.strategy:
        raise ValueError(f"{path}: server state of {header['strategy']!r}, but the run uses {optimizer.strategy!r}")
    try:
        settings = json.loads(header["settings"])
    except (TypeError, json.JSONDecodeError):
        settings = None
    if settings != optimizer.settings():
        raise ValueError(f"{path}: server state made with settings {settings}, the run uses {optimizer.settings()}")


def read_slot(handle: h5py.File, slot: str) -> dict[str, np.ndarray]:
    """Every array under one slot's group, keyed by weight name."""
    arrays: dict[str, np.ndarray] = {}

    def collect(name: str, item: Any) -> None:
        if isinstance(item, h5py.Dataset):
            arrays[name] = item[()].astype(np.float64)

    handle[slot].visititems(collect)
    return arrays

