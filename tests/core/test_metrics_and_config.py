"""Evaluator metrics, run configuration and run ids: pure logic, no TensorFlow."""

import numpy as np
import pytest

from common.layout import RunLayout, check_run_id, newest_version_dir, published_versions
from common.runconfig import RunConfig, load_config, save_config
from evaluator.metrics import classification_metrics


def test_metrics_match_a_hand_computation():
    labels = np.array([0, 1, 1, 2])
    probabilities = np.full((4, 10), 0.01)
    probabilities[[0, 1, 2, 3], [0, 1, 2, 2]] = 0.91  # third example is wrong (1 predicted as 2)
    metrics = classification_metrics(probabilities, labels)
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["loss"] == pytest.approx(-(3 * np.log(0.91) + np.log(0.01)) / 4)
    assert metrics["confusion_matrix"][1] == [0, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert metrics["per_class_accuracy"][:3] == [1.0, 0.5, 1.0]
    assert metrics["per_class_accuracy"][3] == 0.0  # absent class: no division by zero
    assert sum(map(sum, metrics["confusion_matrix"])) == 4


def test_metrics_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        classification_metrics(np.zeros((3, 10)), np.zeros(4, dtype=int))


@pytest.mark.parametrize(
    "field, value, message",
    [("workers", 0, "workers"), ("rounds", -1, "rounds"), ("epochs", 1.5, "epochs"), ("batch_size", 0, "batch-size"),
     ("split", "random", "split"), ("alpha", 0.0, "alpha")],
)
def test_run_config_refuses_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**{field: value})


def test_a_run_keeps_its_configuration(tmp_path):
    path = tmp_path / "run.json"
    save_config(path, RunConfig(workers=3))
    save_config(path, RunConfig(workers=3))  # same config: fine (a resume)
    with pytest.raises(ValueError, match="different configuration"):
        save_config(path, RunConfig(workers=4))
    assert load_config(path) == RunConfig(workers=3)


@pytest.mark.parametrize("run_id", ["", "UPPER", "../x", "a/b", "-lead", "trail-", "x" * 64, "sp ace"])
def test_unsafe_run_ids_are_refused(run_id):
    with pytest.raises(ValueError, match="run id"):
        check_run_id(run_id)


def test_layout_paths_stay_inside_the_run_directory(tmp_path):
    layout = RunLayout(tmp_path, "mnist-abc12")
    for path in (layout.shard_path(2), layout.client_model_path(3, 1), layout.global_model_path(0), layout.metrics_path(1)):
        assert layout.run_dir in path.parents
    assert layout.client_model_path(1, 2).name == "client-002.h5"


def test_only_complete_versions_are_published(tmp_path):
    for version, files in [(1, ["model.h5", "info.json"]), (2, ["model.h5"]), (10, ["model.h5", "info.json"])]:
        (tmp_path / str(version)).mkdir()
        for name in files:
            (tmp_path / str(version) / name).write_text("x")
    (tmp_path / ".publishing-xyz").mkdir()
    assert published_versions(tmp_path) == [1, 10]
    assert newest_version_dir(tmp_path) == tmp_path / "10"
    assert newest_version_dir(tmp_path / "missing") is None
