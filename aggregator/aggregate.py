"""Aggregate one round: check every client model, stream them through FedAvg, write the next global model."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from aggregator.fedavg import FedAvgAccumulator, check_num_examples
from common.modelfile import (
    open_model_file,
    read_metadata,
    read_model_config,
    read_weights,
    sha256_of_file,
    write_averaged_model,
)
from common.layout import RunLayout

CLIENT_FILE_PATTERN = re.compile(r"^client-(\d+)\.h5$")


def aggregate_files(
    client_paths: Sequence[Path],
    output_path: Path,
    *,
    expected_run_id: str,
    expected_round: int,
    expected_global_sha256: str | None = None,
) -> dict[str, int]:
    """FedAvg the client models into ``output_path``; any bad client raises ValueError and nothing is written."""
    if not client_paths:
        raise ValueError("no client models to aggregate")
    accumulator = FedAvgAccumulator()
    reference_config = None
    for path in client_paths:
        # One client in memory at a time: peak memory is the running sum plus one model.
        with open_model_file(path) as handle:
            metadata = read_metadata(handle)
            check_client_metadata(path, metadata, expected_run_id, expected_round, expected_global_sha256)
            config = read_model_config(handle)
            if reference_config is None:
                reference_config = config
            elif config != reference_config:
                raise ValueError(f"{path}: different architecture from {client_paths[0]}")
            weights = read_weights(handle)
        try:
            accumulator.add(weights, metadata["num_examples"])
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
    summary = {
        "run_id": expected_run_id,
        "round": expected_round,
        "num_examples": accumulator.total_examples,
        "num_clients": accumulator.num_clients,
    }
    write_averaged_model(client_paths[0], output_path, accumulator.result(), summary)
    return summary


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


def client_paths_for_round(layout: RunLayout, round_number: int, expect: int) -> list[Path]:
    """Exactly the ``expect`` client files of a round, or a ValueError naming what is missing or extra."""
    if expect < 1:
        raise ValueError(f"--expect must be at least 1, got {expect}")
    round_dir = layout.round_dir(round_number)
    found = set()
    if round_dir.is_dir():
        for entry in round_dir.iterdir():
            match = CLIENT_FILE_PATTERN.match(entry.name)
            if match:
                found.add(int(match.group(1)))
    expected = set(range(expect))
    missing, extra = sorted(expected - found), sorted(found - expected)
    if missing:
        raise ValueError(f"round {round_number}: missing client models for workers {missing} in {round_dir}")
    if extra:
        raise ValueError(f"round {round_number}: unexpected client models for workers {extra} (expected {expect})")
    return [layout.client_model_path(round_number, worker) for worker in range(expect)]


def aggregate_round(layout: RunLayout, round_number: int, expect: int) -> dict[str, int]:
    """Average round ``round_number``'s clients into its global model, checking they started from the previous one."""
    if round_number < 1:
        raise ValueError(f"--round must be at least 1 (round 0 is the initial model), got {round_number}")
    start_model = layout.global_model_path(round_number - 1)
    if not start_model.is_file():
        raise ValueError(f"{start_model}: the round's starting model is missing")
    return aggregate_files(
        client_paths_for_round(layout, round_number, expect),
        layout.global_model_path(round_number),
        expected_run_id=layout.run_id,
        expected_round=round_number,
        expected_global_sha256=sha256_of_file(start_model),
    )
