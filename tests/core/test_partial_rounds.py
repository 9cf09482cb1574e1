"""Partial rounds (--min-clients): a round goes on with the clients that finished, renormalized over them."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aggregator.record import round_facts
from bench.faults import TrainerKiller
from common.atomic import write_json
from common.layout import RunLayout, models_dir
from common.runconfig import RunConfig
from common.history import round_history
from tests.core.fl_rounds import SHAPES, aggregate, global_weights, start_round, write_client

REPO_ROOT = Path(__file__).resolve().parents[2]


def four_clients(tmp_path, min_clients, present=(0, 1, 3)):
    """Four workers, of which ``present`` sent a model: worker w's weights are all w + 1, with 100 * (w + 1) examples."""
    layout = start_round(tmp_path, RunConfig(workers=4, min_clients=min_clients))
    for worker in present:
        write_client(layout, 1, worker, {name: np.full(shape, worker + 1.0, np.float32) for name, shape in SHAPES.items()},
                     num_examples=100 * (worker + 1))
    return layout


def test_a_partial_round_renormalizes_over_the_clients_that_finished_and_records_the_missing(tmp_path, capsys):
    layout = four_clients(tmp_path, min_clients=3)
    write_json(layout.client_failure_path(1, 2), {"worker": 2, "round": 1, "reason": "failed 2 times: OSError: bad shard"})
    assert aggregate(layout) == 0
    # Hand computation: weights 1, 2, 4 with 100, 200, 400 examples: (100 + 400 + 1600) / 700 = 3.
    for array in global_weights(layout).values():
        np.testing.assert_allclose(array, 3.0, rtol=1e-6)
    assert "went on without worker 2: failed 2 times: OSError: bad shard" in capsys.readouterr().out
    record = json.loads(layout.round_record_path(1).read_text())
    assert record["clients"] == [0, 1, 3] and record["sampled"] == [0, 1, 2, 3]
    assert round_facts(layout, 1) == {"clients": 3, "missing": [{"worker": 2, "reason": "failed 2 times: OSError: bad shard"}]}


def test_fewer_than_min_clients_fails_in_one_line_and_writes_nothing(tmp_path, capsys):
    layout = four_clients(tmp_path, min_clients=3, present=(0, 3))
    assert aggregate(layout) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "missing client models for workers [1, 2]" in error and "at least 3 of 4 clients" in error
    assert not layout.global_model_path(1).exists() and not layout.round_record_path(1).exists()


def test_by_default_every_client_is_needed(tmp_path, capsys):
    layout = four_clients(tmp_path, min_clients=None)
    assert aggregate(layout) == 2
    assert "missing client models for workers [2]" in capsys.readouterr().err


def test_a_late_client_is_never_mixed_into_a_retried_round(tmp_path):
    layout = four_clients(tmp_path, min_clients=3)
    assert aggregate(layout) == 0
    first = layout.global_model_path(1).read_bytes()
    # Worker 2's model turns up after the round was aggregated, and the aggregation is retried.
    write_client(layout, 1, 2, {name: np.full(shape, 1e3, np.float32) for name, shape in SHAPES.items()})
    layout.global_model_path(1).unlink()
    assert aggregate(layout) == 0
    assert layout.global_model_path(1).read_bytes() == first


def test_the_history_carries_the_round_s_clients_and_missing(tmp_path):
    layout = four_clients(tmp_path, min_clients=3)
    assert aggregate(layout) == 0
    write_json(layout.metrics_path(1), {"accuracy": 0.5, "loss": 1.0, **round_facts(layout, 1)})
    entry = round_history(layout, 1)[0]
    assert entry["clients"] == 3 and [missing["worker"] for missing in entry["missing"]] == [2]


@pytest.mark.parametrize("settings, message", [
    ({"min_clients": 0}, "min-clients must be a whole number of at least 1"),
    ({"min_clients": 5}, "min-clients must be at most the clients of a round (4), got 5"),
    ({"min_clients": 3, "clients_per_round": 2}, "min-clients must be at most the clients of a round (2), got 3"),
])
def test_bad_min_clients_are_refused(settings, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RunConfig(workers=4, **settings)


@pytest.mark.e2e
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_trainer_is_retried_then_left_out_and_the_run_completes(tmp_path, mnist_slice):
    # Prepare: a 6,000-image slice, 4 workers, rounds go on with 3; worker 1's trainer is killed in round 1 on
    # every attempt (kill -9 of the process holding its TensorBoard file), round 2 is left alone.
    data = mnist_slice
    volume = tmp_path / "volume"
    layout = RunLayout(volume, "partial")
    command = [sys.executable, "-m", "runner", "--volume", str(volume), "--data", str(data), "--run-id", "partial",
               "--workers", "4", "--rounds", "2", "--batch-size", "32", "--min-clients", "3", "--min-accuracy", "0"]

    # Execute
    runner = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with TrainerKiller(runner, layout, {1: 1}) as killer:
        stdout, stderr = runner.communicate(timeout=600)

    # Assert: killed twice (first try and retry), round 1 renormalized over 3 clients, round 2 whole, published.
    assert runner.returncode == 0, stderr
    assert [(round_number, worker) for round_number, worker, _ in killer.kills] == [(1, 1), (1, 1)]
    first, second = (json.loads(layout.metrics_path(number).read_text()) for number in (1, 2))
    assert first["clients"] == 3 and second["clients"] == 4 and second["missing"] == []
    assert first["missing"] == [{"worker": 1, "reason": "failed 2 times: its trainer process died (killed, or out of memory)"}]
    assert json.loads(layout.round_record_path(1).read_text())["clients"] == [0, 2, 3]
    assert "went on without worker 1: failed 2 times" in stdout and "clients (missing)" in stdout
    assert first["accuracy"] > 0.7 and second["accuracy"] > first["accuracy"]
    info = json.loads((models_dir(volume) / "1" / "info.json").read_text())
    assert info["history"][0]["missing"][0]["worker"] == 1
