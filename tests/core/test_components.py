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


# The settings of the tiny run: trainer.init takes them; the trainer, splitter and aggregator read run.json.
RUN_FLAGS = ["--workers", "2", "--rounds", "1", "--seed", "3", "--batch-size", "32"]


def common_args(volume, run_id=RUN_ID):
    return ["--volume", str(volume), "--run-id", run_id]


@pytest.fixture
def trained_round(volume):
    """A tiny run taken through init (which also splits), split, two trainers and aggregation of round 1."""
    assert init_main(common_args(volume) + RUN_FLAGS) == 0
    assert RunLayout(volume, RUN_ID).manifest_path.is_file()
    assert splitter_main(common_args(volume)) == 0  # the split run.json describes: init's, left as it is
    for worker in (0, 1):
        assert trainer_main(common_args(volume) + ["--round", "1", "--worker", str(worker)]) == 0
    assert aggregator_main(common_args(volume) + ["--round", "1"]) == 0
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


def test_trainer_logs_each_epoch_for_tensorboard(volume):
    # Prepare: a run of three local epochs of 50-example batches (run.json: the trainer takes no settings).
    assert init_main(common_args(volume, "epochs") + RUN_FLAGS[:-2] + ["--epochs", "3", "--batch-size", "50"]) == 0

    # Execute: three local epochs for worker 0.
    assert trainer_main(common_args(volume, "epochs") + ["--round", "1", "--worker", "0"]) == 0

    # Assert: loss, accuracy and learning rate per epoch, as TensorBoard reads them.
    scalars = epoch_scalars(RunLayout(volume, "epochs").tensorboard_dir(1, 0))
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= scalars.keys()
    assert [step for step, _ in scalars["epoch_loss"][-3:]] == [0, 1, 2]
    assert all(0 <= value <= 1 for _, value in scalars["epoch_accuracy"])
    assert scalars["epoch_learning_rate"][-1][1] > 0


def test_trainer_writes_argo_progress(volume, trained_round, tmp_path, monkeypatch):
    progress_file = tmp_path / "progress"
    monkeypatch.setenv("ARGO_PROGRESS_FILE", str(progress_file))
    # 150 examples in batches of 32 (run.json): five steps.
    assert trainer_main(common_args(volume) + ["--round", "1", "--worker", "0"]) == 0
    assert progress_file.read_text().strip() == "5/5"


@pytest.mark.parametrize("flag", [["--epochs", "3"], ["--batch-size", "50"], ["--seed", "1"]])
def test_the_trainer_takes_its_settings_from_run_json_only(volume, flag):
    with pytest.raises(SystemExit) as exit_info:
        trainer_main(common_args(volume) + ["--round", "1", "--worker", "0", *flag])
    assert exit_info.value.code == 2


def test_the_trainer_refuses_a_run_without_run_json(volume, capsys):
    assert trainer_main(common_args(volume, "never-started") + ["--round", "1", "--worker", "0"]) == 2
    error = capsys.readouterr().err
    assert "run.json: no such run configuration" in error and error.count("\n") == 1


def test_initial_model_is_shared_and_never_rewritten(volume, trained_round):
    before = trained_round.global_model_path(0).read_bytes()
    assert init_main(common_args(volume) + RUN_FLAGS) == 0
    assert trained_round.global_model_path(0).read_bytes() == before


def test_init_refuses_a_changed_configuration(volume, trained_round, capsys):
    assert init_main(common_args(volume) + ["--workers", "5", "--rounds", "1", "--seed", "3", "--batch-size", "32"]) == 2
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
        (["--volume", "{volume}", "--run-id", "tiny", "--round", "1", "--last-round"], "--last-round needs --volume and --run-id, and no --round"),
        (["--volume", "{volume}", "--last-round"], "--last-round needs --volume and --run-id"),
        (["--volume", "{volume}", "--run-id", "never-started", "--last-round"], "run.json: no such run configuration"),
    ],
)
def test_evaluator_errors(volume, capsys, argv, message):
    argv = [value.format(volume=volume) for value in argv]
    assert evaluator_main(argv) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def test_evaluator_last_round_evaluates_the_runs_final_round(volume, trained_round):
    # Execute: the run's final round, as run.json says (1).
    assert evaluator_main(common_args(volume) + ["--last-round"]) == 0

    # Assert: round 1's metrics, tied to the exact model file they measured.
    metrics = json.loads(trained_round.metrics_path(1).read_text())
    assert metrics["round"] == 1 and metrics["num_examples"] == 50
    assert metrics["model_sha256"] == sha256_of_file(trained_round.global_model_path(1))


def recorded(layout, model_sha256) -> dict:
    """A round-1 metrics.json as the coordinator writes it, with an accuracy no 50-image test can give."""
    metrics = {"accuracy": 0.123456, "loss": 9.5, "num_examples": 50, "round": 1, "model_sha256": model_sha256}
    layout.metrics_path(1).parent.mkdir(parents=True, exist_ok=True)
    layout.metrics_path(1).write_text(json.dumps(metrics))
    return metrics


def test_evaluator_reuses_the_metrics_of_exactly_this_model(volume, trained_round, monkeypatch, tmp_path):
    import evaluator.__main__

    recorded(trained_round, sha256_of_file(trained_round.global_model_path(1)))

    def no_evaluation(*args):
        raise AssertionError("the round's recorded metrics should have been reused")

    monkeypatch.setattr(evaluator.__main__, "evaluate", no_evaluation)
    accuracy_file = tmp_path / "accuracy"
    assert evaluator_main(common_args(volume) + ["--last-round", "--accuracy-file", str(accuracy_file)]) == 0
    assert accuracy_file.read_text().strip() == "0.1235"
    assert json.loads(trained_round.metrics_path(1).read_text())["accuracy"] == 0.123456


@pytest.mark.parametrize("model_sha256", ["0" * 64, None])
def test_evaluator_does_not_reuse_metrics_of_another_model(volume, trained_round, model_sha256):
    # A metrics.json of another model file (or one that does not say which) is measured again, then recorded.
    recorded(trained_round, model_sha256)
    assert evaluator_main(common_args(volume) + ["--round", "1"]) == 0
    metrics = json.loads(trained_round.metrics_path(1).read_text())
    assert metrics["accuracy"] != 0.123456 and metrics["loss"] != 9.5 and len(metrics["confusion_matrix"]) == 10
    assert metrics["model_sha256"] == sha256_of_file(trained_round.global_model_path(1))


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


def test_publisher_last_round_publishes_the_runs_final_round(volume, trained_round, capsys):
    assert evaluator_main(common_args(volume) + ["--round", "1"]) == 0
    assert publisher_main(common_args(volume) + ["--last-round"]) == 0
    assert published_versions(models_dir(volume)) == [1]
    info = json.loads((models_dir(volume) / "1" / "info.json").read_text())
    assert info["run_id"] == RUN_ID and info["round"] == 1
    assert publisher_main(common_args(volume) + ["--round", "1"]) == 0  # the same round: no new version
    assert published_versions(models_dir(volume)) == [1]
    with pytest.raises(SystemExit) as exit_info:  # one or the other
        publisher_main(common_args(volume) + ["--round", "1", "--last-round"])
    assert exit_info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert publisher_main(common_args(volume, "never-started") + ["--last-round"]) == 2
    assert "run.json: no such run configuration" in capsys.readouterr().err
