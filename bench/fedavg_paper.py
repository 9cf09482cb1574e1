"""The FedAvg paper's MNIST benchmark: rounds until the global model reaches 99 % test accuracy.

    .venv/bin/python -m bench.fedavg_paper --split iid --learning-rates 0.0003 0.001 [--max-rounds 40]
    .venv/bin/python -m bench.fedavg_paper --split pathological --client-optimizer sgd --learning-rates 0.05 ...

McMahan et al. 2017, Table 2 (CNN, E = 5, B = 10, C = 0.1): 100 clients of 600 examples, 10 sampled per
round, each training 5 local epochs at batch 10; the paper reaches 99 % in 20 rounds on IID data and 229
on the pathological split (FedSGD: 626 and 483). Here the clients are this project's (Adam, or the paper's
plain SGD with --client-optimizer sgd; the paper's CNN as `--model fedavg-cnn`) and each setting is a run of
the real runner code (the worker pool, the recorded sampling, the server strategy, the accuracy test) that
stops at the first round at or above the target. The paper picked each setting's client learning rate from
a grid; so does this: one run per learning rate (constant unless --learning-rate-decay says otherwise), seed
given, every run printed.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from common.layout import RunLayout, data_path
from common.runconfig import (CLIENT_OPTIMIZERS, LEARNING_RATE_ANNEALS, SERVER_SETTINGS, SERVER_STRATEGIES, RunConfig,
                              flag_name, number_or_default, save_config)
from runner.pool import initialize_in_pool, make_progress_queue
from runner.run import LiveProgress, RunProcesses, train_rounds
from splitter.split import write_shards

REPO_ROOT = Path(__file__).resolve().parents[1]
# McMahan et al. 2017, Table 2, CNN, FedAvg with E = 5, B = 10: rounds to 99 % test accuracy.
PAPER_ROUNDS = {"iid": 20, "pathological": 229}


class TargetReached(Exception):
    """Stops a run's rounds once the test accuracy reaches the target."""


def rounds_to_target(config: RunConfig, run_id: str, volume: str, data: Path, parallelism: int,
                     target: float) -> tuple[list[float], float]:
    """Run rounds until the test accuracy reaches ``target`` or config.rounds pass; (accuracy per round, seconds)."""
    started = time.perf_counter()
    layout = RunLayout(Path(volume), run_id)
    save_config(layout.config_path, config)
    progress_queue = make_progress_queue()
    processes = RunProcesses(min(parallelism, config.clients_each_round), progress_queue)
    accuracies: list[float] = []

    def record(metrics: dict) -> None:
        accuracies.append(metrics["accuracy"])
        print(f"  round {metrics['round']}: {100 * accuracies[-1]:.2f} %", flush=True)
        if accuracies[-1] >= target:
            raise TargetReached

    try:
        processes.run("the initial model", initialize_in_pool, volume, run_id, config)
        write_shards(layout, data, config.workers, config.split, config.alpha, config.seed)
        with LiveProgress(Console(file=io.StringIO()), config, progress_queue) as live:
            train_rounds(layout, config, data, processes, live, record)
    except TargetReached:
        pass
    finally:
        processes.close()
    return accuracies, time.perf_counter() - started


def describe(config: RunConfig) -> str:
    """The strategy and its settings, as a table cell."""
    settings = [f"{name.removeprefix('server_').replace('_', ' ')} {getattr(config, name):g}"
                for name in SERVER_SETTINGS if getattr(config, name) is not None]
    return config.strategy + (f" ({', '.join(settings)})" if settings else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=sorted(PAPER_ROUNDS), default="iid")
    parser.add_argument("--client-optimizer", choices=CLIENT_OPTIMIZERS, default="adam")
    parser.add_argument("--learning-rates", type=float, nargs="+", default=[1e-3], help="the clients' grid")
    parser.add_argument("--learning-rate-decay", type=float, default=1.0)
    parser.add_argument("--learning-rate-anneal", choices=LEARNING_RATE_ANNEALS, default="none",
                        help="cosine: anneal the clients' step toward 0 over --max-rounds")
    parser.add_argument("--max-rounds", type=int, default=40)
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--strategy", choices=SERVER_STRATEGIES, default="fedavg")
    for name in SERVER_SETTINGS:
        parser.add_argument(f"--{flag_name(name)}", type=number_or_default)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--data", type=Path, default=data_path(REPO_ROOT / "volume"))
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"bench.fedavg_paper: {args.data} missing: run `make data` first", file=sys.stderr)
        return 1
    configs = [
        RunConfig(workers=100, clients_per_round=10, epochs=5, batch_size=10, model="fedavg-cnn", split=args.split,
                  rounds=args.max_rounds, seed=args.seed, strategy=args.strategy,
                  client_optimizer=args.client_optimizer, learning_rate=learning_rate,
                  learning_rate_decay=args.learning_rate_decay, learning_rate_anneal=args.learning_rate_anneal,
                  **{name: getattr(args, name) for name in SERVER_SETTINGS})
        for learning_rate in args.learning_rates
    ]
    rows = []
    with tempfile.TemporaryDirectory() as volume:
        for index, config in enumerate(configs):
            print(f"{args.split}, {describe(config)}, client {config.client_optimizer} {config.learning_rate:g} "
                  f"(decay {config.learning_rate_decay:g}, anneal {config.learning_rate_anneal}):",
                  flush=True)
            accuracies, seconds = rounds_to_target(config, f"paper-{index}", volume, args.data, args.parallelism, args.target)
            rows.append((config, accuracies, seconds))

    print(f"\n| split | server | client optimizer, lr (decay) | rounds to {100 * args.target:g} % | best (%) | "
          "wall (s) | paper |")
    print("|---|---|---|---:|---:|---:|---:|")
    for config, accuracies, seconds in rows:
        reached = next((number for number, value in enumerate(accuracies, 1) if value >= args.target), None)
        print(f"| {config.split} | {describe(config)} | {config.client_optimizer} {config.learning_rate:g} "
              f"({config.learning_rate_decay:g}{', cosine' if config.learning_rate_anneal == 'cosine' else ''}) | "
              f"{reached if reached else f'> {len(accuracies)}'} | {100 * max(accuracies):.2f} | {seconds:.0f} | "
              f"{PAPER_ROUNDS[config.split]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
