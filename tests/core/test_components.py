"""Trainer, initializer, evaluator and publisher on tiny synthetic data (TensorFlow, a few seconds)."""

import json

import h5py
import numpy as np
import pytest

from aggregator.__main__ import main as aggregator_main
from common.modelfile import sha256_of_file
from common.layout import RunLayout, models_dir, published_versions
from evaluator.__main__ import main as evaluator_main
from publisher.__main__ import main as publisher_main
from splitter.__main__ import main as splitter_main
from trainer.__main__ import main as trainer_main
from trainer.init import main as init_main

RUN_ID = "tiny"


@pytest.fixture
def volume(tiny_mnist):
    return tiny_mnist.parent.parent


def common_args(volume):
    return ["--volume", str(volume), "--run-id", RUN_ID]


@pytest.fixture
def trained_round(volume):
    """A tiny run taken through init, split, two trainers and aggregation of round 1."""
    assert init_main(common_args(volume) + ["--workers", "2", "--rounds", "1", "--seed", "3"]) == 0
    assert splitter_main(common_args(volume) + ["--workers", "2", "--seed", "3"]) == 0
    for worker in (0, 1):
        assert trainer_main(common_args(volume) + ["--round", "1", "--worker", str(worker), "--batch-size", "32"]) == 0
    assert aggregator_main(common_args(volume) + ["--round", "1", "--expect", "2"]) == 0
    return RunLayout(volume, RUN_ID)


def test_trainer_records_what_the_aggregator_checks(trained_round):
    start_sha = sha256_of_file(trained_round.global_model_path(0))
    with h5py.File(trained_round.client_model_path(1, 1)) as client:
        assert client.attrs["num_examples"] == 150
        assert client.attrs["round"] == 1 and client.attrs["worker"] == 1
        assert client.attrs["run_id"] == RUN_ID and client.attrs["global_sha256"] == start_sha
    assert list(trained_round.tensorboard_dir(1, 1).rglob("events.out.tfevents.*")), "no TensorBoard log"


def epoch_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """The scalars TensorBoard itself reads from a trainer's log directory, as (step, value) per tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir / "train"), size_guidance={"tensors": 0}).Reload()
    from tensorboard.util import tensor_util

    return {
        tag: [(event.step, float(tensor_util.make_ndarray(event.tensor_proto))) for event in events.Tensors(tag)]
        for tag in events.Tags()["tensors"]
    }


def test_trainer_logs_each_epoch_for_tensorboard(volume, trained_round):
    # Execute: three local epochs for worker 0.
    assert trainer_main(common_args(volume) + ["--round", "1", "--worker", "0", "--epochs", "3", "--batch-size", "50"]) == 0

    # Assert: loss, accuracy and learning rate per epoch, as TensorBoard reads them.
    scalars = epoch_scalars(trained_round.tensorboard_dir(1, 0))
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= scalars.keys()
    assert [step for step, _ in scalars["epoch_loss"][-3:]] == [0, 1, 2]
    assert all(0 <= value <= 1 for _, value in scalars["epoch_accuracy"])
    assert scalars["epoch_learning_rate"][-1][1] > 0


def test_trainer_writes_argo_progress(volume, trained_round, tmp_path, monkeypatch):
    progress_file = tmp_path / "progress"
    monkeypatch.setenv("ARGO_PROGRESS_FILE", str(progress_file))
    assert trainer_main(common_args(volume) + ["--round", "1", "--worker", "0", "--batch-size", "50"]) == 0
    assert progress_file.read_text().strip() == "3/3"


def test_initial_model_is_shared_and_never_rewritten(volume, trained_round):
    before = trained_round.global_model_path(0).read_bytes()
    assert init_main(common_args(volume) + ["--workers", "2", "--rounds", "1", "--seed", "3"]) == 0
    assert trained_round.global_model_path(0).read_bytes() == before


def test_init_refuses_a_changed_configuration(volume, trained_round, capsys):
    assert init_main(common_args(volume) + ["--workers", "5", "--rounds", "1", "--seed", "3"]) == 2
    assert "different configuration" in capsys.readouterr().err


def test_init_continues_from_a_start_model(volume, trained_round):
    start = trained_round.global_model_path(1)
    assert init_main(["--volume", str(volume), "--run-id", "next", "--start-model", str(start)]) == 0
    from common.model import load_model

    continued = load_model(RunLayout(volume, "next").global_model_path(0))
    original = load_model(start)
    for mine, theirs in zip(continued.get_weights(), original.get_weights()):
        np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize("content", [b"not a model", None])
def test_init_refuses_a_bad_start_model(volume, tmp_path, capsys, content):
    start = tmp_path / "start.h5"
    if content is not None:
        start.write_bytes(content)
    assert init_main(["--volume", str(volume), "--run-id", "bad", "--start-model", str(start)]) == 2
    assert "start.h5" in capsys.readouterr().err
    assert not RunLayout(volume, "bad").global_model_path(0).exists()


def test_trainer_refuses_a_missing_shard_or_starting_model(volume, trained_round, capsys):
    assert trainer_main(common_args(volume) + ["--round", "1", "--worker", "7"]) == 2
    assert "shard-007.npz: file not found" in capsys.readouterr().err
    assert trainer_main(common_args(volume) + ["--round", "3", "--worker", "0"]) == 2
    assert "starting model is missing" in capsys.readouterr().err


def test_evaluator_writes_metrics_and_enforces_min_accuracy(volume, trained_round, capsys):
    # Random tiny data: accuracy is near chance, so 0.99 must fail and 0.0 must pass.
    assert evaluator_main(common_args(volume) + ["--round", "1", "--min-accuracy", "0.99"]) == 1
    assert "below --min-accuracy" in capsys.readouterr().err
    metrics = json.loads(trained_round.metrics_path(1).read_text())
    assert metrics["num_examples"] == 50 and len(metrics["confusion_matrix"]) == 10 and metrics["round"] == 1
    assert evaluator_main(common_args(volume) + ["--round", "1", "--min-accuracy", "0"]) == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "missing.h5", "--data", "x.npz"], "x.npz: file not found"),
        (["--volume", "{volume}"], "no published model"),
        (["--volume", "{volume}", "--run-id", "tiny"], "--run-id and --round go together"),
        (["--volume", "{volume}", "--run-id", "tiny", "--round", "1", "--min-accuracy", "99"], "between 0 and 1"),
        ([], "name a model"),
    ],
)
def test_evaluator_errors(volume, capsys, argv, message):
    argv = [value.format(volume=volume) for value in argv]
    assert evaluator_main(argv) == 2
    assert message in capsys.readouterr().err


def test_publisher_numbers_versions_and_is_idempotent(volume, trained_round, capsys):
    assert publisher_main(common_args(volume) + ["--round", "1"]) == 2
    assert "was not evaluated" in capsys.readouterr().err
    assert evaluator_main(common_args(volume) + ["--round", "1"]) == 0
    assert publisher_main(common_args(volume) + ["--round", "1", "--min-accuracy", "0.99"]) == 1
    assert published_versions(models_dir(volume)) == []
    assert publisher_main(common_args(volume) + ["--round", "1"]) == 0
    assert publisher_main(common_args(volume) + ["--round", "1"]) == 0  # the same run again: no new version
    assert published_versions(models_dir(volume)) == [1]
    info = json.loads((models_dir(volume) / "1" / "info.json").read_text())
    assert info["run_id"] == RUN_ID and info["version"] == 1 and info["config"]["workers"] == 2
    assert [entry["round"] for entry in info["history"]] == [1] and info["shard_sizes"] == [150, 150]
    assert not [p for p in models_dir(volume).iterdir() if p.name.startswith(".")]
    assert evaluator_main(["--volume", str(volume)]) == 0  # the newest published model
