"""Command line: ``python -m runner`` runs the whole federated pipeline on this machine."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from rich.console import Console  # noqa: E402

from aggregator.privacy import last_round_within_budget  # noqa: E402
from common.cli import ArgumentParser, user_errors  # noqa: E402
from common.layout import check_run_id, data_path  # noqa: E402
from common.runconfig import add_config_arguments, config_from_arguments  # noqa: E402
from publisher.publish import AccuracyTooLow  # noqa: E402
from runner.run import RunOptions, TrainerDied, default_run_id, print_summary, run_pipeline  # noqa: E402


# The width rich lays lines out in when stdout is not a terminal (it would assume 80 columns).
UNWRAPPED_WIDTH = 10_000


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m runner",
        description="Federated MNIST on one machine: split, rounds of (parallel trainers -> FedAvg -> accuracy "
        "test), publish. Re-running the same command resumes an interrupted run.",
    )
    parser.add_argument("--volume", type=Path, default=Path("volume"), help="directory standing in for the NFS volume")
    parser.add_argument("--data", type=Path, help="MNIST npz (default: <volume>/data/mnist.npz)")
    parser.add_argument("--run-id", help="name of the run directory (default: derived from the configuration)")
    parser.add_argument(
        "--parallelism", type=int, default=os.cpu_count() or 1, help="trainer processes at once (default: CPU cores)"
    )
    parser.add_argument("--min-accuracy", type=float, help="refuse to publish (exit 1) below this test accuracy")
    add_config_arguments(parser)
    return parser


def make_console() -> Console:
    """Rich's console on stdout; to a pipe or a file its lines stay whole (rich would break them at 80 columns)."""
    console = Console()
    if not console.is_terminal:
        # Wide enough for any line; the table and the bars keep their own width (soft wrapping would too, but it
        # drops the centring of the table's title).
        console.width = UNWRAPPED_WIDTH
    return console


@user_errors("runner")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_arguments(args)
    last_round_within_budget(config)  # a budget that round 1 already exceeds is refused before anything starts
    if args.parallelism < 1:
        raise ValueError(f"--parallelism must be at least 1, got {args.parallelism}")
    run_id = check_run_id(args.run_id) if args.run_id else default_run_id(config)
    data = args.data or data_path(args.volume)
    if not data.is_file():
        raise ValueError(f"{data}: MNIST not found; fetch it with: python -m dataset --out {data}")
    console = make_console()
    options = RunOptions(volume=args.volume, data=data, parallelism=args.parallelism, min_accuracy=args.min_accuracy)
    try:
        summary = run_pipeline(config, run_id, options, console)
    except TrainerDied as error:
        print(f"runner: error: {error}", file=sys.stderr)
        return 1
    except AccuracyTooLow as error:
        print(f"runner: FAILED: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("runner: interrupted; finished work is kept, run the same command again to resume", file=sys.stderr)
        return 130
    print_summary(console, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
