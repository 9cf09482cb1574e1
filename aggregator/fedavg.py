"""Federated averaging as pure numpy: each client's weights count in proportion to its examples."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def check_num_examples(num_examples: int) -> int:
    """Return ``num_examples`` if it is a positive integer, else raise ValueError."""
    if isinstance(num_examples, (bool, np.bool_)) or not isinstance(num_examples, (int, np.integer)) or num_examples <= 0:
        raise ValueError(f"num_examples must be a positive integer, got {num_examples!r}")
    return int(num_examples)


def fedavg(client_weights: Sequence[Sequence[np.ndarray]], num_examples: Sequence[int]) -> list[np.ndarray]:
    """Average each layer's arrays over clients, weighted by how many examples each client trained on."""
    if not client_weights:
        raise ValueError("fedavg needs at least one client")
    if len(client_weights) != len(num_examples):
        raise ValueError(f"{len(client_weights)} clients but {len(num_examples)} example counts")
    accumulator = FedAvgAccumulator()
    for weights, count in zip(client_weights, num_examples):
        accumulator.add(dict(enumerate(weights)), count)
    averaged = accumulator.result()
    return [averaged[index] for index in range(len(averaged))]


class FedAvgAccumulator:
    """Streaming FedAvg: add one client at a time, so memory holds one running sum, not every client."""

    def __init__(self) -> None:
        self._sums: dict[object, np.ndarray] = {}
        self._dtypes: dict[object, np.dtype] = {}
        self.total_examples = 0
        self.num_clients = 0

    def add(self, weights: dict[object, np.ndarray], num_examples: int) -> None:
        """Add one client's named arrays, weighted by ``num_examples``; shapes must match earlier clients."""
        num_examples = check_num_examples(num_examples)
        if self.num_clients and weights.keys() != self._sums.keys():
            missing = sorted(map(str, self._sums.keys() - weights.keys()))
            extra = sorted(map(str, weights.keys() - self._sums.keys()))
            raise ValueError(f"different architecture: missing weights {missing[:3]}, unexpected weights {extra[:3]}")
        for name, array in weights.items():
            array = np.asarray(array)
            if not np.issubdtype(array.dtype, np.floating):
                raise ValueError(f"weight {name!r} has non-float dtype {array.dtype}")
            if not np.all(np.isfinite(array)):
                raise ValueError(f"weight {name!r} contains NaN or Inf")
            if self.num_clients and array.shape != self._sums[name].shape:
                raise ValueError(
                    f"different architecture: weight {name!r} has shape {array.shape}, expected {self._sums[name].shape}"
                )
        # Validate everything before touching the sums, so a refused client leaves them unchanged.
        for name, array in weights.items():
            # float64 sums keep the weighted mean exact enough whatever the number of clients.
            contribution = np.asarray(array, dtype=np.float64) * num_examples
            if self.num_clients:
                self._sums[name] += contribution
            else:
                self._sums[name] = contribution
                self._dtypes[name] = np.asarray(array).dtype
        self.total_examples += num_examples
        self.num_clients += 1

    def mean(self) -> dict[object, np.ndarray]:
        """The weighted average of every array added so far, in float64 (what server optimizers start from)."""
        if not self.num_clients:
            raise ValueError("no clients were added")
        return {name: total / self.total_examples for name, total in self._sums.items()}

    def result(self) -> dict[object, np.ndarray]:
        """The weighted average of every array added so far, in each array's original dtype."""
        return {name: average.astype(self._dtypes[name]) for name, average in self.mean().items()}
