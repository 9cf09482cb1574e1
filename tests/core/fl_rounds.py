"""A round of fake clients on a volume (no TensorFlow): the helper the partial-round, Krum and DP tests share."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aggregator.__main__ import main as aggregator_main
from common.layout import RunLayout
from common.modelfile import open_model_file, read_weights, sha256_of_file
from common.runconfig import RunConfig, save_config
from tests.core.conftest import write_fake_model

RUN_ID = "run-fl"
SHAPES = {"dense/kernel": (6, 5), "dense/bias": (5,)}


def start_round(volume: Path, config: RunConfig, start: dict[str, np.ndarray] | None = None) -> RunLayout:
    """A run with ``config`` and its round-0 model (zeros unless ``start`` is given)."""
    layout = RunLayout(volume, RUN_ID)
    save_config(layout.config_path, config)
    start = start or {name: np.zeros(shape, np.float32) for name, shape in SHAPES.items()}
    write_fake_model(layout.global_model_path(0), start, {"run_id": RUN_ID, "round": 0})
    return layout


def write_client(layout: RunLayout, round_number: int, worker: int, weights: dict[str, np.ndarray], num_examples: int = 100) -> None:
    """One client's model of ``round_number``, trained (as far as the aggregator can tell) from that round's start."""
    write_fake_model(layout.client_model_path(round_number, worker), weights, {
        "run_id": RUN_ID, "round": round_number, "worker": worker, "num_examples": num_examples,
        "global_sha256": sha256_of_file(layout.global_model_path(round_number - 1)),
    })


def aggregate(layout: RunLayout, round_number: int = 1) -> int:
    """The aggregator's command line for one round (it reads the run's workers from run.json); its exit status."""
    return aggregator_main(["--volume", str(layout.volume), "--run-id", RUN_ID, "--round", str(round_number)])


def global_weights(layout: RunLayout, round_number: int = 1) -> dict[str, np.ndarray]:
    with open_model_file(layout.global_model_path(round_number)) as handle:
        return read_weights(handle)
