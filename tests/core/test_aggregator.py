"""The aggregator averages h5 weights by example count and refuses every kind of bad client."""

import h5py
import numpy as np
import pytest

from aggregator.__main__ import main
from aggregator.aggregate import aggregate_round
from common.modelfile import sha256_of_file
from common.layout import RunLayout
from common.runconfig import RunConfig, save_config

RUN_ID = "run-a"


@pytest.fixture
def round_one(tmp_path, fake_model):
    """A run of three workers (run.json), its initial model and three valid round-1 clients of 1, 2 and 3 examples."""
    layout = RunLayout(tmp_path, RUN_ID)
    save_config(layout.config_path, RunConfig(workers=3))
    start_weights = {"dense/kernel": np.zeros((2, 2), np.float32), "dense/bias": np.zeros(2, np.float32)}
    fake_model(layout.global_model_path(0), start_weights, {"run_id": RUN_ID, "round": 0})
    start_sha = sha256_of_file(layout.global_model_path(0))
    for worker, value in enumerate([1.0, 2.0, 3.0]):
        fake_model(
            layout.client_model_path(1, worker),
            {"dense/kernel": np.full((2, 2), value, np.float32), "dense/bias": np.full(2, -value, np.float32)},
            {"run_id": RUN_ID, "round": 1, "worker": worker, "num_examples": worker + 1, "global_sha256": start_sha},
        )
    return layout


def run_aggregator(layout, round_number=1):
    """The aggregator's command line; the run's workers come from its run.json."""
    return main(["--volume", str(layout.volume), "--run-id", layout.run_id, "--round", str(round_number)])


def set_workers(layout, workers):
    """Replace the run's run.json with one of ``workers`` workers (save_config refuses to change a run's shape)."""
    layout.config_path.unlink()
    save_config(layout.config_path, RunConfig(workers=workers))


def test_writes_the_example_weighted_average(round_one):
    assert run_aggregator(round_one) == 0
    with h5py.File(round_one.global_model_path(1)) as output:
        # (1*1 + 2*2 + 3*3) / 6 = 14/6
        np.testing.assert_allclose(output["model_weights/dense/kernel"][()], np.full((2, 2), 14 / 6), rtol=1e-6)
        np.testing.assert_allclose(output["model_weights/dense/bias"][()], np.full(2, -14 / 6), rtol=1e-6)
        assert output.attrs["num_examples"] == 6 and output.attrs["round"] == 1 and output.attrs["num_clients"] == 3
        assert "model_config" in output.attrs and "worker" not in output.attrs


def expect_refusal(layout, capsys, message, **kwargs):
    code = run_aggregator(layout, **kwargs)
    error = capsys.readouterr().err
    assert code == 2, error
    assert message in error, error
    assert error.count("\n") == 1 and "Traceback" not in error
    assert not layout.global_model_path(kwargs.get("round_number", 1)).exists()
    assert not [p for p in layout.round_dir(1).iterdir() if p.name.startswith(".")], "temporary file left behind"


def test_refuses_a_missing_client(round_one, capsys):
    round_one.client_model_path(1, 1).unlink()
    expect_refusal(round_one, capsys, "missing client models for workers [1]")


def test_refuses_an_extra_client(round_one, capsys):
    set_workers(round_one, 2)
    expect_refusal(round_one, capsys, "unexpected client models for workers [2]")


def rewrite_attribute(path, key, value):
    with h5py.File(path, "r+") as handle:
        if value is None:
            del handle.attrs[key]
        else:
            handle.attrs[key] = value


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("round", 2, "from round 2, expected round 1"),
        ("run_id", "another-run", "from run 'another-run'"),
        ("global_sha256", "0" * 64, "did not start from this round's global model"),
        ("num_examples", None, "missing num_examples"),
        ("num_examples", 0, "num_examples must be a positive integer"),
        ("model_config", '{"class_name": "Other"}', "different architecture"),
    ],
)
def test_refuses_a_client_with_wrong_metadata(round_one, capsys, key, value, message):
    rewrite_attribute(round_one.client_model_path(1, 2), key, value)
    expect_refusal(round_one, capsys, message)


def test_refuses_different_shapes(round_one, capsys):
    with h5py.File(round_one.client_model_path(1, 1), "r+") as handle:
        del handle["model_weights/dense/bias"]
        handle["model_weights/dense/bias"] = np.zeros(3, np.float32)
    expect_refusal(round_one, capsys, "has shape (3,)")


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_refuses_non_finite_weights(round_one, capsys, bad_value):
    with h5py.File(round_one.client_model_path(1, 0), "r+") as handle:
        handle["model_weights/dense/kernel"][0, 0] = bad_value
    expect_refusal(round_one, capsys, "NaN or Inf")


def test_refuses_a_truncated_file(round_one, capsys):
    path = round_one.client_model_path(1, 1)
    path.write_bytes(path.read_bytes()[:300])
    expect_refusal(round_one, capsys, "client-001.h5")


def test_refuses_a_file_that_is_not_hdf5(round_one, capsys):
    round_one.client_model_path(1, 0).write_text("hello")
    expect_refusal(round_one, capsys, "not a readable HDF5 model file")


def test_refuses_a_missing_starting_model(round_one, capsys):
    round_one.global_model_path(0).unlink()
    expect_refusal(round_one, capsys, "starting model is missing")


def test_a_refusal_keeps_an_earlier_good_output(round_one, capsys):
    assert run_aggregator(round_one) == 0
    before = round_one.global_model_path(1).read_bytes()
    rewrite_attribute(round_one.client_model_path(1, 0), "round", 7)
    assert run_aggregator(round_one) == 2
    assert round_one.global_model_path(1).read_bytes() == before


def test_ignores_abandoned_temporary_files(round_one):
    (round_one.round_dir(1) / ".client-000.h5.abc.tmp.h5").write_bytes(b"partial")
    assert run_aggregator(round_one) == 0


def test_refuses_round_zero(round_one, capsys):
    assert main(["--volume", str(round_one.volume), "--run-id", RUN_ID, "--round", "0"]) == 2
    assert "--round must be at least 1" in capsys.readouterr().err


def test_refuses_a_run_without_run_json(round_one, capsys):
    round_one.config_path.unlink()
    expect_refusal(round_one, capsys, "no such run configuration")


def test_the_expect_flag_is_gone(round_one, capsys):
    argv = ["--volume", str(round_one.volume), "--run-id", RUN_ID, "--round", "1", "--expect", "3"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "unrecognized arguments: --expect 3" in error and error.count("\n") == 1
    assert not round_one.global_model_path(1).exists()


@pytest.mark.parametrize("expect, message", [(0, "at least 1 worker, got 0"), (2, "a run of 2 workers, but .* has 3")])
def test_the_library_refuses_a_bad_or_mismatched_expect(round_one, expect, message):
    # aggregate_round still takes the workers its caller expects, and refuses a run.json that disagrees.
    with pytest.raises(ValueError, match=message):
        aggregate_round(round_one, 1, expect)
    assert not round_one.global_model_path(1).exists()


def test_refuses_an_unsafe_run_id(tmp_path, capsys):
    assert main(["--volume", str(tmp_path), "--run-id", "../escape", "--round", "1"]) == 2
    assert "run id" in capsys.readouterr().err
