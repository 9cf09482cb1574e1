"""How to divide example indices among workers: pure numpy, deterministic for a seed."""

from __future__ import annotations

import numpy as np


def check_worker_count(num_workers: int, num_examples: int) -> None:
    """Raise ValueError unless every worker can get at least one example."""
    if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 1:
        raise ValueError(f"workers must be at least 1, got {num_workers!r}")
    if num_workers > num_examples:
        raise ValueError(f"cannot split {num_examples} examples among {num_workers} workers")


def iid_split(num_examples: int, num_workers: int, seed: int) -> list[np.ndarray]:
    """Shuffle, then deal out contiguous runs: sizes differ by at most one, every example used once."""
    check_worker_count(num_workers, num_examples)
    permutation = np.random.default_rng(seed).permutation(num_examples)
    return [np.sort(part) for part in np.array_split(permutation, num_workers)]


def dirichlet_split(labels: np.ndarray, num_workers: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Label skew: each class is divided among workers in Dirichlet(alpha) proportions; no worker is left empty."""
    check_worker_count(num_workers, len(labels))
    if not alpha > 0:
        raise ValueError(f"alpha must be greater than 0, got {alpha!r}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(num_workers)]
    for label in np.unique(labels):
        class_indices = rng.permutation(np.flatnonzero(labels == label))
        proportions = rng.dirichlet(np.full(num_workers, float(alpha)))
        cut_points = (np.cumsum(proportions)[:-1] * len(class_indices)).astype(int)
        for worker, chunk in enumerate(np.split(class_indices, cut_points)):
            parts[worker].append(chunk)
    shards = [np.concatenate(chunks) for chunks in parts]
    rebalance_empty_shards(shards, rng)
    return [np.sort(shard) for shard in shards]


def pathological_split(labels: np.ndarray, num_workers: int, seed: int, shards_per_worker: int = 2) -> list[np.ndarray]:
    """McMahan et al. 2017's non-IID split: sort by label, cut into 2 shards per worker, deal two to each."""
    num_shards = shards_per_worker * num_workers
    if isinstance(num_workers, (int, np.integer)) and not isinstance(num_workers, bool) and num_shards > len(labels):
        raise ValueError(
            f"pathological split cannot give {num_workers} workers {shards_per_worker} shards each: "
            f"{len(labels)} examples make at most {len(labels) // shards_per_worker} workers"
        )
    check_worker_count(num_workers, len(labels))
    rng = np.random.default_rng(seed)
    # Shuffle first so the stable sort leaves each class in a seeded order, then cut the label-sorted
    # sequence into equal runs (sizes differ by at most one when they cannot be equal).
    shuffled = rng.permutation(len(labels))
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
    shards = np.array_split(by_label, num_shards)
    dealt = rng.permutation(num_shards).reshape(num_workers, shards_per_worker)
    return [np.sort(np.concatenate([shards[shard] for shard in worker_shards])) for worker_shards in dealt]


def rebalance_empty_shards(shards: list[np.ndarray], rng: np.random.Generator) -> None:
    """Give each empty shard one example taken from the largest shard (tiny alpha can leave a worker empty)."""
    for worker, shard in enumerate(shards):
        if len(shard) == 0:
            largest = max(range(len(shards)), key=lambda index: len(shards[index]))
            donor = shards[largest]
            take = rng.integers(len(donor))
            shards[worker] = donor[take : take + 1]
            shards[largest] = np.delete(donor, take)


def label_histogram(labels: np.ndarray, num_classes: int = 10) -> list[int]:
    """How many examples of each class."""
    return np.bincount(labels, minlength=num_classes).astype(int).tolist()
