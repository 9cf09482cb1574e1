"""FedAvg against hand computations; streaming equals in-memory."""

import numpy as np
import pytest

from aggregator.fedavg import FedAvgAccumulator, fedavg


def test_weighted_average_matches_hand_computation():
    # Prepare: two clients, one layer each, 1 and 3 examples.
    client_a = [np.array([0.0, 4.0], dtype=np.float32)]
    client_b = [np.array([4.0, 8.0], dtype=np.float32)]
    # Execute
    averaged = fedavg([client_a, client_b], [1, 3])
    # Assert: (1*0 + 3*4)/4 = 3, (1*4 + 3*8)/4 = 7
    np.testing.assert_allclose(averaged[0], [3.0, 7.0])
    assert averaged[0].dtype == np.float32


def test_equal_counts_give_the_plain_mean():
    rng = np.random.default_rng(1)
    clients = [[rng.normal(size=(3, 2)), rng.normal(size=4)] for _ in range(5)]
    averaged = fedavg(clients, [7] * 5)
    np.testing.assert_allclose(averaged[0], np.mean([c[0] for c in clients], axis=0))
    np.testing.assert_allclose(averaged[1], np.mean([c[1] for c in clients], axis=0))


def test_streaming_average_is_the_example_weighted_mean():
    """Against the formula itself, Σ nᵢ·wᵢ / Σ nᵢ in float64, not against fedavg() (built on the same accumulator)."""
    rng = np.random.default_rng(2)
    clients = [{"kernel": rng.normal(size=(4, 3)).astype(np.float32), "bias": rng.normal(size=3).astype(np.float32)} for _ in range(6)]
    counts = [10, 200, 3, 45, 1, 999]
    accumulator = FedAvgAccumulator()
    for weights, count in zip(clients, counts):
        accumulator.add(weights, count)
    streamed = accumulator.result()
    for name in ("kernel", "bias"):
        by_hand = sum(count * client[name].astype(np.float64) for client, count in zip(clients, counts)) / sum(counts)
        np.testing.assert_allclose(streamed[name], by_hand, rtol=1e-6)
    assert accumulator.total_examples == sum(counts)


@pytest.mark.parametrize(
    "second_client, message",
    [
        ({"w": np.zeros(3)}, "shape"),
        ({"w": np.zeros(2), "extra": np.zeros(1)}, "different architecture"),
        ({"w": np.array([np.nan, 0.0])}, "NaN or Inf"),
        ({"w": np.array([np.inf, 0.0])}, "NaN or Inf"),
    ],
)
def test_refuses_mismatched_or_non_finite_clients_and_keeps_its_sums(second_client, message):
    accumulator = FedAvgAccumulator()
    accumulator.add({"w": np.ones(2)}, 1)
    with pytest.raises(ValueError, match=message):
        accumulator.add(second_client, 1)
    np.testing.assert_allclose(accumulator.result()["w"], [1.0, 1.0])


@pytest.mark.parametrize("count", [0, -5, 2.5, True, None])
def test_refuses_bad_example_counts(count):
    with pytest.raises(ValueError, match="num_examples"):
        FedAvgAccumulator().add({"w": np.ones(2)}, count)


def test_refuses_no_clients():
    with pytest.raises(ValueError, match="at least one client"):
        fedavg([], [])
