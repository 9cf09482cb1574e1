"""Client sampling: seeded per (seed, round), recorded once in the round's clients.json, followed by the aggregator."""

import json

import numpy as np
import pytest

from aggregator.__main__ import main as aggregator_main
from aggregator.aggregate import aggregate_round
from common.layout import RunLayout
from common.modelfile import sha256_of_file
from common.runconfig import RunConfig, save_config
from common.sampling import clients_for_round, sample_clients

RUN_ID = "run-c"


def test_a_sample_is_sorted_distinct_in_range_and_deterministic():
    first = sample_clients(100, 10, seed=0, round_number=1)
    assert first == sample_clients(100, 10, seed=0, round_number=1)
    assert first == sorted(set(first)) and len(first) == 10
    assert 0 <= first[0] and first[-1] < 100
    assert all(isinstance(worker, int) for worker in first)


def test_rounds_and_seeds_draw_different_samples():
    by_round = {tuple(sample_clients(100, 10, seed=0, round_number=r)) for r in range(1, 21)}
    by_seed = {tuple(sample_clients(100, 10, seed=s, round_number=1)) for s in range(20)}
    assert len(by_round) == 20 and len(by_seed) == 20


def test_every_worker_is_drawn_about_equally_often():
    counts = np.zeros(10)
    for round_number in range(1, 2001):
        counts[sample_clients(10, 3, seed=7, round_number=round_number)] += 1
    # 2000 rounds x 3 of 10: 600 each expected; the binomial standard deviation is about 20.
    assert counts.sum() == 6000 and counts.min() > 500 and counts.max() < 700


def test_no_sampling_means_every_worker():
    assert sample_clients(4, None, seed=3, round_number=9) == [0, 1, 2, 3]
    assert sample_clients(4, 4, seed=3, round_number=9) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "workers, clients_per_round, seed, round_number, message",
    [(5, 6, 0, 1, "clients-per-round"), (5, 0, 0, 1, "clients-per-round"), (0, None, 0, 1, "workers"),
     (5, 2, -1, 1, "seed"), (5, 2, 0, 0, "round")],
)
def test_bad_arguments_are_refused(workers, clients_per_round, seed, round_number, message):
    with pytest.raises(ValueError, match=message):
        sample_clients(workers, clients_per_round, seed, round_number)


def test_the_round_file_is_written_once_and_never_redrawn(tmp_path):
    layout = RunLayout(tmp_path, RUN_ID)
    config = RunConfig(workers=10, clients_per_round=3, seed=5)
    drawn = clients_for_round(layout, config, 2)
    assert drawn == sample_clients(10, 3, seed=5, round_number=2)
    assert json.loads(layout.sampled_clients_path(2).read_text()) == drawn
    # An earlier attempt's record wins over a fresh draw (resume, retry), even where the draw would differ.
    recorded = [0, 1, 9] if drawn != [0, 1, 9] else [2, 3, 4]
    layout.sampled_clients_path(2).write_text(json.dumps(recorded))
    assert clients_for_round(layout, config, 2) == recorded
    assert not [path for path in layout.round_dir(2).iterdir() if path.name.startswith(".")]


@pytest.mark.parametrize(
    "content, message",
    [("[1, 1, 2]", "distinct and sorted"), ("[0, 1, 10]", "between 0 and 9"), ("[0, 1]", "lists 2 workers"),
     ('{"a": 1}', "JSON list"), ("[0, 1, ", "not readable JSON")],
)
def test_a_bad_round_file_is_refused(tmp_path, content, message):
    layout = RunLayout(tmp_path, RUN_ID)
    layout.sampled_clients_path(1).parent.mkdir(parents=True)
    layout.sampled_clients_path(1).write_text(content)
    with pytest.raises(ValueError, match=message):
        clients_for_round(layout, RunConfig(workers=10, clients_per_round=3), 1)


@pytest.fixture
def sampled_round(tmp_path, fake_model):
    """A run of 5 workers sampling 2 per round; round 1 drew workers 1 and 3, and both trained."""
    layout = RunLayout(tmp_path, RUN_ID)
    save_config(layout.config_path, RunConfig(workers=5, clients_per_round=2))
    fake_model(layout.global_model_path(0), {"w": np.zeros(2, np.float32)}, {"run_id": RUN_ID, "round": 0})
    start_sha = sha256_of_file(layout.global_model_path(0))
    for worker, value in [(1, 2.0), (3, 4.0)]:
        fake_model(layout.client_model_path(1, worker), {"w": np.full(2, value, np.float32)},
                   {"run_id": RUN_ID, "round": 1, "worker": worker, "num_examples": 10, "global_sha256": start_sha})
    layout.sampled_clients_path(1).write_text("[1, 3]")
    return layout


def run_aggregator(layout):
    """The aggregator's command line; the run's workers and sampling come from its run.json."""
    return aggregator_main(["--volume", str(layout.volume), "--run-id", RUN_ID, "--round", "1"])


def test_the_aggregator_expects_exactly_the_sampled_workers(sampled_round, fake_model, capsys):
    assert run_aggregator(sampled_round) == 0
    assert "of 2 clients" in capsys.readouterr().out
    # A client that was not drawn is refused, not averaged in.
    sampled_round.global_model_path(1).unlink()
    fake_model(sampled_round.client_model_path(1, 0), {"w": np.zeros(2, np.float32)}, {})
    assert run_aggregator(sampled_round) == 2
    assert "unexpected client models for workers [0]" in capsys.readouterr().err


def test_the_aggregator_refuses_a_missing_sampled_client(sampled_round, capsys):
    sampled_round.client_model_path(1, 3).unlink()
    assert run_aggregator(sampled_round) == 2
    assert "missing client models for workers [3]" in capsys.readouterr().err


def test_a_sampling_run_without_its_round_file_is_refused(sampled_round, capsys):
    sampled_round.sampled_clients_path(1).unlink()
    assert run_aggregator(sampled_round) == 2
    error = capsys.readouterr().err
    assert "clients.json is missing: the run samples 2 of 5 workers per round" in error and error.count("\n") == 1


def test_expect_must_match_the_runs_workers(sampled_round):
    # The command line reads the workers from run.json; the library function still checks its caller's count.
    with pytest.raises(ValueError, match="expected a run of 2 workers, but .* has 5"):
        aggregate_round(sampled_round, 1, 2)
    assert not sampled_round.global_model_path(1).exists()


def test_sample_command_records_prints_and_writes_the_round_s_clients(tmp_path, capsys):
    """What the Argo workflow's sample step runs: the list on stdout and in --output, recorded once."""
    from aggregator.sample import main as sample_main

    layout = RunLayout(tmp_path, RUN_ID)
    save_config(layout.config_path, RunConfig(workers=10, clients_per_round=3, rounds=2, seed=5))
    output = tmp_path / "pod-tmp" / "clients.json"
    arguments = ["--volume", str(tmp_path), "--run-id", RUN_ID, "--round", "2", "--output", str(output)]
    assert sample_main(arguments) == 0
    expected = sample_clients(10, 3, seed=5, round_number=2)
    assert json.loads(capsys.readouterr().out) == json.loads(output.read_text()) == expected
    assert json.loads(layout.sampled_clients_path(2).read_text()) == expected
    layout.sampled_clients_path(2).write_text(json.dumps([0, 1, 2]))  # a record is never drawn again
    assert sample_main(arguments) == 0 and json.loads(output.read_text()) == [0, 1, 2]


@pytest.mark.parametrize("round_number, message", [("3", "between 1 and the run's 2 rounds"), ("0", "between 1")])
def test_sample_command_refuses_a_round_the_run_does_not_have(tmp_path, capsys, round_number, message):
    from aggregator.sample import main as sample_main

    save_config(RunLayout(tmp_path, RUN_ID).config_path, RunConfig(workers=4, rounds=2))
    assert sample_main(["--volume", str(tmp_path), "--run-id", RUN_ID, "--round", round_number]) == 2
    assert message in capsys.readouterr().err


def test_sample_command_needs_an_initialized_run(tmp_path, capsys):
    from aggregator.sample import main as sample_main

    assert sample_main(["--volume", str(tmp_path), "--run-id", RUN_ID, "--round", "1"]) == 2
    assert "no such run configuration" in capsys.readouterr().err


def test_under_dp_two_runs_with_the_same_seed_draw_different_samples(tmp_path):
    config = RunConfig(workers=1000, clients_per_round=10, seed=0, dp_clip=1.0, dp_noise_multiplier=1.0)
    first = clients_for_round(RunLayout(tmp_path / "a", RUN_ID), config, 1)
    second = clients_for_round(RunLayout(tmp_path / "b", RUN_ID), config, 1)
    # The seeded draw would give both runs the same list (and anyone who reads the public seed, too).
    assert first != second and sample_clients(1000, 10, seed=0, round_number=1) not in (first, second)
    # Recorded once: a resume follows the record, never a new secret draw.
    assert clients_for_round(RunLayout(tmp_path / "a", RUN_ID), config, 1) == first


def test_without_dp_two_runs_with_the_same_seed_draw_the_same_samples(tmp_path):
    config = RunConfig(workers=1000, clients_per_round=10, seed=0)
    first = clients_for_round(RunLayout(tmp_path / "a", RUN_ID), config, 1)
    assert first == clients_for_round(RunLayout(tmp_path / "b", RUN_ID), config, 1)
    assert first == sample_clients(1000, 10, seed=0, round_number=1)


def test_a_secret_draw_never_replaces_a_record_another_writer_made_first(tmp_path, monkeypatch):
    import common.sampling as sampling

    layout = RunLayout(tmp_path, RUN_ID)
    config = RunConfig(workers=10, clients_per_round=3, dp_clip=1.0)

    def racing_draw(config, round_number):
        # Another pod records its own draw between this one's check and its write.
        layout.sampled_clients_path(round_number).parent.mkdir(parents=True, exist_ok=True)
        layout.sampled_clients_path(round_number).write_text("[2, 5, 7]")
        return [0, 1, 3]

    monkeypatch.setattr(sampling, "draw_clients", racing_draw)
    assert clients_for_round(layout, config, 1) == [2, 5, 7]
    assert json.loads(layout.sampled_clients_path(1).read_text()) == [2, 5, 7]
    assert not [path for path in layout.round_dir(1).iterdir() if path.name.startswith(".")]
