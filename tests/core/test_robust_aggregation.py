"""Coordinate-wise median and trimmed mean: hand computations, and one poisoned client among honest ones."""

import h5py
import numpy as np
import pytest

import aggregator.aggregate
from aggregator.__main__ import main
from aggregator.robust import coordinate_median, trimmed_mean
from common.layout import RunLayout
from common.modelfile import open_model_file, read_weights, sha256_of_file
from common.runconfig import RunConfig, save_config

RUN_ID = "run-r"


def test_median_and_trimmed_mean_match_hand_computations():
    # Prepare: five clients, two coordinates each (one client per row).
    stacked = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0], [100.0, -1000.0]])
    # Execute / Assert: median of [1, 2, 3, 4, 100] is 3, of [10, 20, 30, 40, -1000] is 20.
    np.testing.assert_array_equal(coordinate_median(stacked), [3.0, 20.0])
    # 0.2 * 5 = 1 cut from each end: mean of [2, 3, 4] and of [10, 20, 30].
    np.testing.assert_array_equal(trimmed_mean(stacked, 0.2), [3.0, 20.0])
    # Nothing cut (0.1 * 5 < 1): the plain mean.
    np.testing.assert_allclose(trimmed_mean(stacked, 0.1), stacked.mean(axis=0))
    # An even count: the median is the mean of the two middle values.
    np.testing.assert_array_equal(coordinate_median(stacked[:4]), [2.5, 25.0])


def test_trimmed_mean_refuses_a_fraction_that_would_cut_everything():
    with pytest.raises(ValueError, match="below 0.5"):
        trimmed_mean(np.zeros((4, 2)), 0.5)


def poisoned_round(volume, fake_model, aggregation, trim_fraction=None) -> RunLayout:
    """Five clients: four honest ones near 1.0 and one that sends 1e6 and claims most of the examples."""
    layout = RunLayout(volume, RUN_ID)
    save_config(layout.config_path, RunConfig(workers=5, aggregation=aggregation, trim_fraction=trim_fraction))
    shapes = {"conv/kernel": (3, 3, 1, 4), "dense/kernel": (6, 5), "dense/bias": (5,)}
    start = {name: np.zeros(shape, np.float32) for name, shape in shapes.items()}
    fake_model(layout.global_model_path(0), start, {"run_id": RUN_ID, "round": 0})
    start_sha = sha256_of_file(layout.global_model_path(0))
    rng = np.random.default_rng(0)
    for worker in range(5):
        poisoned = worker == 2
        weights = {
            name: np.full(shape, 1e6, np.float32) if poisoned else (1 + 0.01 * rng.normal(size=shape)).astype(np.float32)
            for name, shape in shapes.items()
        }
        fake_model(layout.client_model_path(1, worker), weights, {
            "run_id": RUN_ID, "round": 1, "worker": worker, "num_examples": 10_000 if poisoned else 100,
            "global_sha256": start_sha,
        })
    return layout


def aggregated(layout) -> dict[str, np.ndarray]:
    assert main(["--volume", str(layout.volume), "--run-id", RUN_ID, "--round", "1"]) == 0
    with open_model_file(layout.global_model_path(1)) as handle:
        return read_weights(handle)


def test_one_poisoned_client_wrecks_the_mean(tmp_path, fake_model):
    weights = aggregated(poisoned_round(tmp_path, fake_model, "mean"))
    assert all(np.min(array) > 1e5 for array in weights.values())


@pytest.mark.parametrize("aggregation, trim_fraction", [("median", None), ("trimmed-mean", None), ("trimmed-mean", 0.4)])
def test_median_and_trimmed_mean_ignore_the_poisoned_client(tmp_path, fake_model, aggregation, trim_fraction):
    weights = aggregated(poisoned_round(tmp_path, fake_model, aggregation, trim_fraction))
    for name, array in weights.items():
        assert np.all(np.abs(array - 1) < 0.05), name
        assert array.dtype == np.float32


def test_streaming_in_small_blocks_gives_the_same_result(tmp_path, fake_model, monkeypatch):
    whole = aggregated(poisoned_round(tmp_path / "whole", fake_model, "median"))
    # Blocks of one row of one weight across the five clients at a time.
    monkeypatch.setattr(aggregator.aggregate, "VALUES_PER_BLOCK", 1)
    blocked = aggregated(poisoned_round(tmp_path / "blocked", fake_model, "median"))
    for name, array in whole.items():
        np.testing.assert_array_equal(blocked[name], array)


def test_robust_aggregation_refuses_non_finite_weights(tmp_path, fake_model, capsys):
    layout = poisoned_round(tmp_path, fake_model, "median")
    with h5py.File(layout.client_model_path(1, 4), "r+") as handle:
        handle["model_weights/dense/bias"][3] = np.nan
    assert main(["--volume", str(tmp_path), "--run-id", RUN_ID, "--round", "1"]) == 2
    error = capsys.readouterr().err
    assert "client-004.h5: weight 'dense/bias' contains NaN or Inf" in error and error.count("\n") == 1
    assert not layout.global_model_path(1).exists()


def test_row_blocks_cover_each_weight_once():
    blocks = aggregator.aggregate.row_blocks((10, 3), num_clients=4)
    assert blocks == [slice(0, 10)]
    blocks = aggregator.aggregate.row_blocks((10, 3), num_clients=1 << 21)
    assert blocks == [slice(row, row + 1) for row in range(10)]
    assert aggregator.aggregate.row_blocks((), num_clients=3) == [...]
