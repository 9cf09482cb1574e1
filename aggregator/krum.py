"""Krum and Multi-Krum as pure numpy (Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine
Tolerant Gradient Descent"): keep the client(s) whose models lie closest to their nearest neighbours.

Each client's score is the sum of its squared distances to its ``n - f - 2`` nearest other clients; with at
most ``f`` byzantine clients among ``n > 2f + 2``, the lowest score belongs to a model surrounded by honest ones.
Krum keeps that one client, Multi-Krum the ``n - f`` best (El Mhamdi et al. 2018's choice of m), averaged with
equal weights like the other robust aggregations: a client's claimed example count buys it nothing.
"""

from __future__ import annotations

import numpy as np


def check_enough_clients(num_clients: int, byzantine_clients: int) -> None:
    """Refuse a round too small for Krum's guarantee: it needs more than ``2f + 2`` clients."""
    if num_clients <= 2 * byzantine_clients + 2:
        raise ValueError(
            f"krum with {byzantine_clients} byzantine clients needs more than {2 * byzantine_clients + 2} clients, "
            f"got {num_clients}"
        )


def pairwise_squared_distances(stacked: np.ndarray) -> np.ndarray:
    """The n x n squared Euclidean distances between the rows (clients) of ``stacked``, any trailing shape."""
    flat = stacked.reshape(stacked.shape[0], -1)
    # Differences, not the |a|^2 + |b|^2 - 2ab expansion: no cancellation between nearly equal models.
    return np.stack([np.square(flat - row).sum(axis=1) for row in flat])


def krum_scores(squared_distances: np.ndarray, byzantine_clients: int) -> np.ndarray:
    """Each client's sum of squared distances to its ``n - f - 2`` nearest other clients."""
    num_clients = squared_distances.shape[0]
    check_enough_clients(num_clients, byzantine_clients)
    neighbours = num_clients - byzantine_clients - 2
    to_others = squared_distances[~np.eye(num_clients, dtype=bool)].reshape(num_clients, num_clients - 1)
    return np.sort(to_others, axis=1)[:, :neighbours].sum(axis=1)


def krum_select(scores: np.ndarray, keep: int) -> list[int]:
    """The ``keep`` clients with the lowest Krum scores (ties to the lower index), in index order."""
    if not 1 <= keep <= len(scores):
        raise ValueError(f"krum keeps between 1 and {len(scores)} clients, got {keep}")
    return sorted(int(index) for index in np.argsort(scores, kind="stable")[:keep])


def clients_to_keep(aggregation: str, num_clients: int, byzantine_clients: int) -> int:
    """Krum keeps one client; Multi-Krum keeps ``n - f``."""
    if aggregation == "krum":
        return 1
    if aggregation == "multi-krum":
        return num_clients - byzantine_clients
    raise ValueError(f"aggregation must be krum or multi-krum here, got {aggregation!r}")
