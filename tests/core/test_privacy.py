"""Differential privacy: clipping and noise against hand computations, epsilon against dp-accounting called
directly, adaptive clipping moving toward its quantile, exact retries, and every bad setting refused in one line."""

import json
import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp

from aggregator.privacy import clip_update, next_clip_norm
from common.atomic import write_json
from common.runconfig import RunConfig
from runner.__main__ import main as runner_main
from common.modelfile import sha256_of_file
from tests.core.fl_rounds import SHAPES, aggregate, global_weights, start_round, write_client

BIG = {"w": (400, 500)}  # 200,000 coordinates: enough to measure the noise's standard deviation


def test_clipping_scales_only_updates_above_the_norm():
    update = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}  # norm 5
    clipped, norm = clip_update(update, 2.5)
    assert norm == 5.0
    np.testing.assert_allclose(clipped["a"], [1.5, 0.0])
    np.testing.assert_allclose(clipped["b"], [[2.0]])
    unchanged, _ = clip_update(update, 10.0)
    np.testing.assert_array_equal(unchanged["a"], update["a"])


def three_clients(volume, monkeypatch, noise_multiplier, shapes=None, **settings):
    """Three clients whose updates have L2 norms 1, 2 and 4 along known directions; clip norm 2."""
    import tests.core.fl_rounds as rounds

    shapes = shapes or {"w": (2, 2)}
    monkeypatch.setattr(rounds, "SHAPES", shapes)
    settings = {"dp_clip": 2.0, **settings}
    layout = start_round(volume, RunConfig(workers=3, dp_noise_multiplier=noise_multiplier, **settings),
                         start={name: np.ones(shape, np.float32) for name, shape in shapes.items()})
    for worker, norm in enumerate((1.0, 2.0, 4.0)):
        weights = {}
        for name, shape in shapes.items():
            direction = np.zeros(shape, np.float32)
            direction.flat[worker] = 1.0
            weights[name] = (1 + norm * direction).astype(np.float32)
        write_client(layout, 1, worker, weights, num_examples=100 * (worker + 1))
    return layout


def test_clipping_without_noise_is_the_equal_weight_mean_of_clipped_updates(tmp_path, monkeypatch):
    layout = three_clients(tmp_path, monkeypatch, noise_multiplier=0.0)
    assert aggregate(layout) == 0
    # Hand computation: updates 1*e0, 2*e1, 4*e2 -> clipped to 1*e0, 2*e1, 2*e2; equal weights (the example
    # counts do not matter): start 1 + [1, 2, 2, 0] / 3.
    np.testing.assert_allclose(global_weights(layout)["w"].ravel(), 1 + np.array([1, 2, 2, 0]) / 3, rtol=1e-6)
    privacy = json.loads(layout.round_record_path(1).read_text())["privacy"]
    assert privacy["clip"] == 2.0 and privacy["noise_stddev"] == 0 and privacy["epsilon"] is None


def test_the_noise_has_standard_deviation_z_clip_over_clients(tmp_path, monkeypatch):
    layout = three_clients(tmp_path, monkeypatch, noise_multiplier=0.9, shapes=BIG)
    assert aggregate(layout) == 0
    privacy = json.loads(layout.round_record_path(1).read_text())["privacy"]
    expected_stddev = 0.9 * 2.0 / 3  # z * S / m
    assert privacy["noise_stddev"] == pytest.approx(expected_stddev)
    clipped_mean = np.zeros(BIG["w"])
    clipped_mean.flat[0], clipped_mean.flat[1], clipped_mean.flat[2] = 1 / 3, 2 / 3, 2 / 3
    noise = global_weights(layout)["w"].astype(np.float64) - 1 - clipped_mean
    # 200,000 draws: the sample standard deviation is within 1 % of the true one (its own sd is ~0.16 %).
    assert np.std(noise) == pytest.approx(expected_stddev, rel=0.01)
    assert abs(np.mean(noise)) < 5 * expected_stddev / math.sqrt(noise.size)
    # The noise is exactly the recorded seed's draw: what makes a retried round exact.
    replay = np.random.default_rng(privacy["noise_seed"]).normal(0.0, expected_stddev, size=BIG["w"])
    np.testing.assert_allclose(noise, replay, atol=1e-6)


def test_a_retried_private_round_is_exact_and_the_seed_stays_off_the_public_facts(tmp_path, monkeypatch):
    import aggregator.aggregate as aggregate_module

    layout = three_clients(tmp_path, monkeypatch, noise_multiplier=1.0)
    with monkeypatch.context() as crash:
        # The first attempt dies after its global model, before it deleted the client updates; the model is lost.
        crash.setattr(aggregate_module, "discard_client_updates", lambda layout, round_number: None)
        assert aggregate(layout) == 0
    first = global_weights(layout)
    layout.global_model_path(1).unlink()
    assert aggregate(layout) == 0
    np.testing.assert_array_equal(global_weights(layout)["w"], first["w"])
    from aggregator.record import round_facts

    assert "noise_seed" not in json.dumps(round_facts(layout, 1))


def test_two_runs_with_the_same_seed_draw_different_noise(tmp_path, monkeypatch):
    first = three_clients(tmp_path / "a", monkeypatch, noise_multiplier=1.0)
    second = three_clients(tmp_path / "b", monkeypatch, noise_multiplier=1.0)
    assert aggregate(first) == 0 and aggregate(second) == 0
    seeds = [json.loads(layout.round_record_path(1).read_text())["privacy"]["noise_seed"] for layout in (first, second)]
    # The noise seed comes from the OS, not the run's public seed: nobody can regenerate and subtract it.
    assert seeds[0] != seeds[1]
    assert not np.array_equal(global_weights(first)["w"], global_weights(second)["w"])


def direct_epsilon(event, relation, delta):
    accountant = rdp.RdpAccountant(neighboring_relation=relation)
    accountant.compose(event)
    return accountant.get_epsilon(delta)


REPLACE_ONE = dp_accounting.NeighboringRelation.REPLACE_ONE


def test_epsilon_is_dp_accounting_s_for_every_client_each_round(tmp_path, monkeypatch):
    layout = three_clients(tmp_path, monkeypatch, noise_multiplier=1.1, dp_delta=1e-3)
    assert aggregate(layout) == 0
    privacy = json.loads(layout.round_record_path(1).read_text())["privacy"]
    # Replace-one, as every DP run: replacing a user moves the clipped sum by 2S, so the multiplier is z / 2.
    expected = direct_epsilon(dp_accounting.GaussianDpEvent(0.55), REPLACE_ONE, 1e-3)
    assert privacy["epsilon"] == pytest.approx(expected, rel=1e-9)
    assert privacy["relation"] == "replace-one user-level"


def test_epsilon_is_dp_accounting_s_for_k_of_n_over_rounds():
    from aggregator.privacy import epsilon_after

    config = RunConfig(workers=1000, clients_per_round=100, dp_clip=0.5, dp_noise_multiplier=1.0, dp_delta=1e-3)
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.SampledWithoutReplacementDpEvent(1000, 100, dp_accounting.GaussianDpEvent(0.5)), 30
    )
    expected = direct_epsilon(event, REPLACE_ONE, 1e-3)
    assert epsilon_after(config, 30) == pytest.approx(expected, rel=1e-9)
    assert epsilon_after(config, 10) < epsilon_after(config, 30)


def test_sampling_fewer_clients_never_reports_a_larger_epsilon_than_training_all():
    from aggregator.privacy import epsilon_after

    settings = {"workers": 1000, "dp_clip": 0.5, "dp_noise_multiplier": 1.0, "dp_delta": 1e-3}
    every_client = direct_epsilon(
        dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(0.5), 30), REPLACE_ONE, 1e-3
    )
    almost_all = direct_epsilon(dp_accounting.SelfComposedDpEvent(
        dp_accounting.SampledWithoutReplacementDpEvent(1000, 999, dp_accounting.GaussianDpEvent(0.5)), 30
    ), REPLACE_ONE, 1e-3)
    assert almost_all > every_client  # the amplified bound alone would report more (146.5 against 98.7)
    assert epsilon_after(RunConfig(**settings), 30) == pytest.approx(every_client, rel=1e-9)
    assert epsilon_after(RunConfig(**settings, clients_per_round=999), 30) == pytest.approx(every_client, rel=1e-9)


def test_adaptive_clipping_moves_toward_its_quantile():
    norms = np.random.default_rng(0).lognormal(mean=0.0, sigma=0.5, size=1000)  # median 1.0
    clip = 0.1
    for _ in range(200):
        clip = next_clip_norm(clip, float(np.mean(norms <= clip)), target_quantile=0.5, learning_rate=0.2)
    assert clip == pytest.approx(np.median(norms), rel=0.1)
    for _ in range(200):
        clip = next_clip_norm(clip, float(np.mean(norms <= clip)), target_quantile=0.9, learning_rate=0.2)
    assert clip == pytest.approx(np.quantile(norms, 0.9), rel=0.1)


def test_adaptive_clipping_carries_its_norm_from_round_to_round(tmp_path, monkeypatch):
    layout = three_clients(tmp_path, monkeypatch, noise_multiplier=0.0)
    config = json.loads(layout.config_path.read_text())
    adaptive = RunConfig(**{**config, "dp_clip": "adaptive", "dp_initial_clip": 0.5})
    layout.config_path.write_text(json.dumps(adaptive.to_dict()))
    assert aggregate(layout) == 0
    first = json.loads(layout.round_record_path(1).read_text())["privacy"]
    # Every update (norms 1, 2, 4) is above 0.5: none unclipped, so the norm grows by exp(0.2 * 0.5).
    assert first["clip"] == 0.5 and first["noisy_unclipped_fraction"] == 0
    assert first["next_clip"] == pytest.approx(0.5 * math.exp(0.1))
    for worker in range(3):
        write_client(layout, 2, worker, global_weights(layout), num_examples=100)
    assert aggregate(layout, round_number=2) == 0
    assert json.loads(layout.round_record_path(2).read_text())["privacy"]["clip"] == first["next_clip"]


def test_adaptive_clipping_with_count_noise_splits_the_budget_and_draws_both_noises(tmp_path, monkeypatch):
    from aggregator.privacy import update_noise_multiplier

    layout = three_clients(tmp_path, monkeypatch, noise_multiplier=1.0, shapes=BIG, dp_clip="adaptive",
                           dp_initial_clip=2.0, dp_clipped_count_stddev=2.0)
    assert aggregate(layout) == 0
    privacy = json.loads(layout.round_record_path(1).read_text())["privacy"]
    # Andrew et al.'s split: the updates get (z^-2 - (2 sigma_b)^-2)^-1/2 = (1 - 1/16)^-1/2 of the budget.
    split = (1.0 - 1 / 16) ** -0.5
    assert update_noise_multiplier(1.0, 2.0) == pytest.approx(split)
    assert privacy["update_noise_multiplier"] == pytest.approx(split)
    assert privacy["noise_stddev"] == pytest.approx(split * 2.0 / 3)
    # Replay the recorded seed: first the count's noise (sigma_b = 2) on the 2 unclipped of 3 (norms 1, 2 <= 2),
    # then the updates' noise. Both must be drawn, in this order, from the one secret stream.
    rng = np.random.default_rng(privacy["noise_seed"])
    count_noise = rng.normal(0.0, 2.0)
    assert count_noise != 0 and privacy["noisy_unclipped_fraction"] == pytest.approx((2 + count_noise) / 3)
    assert privacy["next_clip"] == pytest.approx(2.0 * math.exp(-0.2 * ((2 + count_noise) / 3 - 0.5)))
    clipped_mean = np.zeros(BIG["w"])
    clipped_mean.flat[0], clipped_mean.flat[1], clipped_mean.flat[2] = 1 / 3, 2 / 3, 2 / 3
    noise = global_weights(layout)["w"].astype(np.float64) - 1 - clipped_mean
    replay = rng.normal(0.0, split * 2.0 / 3, size=BIG["w"])
    np.testing.assert_allclose(noise, replay, atol=1e-5)


@pytest.mark.parametrize("flags, message", [
    (["--dp-noise-multiplier", "1"], "dp-noise-multiplier: only with dp-clip"),
    (["--dp-clip", "0"], "dp-clip must be greater than 0 or 'adaptive', got 0.0"),
    (["--dp-clip", "-1"], "dp-clip must be greater than 0"),
    (["--dp-clip", "1", "--dp-noise-multiplier", "-0.5"], "dp-noise-multiplier must be at least 0"),
    (["--dp-clip", "1", "--aggregation", "median"], "dp-clip works with mean aggregation only, not median"),
    (["--dp-clip", "1", "--aggregation", "trimmed-mean", "--workers", "5"], "dp-clip works with mean aggregation only, not trimmed-mean"),
    (["--dp-clip", "1", "--aggregation", "krum", "--workers", "5"], "dp-clip works with mean aggregation only, not krum"),
    (["--dp-clip", "1", "--dp-delta", "0"], "dp-delta must be above 0 and below 1"),
    (["--dp-clip", "1", "--dp-delta", "1"], "dp-delta must be above 0 and below 1"),
    (["--dp-clip", "1", "--dp-target-quantile", "0.5"], "dp-target-quantile: only with dp-clip adaptive"),
    (["--dp-clip", "adaptive", "--dp-target-quantile", "1"], "dp-target-quantile must be above 0 and below 1"),
    (["--dp-clip", "adaptive", "--dp-noise-multiplier", "1"], "needs dp-clipped-count-stddev above 0.5"),
    (["--dp-clip", "nonsense"], "expected a number, 'adaptive' or 'none'"),
    (["--dp-clip", "1", "--dp-delta", "tiny"], "expected a number or 'default'"),
    (["--dp-clip", "adaptive", "--dp-initial-clip", "-1"], "dp-initial-clip must be greater than 0"),
    (["--dp-clip", "adaptive", "--dp-clip-learning-rate", "0"], "dp-clip-learning-rate must be greater than 0"),
    (["--dp-clip", "adaptive", "--dp-clipped-count-stddev", "-1"], "dp-clipped-count-stddev must be at least 0"),
    (["--dp-clip", "1", "--dp-initial-clip", "0.5"], "dp-initial-clip: only with dp-clip adaptive"),
    (["--aggregation", "multi-krum", "--workers", "5", "--byzantine-clients", "-1"], "byzantine-clients must be a whole number of at least 0"),
    (["--byzantine-clients", "1"], "byzantine-clients applies to krum and multi-krum aggregation, not mean"),
    (["--min-clients", "0"], "min-clients must be a whole number of at least 1"),
    (["--min-clients", "two"], "expected a whole number or 'all'"),
    (["--min-clients", "4"], "min-clients must be at most the clients of a round (3), got 4"),
    (["--aggregation", "krum", "--byzantine-clients", "1"], "needs more than 4 clients per round"),
    (["--aggregation", "krum", "--byzantine-clients", "x"], "expected a whole number or 'default'"),
    (["--dp-epsilon-budget", "5"], "dp-epsilon-budget: only with dp-clip"),
    (["--dp-clip", "1", "--dp-epsilon-budget", "5"], "dp-epsilon-budget needs dp-noise-multiplier above 0"),
    (["--dp-clip", "1", "--dp-noise-multiplier", "1", "--dp-epsilon-budget", "0"], "dp-epsilon-budget must be greater than 0"),
    (["--dp-clip", "1", "--dp-epsilon-budget", "lots"], "expected a number or 'none'"),
])
def test_bad_settings_are_refused_in_one_line(flags, message, capsys, tmp_path):
    try:
        status = runner_main(["--volume", str(tmp_path), *flags])
    except SystemExit as exit:  # argparse's own refusals (a value of the wrong type)
        status = exit.code
    assert status == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1, error


def test_a_partial_private_round_divides_by_the_fixed_sampled_count(tmp_path, monkeypatch):
    import tests.core.fl_rounds as rounds

    monkeypatch.setattr(rounds, "SHAPES", {"w": (4,)})
    layout = start_round(tmp_path, RunConfig(workers=4, min_clients=3, dp_clip=2.0, dp_noise_multiplier=0.0),
                         start={"w": np.zeros(4, np.float32)})
    for worker in (0, 1, 3):  # worker 2 never finished
        write_client(layout, 1, worker, {"w": np.eye(4, dtype=np.float32)[worker] * (worker + 1)})
    assert aggregate(layout) == 0
    # Updates e0, 2 e1, 4 e3 clipped to e0, 2 e1, 2 e3, summed and divided by the 4 sampled, not the 3 finished:
    # the sensitivity stays 2S / K whoever failed.
    np.testing.assert_allclose(global_weights(layout)["w"], np.array([1, 2, 0, 2]) / 4, rtol=1e-6)
    record = json.loads(layout.round_record_path(1).read_text())
    assert record["clients"] == [0, 1, 3] and record["privacy"]["denominator"] == 4
    assert record["missing"] == [{"worker": 2, "reason": "no client model: its trainer failed or did not finish"}]


def test_public_facts_of_a_private_round_count_the_missing_and_never_name_them(tmp_path, monkeypatch, capsys):
    from aggregator.record import round_facts
    from evaluator.summary import main as summary_main

    layout = three_clients(tmp_path, monkeypatch, noise_multiplier=1.0, min_clients=2)
    layout.client_model_path(1, 1).unlink()
    write_json(layout.client_failure_path(1, 1), {"worker": 1, "round": 1, "reason": "failed 2 times: OSError: shard"})
    assert aggregate(layout) == 0
    assert "went on without 1 of its sampled clients" in capsys.readouterr().out
    facts = round_facts(layout, 1)
    assert facts["clients"] == 2 and facts["missing"] == 1
    assert "shard" not in json.dumps(facts) and "worker" not in json.dumps(facts)
    write_json(layout.metrics_path(1), {"accuracy": 0.5, "loss": 1.0, **facts})
    assert summary_main(["--volume", str(tmp_path), "--run-id", layout.run_id]) == 0
    assert json.loads(layout.summary_path.read_text())["missing_clients"] == 1
    # The names and reasons stay in the round's record on the volume.
    assert json.loads(layout.round_record_path(1).read_text())["missing"][0]["worker"] == 1


def test_the_budget_stops_before_the_round_that_would_exceed_it():
    from aggregator.privacy import epsilon_after, last_round_within_budget, rounds_within_budget

    settings = {"workers": 1000, "clients_per_round": 100, "rounds": 30, "dp_clip": 0.5, "dp_noise_multiplier": 1.0,
                "dp_delta": 1e-3}
    unlimited = RunConfig(**settings)
    epsilons = {rounds - 1: epsilon_after(unlimited, rounds) for rounds in (1, 12, 13)}
    budget = (epsilons[11] + epsilons[12]) / 2  # between rounds 12 and 13
    config = RunConfig(**settings, dp_epsilon_budget=budget)
    assert rounds_within_budget(config) == last_round_within_budget(config) == 12
    assert rounds_within_budget(RunConfig(**settings, dp_epsilon_budget=epsilons[11])) == 12  # at the budget: kept
    assert rounds_within_budget(RunConfig(**settings, dp_epsilon_budget=1e6)) == 30
    assert rounds_within_budget(unlimited) == last_round_within_budget(unlimited) == 30
    too_small = RunConfig(**settings, dp_epsilon_budget=epsilons[0] / 2)
    assert rounds_within_budget(too_small) == 0
    with pytest.raises(ValueError, match="below round 1's epsilon"):
        last_round_within_budget(too_small)


def test_the_aggregator_refuses_a_round_past_the_budget(tmp_path, monkeypatch):
    from aggregator.privacy import epsilon_after

    epsilon = epsilon_after(RunConfig(workers=3, dp_clip=2.0, dp_noise_multiplier=1.0), 1)
    layout = three_clients(tmp_path, monkeypatch, noise_multiplier=1.0, dp_epsilon_budget=epsilon * 1.01)
    assert aggregate(layout) == 0
    for worker in range(3):
        write_client(layout, 2, worker, global_weights(layout), num_examples=100)
    assert aggregate(layout, round_number=2) == 2
    assert not layout.global_model_path(2).exists()


def test_a_budget_below_round_one_is_refused_before_the_run_starts(tmp_path, capsys):
    status = runner_main(["--volume", str(tmp_path), "--dp-clip", "1", "--dp-noise-multiplier", "0.5",
                          "--dp-epsilon-budget", "0.1"])
    assert status == 2
    error = capsys.readouterr().err
    assert "below round 1's epsilon" in error and error.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_the_runner_stops_at_the_budget_and_publishes_the_last_round_within_it(tmp_path, tiny_mnist, capsys):
    from aggregator.privacy import epsilon_after

    settings = {"workers": 2, "rounds": 3, "dp_clip": 1.0, "dp_noise_multiplier": 4.0, "dp_delta": 1e-3}
    budget = (epsilon_after(RunConfig(**settings), 2) + epsilon_after(RunConfig(**settings), 3)) / 2
    volume = tmp_path / "volume"
    arguments = ["--volume", str(volume), "--data", str(tiny_mnist), "--workers", "2", "--rounds", "3",
                 "--batch-size", "100", "--parallelism", "1", "--run-id", "budget", "--dp-clip", "1",
                 "--dp-noise-multiplier", "4", "--dp-delta", "1e-3", "--dp-epsilon-budget", str(budget)]
    assert runner_main(arguments) == 0
    output = capsys.readouterr().out
    assert f"dp-epsilon-budget {budget:g} stopped the run at round 2 of 3" in output
    runs = volume / "runs" / "budget" / "rounds"
    assert (runs / "round-002" / "global.h5").is_file() and not (runs / "round-003").exists()
    info = json.loads((volume / "models" / "mnist" / "1" / "info.json").read_text())
    assert info["round"] == 2 and info["privacy"]["epsilon"] <= budget
    assert info["privacy"]["relation"] == "replace-one user-level" and info["config"]["dp_epsilon_budget"] == budget
    assert [entry["privacy"]["epsilon"] for entry in info["history"]] == pytest.approx(
        [epsilon_after(RunConfig(**settings), rounds) for rounds in (1, 2)])
    assert not list(runs.glob("round-*/client-*.h5"))  # under DP the raw updates are gone once a round is done
    # The same command again resumes: nothing retrained (no client files to need), nothing republished.
    assert runner_main(arguments) == 0
    output = capsys.readouterr().out
    assert "round 2/3: " in output and "(done before)" in output and "already published as version 1" in output


def test_a_retried_aggregation_whose_client_file_changed_is_refused(tmp_path, monkeypatch, capsys):
    import aggregator.aggregate as aggregate_module

    layout = three_clients(tmp_path, monkeypatch, noise_multiplier=1.0)

    def crash(*arguments):
        raise OSError("the pod died before its global model was written")

    with monkeypatch.context() as patched:
        patched.setattr(aggregate_module, "write_averaged_model", crash)
        assert aggregate(layout) != 0
    capsys.readouterr()
    record = json.loads(layout.round_record_path(1).read_text())
    assert set(record["client_sha256"]) == {"client-000.h5", "client-001.h5", "client-002.h5"}
    # Worker 1's file is replaced (same run, round and start model, other weights) before the retry.
    write_client(layout, 1, 1, {"w": np.full((2, 2), 7.0, np.float32)})
    assert aggregate(layout) == 2
    error = capsys.readouterr().err
    assert "['client-001.h5'] differ from those this round's record combined" in error and error.count("\n") == 1
    assert not layout.global_model_path(1).exists()


def test_a_private_round_deletes_its_raw_updates_and_a_retry_needs_none(tmp_path, monkeypatch, capsys):
    layout = three_clients(tmp_path, monkeypatch, noise_multiplier=1.0)
    hashes = {f"client-00{worker}.h5": sha256_of_file(layout.client_model_path(1, worker)) for worker in range(3)}
    assert aggregate(layout) == 0
    assert not list(layout.round_dir(1).glob("client-*.h5"))
    assert json.loads(layout.round_record_path(1).read_text())["client_sha256"] == hashes
    first = layout.global_model_path(1).read_bytes()
    # A trainer retried late writes its update again; the retried aggregation keeps the model and deletes it.
    write_client(layout, 1, 0, {"w": np.zeros((2, 2), np.float32)})
    assert aggregate(layout) == 0
    assert layout.global_model_path(1).read_bytes() == first and not layout.client_model_path(1, 0).exists()
    assert "of 3 clients" in capsys.readouterr().out


def test_without_dp_the_client_updates_stay(tmp_path):
    layout = start_round(tmp_path, RunConfig(workers=2))
    for worker in range(2):
        write_client(layout, 1, worker, {name: np.ones(shape, np.float32) for name, shape in SHAPES.items()})
    assert aggregate(layout) == 0
    assert len(list(layout.round_dir(1).glob("client-*.h5"))) == 2
