"""The run configuration's new fields: defaults, one-line validation, flags, and run.json files from before them."""

import argparse
import json
import re

import pytest

from dataclasses import fields

from common.layout import RunLayout
from common.runconfig import (
    CONFIG_FLAGS,
    RunConfig,
    add_config_arguments,
    config_from_arguments,
    flag_name,
    load_config,
    save_config,
)
from trainer.init import main as init_main

# run.json as written before strategies, sampling and architectures existed.
OLD_RUN_JSON = {"workers": 3, "rounds": 5, "epochs": 1, "batch_size": 64, "split": "iid", "alpha": 0.5, "seed": 0,
                "start_model": None}


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"clients_per_round": 4}, "clients-per-round must be at most workers (3), got 4"),
        ({"clients_per_round": 0}, "clients-per-round must be a whole number of at least 1"),
        ({"clients_per_round": 1.5}, "clients-per-round must be a whole number"),
        ({"strategy": "fedprox"}, "strategy must be one of fedavg, fedavgm, fedadagrad, fedadam, fedyogi"),
        ({"aggregation": "bulyan"}, "aggregation must be one of mean, median, trimmed-mean, krum, multi-krum"),
        ({"model": "resnet"}, "model must be one of convnet, fedavg-cnn"),
        ({"client_optimizer": "rmsprop"}, "client-optimizer must be one of adam, sgd"),
        ({"learning_rate_anneal": "linear"}, "learning-rate-anneal must be one of none, cosine"),
        ({"split": "shards"}, "split must be one of iid, dirichlet, pathological"),
        ({"proximal_mu": -0.01}, "proximal-mu must be at least 0"),
        ({"proximal_mu": float("nan")}, "proximal-mu must be a finite number"),
        ({"seed": -1}, "seed must be a whole number of at least 0"),
        ({"learning_rate": 0}, "learning-rate must be greater than 0"),
        ({"learning_rate": float("inf")}, "learning-rate must be a finite number"),
        ({"learning_rate_decay": 0}, "learning-rate-decay must be above 0 and at most 1"),
        ({"learning_rate_decay": 1.5}, "learning-rate-decay must be above 0 and at most 1"),
        ({"aggregation": "trimmed-mean", "workers": 10, "trim_fraction": 0.5}, "trim-fraction must be at least 0 and below 0.5"),
        ({"aggregation": "trimmed-mean", "workers": 10, "trim_fraction": -0.1}, "trim-fraction must be at least 0"),
        ({"aggregation": "trimmed-mean"}, "trims none"),  # 0.2 x 3 clients cuts nobody
        ({"aggregation": "trimmed-mean", "workers": 10, "clients_per_round": 4}, "over 4 clients per round trims none"),
        ({"trim_fraction": 0.2}, "trim-fraction applies to trimmed-mean aggregation, not mean"),
        ({"server_learning_rate": 0.5}, "server-learning-rate applies to fedavgm, fedadagrad, fedadam, fedyogi, not fedavg"),
        ({"strategy": "fedadagrad", "server_beta2": 0.9}, "server-beta2 applies to fedadam, fedyogi, not fedadagrad"),
        ({"strategy": "fedadam", "server_momentum": 0.9}, "server-momentum applies to fedavgm, not fedadam"),
        ({"strategy": "fedavgm", "server_momentum": 1.0}, "server-momentum must be at least 0 and below 1"),
        ({"strategy": "fedadam", "server_beta1": -0.1}, "server-beta1 must be at least 0 and below 1"),
        ({"strategy": "fedyogi", "server_beta2": 1.0}, "server-beta2 must be at least 0 and below 1"),
        ({"strategy": "fedyogi", "server_tau": 0.0}, "server-tau must be greater than 0"),
        ({"strategy": "fedadam", "server_learning_rate": float("inf")}, "server-learning-rate must be a finite number"),
        ({"strategy": "fedavgm", "server_learning_rate": -1.0}, "server-learning-rate must be greater than 0"),
    ],
)
def test_bad_values_are_refused_in_one_line(settings, message):
    with pytest.raises(ValueError) as raised:
        RunConfig(**settings)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_each_strategy_records_its_default_settings():
    assert RunConfig().server_learning_rate is None and RunConfig().server_tau is None
    assert RunConfig(strategy="fedavgm").server_momentum == 0.9
    adam = RunConfig(strategy="fedadam")
    assert (adam.server_learning_rate, adam.server_beta1, adam.server_beta2, adam.server_tau) == (0.1, 0.9, 0.99, 1e-9)
    yogi = RunConfig(strategy="fedyogi", server_learning_rate=0.03)
    assert (yogi.server_learning_rate, yogi.server_beta1, yogi.server_beta2, yogi.server_tau) == (0.03, 0.9, 0.99, 1e-3)
    assert yogi.server_momentum is None
    assert RunConfig(aggregation="trimmed-mean", workers=5).trim_fraction == 0.2
    # Spelling out a default is the same configuration (a resume with or without the flag).
    assert RunConfig(strategy="fedadam", server_beta2=0.99) == adam


def test_defaults_keep_todays_run():
    config = RunConfig()
    assert (config.strategy, config.aggregation, config.model) == ("fedavg", "mean", "convnet")
    assert config.clients_per_round is None and config.clients_each_round == 3 and config.proximal_mu == 0.0


def test_an_old_run_json_loads_with_the_new_defaults_and_the_schedule_it_trained_with(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(OLD_RUN_JSON))
    config = load_config(path)
    then = RunConfig(**OLD_RUN_JSON, learning_rate=1e-3, learning_rate_decay=0.8)
    assert config == then and config.strategy == RunConfig().strategy and config.client_optimizer == "adam"
    assert config.learning_rate_anneal == "none"  # its clients trained on the plain decay
    save_config(path, then)  # resuming it with its own step size is the same run
    assert json.loads(path.read_text()) == OLD_RUN_JSON  # and leaves its file alone


def test_a_resume_with_another_strategy_model_or_sampling_is_refused(tmp_path):
    path = tmp_path / "run.json"
    save_config(path, RunConfig(workers=10, strategy="fedadam", clients_per_round=3))
    for changed in ({"strategy": "fedyogi"}, {"model": "fedavg-cnn"}, {"clients_per_round": 4},
                    {"server_learning_rate": 0.2}, {"aggregation": "median"}, {"client_optimizer": "sgd"},
                    {"learning_rate_anneal": "cosine"}):
        settings = {"workers": 10, "strategy": "fedadam", "clients_per_round": 3, **changed}
        with pytest.raises(ValueError, match="different configuration"):
            save_config(path, RunConfig(**settings))


@pytest.mark.parametrize("payload, message", [({"workers": 3, "colour": "red"}, "unknown keys ['colour']"),
                                              ([1, 2], "expected a JSON object"),
                                              ({"strategy": "sgd"}, "strategy must be one of")])
def test_a_bad_run_json_is_refused(tmp_path, payload, message):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(path)


def test_the_client_step_size_decays_per_round_from_the_configured_rate():
    assert RunConfig().learning_rate_for_round(1) == 2e-3
    assert RunConfig().learning_rate_for_round(3) == pytest.approx(2e-3 * 0.7**2)
    assert RunConfig(learning_rate=0.05, learning_rate_decay=1).learning_rate_for_round(40) == 0.05


def test_the_cosine_anneal_follows_half_a_cosine_over_the_run_s_rounds_on_top_of_the_decay():
    # By hand, 4 rounds: the cosine factor in round r is (1 + cos(pi * (r - 1) / 4)) / 2 = 1, 0.8536, 0.5, 0.1464.
    config = RunConfig(rounds=4, learning_rate=0.1, learning_rate_decay=0.5, learning_rate_anneal="cosine")
    steps = [config.learning_rate_for_round(round_number) for round_number in (1, 2, 3, 4)]
    assert steps == pytest.approx([0.1, 0.05 * 0.853553, 0.025 * 0.5, 0.0125 * 0.146447], rel=1e-5)
    # The same numbers as Keras's own CosineDecay at step r - 1 of `rounds` steps (decay 1).
    import keras

    keras_cosine = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=4)
    plain = RunConfig(rounds=4, learning_rate=0.1, learning_rate_decay=1, learning_rate_anneal="cosine")
    for round_number in (1, 2, 3, 4):
        assert plain.learning_rate_for_round(round_number) == pytest.approx(float(keras_cosine(round_number - 1)))
    assert RunConfig(rounds=4, learning_rate_decay=1).learning_rate_for_round(4) == RunConfig().learning_rate


def test_resuming_a_run_from_before_the_step_size_was_recorded_under_today_s_defaults_is_refused(tmp_path):
    # Its clients trained at 1e-3 x 0.8^(round - 1); today's default would mix two schedules in one run.
    path = tmp_path / "run.json"
    path.write_text(json.dumps(OLD_RUN_JSON))
    with pytest.raises(ValueError, match="different configuration.*learning_rate"):
        save_config(path, RunConfig())


def test_the_default_run_id_changes_with_any_setting_or_default():
    from runner.run import default_run_id

    assert default_run_id(RunConfig()) == default_run_id(RunConfig(learning_rate=RunConfig().learning_rate))
    assert default_run_id(RunConfig(learning_rate=1e-3)) != default_run_id(RunConfig())


def test_the_flags_make_the_config():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(["--workers", "100", "--clients-per-round", "10", "--strategy", "fedyogi", "--server-tau",
                              "0.01", "--aggregation", "trimmed-mean", "--trim-fraction", "0.1", "--model",
                              "fedavg-cnn", "--proximal-mu", "0.01", "--split", "pathological", "--learning-rate",
                              "0.02", "--learning-rate-decay", "1", "--client-optimizer", "sgd",
                              "--learning-rate-anneal", "cosine"])
    config = config_from_arguments(args)
    assert (config.workers, config.clients_per_round, config.strategy, config.server_tau) == (100, 10, "fedyogi", 0.01)
    assert (config.aggregation, config.trim_fraction, config.model, config.proximal_mu) == ("trimmed-mean", 0.1, "fedavg-cnn", 0.01)
    assert config.split == "pathological" and config.server_learning_rate == 0.01
    assert (config.learning_rate, config.learning_rate_decay, config.client_optimizer) == (0.02, 1.0, "sgd")
    assert config.learning_rate_anneal == "cosine"
    assert config_from_arguments(parser.parse_args([])) == RunConfig()


def test_a_bad_flag_is_one_line_before_anything_is_written(tmp_path, capsys):
    code = init_main(["--volume", str(tmp_path), "--run-id", "r", "--workers", "3", "--clients-per-round", "5"])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1
    assert "clients-per-round must be at most workers (3), got 5" in error
    # Nothing of the run is written but stopped.json, which tells its waiting pods that it will not start.
    layout = RunLayout(tmp_path, "r")
    assert [path.relative_to(tmp_path) for path in tmp_path.rglob("*") if path.is_file()] == [
        layout.stop_path.relative_to(tmp_path)]
    assert "clients-per-round must be at most workers (3), got 5" in json.loads(layout.stop_path.read_text())["reason"]


def test_every_field_has_exactly_one_flag_whose_default_is_the_field_s():
    # CONFIG_FLAGS names each RunConfig field once and nothing else, and never a default of its own.
    names = [field.name for field in fields(RunConfig)]
    assert sorted(CONFIG_FLAGS) == sorted(names) and len(set(names)) == len(names)
    assert not [name for name, spec in CONFIG_FLAGS.items() if "default" in spec or "dest" in spec]

    # The parser has one option per field, spelled --kebab-case, and its defaults are RunConfig()'s.
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    options = [action for action in parser._actions if action.dest != "help"]
    assert sorted(action.dest for action in options) == sorted(names)
    assert all(action.option_strings == [f"--{flag_name(action.dest)}"] for action in options)
    assert vars(parser.parse_args([])) == RunConfig().to_dict()

    # Every default that is not None can be passed as text (the Argo workflow passes every flag as text).
    for name, value in RunConfig().to_dict().items():
        if value is not None:
            assert getattr(parser.parse_args([f"--{flag_name(name)}", str(value)]), name) == value, name
