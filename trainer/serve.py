"""A trainer that lives for the whole run: ``python -m trainer.serve --volume V --run-id R --trainer I --trainers T``.

It starts Python and the Keras backend once (TensorFlow, and CUDA on a GPU node), then in every round trains
its share of the round's clients (common/rounds.py: the i-th client of ``clients.json`` belongs to trainer
``i % T``) and waits for the next round. What it trains comes from the volume alone, so a trainer that is
killed and started again (Argo's retry) picks up where the files say, and trains each client as a fresh
process would: the same seed, the same starting weights, the same bytes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from aggregator.privacy import last_round_within_budget
from common.cli import ArgumentParser, user_errors
from common.layout import RunLayout
from common.modelfile import sha256_of_file
from common.rounds import (
    CLIENT_ATTEMPTS,
    POLL_SECONDS,
    TRAINER_PROCESS_DIED,
    RunStopped,
    client_has_failed,
    client_is_done,
    count_attempt,
    record_client_failure,
    stop_run,
    trainer_share,
    wait_for,
    wait_for_run_start,
)
from common.runconfig import RunConfig
from common.sampling import read_sampled_clients
from trainer.train import ClientTrainer, ProgressCallback

# A round's deadline, as the coordinator's --round-timeout (the workflow passes both the same parameter).
DEFAULT_ROUND_TIMEOUT = 1800.0
# Beyond two rounds' deadlines, what a trainer also allows the coordinator to aggregate or be started again.
WAIT_MARGIN = 600.0


def wait_timeout(round_timeout: float) -> float:
    """How long a trainer waits for the run or its next round before giving up: a round that began may take its
    whole deadline, and the trainer may have finished its share as the previous one began."""
    return 2 * round_timeout + WAIT_MARGIN


DEFAULT_WAIT_TIMEOUT = wait_timeout(DEFAULT_ROUND_TIMEOUT)

Log = Callable[[str], None]


def one_line(error: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def round_clients(layout: RunLayout, config: RunConfig, round_number: int) -> list[int] | None:
    """The round's clients once the coordinator started it; [] if it is over already; None while it has not begun."""
    if layout.global_model_path(round_number).is_file():
        return []  # aggregated already (a resumed trainer): nothing of it is left to train
    if not (layout.global_model_path(round_number - 1).is_file() and layout.sampled_clients_path(round_number).is_file()):
        return None
    return read_sampled_clients(layout.sampled_clients_path(round_number), config.workers, config.clients_each_round)


class LongLivedTrainer:
    """Trainer ``trainer`` of ``trainers``: trains its share of every round with one kept ClientTrainer."""

    def __init__(
        self,
        layout: RunLayout,
        trainer: int,
        trainers: int,
        log: Log = print,
        progress: Callable[[int], ProgressCallback | None] | None = None,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        poll: float = POLL_SECONDS,
    ) -> None:
        trainer_share([], trainer, trainers)  # refuses a trainer number outside 0 .. trainers - 1
        self.layout, self.trainer, self.trainers = layout, trainer, trainers
        self.log, self.progress = log, progress or (lambda worker: None)
        self.wait_timeout, self.poll = wait_timeout, poll
        self.client_trainer = ClientTrainer()

    def serve(self, on_round: Callable[[int, int], None] | None = None) -> int:
        """Train this trainer's clients of every round, from the first unfinished one; returns how many it trained."""
        config = wait_for_run_start(self.layout, self.wait_timeout, self.poll)
        if self.trainer >= config.clients_each_round:
            self.log(f"trainer {self.trainer}: nothing to train ({config.clients_each_round} clients per round)")
            return 0
        trained = 0
        last_round = last_round_within_budget(config)  # a privacy budget ends the run early, for everyone alike
        for round_number in range(1, last_round + 1):
            clients = wait_for(
                self.layout, lambda: round_clients(self.layout, config, round_number),
                f"round {round_number} to start", self.wait_timeout, self.poll,
            )
            share = trainer_share(clients, self.trainer, self.trainers)
            if share:
                start_sha256 = sha256_of_file(self.layout.global_model_path(round_number - 1))
                for worker in share:
                    trained += self.train_client(config, round_number, worker, start_sha256)
            if on_round is not None:
                on_round(round_number, last_round)
        return trained

    def train_client(self, config: RunConfig, round_number: int, worker: int, start_sha256: str) -> int:
        """Train one client unless it is done or given up; returns 1 if this call trained it."""
        layout = self.layout
        if client_is_done(layout, round_number, worker, start_sha256) or client_has_failed(layout, round_number, worker):
            return 0
        partial = config.min_clients is not None
        attempts = count_attempt(layout, round_number, worker)
        if partial and attempts > CLIENT_ATTEMPTS:
            # Earlier starts of this client never finished: its process died each time (this client, or its node).
            self.give_up(round_number, worker, f"failed {CLIENT_ATTEMPTS} times: {TRAINER_PROCESS_DIED}")
            return 0
        while True:
            self.log(f"round {round_number}: trainer {self.trainer} trains worker {worker} (try {attempts})")
            try:
                result = self.client_trainer.train(
                    layout, round_number, worker, config.epochs, config.batch_size, config.seed,
                    progress=self.progress(worker),
                )
            except Exception as error:  # the client's own failure (a corrupt shard, ...), not this process's
                if attempts < CLIENT_ATTEMPTS:
                    attempts = count_attempt(layout, round_number, worker)
                    continue
                reason = f"failed {CLIENT_ATTEMPTS} times: {one_line(error)}"
                if not partial:
                    # Every client is needed: nothing can go on without this one, so stop the run now rather
                    # than at the round's deadline.
                    message = f"round {round_number} worker {worker} {reason}"
                    stop_run(layout, message)
                    raise ValueError(message) from None
                self.give_up(round_number, worker, reason)
                return 0
            self.log(
                f"round {round_number} worker {worker}: {result['num_examples']} examples, "
                f"train accuracy {result['train_accuracy']:.4f}, {result['seconds']:.1f} s"
            )
            return 1

    def give_up(self, round_number: int, worker: int, reason: str) -> None:
        """Leave a client out of its round, with the reason the aggregator records."""
        record_client_failure(self.layout, round_number, worker, reason)
        self.log(f"round {round_number}: worker {worker} left out: {reason}")


def argo_round_progress() -> Callable[[int, int], None] | None:
    """Writes ``round/rounds`` to $ARGO_PROGRESS_FILE, which `argo get` and `argo watch` show, if Argo set it."""
    progress_file = os.environ.get("ARGO_PROGRESS_FILE")
    if not progress_file:
        return None
    return lambda done, total: Path(progress_file).write_text(f"{done}/{total}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m trainer.serve", description=__doc__.split("\n\n")[0].split(": ", 1)[0] + ".")
    parser.add_argument("--volume", type=Path, required=True, help="the shared volume (local directory or NFS mount)")
    parser.add_argument("--run-id", required=True, help="the run's directory name under runs/")
    parser.add_argument("--trainer", type=int, required=True, help="this trainer's number, 0 .. trainers-1")
    parser.add_argument("--trainers", type=int, required=True, help="how many trainers share the run's clients")
    parser.add_argument("--round-timeout", type=float, default=DEFAULT_ROUND_TIMEOUT,
                        help="the coordinator's --round-timeout; the trainer waits for a round to start at most twice "
                        f"that plus {WAIT_MARGIN:.0f} s, then exits (default {DEFAULT_ROUND_TIMEOUT:.0f})")
    return parser


@user_errors("trainer.serve")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.trainers < 1:
        raise ValueError(f"--trainers must be at least 1, got {args.trainers}")
    if not args.round_timeout > 0:
        raise ValueError(f"--round-timeout must be greater than 0, got {args.round_timeout}")
    layout = RunLayout(args.volume, args.run_id)
    from common.backend import start_backend

    started = time.monotonic()
    start_backend()  # once: TensorFlow (and CUDA) start here, not per client
    print(f"trainer {args.trainer} of {args.trainers}: ready in {time.monotonic() - started:.1f} s", flush=True)
    trainer = LongLivedTrainer(layout, args.trainer, args.trainers, log=lambda line: print(line, flush=True),
                               wait_timeout=wait_timeout(args.round_timeout))
    try:
        trained = trainer.serve(on_round=argo_round_progress())
    except RunStopped as stopped:
        print(f"trainer.serve: the run was stopped: {stopped}", file=sys.stderr)
        return 0  # the coordinator reports why; retrying this trainer would change nothing
    except TimeoutError as error:
        # Nothing moved for longer than two rounds' deadlines: the coordinator is gone for good. Stopping the
        # run lets the other trainers (and this one's retries) exit now instead of waiting as long again.
        stop_run(layout, f"trainer {args.trainer}: {error}")
        print(f"trainer.serve: error: {error}; stopped the run", file=sys.stderr)
        return 1
    print(f"trainer {args.trainer}: done, trained {trained} clients in {time.monotonic() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
