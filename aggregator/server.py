"""Server optimizers as pure numpy: the next global model from the previous one, the clients' aggregate and the
optimizer's state (Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2; FedAvgM: Hsu et al. 2019).

The pseudo-gradient is ``previous - aggregate``: plain FedAvg is one step of size 1 along it, so ``fedavgm`` with
learning rate 1 and momentum 0 is FedAvg again. State lives between rounds in the round's server-state file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from common.runconfig import SERVER_DEFAULTS, RunConfig

# The arrays each strategy keeps between rounds, one per weight.
STATE_SLOTS: dict[str, tuple[str, ...]] = {
    "fedavg": (),
    "fedavgm": ("momentum",),
    "fedadagrad": ("m", "v"),
    "fedadam": ("m", "v"),
    "fedyogi": ("m", "v"),
}

Weights = Mapping[str, np.ndarray]
State = dict[str, dict[str, np.ndarray]]


def fedavgm_step(
    previous: np.ndarray, aggregate: np.ndarray, momentum: np.ndarray, learning_rate: float, beta: float
) -> tuple[np.ndarray, np.ndarray]:
    """Server SGD with momentum on the pseudo-gradient: returns (next weights, next momentum)."""
    momentum = beta * momentum + (previous - aggregate)
    return previous - learning_rate * momentum, momentum


def fedadagrad_step(
    previous: np.ndarray, aggregate: np.ndarray, m: np.ndarray, v: np.ndarray,
    learning_rate: float, beta1: float, tau: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adagrad on the server: v adds up every squared update, so each weight's step shrinks as it moves."""
    delta = aggregate - previous
    m = beta1 * m + (1 - beta1) * delta
    v = v + np.square(delta)
    return previous + learning_rate * m / (np.sqrt(v) + tau), m, v


def fedadam_step(
    previous: np.ndarray, aggregate: np.ndarray, m: np.ndarray, v: np.ndarray,
    learning_rate: float, beta1: float, beta2: float, tau: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adam on the server as in Reddi et al. (no bias correction): returns (next weights, m, v)."""
    delta = aggregate - previous
    m = beta1 * m + (1 - beta1) * delta
    v = beta2 * v + (1 - beta2) * np.square(delta)
    return previous + learning_rate * m / (np.sqrt(v) + tau), m, v


def fedyogi_step(
    previous: np.ndarray, aggregate: np.ndarray, m: np.ndarray, v: np.ndarray,
    learning_rate: float, beta1: float, beta2: float, tau: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Yogi on the server: like Adam, but v moves towards delta squared by an additive, sign-controlled step."""
    delta = aggregate - previous
    squared = np.square(delta)
    m = beta1 * m + (1 - beta1) * delta
    v = v - (1 - beta2) * squared * np.sign(v - squared)
    return previous + learning_rate * m / (np.sqrt(v) + tau), m, v


@dataclass(frozen=True)
class ServerOptimizer:
    """One strategy with its settings, as the run's configuration fixed them."""

    strategy: str
    learning_rate: float | None = None
    momentum: float | None = None
    beta1: float | None = None
    beta2: float | None = None
    tau: float | None = None

    @classmethod
    def from_config(cls, config: RunConfig) -> ServerOptimizer:
        return cls(
            strategy=config.strategy,
            learning_rate=config.server_learning_rate,
            momentum=config.server_momentum,
            beta1=config.server_beta1,
            beta2=config.server_beta2,
            tau=config.server_tau,
        )

    def __post_init__(self) -> None:
        if self.strategy not in STATE_SLOTS or self.strategy not in SERVER_DEFAULTS:
            raise ValueError(f"unknown server strategy {self.strategy!r}")

    @property
    def slots(self) -> tuple[str, ...]:
        return STATE_SLOTS[self.strategy]

    def settings(self) -> dict[str, float]:
        """The settings the strategy uses, as recorded beside its state."""
        values = {"learning_rate": self.learning_rate, "momentum": self.momentum, "beta1": self.beta1,
                  "beta2": self.beta2, "tau": self.tau}
        return {name: value for name, value in values.items() if value is not None}

    def initial_state(self, shapes: Mapping[str, tuple[int, ...]]) -> State:
        """The state before round 1: zero momentum and first moment; v at tau squared (Reddi et al.: v >= tau^2)."""
        state: State = {slot: {} for slot in self.slots}
        for name, shape in shapes.items():
            for slot in self.slots:
                fill = self.tau**2 if slot == "v" else 0.0
                state[slot][name] = np.full(shape, fill, dtype=np.float64)
        return state

    def step(self, previous: Weights, aggregate: Weights, state: State) -> tuple[dict[str, np.ndarray], State]:
        """The next global weights and state, in float64, from the previous weights and the clients' aggregate."""
        if previous.keys() != aggregate.keys():
            raise ValueError("the clients' aggregate and the previous global model hold different weights")
        next_weights: dict[str, np.ndarray] = {}
        next_state: State = {slot: {} for slot in self.slots}
        for name in previous:
            old = np.asarray(previous[name], dtype=np.float64)
            new = np.asarray(aggregate[name], dtype=np.float64)
            if self.strategy == "fedavg":
                next_weights[name] = new
            elif self.strategy == "fedavgm":
                next_weights[name], next_state["momentum"][name] = fedavgm_step(
                    old, new, state["momentum"][name], self.learning_rate, self.momentum
                )
            elif self.strategy == "fedadagrad":
                next_weights[name], next_state["m"][name], next_state["v"][name] = fedadagrad_step(
                    old, new, state["m"][name], state["v"][name], self.learning_rate, self.beta1, self.tau
                )
            else:
                step = fedadam_step if self.strategy == "fedadam" else fedyogi_step
                next_weights[name], next_state["m"][name], next_state["v"][name] = step(
                    old, new, state["m"][name], state["v"][name], self.learning_rate, self.beta1, self.beta2, self.tau
                )
        return next_weights, next_state
