"""How the coordinator and the long-lived trainers meet on the volume (common/rounds.py), and trainer.init's part
in it: the trainers file Argo reads, and stopped.json when a run will not start."""

import json

import numpy as np
import pytest

import common.rounds
from common.atomic import write_json
from common.layout import RunLayout
from common.modelfile import sha256_of_file
from common.rounds import (
    RunStopped,
    client_has_failed,
    client_is_done,
    count_attempt,
    existing,
    record_client_failure,
    stop_reason,
    stop_run,
    trainer_share,
    wait_for,
)
from trainer.init import main as init_main

RUN_ID = "run-rounds"
START = {"dense/kernel": np.zeros((2, 2), np.float32), "dense/bias": np.zeros(2, np.float32)}


@pytest.fixture
def layout(tmp_path) -> RunLayout:
    return RunLayout(tmp_path, RUN_ID)


# trainer_share: every client of a round to exactly one trainer, with no one to ask.


def test_each_trainer_takes_every_trainers_th_client_from_its_own():
    clients = [2, 5, 7, 9, 11]
    assert trainer_share(clients, 0, 2) == [2, 7, 11]
    assert trainer_share(clients, 1, 2) == [5, 9]
    assert trainer_share(clients, 0, 1) == clients


@pytest.mark.parametrize("clients, trainers", [(list(range(10)), 3), ([4, 8], 3), ([], 2), (list(range(7)), 7)])
def test_the_shares_cover_the_round_once(clients, trainers):
    shares = [trainer_share(clients, trainer, trainers) for trainer in range(trainers)]
    assert sorted(client for share in shares for client in share) == sorted(clients)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1  # as even as can be


@pytest.mark.parametrize("trainer, trainers", [(2, 2), (-1, 2), (0, 0)])
def test_a_trainer_outside_the_run_s_trainers_is_refused(trainer, trainers):
    with pytest.raises(ValueError, match=f"--trainer must be between 0 and {trainers - 1} .*got {trainer}"):
        trainer_share([1, 2, 3], trainer, trainers)


# client_is_done: a client's model counts only if it was trained from this round's starting model.


def write_client(fake_model, layout, round_number=1, worker=0, **changes):
    """A client of ``round_number`` trained (as its metadata says) from that round's starting model."""
    metadata = {"run_id": RUN_ID, "round": round_number, "worker": worker, "num_examples": 10,
                "global_sha256": sha256_of_file(layout.global_model_path(round_number - 1)), **changes}
    return fake_model(layout.client_model_path(round_number, worker), START, metadata)


@pytest.fixture
def started(layout, fake_model) -> RunLayout:
    fake_model(layout.global_model_path(0), START, {"run_id": RUN_ID, "round": 0})
    return layout


def test_a_client_trained_from_this_round_s_model_is_done(started, fake_model):
    start_sha = sha256_of_file(started.global_model_path(0))
    assert not client_is_done(started, 1, 0, start_sha)  # not there yet
    write_client(fake_model, started)
    assert client_is_done(started, 1, 0, start_sha)
    assert not client_is_done(started, 1, 1, start_sha)  # another worker's is still missing


@pytest.mark.parametrize("changes", [{"run_id": "another-run"}, {"round": 2}, {"global_sha256": "0" * 64}])
def test_a_client_of_another_run_round_or_start_is_not_done(started, fake_model, changes):
    write_client(fake_model, started, **changes)
    assert not client_is_done(started, 1, 0, sha256_of_file(started.global_model_path(0)))


@pytest.mark.parametrize("damage", ["truncated", "not hdf5", "empty"])
def test_an_unreadable_client_file_is_not_done(started, fake_model, damage):
    path = write_client(fake_model, started)
    path.write_bytes({"truncated": path.read_bytes()[:300], "not hdf5": b"hello", "empty": b""}[damage])
    assert not client_is_done(started, 1, 0, sha256_of_file(started.global_model_path(0)))


# count_attempt, failures: how often a client was started, and why it was given up.


def test_attempts_are_counted_per_client_and_round(layout):
    assert [count_attempt(layout, 1, 3) for _ in range(3)] == [1, 2, 3]
    assert count_attempt(layout, 1, 4) == 1 and count_attempt(layout, 2, 3) == 1
    assert json.loads(layout.client_attempts_path(1, 3).read_text()) == {"worker": 3, "round": 1, "attempts": 3}
    assert not [path for path in layout.round_dir(1).iterdir() if path.name.startswith(".")]


@pytest.mark.parametrize("content", ["{not json", "[]", '{"attempts": "many"}', "{}"])
def test_a_damaged_attempts_note_counts_afresh(layout, content):
    layout.client_attempts_path(1, 0).parent.mkdir(parents=True)
    layout.client_attempts_path(1, 0).write_text(content)
    assert count_attempt(layout, 1, 0) == 1
    assert count_attempt(layout, 1, 0) == 2


def test_a_failed_client_is_recorded_with_its_reason(layout):
    assert not client_has_failed(layout, 1, 2)
    record_client_failure(layout, 1, 2, common.rounds.TRAINER_PROCESS_DIED)
    assert client_has_failed(layout, 1, 2) and not client_has_failed(layout, 1, 1) and not client_has_failed(layout, 2, 2)
    assert json.loads(layout.client_failure_path(1, 2).read_text()) == {
        "worker": 2, "round": 1, "reason": common.rounds.TRAINER_PROCESS_DIED}


# stop_run / stop_reason: a run given up, for everyone who waits on it.


def test_a_run_goes_on_until_it_is_stopped(layout):
    assert stop_reason(layout) is None
    stop_run(layout, "round 3: only 1 of 4 clients finished")
    assert stop_reason(layout) == "round 3: only 1 of 4 clients finished"
    assert json.loads(layout.stop_path.read_text()) == {"reason": "round 3: only 1 of 4 clients finished"}


@pytest.mark.parametrize("content", ["{half written", "[1, 2]", "{}"])
def test_a_damaged_stop_note_still_stops_the_run(layout, content):
    layout.stop_path.parent.mkdir(parents=True)
    layout.stop_path.write_text(content)
    assert stop_reason(layout) == "stopped"


# wait_for: polling with a deadline, on a clock of our own (no real sleeping).


class FakeClock:
    """time.monotonic and time.sleep for common.rounds: sleeping moves the clock, nothing else does."""

    def __init__(self):
        self.now, self.sleeps = 1000.0, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(common.rounds, "time", fake)
    return fake


def ready_on_call(number, value="ready"):
    """A wait_for condition that is met on its ``number``-th call; its calls are counted in .calls."""

    def ready():
        ready.calls += 1
        return value if ready.calls >= number else None

    ready.calls = 0
    return ready


def test_wait_for_returns_the_value_once_ready(layout, clock):
    ready = ready_on_call(4, value=[1, 3])
    assert wait_for(layout, ready, "round 1's clients", timeout=60, poll=0.5) == [1, 3]
    assert ready.calls == 4 and clock.sleeps == [0.5, 0.5, 0.5]


def test_wait_for_does_not_sleep_when_already_ready(layout, clock):
    assert wait_for(layout, lambda: 0, "zero", timeout=60) == 0  # a falsy value is still a value
    assert clock.sleeps == []


def test_wait_for_polls_a_bounded_number_of_times_then_times_out(layout, clock):
    ready = ready_on_call(10**9)
    with pytest.raises(TimeoutError, match="waited 2 s for round 2's global model"):
        wait_for(layout, ready, "round 2's global model", timeout=2, poll=0.25)
    # A look at t = 0, 0.25, ..., 2.0 (the deadline's own included), a sleep of `poll` between two.
    assert ready.calls == 9 and clock.sleeps == [0.25] * 8
    assert clock.now == pytest.approx(1002.0)


def test_wait_for_polls_at_the_module_s_pace_by_default(layout, clock):
    with pytest.raises(TimeoutError):
        wait_for(layout, ready_on_call(10**9), "nothing", timeout=1)
    assert set(clock.sleeps) == {common.rounds.POLL_SECONDS}
    assert len(clock.sleeps) == round(1 / common.rounds.POLL_SECONDS)


def test_wait_for_raises_run_stopped_for_a_run_given_up_before(layout, clock):
    stop_run(layout, "init: --trainers must be at least 1, got 0")
    with pytest.raises(RunStopped, match="init: --trainers must be at least 1, got 0"):
        wait_for(layout, ready_on_call(10**9), "the shards", timeout=3600)
    assert clock.sleeps == []


def test_wait_for_raises_run_stopped_for_a_run_given_up_meanwhile(layout, clock):
    def ready():
        if len(clock.sleeps) == 3:
            stop_run(layout, "the coordinator gave up round 1")
        return None

    with pytest.raises(RunStopped, match="the coordinator gave up round 1"):
        wait_for(layout, ready, "round 1", timeout=3600, poll=1)
    assert clock.sleeps == [1, 1, 1, 1]  # stopped at the first look after it, long before the deadline


def test_wait_for_a_run_given_up_raises_even_if_its_files_are_ready(layout, clock):
    # A trainer retried after it stopped the run must not train the round again.
    stop_run(layout, "round 1 worker 2 failed 2 times")
    with pytest.raises(RunStopped, match="worker 2"):
        wait_for(layout, lambda: [0, 1, 2], "round 1", timeout=3600, poll=1)
    assert clock.sleeps == []


def test_existing_is_a_wait_for_condition(layout, tmp_path):
    path = tmp_path / "global.h5"
    assert existing(path) is None
    path.write_bytes(b"x")
    assert existing(path) == path
    assert existing(tmp_path) is None  # a directory is not the file


def test_wait_for_on_the_real_clock_ends_at_its_deadline(layout):
    import time

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        wait_for(layout, lambda: None, "nothing", timeout=0.2, poll=0.05)
    assert 0.2 <= time.monotonic() - started < 2


# trainer.init: the number of trainer pods, and stopped.json for a run that will not start.


def init(volume, run_id, *flags):
    return init_main(["--volume", str(volume), "--run-id", run_id, *flags])


@pytest.mark.parametrize(
    "flags, trainers",
    [
        (["--workers", "4", "--clients-per-round", "2", "--trainers", "3"], "2"),  # at most the clients per round
        (["--workers", "4", "--clients-per-round", "3", "--trainers", "2"], "2"),
        (["--workers", "4", "--trainers", "3"], "3"),  # every worker trains each round
        (["--workers", "2", "--trainers", "5"], "2"),
        (["--workers", "3"], "1"),  # --trainers defaults to 1
    ],
)
def test_init_writes_how_many_trainers_the_run_uses(tiny_mnist, tmp_path, flags, trainers):
    volume = tiny_mnist.parent.parent
    trainers_file = tmp_path / "pod" / "trainers"
    assert init(volume, "r", "--rounds", "1", "--trainers-file", str(trainers_file), *flags) == 0
    assert trainers_file.read_text().strip() == trainers
    layout = RunLayout(volume, "r")
    # The run started whole: its settings, initial model and shards (init splits too), and nothing stopped.
    assert layout.config_path.is_file() and layout.global_model_path(0).is_file() and layout.manifest_path.is_file()
    assert not layout.stop_path.exists()


@pytest.mark.parametrize("value", ["0", "-2"])
def test_init_refuses_bad_trainers_in_one_line_and_stops_the_fresh_run(tiny_mnist, tmp_path, capsys, value):
    volume = tiny_mnist.parent.parent
    trainers_file = tmp_path / "trainers"
    assert init(volume, "r", "--trainers", value, "--trainers-file", str(trainers_file)) == 2
    error = capsys.readouterr().err
    assert f"--trainers must be at least 1, got {value}" in error and error.count("\n") == 1
    layout = RunLayout(volume, "r")
    assert not trainers_file.exists() and not layout.config_path.exists() and not layout.global_model_path(0).exists()
    assert stop_reason(layout) == f"init: --trainers must be at least 1, got {value}"


def test_init_stops_a_fresh_run_whose_flags_do_not_parse(tiny_mnist):
    volume = tiny_mnist.parent.parent
    with pytest.raises(SystemExit) as exit_info:
        init(volume, "r", "--trainers", "two")
    assert exit_info.value.code == 2
    assert stop_reason(RunLayout(volume, "r")) == "init: bad flags (its log says which)"


def test_init_stops_a_fresh_run_whose_settings_are_refused(tiny_mnist, capsys):
    volume = tiny_mnist.parent.parent
    assert init(volume, "r", "--workers", "3", "--clients-per-round", "5") == 2
    capsys.readouterr()
    assert stop_reason(RunLayout(volume, "r")) == "init: clients-per-round must be at most workers (3), got 5"


def test_init_never_stops_a_run_that_had_started(tiny_mnist, tmp_path, capsys):
    # Prepare: a run that init started (its trainers may be training it now).
    volume = tiny_mnist.parent.parent
    assert init(volume, "r", "--workers", "2", "--rounds", "1") == 0
    layout = RunLayout(volume, "r")
    before = {path: path.read_bytes() for path in layout.run_dir.rglob("*") if path.is_file()}

    # Execute: init again with another configuration, a bad --trainers, and flags that do not parse.
    assert init(volume, "r", "--workers", "5", "--rounds", "1") == 2
    assert "different configuration" in capsys.readouterr().err
    assert init(volume, "r", "--workers", "2", "--rounds", "1", "--trainers", "0",
                "--trainers-file", str(tmp_path / "trainers")) == 2
    assert "--trainers must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        init(volume, "r", "--split", "nonsense")

    # Assert: refused, but the run goes on as it was, unstopped.
    assert not layout.stop_path.exists() and stop_reason(layout) is None
    assert {path: path.read_bytes() for path in layout.run_dir.rglob("*") if path.is_file()} == before
    assert not (tmp_path / "trainers").exists()


def test_init_stops_a_fresh_run_whose_data_is_missing(tmp_path, capsys):
    assert init(tmp_path, "r", "--workers", "2", "--data", str(tmp_path / "missing.npz")) == 2
    assert "missing.npz: file not found" in capsys.readouterr().err
    assert stop_reason(RunLayout(tmp_path, "r")) is not None


def test_init_help_does_not_stop_the_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        init(tmp_path, "r", "--help")
    assert exit_info.value.code == 0
    assert stop_reason(RunLayout(tmp_path, "r")) is None
