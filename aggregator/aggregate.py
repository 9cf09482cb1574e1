"""Aggregate one round: check every client model against the round's starting model, combine them (streaming),
apply the run's server strategy, and write the round's record, the server state and then the next global model.

A round may go on without some of its sampled clients (``min_clients``): their weights are renormalized over
the clients that finished, and the record names the missing ones and why.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aggregator.fedavg import FedAvgAccumulator, check_num_examples
from aggregator.krum import (
    check_enough_clients,
    clients_to_keep,
    krum_scores,
    krum_select,
    pairwise_squared_distances,
)
from aggregator.privacy import (
    NEIGHBOURING_RELATION,
    clip_for_round,
    clip_update,
    epsilon_after,
    gaussian_noise,
    next_clip_norm,
    rounds_within_budget,
    update_noise_multiplier,
)
from aggregator.record import read_round_record, write_round_record
from aggregator.robust import combine_stacked
from aggregator.server import ServerOptimizer, State
from aggregator.serverstate import read_server_state, write_server_state
from common.atomic import read_json
from common.layout import RunLayout
from common.modelfile import (
    open_model_file,
    read_file_metadata,
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


def checked_total_examples(client_paths: Sequence[Path], check: ClientCheck) -> int:
    """Check every client against the round (before any block is read) and sum their examples."""
    total_examples = 0
    for path in client_paths:
        with open_model_file(path) as handle:
            total_examples += check.check_client(path, handle)
    return total_examples


def robust_combination_of_clients(
    client_paths: Sequence[Path], check: ClientCheck, aggregation: str, trim_fraction: float | None
) -> tuple[dict[str, np.ndarray], int]:
    """Coordinate-wise median or trimmed mean, streaming one block of one weight across all clients at a time."""
    total_examples = checked_total_examples(client_paths, check)
    combined: dict[str, np.ndarray] = {}
    for name, shape in check.shapes.items():
        output = np.empty(shape, dtype=np.float64)
        for block in row_blocks(shape, len(client_paths)):
            stacked = np.stack([read_client_block(path, name, block) for path in client_paths])
            output[block] = combine_stacked(stacked, aggregation, trim_fraction)
        combined[name] = output
    return combined, total_examples


def krum_combination_of_clients(
    client_paths: Sequence[Path], check: ClientCheck, aggregation: str, byzantine_clients: int
) -> tuple[dict[str, np.ndarray], int, dict]:
    """Krum or Multi-Krum: pairwise distances summed one block of one weight at a time (memory: a block of every
    client plus the n x n matrix), then the equal-weight mean of the clients kept."""
    check_enough_clients(len(client_paths), byzantine_clients)
    total_examples = checked_total_examples(client_paths, check)
    squared_distances = np.zeros((len(client_paths), len(client_paths)))
    for name, shape in check.shapes.items():
        for block in row_blocks(shape, len(client_paths)):
            squared_distances += pairwise_squared_distances(
                np.stack([read_client_block(path, name, block) for path in client_paths])
            )
    scores = krum_scores(squared_distances, byzantine_clients)
    kept = krum_select(scores, clients_to_keep(aggregation, len(client_paths), byzantine_clients))
    combined: dict[str, np.ndarray] = {}
    for index in kept:
        with open_model_file(client_paths[index]) as handle:
            for name, array in read_weights(handle).items():
                combined[name] = combined.get(name, 0) + np.asarray(array, dtype=np.float64) / len(kept)
    return combined, total_examples, {"scores": [float(score) for score in scores], "kept": kept}


def private_mean_of_clients(
    client_paths: Sequence[Path], check: ClientCheck, start_weights: dict[str, np.ndarray], config: RunConfig,
    clip: float, noise_seed: int,
) -> tuple[dict[str, np.ndarray], int, dict]:
    """DP-FedAvg: the equal-weight mean of the clipped updates plus Gaussian noise, one client in memory at a time;
    returns the noisy model (float64), the examples seen and what the round's record keeps of it."""
    rng = np.random.default_rng(noise_seed)
    num_clients = len(client_paths)
    # The fixed, public count of clients a round samples, not those that finished: replacing one user then moves
    # the average by at most 2 * clip / K whoever else failed, and the noise below is calibrated to exactly that.
    denominator = config.clients_each_round
    update_sums = {name: np.zeros(shape) for name, shape in check.shapes.items()}
    total_examples = unclipped = 0
    for path in client_paths:
        with open_model_file(path) as handle:
            total_examples += check.check_client(path, handle)
            weights = read_weights(handle)
        update = {name: np.asarray(weights[name], dtype=np.float64) - start_weights[name] for name in update_sums}
        if not all(np.all(np.isfinite(array)) for array in update.values()):
            raise ValueError(f"{path}: weights contain NaN or Inf")
        clipped, norm = clip_update(update, clip)
        unclipped += norm <= clip
        for name, array in clipped.items():
            update_sums[name] += array
    privacy = {"clip": clip, "noise_multiplier": config.dp_noise_multiplier, "noise_seed": noise_seed,
               "relation": NEIGHBOURING_RELATION, "denominator": denominator}
    noise_multiplier = config.dp_noise_multiplier
    if config.dp_clip == "adaptive":
        stddev = config.dp_clipped_count_stddev
        count_noise = float(rng.normal(0.0, stddev)) if stddev > 0 else 0.0
        noisy_fraction = (unclipped + count_noise) / num_clients
        noise_multiplier = update_noise_multiplier(config.dp_noise_multiplier, stddev)
        privacy.update(
            noisy_unclipped_fraction=noisy_fraction,
            next_clip=next_clip_norm(clip, noisy_fraction, config.dp_target_quantile, config.dp_clip_learning_rate),
        )
    noise_stddev = noise_multiplier * clip / denominator
    noise = gaussian_noise(check.shapes, noise_stddev, rng) if noise_stddev > 0 else {}
    privacy.update(update_noise_multiplier=noise_multiplier, noise_stddev=noise_stddev)
    combined = {
        name: start_weights[name] + update_sums[name] / denominator + noise.get(name, 0.0) for name in update_sums
    }
    return combined, total_examples, privacy


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


def finished_clients(layout: RunLayout, round_number: int, workers: Sequence[int], min_clients: int) -> list[int]:
    """The round's sampled workers whose client file exists, if at least ``min_clients`` of them (0: any number);
    a file from a worker that was not sampled, or too few clients, is a ValueError naming them."""
    round_dir = layout.round_dir(round_number)
    found = set()
    if round_dir.is_dir():
        for entry in round_dir.iterdir():
            match = CLIENT_FILE_PATTERN.match(entry.name)
            if match:
                found.add(int(match.group(1)))
    expected = set(workers)
    missing, extra = sorted(expected - found), sorted(found - expected)
    if extra:
        raise ValueError(
            f"round {round_number}: unexpected client models for workers {extra} (expected {len(expected)})"
        )
    if len(expected) - len(missing) < min_clients:
        needed = "every client" if min_clients == len(expected) else f"at least {min_clients} of {len(expected)} clients"
        raise ValueError(
            f"round {round_number}: missing client models for workers {missing} in {round_dir} "
            f"(the round needs {needed})"
        )
    return sorted(expected - set(missing))


def missing_reasons(layout: RunLayout, round_number: int, missing: Sequence[int]) -> list[dict]:
    """Each missing worker with why it failed, as its failure note says (Argo's trainers leave none)."""
    reasons = []
    for worker in missing:
        reason = "no client model: its trainer failed or did not finish"
        path = layout.client_failure_path(round_number, worker)
        if path.is_file():
            note = read_json(path)
            if isinstance(note, dict) and isinstance(note.get("reason"), str):
                reason = note["reason"]
        reasons.append({"worker": worker, "reason": reason})
    return reasons


def clients_of_round(
    layout: RunLayout, config: RunConfig, round_number: int, sampled: Sequence[int]
) -> tuple[list[int], dict | None]:
    """The workers the round combines, and its record if an earlier attempt wrote one (then its clients, always)."""
    record_path = layout.round_record_path(round_number)
    if not record_path.is_file():
        return finished_clients(layout, round_number, sampled, config.min_clients_each_round), None
    finished_clients(layout, round_number, sampled, 0)  # still refuses the file of a worker not sampled
    record = read_round_record(record_path, layout.run_id, round_number)
    absent = [worker for worker in record["clients"] if not layout.client_model_path(round_number, worker).is_file()]
    if absent or not set(record["clients"]) <= set(sampled):
        raise ValueError(f"{record_path}: lists clients {record['clients']}, but the files of {absent} are gone")
    return record["clients"], record


def run_config(layout: RunLayout, expect: int) -> RunConfig:
    """The run's configuration from ``run.json``, which must be of ``expect`` workers."""
    if not layout.config_path.exists():
        raise ValueError(f"{layout.config_path}: no such run configuration; run `python -m trainer.init` first")
    config = load_config(layout.config_path)
    if config.workers != expect:
        raise ValueError(f"expected a run of {expect} workers, but {layout.config_path} has {config.workers}")
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
        raise ValueError(f"a round needs at least 1 worker, got {expect}")
    config = run_config(layout, expect)
    check_within_budget(config, round_number)
    if config.dp_clip is not None and layout.global_model_path(round_number).is_file():
        # Done: its raw client updates are gone by design, and its record says everything a retry needs.
        return finished_private_round(layout, round_number)
    start_model = layout.global_model_path(round_number - 1)
    if not start_model.is_file():
        raise ValueError(f"{start_model}: the round's starting model is missing")
    check = ClientCheck.from_start_model(start_model, layout.run_id, round_number)
    sampled = workers_of_round(layout, config, round_number)
    clients, earlier_record = clients_of_round(layout, config, round_number, sampled)
    client_paths = [layout.client_model_path(round_number, worker) for worker in clients]
    client_sha256 = {path.name: sha256_of_file(path) for path in client_paths}
    if earlier_record is not None:
        check_same_inputs(layout.round_record_path(round_number), earlier_record, client_sha256)
    optimizer = ServerOptimizer.from_config(config)
    start_weights: dict[str, np.ndarray] = {}
    if config.dp_clip is not None or optimizer.strategy != "fedavg":  # plain FedAvg never looks at them
        with open_model_file(start_model) as handle:
            start_weights = {name: np.asarray(array, dtype=np.float64) for name, array in read_weights(handle).items()}
    missing = [worker for worker in sampled if worker not in clients]
    record: dict[str, Any] = {
        "run_id": layout.run_id,
        "round": round_number,
        "sampled": sampled,
        "clients": clients,
        "missing": earlier_record["missing"] if earlier_record else missing_reasons(layout, round_number, missing),
        "strategy": optimizer.strategy,
        "aggregation": config.aggregation,
        # What the round combined, file by file: a retry with other inputs is refused (its noise covers these).
        "client_sha256": client_sha256,
    }

    if config.dp_clip is not None:
        clip = clip_for_round(config, previous_next_clip(layout, config, round_number))
        # A fresh secret seed, not the run's: noise anyone could regenerate would protect nobody. A retry
        # reuses the recorded one, so the round's model comes out the same.
        noise_seed = earlier_record["privacy"]["noise_seed"] if earlier_record else secrets.randbits(128)
        combined, total_examples, privacy = private_mean_of_clients(
            client_paths, check, start_weights, config, clip, noise_seed
        )
        epsilon = epsilon_after(config, round_number)
        record["privacy"] = {**privacy, "delta": config.dp_delta, "epsilon": epsilon if np.isfinite(epsilon) else None}
    elif config.aggregation == "mean":
        accumulator = weighted_mean_of_clients(client_paths, check)
        total_examples = accumulator.total_examples
        # FedAvg writes the float32 mean exactly as before; a server optimizer starts from the float64 mean.
        combined = accumulator.result() if optimizer.strategy == "fedavg" else accumulator.mean()
    elif config.aggregation in ("krum", "multi-krum"):
        combined, total_examples, choice = krum_combination_of_clients(
            client_paths, check, config.aggregation, config.byzantine_clients
        )
        record["krum"] = {"kept": [clients[index] for index in choice["kept"]], "scores": choice["scores"]}
    else:
        combined, total_examples = robust_combination_of_clients(
            client_paths, check, config.aggregation, config.trim_fraction
        )
    # Record first: a retry then combines the same clients with the same noise, whatever arrives meanwhile.
    write_round_record(layout.round_record_path(round_number), record)

    state = server_state_before(layout, optimizer, round_number, check.shapes)
    if optimizer.strategy == "fedavg":
        new_weights = combined
    else:
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
    if config.dp_clip is not None:
        discard_client_updates(layout, round_number)
    return {**summary, **record, "workers": clients}


def check_same_inputs(record_path: Path, record: dict, client_sha256: dict[str, str]) -> None:
    """Refuse a retried aggregation whose client files differ from those the record's noise was drawn for."""
    recorded = record.get("client_sha256")
    if recorded is None:
        return  # a record from before hashes were kept: nothing to compare with
    changed = sorted(name for name in client_sha256.keys() | recorded.keys() if client_sha256.get(name) != recorded.get(name))
    if changed:
        raise ValueError(
            f"{record_path}: the client files {changed} differ from those this round's record combined; "
            "refusing to reuse its noise for other inputs"
        )


def discard_client_updates(layout: RunLayout, round_number: int) -> None:
    """Under DP, delete the round's raw client updates once its global model and record exist (the record keeps
    their hashes): nothing on the volume then holds one user's update unprotected for longer than a round."""
    round_dir = layout.round_dir(round_number)
    for entry in round_dir.iterdir():
        if CLIENT_FILE_PATTERN.match(entry.name):
            entry.unlink(missing_ok=True)


def finished_private_round(layout: RunLayout, round_number: int) -> dict[str, Any]:
    """A private round whose global model exists: what its record and model say, and any client update a crash
    (or a trainer retried late) left beside it deleted."""
    record = read_round_record(layout.round_record_path(round_number), layout.run_id, round_number)
    discard_client_updates(layout, round_number)
    metadata = read_file_metadata(layout.global_model_path(round_number))
    summary = {
        "run_id": layout.run_id,
        "round": round_number,
        "num_examples": metadata.get("num_examples"),
        "num_clients": metadata.get("num_clients", len(record["clients"])),
    }
    return {**summary, **record, "workers": record["clients"]}


def check_within_budget(config: RunConfig, round_number: int) -> None:
    """Refuse a round past the run's epsilon budget: it is never aggregated, whoever drives the rounds."""
    if config.dp_epsilon_budget is None:
        return
    epsilon = epsilon_after(config, round_number)  # grows with the rounds: one look is enough
    if epsilon > config.dp_epsilon_budget:
        raise ValueError(
            f"round {round_number} would exceed the run's dp-epsilon-budget {config.dp_epsilon_budget:g} "
            f"(epsilon {epsilon:.3g}); the last round within it is {rounds_within_budget(config)}"
        )


def previous_next_clip(layout: RunLayout, config: RunConfig, round_number: int) -> float | None:
    """Adaptive clipping: the clip norm the previous round chose for this one (None in round 1)."""
    if config.dp_clip != "adaptive" or round_number == 1:
        return None
    path = layout.round_record_path(round_number - 1)
    if not path.is_file():
        raise ValueError(f"{path} is missing: adaptive clipping takes round {round_number}'s clip norm from it")
    privacy = read_round_record(path, layout.run_id, round_number - 1).get("privacy") or {}
    if not isinstance(privacy.get("next_clip"), (int, float)):
        raise ValueError(f"{path}: has no next_clip for adaptive clipping")
    return float(privacy["next_clip"])
