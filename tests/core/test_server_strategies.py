"""Server strategies against hand computations over two rounds, with the state carried on the volume between
them (every aggregation is a fresh read of the previous round's files, as after a resume or an Argo retry)."""

import h5py
import numpy as np
import pytest

from aggregator.__main__ import main
from aggregator.server import ServerOptimizer, fedadagrad_step, fedadam_step, fedavgm_step, fedyogi_step
from common.layout import RunLayout
from common.modelfile import open_model_file, read_weights, sha256_of_file
from common.runconfig import RunConfig, save_config

RUN_ID = "run-s"
WEIGHT = "dense/kernel"
START = [0.0, 1.0]
# Round 1: clients [1, 1] x1 example and [1, 3] x3 examples -> weighted mean [1, 2.5].
ROUND_ONE_CLIENTS = [([1.0, 1.0], 1), ([1.0, 3.0], 3)]
# Round 2: clients [2, 2] and [2, 0], one example each -> mean [2, 1].
ROUND_TWO_CLIENTS = [([2.0, 2.0], 1), ([2.0, 0.0], 1)]


def make_run(volume, fake_model, **config) -> RunLayout:
    """run.json with the given settings, and round 0's global model at START."""
    layout = RunLayout(volume, RUN_ID)
    save_config(layout.config_path, RunConfig(workers=2, **config))
    fake_model(layout.global_model_path(0), {WEIGHT: np.array(START, np.float32)}, {"run_id": RUN_ID, "round": 0})
    return layout


def write_clients(layout, fake_model, round_number, clients):
    start_sha = sha256_of_file(layout.global_model_path(round_number - 1))
    for worker, (values, num_examples) in enumerate(clients):
        fake_model(
            layout.client_model_path(round_number, worker),
            {WEIGHT: np.array(values, np.float32)},
            {"run_id": RUN_ID, "round": round_number, "worker": worker, "num_examples": num_examples,
             "global_sha256": start_sha},
        )


def aggregate(layout, round_number):
    argv = ["--volume", str(layout.volume), "--run-id", RUN_ID, "--round", str(round_number)]
    assert main(argv) == 0


def global_weight(layout, round_number) -> np.ndarray:
    with open_model_file(layout.global_model_path(round_number)) as handle:
        return read_weights(handle)[WEIGHT].astype(np.float64)


def state_slot(layout, round_number, slot) -> np.ndarray:
    with h5py.File(layout.server_state_path(round_number)) as handle:
        return handle[slot][WEIGHT][()]


def two_rounds(tmp_path, fake_model, **config):
    """Round 1, then round 2 from the files alone; returns the layout and both global weights."""
    layout = make_run(tmp_path, fake_model, **config)
    write_clients(layout, fake_model, 1, ROUND_ONE_CLIENTS)
    aggregate(layout, 1)
    write_clients(layout, fake_model, 2, ROUND_TWO_CLIENTS)
    aggregate(layout, 2)
    return layout, global_weight(layout, 1), global_weight(layout, 2)


def test_fedavg_is_the_weighted_mean_and_keeps_no_state(tmp_path, fake_model):
    layout, first, second = two_rounds(tmp_path, fake_model)
    np.testing.assert_array_equal(first, [1.0, 2.5])
    np.testing.assert_array_equal(second, [2.0, 1.0])
    assert not layout.server_state_path(1).exists() and not layout.server_state_path(2).exists()


def test_fedavgm_matches_a_hand_computation(tmp_path, fake_model):
    layout, first, second = two_rounds(tmp_path, fake_model, strategy="fedavgm", server_learning_rate=0.5)
    # Round 1: pseudo-gradient = [0, 1] - [1, 2.5] = [-1, -1.5] = momentum; x1 = [0, 1] - 0.5 * [-1, -1.5].
    np.testing.assert_allclose(first, [0.5, 1.75])
    np.testing.assert_allclose(state_slot(layout, 1, "momentum"), [-1.0, -1.5])
    # Round 2: pseudo-gradient = [0.5, 1.75] - [2, 1] = [-1.5, 0.75];
    # momentum = 0.9 * [-1, -1.5] + [-1.5, 0.75] = [-2.4, -0.6]; x2 = [0.5, 1.75] - 0.5 * [-2.4, -0.6].
    np.testing.assert_allclose(state_slot(layout, 2, "momentum"), [-2.4, -0.6], rtol=1e-6)
    np.testing.assert_allclose(second, [1.7, 2.05], rtol=1e-6)


def test_fedadam_matches_a_hand_computation(tmp_path, fake_model):
    layout, first, second = two_rounds(tmp_path, fake_model, strategy="fedadam")  # lr 0.1, betas 0.9/0.99, tau 1e-9
    # Round 1: delta = [1, 1.5]; m = 0.1 * delta = [0.1, 0.15]; v = 0.01 * delta^2 = [0.01, 0.0225] (+ tiny tau^2);
    # x1 = x0 + 0.1 * m / sqrt(v) = [0, 1] + 0.1 * [1, 1].
    np.testing.assert_allclose(first, [0.1, 1.1], rtol=1e-6)
    np.testing.assert_allclose(state_slot(layout, 1, "m"), [0.1, 0.15])
    np.testing.assert_allclose(state_slot(layout, 1, "v"), [0.01, 0.0225])
    # Round 2: delta = [2, 1] - [0.1, 1.1] = [1.9, -0.1]; m = 0.9 * [0.1, 0.15] + 0.1 * [1.9, -0.1] = [0.28, 0.125];
    # v = 0.99 * [0.01, 0.0225] + 0.01 * [3.61, 0.01] = [0.046, 0.022375].
    np.testing.assert_allclose(state_slot(layout, 2, "m"), [0.28, 0.125], rtol=1e-6)
    np.testing.assert_allclose(state_slot(layout, 2, "v"), [0.046, 0.022375], rtol=1e-6)
    np.testing.assert_allclose(second, [0.1 + 0.1 * 0.28 / np.sqrt(0.046), 1.1 + 0.1 * 0.125 / np.sqrt(0.022375)], rtol=1e-6)


def test_fedadagrad_matches_a_hand_computation(tmp_path, fake_model):
    layout, first, second = two_rounds(tmp_path, fake_model, strategy="fedadagrad")  # lr 0.1, beta1 0, tau 1e-9
    # Round 1: delta = [1, 1.5] = m (no first-moment decay); v = tau^2 + delta^2 = [1, 2.25];
    # x1 = x0 + 0.1 * m / sqrt(v) = [0, 1] + 0.1 * [1, 1].
    np.testing.assert_allclose(first, [0.1, 1.1], rtol=1e-6)
    np.testing.assert_allclose(state_slot(layout, 1, "m"), [1.0, 1.5])
    np.testing.assert_allclose(state_slot(layout, 1, "v"), [1.0, 2.25])
    # Round 2: delta = [2, 1] - x1 = [1.9, -0.1]; v adds it squared: [1 + 3.61, 2.25 + 0.01] (Adagrad never forgets).
    delta = np.array([2.0, 1.0]) - first
    np.testing.assert_allclose(state_slot(layout, 2, "v"), [1.0, 2.25] + delta**2, rtol=1e-6)
    np.testing.assert_allclose(second, first + 0.1 * delta / np.sqrt([1.0, 2.25] + delta**2), rtol=1e-6)


def test_fedyogi_matches_a_hand_computation(tmp_path, fake_model):
    layout, first, second = two_rounds(tmp_path, fake_model, strategy="fedyogi")  # lr 0.01, betas 0.9/0.99, tau 1e-3
    # Round 1: v starts at tau^2 = 1e-6; delta = [1, 1.5] and delta^2 = [1, 2.25] exceed it, so
    # v = 1e-6 + 0.01 * delta^2 = [0.010001, 0.022501]; m = [0.1, 0.15].
    np.testing.assert_allclose(state_slot(layout, 1, "v"), [0.010001, 0.022501])
    expected_first = [0.01 * 0.1 / (np.sqrt(0.010001) + 1e-3), 1 + 0.01 * 0.15 / (np.sqrt(0.022501) + 1e-3)]
    np.testing.assert_allclose(first, expected_first, rtol=1e-6)
    # Round 2 (from x1 as stored, float32): delta = [2, 1] - x1. Coordinate 0: delta^2 ~ 3.96 > v, so v grows by
    # 0.01 * delta^2. Coordinate 1: delta ~ -0.0099, delta^2 ~ 1e-4 < v, so v shrinks by 0.01 * delta^2 (Yogi's sign).
    delta = np.array([2.0, 1.0]) - first
    v = [0.010001 + 0.01 * delta[0] ** 2, 0.022501 - 0.01 * delta[1] ** 2]
    m = [0.09 + 0.1 * delta[0], 0.135 + 0.1 * delta[1]]
    np.testing.assert_allclose(state_slot(layout, 2, "v"), v, rtol=1e-6)
    np.testing.assert_allclose(state_slot(layout, 2, "m"), m, rtol=1e-6)
    np.testing.assert_allclose(second, first + 0.01 * np.array(m) / (np.sqrt(v) + 1e-3), rtol=1e-6)


@pytest.mark.parametrize("strategy", ["fedavgm", "fedadagrad", "fedadam", "fedyogi"])
def test_a_retried_round_is_exact_and_needs_the_previous_state(tmp_path, fake_model, capsys, strategy):
    layout, _, second = two_rounds(tmp_path, fake_model, strategy=strategy)
    state_before = {slot: state_slot(layout, 2, slot) for slot in ServerOptimizer(strategy).slots}
    # Execute: an Argo retry (or a resume) of round 2 after its outputs were lost.
    layout.global_model_path(2).unlink()
    layout.server_state_path(2).unlink()
    aggregate(layout, 2)
    # Assert: bit-for-bit the same global model and state.
    np.testing.assert_array_equal(global_weight(layout, 2), second)
    for slot, array in state_before.items():
        np.testing.assert_array_equal(state_slot(layout, 2, slot), array)
    # Without round 1's state, round 2 cannot be redone exactly: refused.
    layout.global_model_path(2).unlink()
    layout.server_state_path(1).unlink()
    assert "server state of round 1 is missing" in refused_round_two(layout, capsys)


def ready_for_round_two(volume, fake_model, strategy) -> RunLayout:
    """Round 1 aggregated with ``strategy``, round 2's clients trained."""
    layout = make_run(volume, fake_model, strategy=strategy)
    write_clients(layout, fake_model, 1, ROUND_ONE_CLIENTS)
    aggregate(layout, 1)
    write_clients(layout, fake_model, 2, ROUND_TWO_CLIENTS)
    return layout


def refused_round_two(layout, capsys) -> str:
    """Aggregate round 2, expecting a one-line refusal that writes nothing; returns the message."""
    argv = ["--volume", str(layout.volume), "--run-id", RUN_ID, "--round", "2"]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and not layout.global_model_path(2).exists()
    return error


def test_a_state_from_another_strategy_is_refused(tmp_path, fake_model, capsys):
    layout = ready_for_round_two(tmp_path, fake_model, "fedadam")
    # run.json edited behind the run's back: fedyogi cannot continue from fedadam's moments.
    layout.config_path.unlink()
    save_config(layout.config_path, RunConfig(workers=2, strategy="fedyogi"))
    assert "server state of 'fedadam', but the run uses 'fedyogi'" in refused_round_two(layout, capsys)


def test_a_stateless_run_refuses_a_round_that_kept_state(tmp_path, fake_model, capsys):
    layout = ready_for_round_two(tmp_path, fake_model, "fedavgm")
    # A lost run.json is refused outright: the command line no longer falls back to plain FedAvg.
    layout.config_path.unlink()
    assert "run.json: no such run configuration" in refused_round_two(layout, capsys)
    # run.json rewritten as plain FedAvg behind the run's back: round 1's momentum cannot be ignored.
    save_config(layout.config_path, RunConfig(workers=2))
    assert "kept server state, but the run uses fedavg" in refused_round_two(layout, capsys)


def test_a_corrupt_state_is_refused_in_one_line(tmp_path, fake_model, capsys):
    layout = ready_for_round_two(tmp_path, fake_model, "fedadam")
    layout.server_state_path(1).write_bytes(b"not hdf5")
    assert "not a readable server state" in refused_round_two(layout, capsys)


def test_step_functions_on_arrays():
    # fedavgm with learning rate 1 and no momentum is FedAvg: the aggregate itself.
    weights, momentum = fedavgm_step(np.array([1.0, 2.0]), np.array([3.0, 5.0]), np.zeros(2), 1.0, 0.0)
    np.testing.assert_array_equal(weights, [3.0, 5.0])
    np.testing.assert_array_equal(momentum, [-2.0, -3.0])
    # A zero update leaves Adam's and Yogi's weights where they were.
    for step in (fedadam_step, fedyogi_step):
        weights, m, v = step(np.ones(3), np.ones(3), np.zeros(3), np.full(3, 1e-6), 0.1, 0.9, 0.99, 1e-3)
        np.testing.assert_array_equal(weights, np.ones(3))
        np.testing.assert_array_equal(m, np.zeros(3))
