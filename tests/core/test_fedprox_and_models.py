"""FedProx on the clients and the run's architecture, through the real trainer on tiny data (TensorFlow, seconds)."""

import h5py
import numpy as np
import pytest

from common.layout import RunLayout
from common.model import learning_rate_for_round
from splitter.__main__ import main as splitter_main
from trainer.__main__ import main as trainer_main
from trainer.init import main as init_main

RUN_ID = "prox"


def weights_of(path) -> dict[str, np.ndarray]:
    found = {}
    with h5py.File(path) as handle:
        handle["model_weights"].visititems(
            lambda name, item: found.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return found


def train_one_client(volume, run_id: str, *flags: str) -> tuple[dict, dict]:
    """Init (which also splits), split and train worker 0 of round 1; returns (starting weights, client weights).
    The splitter and the trainer take the run's settings from run.json."""
    common = ["--volume", str(volume), "--run-id", run_id]
    assert init_main(common + ["--workers", "2", "--rounds", "1", "--seed", "1", "--batch-size", "32", *flags]) == 0
    assert splitter_main(common) == 0
    assert trainer_main(common + ["--round", "1", "--worker", "0"]) == 0
    layout = RunLayout(volume, run_id)
    return weights_of(layout.global_model_path(0)), weights_of(layout.client_model_path(1, 0))


def distance(first: dict, second: dict) -> float:
    return float(np.sqrt(sum(np.sum((first[name] - second[name]) ** 2) for name in first)))


def test_the_proximal_term_keeps_clients_near_the_round_s_model(tiny_mnist):
    volume = tiny_mnist.parent.parent
    # Each run starts from the same seeded model; weights are compared within a run (layer names differ).
    plain = distance(*train_one_client(volume, "plain"))
    proximal = distance(*train_one_client(volume, "proximal", "--proximal-mu", "300"))
    # lr * mu = 1: every update is pulled all the way back, so the client ends where it started.
    pinned = distance(*train_one_client(volume, "pinned", "--proximal-mu", str(1 / learning_rate_for_round(1))))
    assert plain > 0
    assert proximal < 0.8 * plain
    assert pinned == pytest.approx(0, abs=1e-6)


def test_clients_take_their_step_size_from_the_run(tiny_mnist):
    # With --learning-rate 0.004, mu = 250 makes lr * mu = 1 (pinned) only if the trainer used the run's rate.
    volume = tiny_mnist.parent.parent
    assert distance(*train_one_client(volume, "rate", "--learning-rate", "0.004", "--proximal-mu", "250")) == (
        pytest.approx(0, abs=1e-6))


def test_a_run_trains_the_architecture_it_names(tiny_mnist):
    volume = tiny_mnist.parent.parent
    start, client = train_one_client(volume, "paper-cnn", "--model", "fedavg-cnn")
    assert sum(array.size for array in start.values()) == 1_663_370
    assert {name: array.shape for name, array in client.items()} == {name: array.shape for name, array in start.items()}


def test_the_local_runner_trains_exactly_the_sampled_clients(tiny_mnist, tmp_path):
    """`python -m runner --clients-per-round K`: each round trains the K workers its clients.json records,
    with a server optimizer, and a second run of the same command changes nothing."""
    import json

    from common.sampling import sample_clients
    from runner.__main__ import main as runner_main

    volume = tmp_path / "volume"
    argv = ["--volume", str(volume), "--data", str(tiny_mnist), "--run-id", "sampled", "--workers", "5",
            "--clients-per-round", "2", "--rounds", "2", "--batch-size", "32", "--strategy", "fedavgm",
            "--min-accuracy", "0"]
    assert runner_main(argv) == 0
    layout = RunLayout(volume, "sampled")
    for round_number in (1, 2):
        expected = sample_clients(5, 2, 0, round_number)
        assert json.loads(layout.sampled_clients_path(round_number).read_text()) == expected
        trained = sorted(int(path.stem.split("-")[1]) for path in layout.round_dir(round_number).glob("client-*.h5"))
        assert trained == expected
        assert layout.server_state_path(round_number).is_file()
    before = {path: path.stat().st_mtime_ns for path in layout.run_dir.rglob("*.h5")}
    assert runner_main(argv) == 0
    assert {path: path.stat().st_mtime_ns for path in layout.run_dir.rglob("*.h5")} == before
