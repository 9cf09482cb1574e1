"""Which workers train in a round: drawn once, recorded in the round's directory and never drawn again.

Without differential privacy the choice is pure numpy on (seed, round), so the local runner and Argo draw the
same clients and a run is reproducible. With DP and sampling, the choice comes from the operating system's
randomness: amplification by sampling holds only for a sample nobody can recompute from the public seed.
Either way, once written, ``clients.json`` is the record that the round's trainers and its aggregator follow,
through resumes and retries.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import numpy as np

from common.atomic import read_json, write_json, write_json_once
from common.layout import RunLayout
from common.runconfig import RunConfig


def sample_clients(workers: int, clients_per_round: int | None, seed: int, round_number: int) -> list[int]:
    """The sorted workers that train in ``round_number``: ``clients_per_round`` of ``workers`` without replacement."""
    for name, value, minimum in (("workers", workers, 1), ("seed", seed, 0), ("round", round_number, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{name} must be a whole number of at least {minimum}, got {value!r}")
    if clients_per_round is None:
        return list(range(workers))
    if isinstance(clients_per_round, bool) or not isinstance(clients_per_round, (int, np.integer)) or not (
        1 <= clients_per_round <= workers
    ):
        raise ValueError(f"clients-per-round must be between 1 and workers ({workers}), got {clients_per_round!r}")
    # Its own stream per (seed, round): independent of the split's stream (seeded by the seed alone) and of
    # every other round, and the same whichever rounds were drawn before.
    rng = np.random.default_rng([int(seed), int(round_number)])
    return sorted(int(worker) for worker in rng.choice(workers, size=int(clients_per_round), replace=False))


def secret_sample(workers: int, clients_per_round: int) -> list[int]:
    """The sorted ``clients_per_round`` of ``workers`` drawn without replacement from the OS's randomness."""
    if isinstance(clients_per_round, bool) or not isinstance(clients_per_round, int) or not 1 <= clients_per_round <= workers:
        raise ValueError(f"clients-per-round must be between 1 and workers ({workers}), got {clients_per_round!r}")
    return sorted(secrets.SystemRandom().sample(range(workers), clients_per_round))


def samples_secretly(config: RunConfig) -> bool:
    """True when the run's rounds are drawn from the OS's randomness: DP on and fewer clients than workers."""
    return config.dp_clip is not None and config.clients_each_round < config.workers


def draw_clients(config: RunConfig, round_number: int) -> list[int]:
    """A fresh draw of the round's workers: secret under DP with sampling, else seeded by (seed, round)."""
    if samples_secretly(config):
        # The seed is public (run.json, info.json, the model page): a seeded sample would let anyone recompute
        # who trained, and the accountant's amplification by sampling would not hold.
        return secret_sample(config.workers, config.clients_each_round)
    return sample_clients(config.workers, config.clients_per_round, config.seed, round_number)


def check_sampled_clients(payload: object, workers: int, expected_count: int) -> list[int]:
    """Return ``payload`` if it is a sorted list of ``expected_count`` distinct workers below ``workers``."""
    if not isinstance(payload, list) or not all(
        isinstance(worker, int) and not isinstance(worker, bool) for worker in payload
    ):
        raise ValueError(f"expected a JSON list of worker numbers, got {payload!r}")
    if payload != sorted(set(payload)):
        raise ValueError(f"worker numbers must be distinct and sorted, got {payload}")
    if payload and not 0 <= payload[0] <= payload[-1] < workers:
        raise ValueError(f"worker numbers must be between 0 and {workers - 1}, got {payload}")
    if len(payload) != expected_count:
        raise ValueError(f"lists {len(payload)} workers, the run trains {expected_count} per round")
    return payload


def read_sampled_clients(path: Path, workers: int, expected_count: int) -> list[int]:
    """The workers recorded in a round's ``clients.json``, checked against the run's shape."""
    try:
        return check_sampled_clients(read_json(path), workers, expected_count)
    except ValueError as error:
        message = str(error)
        raise ValueError(message if message.startswith(str(path)) else f"{path}: {message}") from None


def clients_for_round(layout: RunLayout, config: RunConfig, round_number: int) -> list[int]:
    """The round's workers: from its ``clients.json`` if an earlier attempt wrote it, else drawn now and written."""
    path = layout.sampled_clients_path(round_number)
    if path.exists():
        # Never drawn again: a resume or a retried step must train and aggregate the same clients.
        return read_sampled_clients(path, config.workers, config.clients_each_round)
    clients = draw_clients(config, round_number)
    if samples_secretly(config):
        # Secret draws differ between writers: the first record wins, and every writer follows it.
        if write_json_once(path, clients):
            return clients
        return read_sampled_clients(path, config.workers, config.clients_each_round)
    # Concurrent first writers draw the same list, so whichever rename lands last changes nothing.
    write_json(path, clients)
    return clients
