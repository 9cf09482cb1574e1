"""User-level differential privacy for a round, as pure numpy: DP-FedAvg with server-side clipping (McMahan et
al. 2018, "Learning Differentially Private Recurrent Language Models") and adaptive clipping (Andrew et al. 2021,
"Differentially Private Learning with Adaptive Clipping"); the privacy spent comes from Google's dp-accounting.

Each client's update (its model minus the round's starting model) is scaled down to L2 norm at most ``clip``; the
clipped updates are averaged with equal weights, and Gaussian noise of standard deviation ``z * clip / m`` is
added to the average of ``m`` clients, so one user's whole contribution to a round is hidden by noise ``z``
times its largest possible size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from common.runconfig import RunConfig

Weights = Mapping[str, np.ndarray]


def global_norm(update: Weights) -> float:
    """The L2 norm of every array of ``update`` taken together (one vector)."""
    return math.sqrt(sum(float(np.square(np.asarray(array, dtype=np.float64)).sum()) for array in update.values()))


def clip_update(update: Weights, clip: float) -> tuple[dict[str, np.ndarray], float]:
    """``update`` scaled to L2 norm at most ``clip`` (unchanged if already within), and its norm before."""
    norm = global_norm(update)
    scale = 1.0 if norm <= clip else clip / norm
    return {name: np.asarray(array, dtype=np.float64) * scale for name, array in update.items()}, norm


def update_noise_multiplier(noise_multiplier: float, clipped_count_stddev: float) -> float:
    """The noise multiplier left for the updates once the unclipped count takes its share (Andrew et al. 2021, 3.1).

    The count's noise (standard deviation sigma_b, sensitivity 1/2 once the bits are centred) and the updates'
    noise compose to the noise multiplier ``z`` of one Gaussian mechanism: (z^-2 - (2 sigma_b)^-2)^-1/2.
    """
    if noise_multiplier == 0:
        return 0.0
    if clipped_count_stddev == 0:
        return noise_multiplier
    if not 2 * clipped_count_stddev > noise_multiplier:
        raise ValueError(f"the clipped-count noise {clipped_count_stddev} must be above half of z = {noise_multiplier}")
    return (noise_multiplier ** -2 - (2 * clipped_count_stddev) ** -2) ** -0.5


def next_clip_norm(
    clip: float, unclipped_fraction: float, target_quantile: float, learning_rate: float
) -> float:
    """Geometric update of the clip norm toward the ``target_quantile`` of the update norms (Andrew et al. 2021)."""
    return clip * math.exp(-learning_rate * (unclipped_fraction - target_quantile))


def gaussian_noise(shapes: Mapping[str, tuple[int, ...]], stddev: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Independent N(0, stddev^2) for every coordinate, drawn weight by weight in sorted name order."""
    return {name: rng.normal(0.0, stddev, size=shapes[name]) for name in sorted(shapes)}


def clip_for_round(config: RunConfig, previous_next_clip: float | None) -> float:
    """The round's clip norm: the fixed one, or (adaptive) the one the previous round chose (round 1: the initial)."""
    if config.dp_clip != "adaptive":
        return float(config.dp_clip)
    return config.dp_initial_clip if previous_next_clip is None else previous_next_clip


# The one neighbouring relation of every DP run: two federations are neighbours if one user's data is replaced
# by anything else, with the number of users N and of clients a round K fixed and public (docs/federated.md).
NEIGHBOURING_RELATION = "replace-one user-level"


def privacy_events(config: RunConfig, rounds: int) -> list:
    """The dp-accounting events that each bound ``rounds`` rounds of this run, all stated for replacing one user.

    Replacing a user moves the clipped sum by up to twice the clip norm, so each round's Gaussian has multiplier
    z / 2. Every run is bounded by that Gaussian composed over the rounds (a user in every round); a run that
    samples K of N clients is also bounded by the amplified event, K drawn without replacement (the draw is secret).
    """
    import dp_accounting

    gaussian = dp_accounting.GaussianDpEvent(config.dp_noise_multiplier / 2)
    events = [dp_accounting.SelfComposedDpEvent(gaussian, rounds)]
    if config.clients_each_round < config.workers:
        sampled = dp_accounting.SampledWithoutReplacementDpEvent(config.workers, config.clients_each_round, gaussian)
        events.append(dp_accounting.SelfComposedDpEvent(sampled, rounds))
    return events


def epsilon_after(config: RunConfig, rounds: int) -> float:
    """The epsilon at ``config.dp_delta`` after ``rounds`` rounds: the tighter of the bounds that hold (inf: no noise).

    Both hold for the same mechanism, so their minimum does: sampling fewer clients never reports a larger epsilon
    than training every client each round.
    """
    if config.dp_noise_multiplier == 0:
        return math.inf
    if rounds == 0:
        return 0.0
    from dp_accounting import NeighboringRelation, rdp

    epsilons = []
    for event in privacy_events(config, rounds):
        accountant = rdp.RdpAccountant(neighboring_relation=NeighboringRelation.REPLACE_ONE)
        accountant.compose(event)
        epsilons.append(float(accountant.get_epsilon(config.dp_delta)))
    return min(epsilons)


def rounds_within_budget(config: RunConfig) -> int:
    """How many of the run's rounds fit ``config.dp_epsilon_budget`` (all of them without a budget); 0 if none."""
    if config.dp_epsilon_budget is None:
        return config.rounds
    # Epsilon grows with the rounds: binary search for the last round at or under the budget (each call is an
    # accountant run, up to 0.2 s for a sampled event).
    low, high = 0, config.rounds
    while low < high:
        middle = (low + high + 1) // 2
        if epsilon_after(config, middle) <= config.dp_epsilon_budget:
            low = middle
        else:
            high = middle - 1
    return low


def last_round_within_budget(config: RunConfig) -> int:
    """The last round to train under the run's epsilon budget (``config.rounds`` without one); a ValueError if
    even round 1 exceeds it. What a coordinator of the rounds (local runner, cluster) calls before it starts."""
    rounds = rounds_within_budget(config)
    if rounds == 0:
        raise ValueError(
            f"dp-epsilon-budget {config.dp_epsilon_budget:g} is below round 1's epsilon "
            f"{epsilon_after(config, 1):.3g} at delta {config.dp_delta:.3g}: raise the budget or the noise multiplier"
        )
    return rounds
