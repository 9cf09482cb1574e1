"""What a round costs with 3, 100 and 1000 clients on the same 60k images: the fixed cost each task pays.

    .venv/bin/python -m bench.client_overhead [--clients 3 100 1000] [--rounds 3]

The runner's own processes (runner/run.py: long-lived trainers and the coordinator) run one run per client
count in one volume, one after another. A round is what the runner does (train every client, FedAvg,
accuracy test), timed from its metrics. Round 1 also starts the trainers; medians of rounds 2 on are the
steady state. Overhead
per task is the extra worker-seconds of N clients over the fewest, spread over the extra tasks:
(round_N - round_fewest) x parallelism / (N - fewest).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from common.runconfig import RunConfig, save_config
from common.layout import RunLayout
from runner.pool import initialize_in_pool, make_progress_queue
from runner.run import LiveProgress, RunProcesses, train_rounds
from splitter.split import write_shards

REPO_ROOT = Path(__file__).resolve().parents[1]


def measure_rounds(layout: RunLayout, config: RunConfig, data: Path, processes: RunProcesses, live: LiveProgress,
                   seconds: list[float]) -> None:
    """Every round of one run; appends each round's seconds (train, aggregate and accuracy test)."""

    def record(metrics: dict) -> None:
        seconds.append(sum(metrics["seconds"].values()))
        phases = ", ".join(f"{name} {value:.1f}" for name, value in metrics["seconds"].items())
        print(f"round {metrics['round']}, {config.workers:4d} clients: {seconds[-1]:.1f} s ({phases}); "
              f"accuracy {metrics['accuracy']:.4f}", flush=True)

    train_rounds(layout, config, data, processes, live, record)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[3, 100, 1000])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per size (2 or more: round 1 is the warm-up)")
    parser.add_argument("--data", type=Path, default=REPO_ROOT / "volume" / "data" / "mnist.npz")
    parser.add_argument("--parallelism", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    if args.rounds < 2:
        raise SystemExit("--rounds must be at least 2")
    quiet = Console(file=io.StringIO())
    seconds: dict[int, list[float]] = {clients: [] for clients in args.clients}
    with tempfile.TemporaryDirectory() as volume:
        for clients in args.clients:
            progress_queue = make_progress_queue()
            processes = RunProcesses(min(args.parallelism, clients), progress_queue)
            try:
                config = RunConfig(workers=clients, rounds=args.rounds)
                layout = RunLayout(Path(volume), f"clients-{clients}")
                save_config(layout.config_path, config)
                processes.run("the initial model", initialize_in_pool, volume, layout.run_id, config)
                write_shards(layout, args.data, clients, config.split, config.alpha, config.seed)
                with LiveProgress(quiet, config, progress_queue) as live:
                    measure_rounds(layout, config, args.data, processes, live, seconds[clients])
            finally:
                processes.close()

    steady = {clients: statistics.median(values[1:]) for clients, values in seconds.items()}
    fewest = min(steady)
    print(f"{fewest:4d} clients: steady round {steady[fewest]:.1f} s (median of rounds 2-{args.rounds})")
    for clients in args.clients:
        if clients == fewest:
            continue
        overhead = (steady[clients] - steady[fewest]) * args.parallelism / (clients - fewest)
        print(f"{clients:4d} clients: steady round {steady[clients]:.1f} s = {steady[clients] / steady[fewest]:.2f} x "
              f"the {fewest}-client round; overhead {overhead:.3f} s per extra task")
    return 0


if __name__ == "__main__":
    sys.exit(main())
