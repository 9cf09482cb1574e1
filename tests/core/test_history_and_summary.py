"""A run's accuracy per round and its summary (the Argo exit handler): pure file logic, no TensorFlow."""

from __future__ import annotations

import json

import pytest

from common.atomic import write_json
from common.layout import RunLayout
from evaluator.__main__ import main as evaluator_main
from common.history import evaluated_rounds, round_history
from evaluator.summary import main as summary_main


def evaluated(tmp_path, accuracies: dict[int, float]) -> RunLayout:
    layout = RunLayout(tmp_path, "run-a")
    for round_number, accuracy in accuracies.items():
        write_json(layout.metrics_path(round_number), {"accuracy": accuracy, "loss": 1 - accuracy})
    return layout


def test_history_lists_every_round_and_refuses_a_gap(tmp_path):
    layout = evaluated(tmp_path, {1: 0.9, 2: 0.95, 4: 0.99})
    assert [entry["accuracy"] for entry in round_history(layout, 2)] == [0.9, 0.95]
    with pytest.raises(ValueError, match="round 3 was not evaluated"):
        round_history(layout, 4)
    assert [entry["round"] for entry in evaluated_rounds(layout)] == [1, 2]


def test_summary_of_a_failed_run_says_how_far_it_got(tmp_path, capsys):
    layout = evaluated(tmp_path, {1: 0.9, 2: 0.95})
    assert summary_main(["--volume", str(tmp_path), "--run-id", "run-a", "--status", "Failed"]) == 0
    summary = json.loads(layout.summary_path.read_text())
    assert summary == {"run_id": "run-a", "status": "Failed", "rounds_evaluated": 2, "final_accuracy": 0.95,
                       "published_version": None, "missing_clients": 0, "privacy": None, "history": [{"round": 1, "accuracy": 0.9, "loss": pytest.approx(0.1)},
                                                              {"round": 2, "accuracy": 0.95, "loss": pytest.approx(0.05)}]}
    assert "run run-a Failed: test accuracy per round 0.9000, 0.9500; not published" in capsys.readouterr().out


def test_summary_of_a_run_that_never_started_is_a_clear_error(tmp_path, capsys):
    assert summary_main(["--volume", str(tmp_path), "--run-id", "run-b"]) == 2
    assert "no such run" in capsys.readouterr().err


def test_history_file_needs_a_round(tmp_path, capsys):
    code = evaluator_main(["--model", str(tmp_path / "m.h5"), "--data", str(tmp_path / "d.npz"),
                           "--history-file", str(tmp_path / "history")])
    assert code == 2 and "--history-file needs --run-id and --round" in capsys.readouterr().err


def test_the_summary_counts_missing_clients_and_the_privacy_spent(tmp_path, capsys):
    layout = RunLayout(tmp_path, "run-p")
    privacy = {"clip": 0.5, "noise_multiplier": 1.0, "epsilon": 2.5, "delta": 1e-3}
    write_json(layout.metrics_path(1), {"accuracy": 0.9, "loss": 0.1, "clients": 9,
                                        "missing": [{"worker": 4, "reason": "no client model"}], "privacy": privacy})
    assert summary_main(["--volume", str(tmp_path), "--run-id", "run-p", "--status", "Succeeded"]) == 0
    summary = json.loads(layout.summary_path.read_text())
    assert summary["missing_clients"] == 1 and summary["privacy"] == privacy
    assert summary["history"][0]["clients"] == 9
    assert "; 1 client(s) missing over the run; epsilon 2.5 at delta 0.001;" in capsys.readouterr().out
