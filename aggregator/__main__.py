"""Command line: ``python -m aggregator --volume V --run-id R --round N``.

The strategy (fedavg, fedavgm, fedadagrad, fedadam, fedyogi), the aggregation (mean, median, trimmed-mean, krum,
multi-krum), the fewest clients a round may go on with and differential privacy come from the run's ``run.json``,
so they cannot change between rounds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aggregator.aggregate import aggregate_round
from common.cli import ArgumentParser, user_errors
from common.layout import RunLayout
from common.runconfig import load_config


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m aggregator",
        description="Combine one round's client models into the round's global model with the run's strategy.",
    )
    parser.add_argument("--volume", type=Path, required=True, help="the shared volume (local directory or NFS mount)")
    parser.add_argument("--run-id", required=True, help="the run's directory name under runs/")
    parser.add_argument("--round", type=int, required=True, help="round number, 1 or more")
    return parser


@user_errors("aggregator")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    layout = RunLayout(args.volume, args.run_id)
    if not layout.config_path.is_file():
        raise ValueError(f"{layout.config_path}: no such run configuration; run `python -m trainer.init` first")
    summary = aggregate_round(layout, args.round, load_config(layout.config_path).workers)
    print(
        f"round {args.round}: {summary['strategy']} on the {summary['aggregation']} of {summary['num_clients']} "
        f"clients ({summary['num_examples']} examples) into {layout.global_model_path(args.round)}"
    )
    if summary.get("privacy") and summary["missing"]:
        # Pod logs outlive the volume's access rules: under DP they say how many, as every public output does.
        print(f"round {args.round}: went on without {len(summary['missing'])} of its sampled clients")
    else:
        for entry in summary["missing"]:
            print(f"round {args.round}: went on without worker {entry['worker']}: {entry['reason']}")
    if "krum" in summary:
        print(f"round {args.round}: {summary['aggregation']} kept workers {summary['krum']['kept']}")
    privacy = summary.get("privacy")
    if privacy:
        epsilon = "no guarantee (no noise)" if privacy["epsilon"] is None else f"epsilon {privacy['epsilon']:.3g}"
        print(f"round {args.round}: updates clipped to {privacy['clip']:.4g}, noise multiplier "
              f"{privacy['noise_multiplier']}; {epsilon} at delta {privacy['delta']:.3g} so far")
    return 0


if __name__ == "__main__":
    sys.exit(main())
