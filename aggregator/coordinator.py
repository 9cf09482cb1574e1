"""The run's coordinator: every round, sample -> wait for the round's clients -> aggregate -> evaluate.

    python -m aggregator.coordinator --volume V --run-id R --data MNIST.npz [--round-timeout S]

One process for the whole run, beside the long-lived trainers (trainer/serve.py), meeting them on the volume
(common/rounds.py). It starts round K+1 (publishes its ``clients.json``) as soon as round K's global model is
written, and only then runs round K's accuracy test, so the trainers never wait for the test. Everything it
does is a file, so a coordinator started again (Argo's retry, or ``make run`` once more) resumes exactly:
finished rounds are read back, a round's clients are never drawn again, and a round's aggregate follows its
record.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from aggregator.aggregate import aggregate_round
from aggregator.privacy import last_round_within_budget
from aggregator.record import round_facts
from common.atomic import read_json, write_json
from common.cli import ArgumentParser, user_errors
from common.layout import RunLayout, data_path
from common.rounds import (
    POLL_SECONDS,
    RunStopped,
    client_has_failed,
    client_is_done,
    record_client_failure,
    stop_run,
    wait_for,
    wait_for_run_start,
)
from common.modelfile import sha256_of_file
from common.runconfig import RunConfig
from common.sampling import clients_for_round

# A round's deadline: clients without a model by then are left out (partial rounds) or stop the run.
DEFAULT_ROUND_TIMEOUT = 1800.0
# How long the coordinator waits for the init step's files (run.json, the initial model, the shards).
DEFAULT_START_TIMEOUT = 1800.0

Evaluate = Callable[[Path], dict]


class Coordinator:
    """Runs a run's rounds. ``evaluate``: the accuracy test of one model file; ``watch``: called while waiting (the
    local runner looks after its trainer processes there); ``on_round_start(round, clients, pending)``: a round began."""

    def __init__(
        self,
        layout: RunLayout,
        evaluate: Evaluate,
        round_timeout: float = DEFAULT_ROUND_TIMEOUT,
        poll: float = POLL_SECONDS,
        log: Callable[[str], None] = print,
        watch: Callable[[], None] | None = None,
        on_round_start: Callable[[int, list[int], list[int]], None] | None = None,
    ) -> None:
        if not round_timeout > 0:
            raise ValueError(f"--round-timeout must be greater than 0, got {round_timeout}")
        self.layout, self.evaluate, self.round_timeout, self.poll = layout, evaluate, round_timeout, poll
        self.log, self.watch = log, watch or (lambda: None)
        self.on_round_start = on_round_start or (lambda round_number, clients, pending: None)

    def run(self, config: RunConfig, on_round: Callable[[dict], None] | None = None) -> list[dict]:
        """Every round of the run, from the first unfinished one; returns each round's metrics."""
        history = []
        # Under a privacy budget the run ends before the round that would exceed it (known before training).
        last_round = last_round_within_budget(config)
        for round_number in range(1, last_round + 1):
            metrics = self.complete_round(config, round_number, last_round)
            history.append(metrics)
            if on_round is not None:
                on_round(metrics)
        return history

    def complete_round(self, config: RunConfig, round_number: int, last_round: int) -> dict:
        """Train (through the trainers), aggregate and evaluate one round, skipping what an earlier attempt did."""
        layout = self.layout
        metrics_path = layout.metrics_path(round_number)
        if metrics_path.is_file():
            return {**read_json(metrics_path), "done_before": True}
        seconds = {"train": 0.0, "aggregate": 0.0, "evaluate": 0.0}
        if not layout.global_model_path(round_number).is_file():
            started = time.monotonic()
            clients = clients_for_round(layout, config, round_number)  # the trainers start on this file
            self.wait_for_clients(config, round_number, clients)
            seconds["train"] = time.monotonic() - started
            started = time.monotonic()
            aggregate_round(layout, round_number, config.workers)
            seconds["aggregate"] = time.monotonic() - started
        elif config.dp_clip is not None:
            # Started again between the global model and the deletion of the raw updates: finish that.
            aggregate_round(layout, round_number, config.workers)
        if round_number < last_round:
            clients_for_round(layout, config, round_number + 1)  # the next round starts before this one's test
        started = time.monotonic()
        metrics = self.evaluate(layout.global_model_path(round_number))
        seconds["evaluate"] = time.monotonic() - started
        metrics = {
            **metrics, **round_facts(layout, round_number), "round": round_number, "seconds": seconds,
            "model_sha256": sha256_of_file(layout.global_model_path(round_number)),
        }
        write_json(metrics_path, metrics)
        return metrics

    def wait_for_clients(self, config: RunConfig, round_number: int, clients: list[int]) -> None:
        """Return once every client of the round is done or given up; at the deadline, leave the rest out."""
        layout = self.layout
        start_sha256 = sha256_of_file(layout.global_model_path(round_number - 1))
        pending = set(clients)
        self.on_round_start(round_number, clients, [worker for worker in clients if not client_is_done(
            layout, round_number, worker, start_sha256)])

        def round_over() -> bool | None:
            self.watch()
            for worker in sorted(pending):
                if client_is_done(layout, round_number, worker, start_sha256) or client_has_failed(layout, round_number, worker):
                    pending.discard(worker)
            return True if not pending else None

        try:
            wait_for(layout, round_over, f"round {round_number}'s clients", self.round_timeout, self.poll)
        except TimeoutError:
            late = sorted(pending)
            if config.min_clients is None:
                raise ValueError(
                    f"round {round_number}: no model from workers {late} within the round's deadline "
                    f"({self.round_timeout:.0f} s); set --min-clients to go on without late clients"
                ) from None
            reason = f"no model within the round's deadline ({self.round_timeout:.0f} s)"
            for worker in late:
                record_client_failure(layout, round_number, worker, reason)
            self.log(f"round {round_number}: deadline passed, going on without workers {late}")


def kept_model_evaluator(data: Path) -> Evaluate:
    """The accuracy test in this process, building the model once and loading each round's weights into it."""
    from common.backend import start_backend
    from evaluator.evaluate import evaluate

    start_backend()
    kept: dict = {}

    def evaluate_round(model_path: Path) -> dict:
        if "model" not in kept:
            from common.model import load_model

            kept["model"] = load_model(model_path)
        return evaluate(model_path, data, kept["model"])

    return evaluate_round


def round_line(metrics: dict, rounds: int) -> str:
    """One round's line in the log: accuracy, loss, where the time went, who was missing."""
    timing = ", ".join(f"{name} {value:.1f} s" for name, value in metrics.get("seconds", {}).items())
    line = (f"round {metrics['round']}/{rounds}: test accuracy {metrics['accuracy']:.4f}, loss {metrics['loss']:.4f}"
            f" ({timing}){' (done before)' if metrics.get('done_before') else ''}")
    missing = metrics.get("missing", [])
    if isinstance(missing, int):  # under DP the public facts count the missing, never name them
        if missing:
            line += f"\n  went on without {missing} of its sampled clients"
        return line
    for entry in missing:
        line += f"\n  went on without worker {entry['worker']}: {entry['reason']}"
    return line


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m aggregator.coordinator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--volume", type=Path, required=True, help="the shared volume (local directory or NFS mount)")
    parser.add_argument("--run-id", required=True, help="the run's directory name under runs/")
    parser.add_argument("--data", type=Path, help="MNIST npz for each round's accuracy test (default: <volume>/data/mnist.npz)")
    parser.add_argument("--round-timeout", type=float, default=DEFAULT_ROUND_TIMEOUT,
                        help="seconds a round waits for its clients; then min-clients decides (default "
                        f"{DEFAULT_ROUND_TIMEOUT:.0f})")
    parser.add_argument("--start-timeout", type=float, default=DEFAULT_START_TIMEOUT,
                        help=f"seconds to wait for the init step's files (default {DEFAULT_START_TIMEOUT:.0f})")
    return parser


@user_errors("aggregator.coordinator")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    layout = RunLayout(args.volume, args.run_id)
    data = args.data or data_path(args.volume)
    if not Path(data).is_file():
        raise ValueError(f"--data {data}: file not found")
    progress_file = os.environ.get("ARGO_PROGRESS_FILE")
    try:
        config = wait_for_run_start(layout, args.start_timeout)
        coordinator = Coordinator(layout, kept_model_evaluator(data), args.round_timeout,
                                  log=lambda line: print(line, flush=True))

        def report(metrics: dict) -> None:
            print(round_line(metrics, config.rounds), flush=True)
            if progress_file:
                Path(progress_file).write_text(f"{metrics['round']}/{last_round_within_budget(config)}\n")

        coordinator.run(config, on_round=report)
    except RunStopped as stopped:
        print(f"aggregator.coordinator: error: the run was stopped: {stopped}", file=sys.stderr)
        return 1
    except (ValueError, TimeoutError) as error:
        # A setting or a round that cannot go on stops the run (not a passing I/O error, which Argo retries):
        # the trainers waiting for the next round exit on this, and a retried coordinator stops at once.
        stop_run(layout, str(error))
        raise ValueError(str(error)) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
