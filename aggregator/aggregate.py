"""Aggregate one round: check every client model against the round's starting model, combine them (streaming),
apply the run's server strategy, and write the server state and then the next global model."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aggregator.fedavg import FedAvgAccumulator, check_num_examples
from aggregator.robust import combine_stacked
from aggregator.server import ServerOptimizer, State
from aggregator.serverstate import read_server_state, write_server_state
from common.layout import RunLayout
from common.modelfile import (
    open_model_file,
    read_metadata,
    read_model_config,
    read_weight_block,
    read_weight_specs,
    read_weights,
    sha256_of_file,
    write_averaged_model,
)
from common.runconfig import RunConfig, load_config
from common.sampling import read_sampled_clients

CLIENT_FILE_PATTERN = re.compile(r"^client-(\d+)\.h5$")
# Median and trimmed mean hold one block of a weight from every client at once (float64): this many values
# in all, so their memory stays bounded whatever the layer size and the number of clients.
VALUES_PER_BLOCK = 1 << 22


@dataclass(frozen=True)
class ClientCheck:
    """What every client of a round must match: its run, round, starting model and architecture."""

    run_id: str
    round_number: int
    start_model: Path
    start_sha256: str
    model_config: dict[str, Any]
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, np.dtype]

    @classmethod
    def from_start_model(cls, start_model: Path, run_id: str, round_number: int) -> ClientCheck:
        """The reference a round's clients are checked against: the model they all started from."""
        with open_model_file(start_model) as handle:
            model_config = read_model_config(handle)
            specs = read_weight_specs(handle)
        return cls(
            run_id=run_id,
            round_number=round_number,
            start_model=Path(start_model),
            start_sha256=sha256_of_file(start_model),
            model_config=model_config,
            shapes={name: shape for name, (shape, _) in specs.items()},
            dtypes={name: dtype for name, (_, dtype) in specs.items()},
        )

    def check_client(self, path: Path, handle) -> int:
        """Refuse a client not from this run and round, not from the starting model, or of another architecture;
        return its ``num_examples``."""
        metadata = read_metadata(handle)
        check_client_metadata(path, metadata, self.run_id, self.round_number, self.start_sha256)
        reference = f"the round's starting model {self.start_model.parent.name}/{self.start_model.name}"
        if read_model_config(handle) != self.model_config:
            raise ValueError(f"{path}: different architecture from {reference}")
        specs = read_weight_specs(handle)
        missing, extra = sorted(self.shapes.keys() - specs.keys()), sorted(specs.keys() - self.shapes.keys())
        if missing or extra:
            raise ValueError(
                f"{path}: different architecture from {reference}: missing weights {missing[:3]}, "
                f"unexpected weights {extra[:3]}"
            )
        for name, (shape, dtype) in specs.items():
            if shape != self.shapes[name]:
                raise ValueError(
                    f"{path}: different architecture: weight {name!r} has shape {shape}, expected {self.shapes[name]}"
                )
            if not np.issubdtype(dtype, np.floating):
                raise ValueError(f"{path}: weight {name!r} has non-float dtype {dtype}")
        return int(metadata["num_examples"])


def check_client_metadata(
    path: Path, metadata: dict, expected_run_id: str, expected_round: int, expected_global_sha256: str | None
) -> None:
    """Refuse a client model that is not from this run and round, or did not start from this round's model."""
    if "num_examples" not in metadata:
        raise ValueError(f"{path}: missing num_examples attribute (not written by our trainer?)")
    try:
        check_num_examples(metadata["num_examples"])
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    if metadata.get("run_id") != expected_run_id:
        raise ValueError(f"{path}: from run {metadata.get('run_id')!r}, expected run {expected_run_id!r}")
    if metadata.get("round") != expected_round:
        raise ValueError(f"{path}: from round {metadata.get('round')!r}, expected round {expected_round}")
    if expected_global_sha256 is not None and metadata.get("global_sha256") != expected_global_sha256:
        raise ValueError(f"{path}: did not start from this round's global model (stale client?)")


def weighted_mean_of_clients(client_paths: Sequence[Path], check: ClientCheck) -> FedAvgAccumulator:
    """FedAvg's example-weighted mean, one client in memory at a time (memory flat in the number of clients)."""
    accumulator = FedAvgAccumulator()
    for path in client_paths:
        with open_model_file(path) as handle:
            num_examples = check.check_client(path, handle)
            weights = read_weights(handle)
        try:
            accumulator.add(weights, num_examples)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
    return accumulator


def robust_combination_of_clients(
    client_paths: Sequence[Path], check: ClientCheck, aggregation: str, trim_fraction: float | None
) -> tuple[dict[str, np.ndarray], int]:
    """Coordinate-wise median or trimmed mean, streaming one block of one weight across all clients at a time."""
    total_examples = 0
    for path in client_paths:
        with open_model_file(path) as handle:
            total_examples += check.check_client(path, handle)
    combined: dict[str, np.ndarray] = {}
    for name, shape in check.shapes.items():
        output = np.empty(shape, dtype=np.float64)
        for block in row_blocks(shape, len(client_paths)):
            stacked = np.stack([read_client_block(path, name, block) for path in client_paths])
            output[block] = combine_stacked(stacked, aggregation, trim_fraction)
        combined[name] = output
    return combined, total_examples


def read_client_block(path: Path, name: str, block) -> np.ndarray:
    """One block of one weight of one client, as float64, refused if it is not finite."""
    with open_model_file(path) as handle:
        values = np.asarray(read_weight_block(handle, name, block), dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{path}: weight {name!r} contains NaN or Inf")
    return values


def row_blocks(shape: tuple[int, ...], num_clients: int) -> list:
    """Slices of the first axis, each small enough that ``num_clients`` copies fit in VALUES_PER_BLOCK."""
    if len(shape) == 0:
        return [...]
    values_per_row = int(np.prod(shape[1:], dtype=np.int64))
    rows_per_block = max(1, VALUES_PER_BLOCK // max(1, values_per_row * num_clients))
    return [slice(start, min(start + rows_per_block, shape[0])) for start in range(0, shape[0], rows_per_block)] or [...]


def client_paths_for_round(layout: RunLayout, round_number: int, workers: Sequence[int]) -> list[Path]:
    """Exactly the client files of ``workers`` in a round, or a ValueError naming what is missing or extra."""
    round_dir = layout.round_dir(round_number)
    found = set()
    if round_dir.is_dir():
        for entry in round_dir.iterdir():
            match = CLIENT_FILE_PATTERN.match(entry.name)
            if match:
                found.add(int(match.group(1)))
    expected = set(workers)
    missing, extra = sorted(expected - found), sorted(found - expected)
    if missing:
        raise ValueError(f"round {round_number}: missing client models for workers {missing} in {round_dir}")
    if extra:
        raise ValueError(
            f"round {round_number}: unexpected client models for workers {extra} (expected {len(expected)})"
        )
    return [layout.client_model_path(round_number, worker) for worker in sorted(expected)]


def run_config(layout: RunLayout, expect: int) -> RunConfig:
    """The run's configuration from ``run.json``; a run made without one is plain FedAvg over ``expect`` workers."""
    if not layout.config_path.exists():
        return RunConfig(workers=expect)
    config = load_config(layout.config_path)
    if config.workers != expect:
        raise ValueError(f"--expect {expect}, but {layout.config_path} has {config.workers} workers")
    return config


def workers_of_round(layout: RunLayout, config: RunConfig, round_number: int) -> list[int]:
    """The round's sampled workers from its ``clients.json``, or every worker when the run does not sample."""
    path = layout.sampled_clients_path(round_number)
    if path.exists():
        return read_sampled_clients(path, config.workers, config.clients_each_round)
    if config.clients_each_round != config.workers:
        raise ValueError(
            f"{path} is missing: the run samples {config.clients_each_round} of {config.workers} workers per round"
        )
    return list(range(config.workers))


def server_state_before(
    layout: RunLayout, optimizer: ServerOptimizer, round_number: int, shapes: dict[str, tuple[int, ...]]
) -> State:
    """The optimizer's state after the previous round (its initial state before round 1)."""
    previous_path = layout.server_state_path(round_number - 1)
    if not optimizer.slots:
        if previous_path.exists():
            # A stateless run cannot have made it: run.json was changed or lost.
            raise ValueError(
                f"{previous_path}: round {round_number - 1} kept server state, but the run uses {optimizer.strategy}"
            )
        return {}
    if round_number == 1:
        return optimizer.initial_state(shapes)
    return read_server_state(previous_path, optimizer, layout.run_id, round_number - 1, shapes)


def aggregate_round(layout: RunLayout, round_number: int, expect: int) -> dict[str, Any]:
    """Combine round ``round_number``'s clients into its global model with the run's strategy and aggregation."""
    if round_number < 1:
        raise ValueError(f"--round must be at least 1 (round 0 is the initial model), got {round_number}")
    if expect < 1:
        raise ValueError(f"--expect must be at least 1, got {expect}")
    config = run_config(layout, expect)
    start_model = layout.global_model_path(round_number - 1)
    if not start_model.is_file():
        raise ValueError(f"{start_model}: the round's starting model is missing")
    check = ClientCheck.from_start_model(start_model, layout.run_id, round_number)
    workers = workers_of_round(layout, config, round_number)
    client_paths = client_paths_for_round(layout, round_number, workers)
    optimizer = ServerOptimizer.from_config(config)

    if config.aggregation == "mean":
        accumulator = weighted_mean_of_clients(client_paths, check)
        total_examples = accumulator.total_examples
        # FedAvg writes the float32 mean exactly as before; a server optimizer starts from the float64 mean.
        combined = accumulator.result() if optimizer.strategy == "fedavg" else accumulator.mean()
    else:
        combined, total_examples = robust_combination_of_clients(
            client_paths, check, config.aggregation, config.trim_fraction
        )

    state = server_state_before(layout, optimizer, round_number, check.shapes)
    if optimizer.strategy == "fedavg":
        new_weights = combined
    else:
        with open_model_file(start_model) as handle:
            start_weights = read_weights(handle)
        new_weights, new_state = optimizer.step(start_weights, combined, state)
        # State first: a global model on the volume always has its state beside it (a crash in between is
        # redone by the retry, which recomputes both from the previous round's files).
        write_server_state(layout.server_state_path(round_number), optimizer, new_state, layout.run_id, round_number)

    summary = {
        "run_id": layout.run_id,
        "round": round_number,
        "num_examples": total_examples,
        "num_clients": len(client_paths),
    }
    output = {name: np.asarray(array).astype(check.dtypes[name], copy=False) for name, array in new_weights.items()}
    write_averaged_model(start_model, layout.global_model_path(round_number), output, summary)
    return {**summary, "workers": workers, "strategy": optimizer.strategy, "aggregation": config.aggregation}
