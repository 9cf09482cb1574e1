"""The aggregator takes the architecture and the output's layout from the round's starting model, not a client."""

import json

import h5py
import numpy as np
import pytest

from aggregator.__main__ import main
from common.layout import RunLayout
from common.modelfile import sha256_of_file
from common.runconfig import RunConfig, save_config

RUN_ID = "run-a"
OTHER_CONFIG = json.dumps({"class_name": "Sequential", "config": {"name": "other", "layers": ["conv", "dense"]}})
START_WEIGHTS = {"dense/kernel": np.zeros((2, 2), np.float32), "dense/bias": np.zeros(2, np.float32)}


def make_round(volume, fake_model, client_weights, client_config=None) -> RunLayout:
    """A round whose starting model has START_WEIGHTS; every client has ``client_weights`` (and ``client_config``,
    else the starting model's), in a run of two workers (run.json)."""
    layout = RunLayout(volume, RUN_ID)
    save_config(layout.config_path, RunConfig(workers=2))
    fake_model(layout.global_model_path(0), START_WEIGHTS, {"run_id": RUN_ID, "round": 0})
    start_sha = sha256_of_file(layout.global_model_path(0))
    for worker in range(2):
        fake_model(
            layout.client_model_path(1, worker), client_weights,
            {"run_id": RUN_ID, "round": 1, "worker": worker, "num_examples": 5, "global_sha256": start_sha},
            **({"model_config": client_config} if client_config else {}),
        )
    return layout


def refusal(layout, capsys) -> str:
    assert main(["--volume", str(layout.volume), "--run-id", RUN_ID, "--round", "1"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and not layout.global_model_path(1).exists()
    return error


def test_clients_that_agree_with_each_other_but_not_with_the_start_are_refused(tmp_path, fake_model, capsys):
    # Every client, the first included, carries another architecture: before, the first client was the reference.
    layout = make_round(tmp_path, fake_model, {"dense/kernel": np.ones((2, 2), np.float32),
                                               "dense/bias": np.ones(2, np.float32)}, client_config=OTHER_CONFIG)
    error = refusal(layout, capsys)
    assert "client-000.h5: different architecture from the round's starting model round-000/global.h5" in error


@pytest.mark.parametrize(
    "client_weights, message",
    [
        ({"dense/kernel": np.ones((2, 2), np.float32)}, "missing weights ['dense/bias']"),
        ({**START_WEIGHTS, "extra/kernel": np.ones(3, np.float32)}, "unexpected weights ['extra/kernel']"),
        ({"dense/kernel": np.ones((2, 3), np.float32), "dense/bias": np.ones(2, np.float32)}, "has shape (2, 3)"),
        ({"dense/kernel": np.ones((2, 2), np.int32), "dense/bias": np.ones(2, np.float32)}, "non-float dtype"),
    ],
)
def test_a_first_client_whose_weights_differ_from_the_start_is_refused(tmp_path, fake_model, capsys, client_weights, message):
    layout = make_round(tmp_path, fake_model, client_weights)
    error = refusal(layout, capsys)
    assert "client-000.h5" in error and message in error


def test_the_output_takes_its_layout_from_the_starting_model(tmp_path, fake_model):
    layout = make_round(tmp_path, fake_model, {name: np.ones_like(array) for name, array in START_WEIGHTS.items()})
    with h5py.File(layout.global_model_path(0), "r+") as handle:
        handle.attrs["keras_version"] = "start-model"
    for worker in range(2):
        with h5py.File(layout.client_model_path(1, worker), "r+") as handle:
            handle.attrs["keras_version"] = f"client-{worker}"
    # Editing an attribute changed the starting model's bytes: record the new digest in the clients.
    start_sha = sha256_of_file(layout.global_model_path(0))
    for worker in range(2):
        with h5py.File(layout.client_model_path(1, worker), "r+") as handle:
            handle.attrs["global_sha256"] = start_sha
    assert main(["--volume", str(tmp_path), "--run-id", RUN_ID, "--round", "1"]) == 0
    with h5py.File(layout.global_model_path(1)) as output:
        assert output.attrs["keras_version"] == "start-model"
        np.testing.assert_array_equal(output["model_weights/dense/kernel"][()], np.ones((2, 2)))
