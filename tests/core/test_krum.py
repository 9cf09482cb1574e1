"""Krum and Multi-Krum: hand-computed scores, honest clients kept among byzantine ones, too few refused."""

import json

import numpy as np
import pytest

import aggregator.aggregate
from aggregator.krum import krum_scores, krum_select, pairwise_squared_distances
from common.runconfig import RunConfig
from tests.core.fl_rounds import SHAPES, aggregate, global_weights, start_round, write_client


def test_scores_match_a_hand_computation():
    # Five clients on a line at 0, 1, 2, 10, 11; f = 1, so each sums its 5 - 1 - 2 = 2 nearest squared distances.
    points = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]])
    distances = pairwise_squared_distances(points)
    assert distances[0, 3] == 100 and distances[3, 4] == 1
    # 0: 1 + 4; 1: 1 + 1; 2: 1 + 4; 10: 1 + 64; 11: 1 + 81.
    scores = krum_scores(distances, 1)
    np.testing.assert_array_equal(scores, [5, 2, 5, 65, 82])
    assert krum_select(scores, keep=1) == [1]
    assert krum_select(scores, keep=3) == [0, 1, 2]


@pytest.mark.parametrize("num_clients, byzantine", [(4, 1), (2, 0), (6, 2)])
def test_too_few_clients_are_refused(num_clients, byzantine):
    with pytest.raises(ValueError, match=f"needs more than {2 * byzantine + 2} clients"):
        krum_scores(np.zeros((num_clients, num_clients)), byzantine)
    with pytest.raises(ValueError, match=f"needs more than {2 * byzantine + 2} clients per round"):
        RunConfig(workers=num_clients, aggregation="krum", byzantine_clients=byzantine)


def test_byzantine_clients_apply_to_krum_only():
    with pytest.raises(ValueError, match="byzantine-clients applies to krum and multi-krum aggregation, not mean"):
        RunConfig(workers=5, byzantine_clients=1)
    assert RunConfig(workers=5, aggregation="multi-krum").byzantine_clients == 0


def attacked_round(volume, aggregation):
    """20 clients near 1.0, of which 4 are byzantine: two send 50x the honest model, two random noise."""
    layout = start_round(volume, RunConfig(workers=20, aggregation=aggregation, byzantine_clients=4))
    rng = np.random.default_rng(1)
    for worker in range(20):
        honest = {name: (1 + 0.01 * rng.normal(size=shape)).astype(np.float32) for name, shape in SHAPES.items()}
        if worker in (3, 7):
            honest = {name: 50 * array for name, array in honest.items()}
        elif worker in (11, 15):
            honest = {name: rng.normal(0, 5, size=shape).astype(np.float32) for name, shape in SHAPES.items()}
        # The liars also claim most of the examples: Krum gives a claimed count no weight.
        write_client(layout, 1, worker, honest, num_examples=10_000 if worker in (3, 7, 11, 15) else 100)
    return layout


@pytest.mark.parametrize("aggregation, kept", [("krum", 1), ("multi-krum", 16)])
def test_krum_keeps_honest_clients_only(tmp_path, aggregation, kept, capsys):
    layout = attacked_round(tmp_path, aggregation)
    assert aggregate(layout) == 0
    record = json.loads(layout.round_record_path(1).read_text())
    assert len(record["krum"]["kept"]) == kept
    assert not set(record["krum"]["kept"]) & {3, 7, 11, 15}
    for name, array in global_weights(layout).items():
        assert np.all(np.abs(array - 1) < 0.05), name
    assert f"{aggregation} kept workers" in capsys.readouterr().out


def test_krum_streamed_in_small_blocks_keeps_the_same_clients(tmp_path, monkeypatch):
    whole = attacked_round(tmp_path / "whole", "multi-krum")
    assert aggregate(whole) == 0
    monkeypatch.setattr(aggregator.aggregate, "VALUES_PER_BLOCK", 1)
    blocked = attacked_round(tmp_path / "blocked", "multi-krum")
    assert aggregate(blocked) == 0
    record = lambda layout: json.loads(layout.round_record_path(1).read_text())["krum"]
    assert record(whole)["kept"] == record(blocked)["kept"]
    np.testing.assert_allclose(record(whole)["scores"], record(blocked)["scores"], rtol=1e-12)


def test_the_mean_is_wrecked_by_the_same_attack(tmp_path):
    layout = attacked_round(tmp_path, "krum")
    config = json.loads(layout.config_path.read_text())
    layout.config_path.write_text(json.dumps({**config, "aggregation": "mean", "byzantine_clients": None}))
    assert aggregate(layout) == 0
    assert max(float(np.max(np.abs(array - 1))) for array in global_weights(layout).values()) > 10


def test_krum_maps_its_choice_to_workers_when_sampled_clients_are_missing(tmp_path):
    # 7 of 10 workers sampled, worker 4 never finished: Krum's indices run over [1, 2, 5, 7, 8, 9], the clients
    # combined, not over the sampled list or the worker numbers.
    layout = start_round(tmp_path, RunConfig(workers=10, clients_per_round=7, min_clients=5, aggregation="krum",
                                             byzantine_clients=1))
    layout.round_dir(1).mkdir(parents=True)
    layout.sampled_clients_path(1).write_text(json.dumps([1, 2, 4, 5, 7, 8, 9]))
    values = {1: 1.0, 2: 1.1, 5: 0.95, 7: 1.03, 8: 50.0, 9: 1.08}  # 7 sits closest to its 3 nearest neighbours
    for worker, value in values.items():
        write_client(layout, 1, worker, {name: np.full(shape, value, np.float32) for name, shape in SHAPES.items()})
    assert aggregate(layout) == 0
    record = json.loads(layout.round_record_path(1).read_text())
    assert record["clients"] == [1, 2, 5, 7, 8, 9] and [entry["worker"] for entry in record["missing"]] == [4]
    assert record["krum"]["kept"] == [7]  # index 3 of the clients; the sampled list's index 3 is worker 5
    for array in global_weights(layout).values():
        np.testing.assert_allclose(array, 1.03, rtol=1e-6)
