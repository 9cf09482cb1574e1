"""Robust aggregation as pure numpy: coordinate-wise median and trimmed mean over clients (axis 0).

Each client counts once, whatever ``num_examples`` it reports: weighting by a number the client claims would let
one liar outvote everybody (Yin et al. 2018; Flower's FedMedian and FedTrimmedAvg are unweighted too).
"""

from __future__ import annotations

import numpy as np

from common.runconfig import AGGREGATIONS, trimmed_per_end


def coordinate_median(stacked: np.ndarray) -> np.ndarray:
    """The median over clients of every coordinate; ``stacked`` holds one client per row of axis 0."""
    return np.median(stacked, axis=0)


def trimmed_mean(stacked: np.ndarray, trim_fraction: float) -> np.ndarray:
    """The mean over clients of every coordinate after cutting ``int(trim_fraction * clients)`` from each end."""
    if not 0 <= trim_fraction < 0.5:
        raise ValueError(f"trim fraction must be at least 0 and below 0.5, got {trim_fraction!r}")
    num_clients = stacked.shape[0]
    cut = trimmed_per_end(num_clients, trim_fraction)
    if cut == 0:
        return stacked.mean(axis=0)
    # A partial sort is enough: only which values fall outside the kept middle matters.
    partitioned = np.partition(stacked, (cut, num_clients - cut - 1), axis=0)
    return partitioned[cut : num_clients - cut].mean(axis=0)


def combine_stacked(stacked: np.ndarray, aggregation: str, trim_fraction: float | None = None) -> np.ndarray:
    """``median`` or ``trimmed-mean`` of the clients stacked along axis 0."""
    if aggregation == "median":
        return coordinate_median(stacked)
    if aggregation == "trimmed-mean":
        if trim_fraction is None:
            raise ValueError("trimmed-mean needs a trim fraction")
        return trimmed_mean(stacked, trim_fraction)
    raise ValueError(f"aggregation must be median or trimmed-mean here (of {', '.join(AGGREGATIONS)}), got {aggregation!r}")
