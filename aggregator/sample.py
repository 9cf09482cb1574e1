"""Which workers train in a round: ``python -m aggregator.sample --volume V --run-id R --round K``.

The server's choice (the FedAvg paper's C, Flower's fraction_fit): seeded by the run's seed and the round
(under differential privacy: drawn from the operating system's randomness, so nobody can recompute it), recorded once in rounds/round-K/clients.json and never drawn again, so a resumed run or a retried step trains
and aggregates the same workers. Prints the workers as a JSON list; ``--output`` also writes it to a file,
which the Argo workflow fans out over (withParam).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common.atomic import write_text
from common.cli import ArgumentParser, user_errors
from common.layout import RunLayout
from common.runconfig import load_config
from common.sampling import clients_for_round


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m aggregator.sample", description=__doc__.split("\n\n")[0])
    parser.add_argument("--volume", type=Path, required=True, help="the shared volume")
    parser.add_argument("--run-id", required=True, help="the run's directory name under runs/")
    parser.add_argument("--round", type=int, required=True, help="round number, 1 or more")
    parser.add_argument("--output", type=Path, help="also write the JSON list here (Argo reads it as an output parameter)")
    return parser


@user_errors("aggregator.sample")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    layout = RunLayout(args.volume, args.run_id)
    if not layout.config_path.is_file():
        raise ValueError(f"{layout.config_path}: no such run configuration; run `python -m trainer.init` first")
    config = load_config(layout.config_path)
    if not 1 <= args.round <= config.rounds:
        raise ValueError(f"--round must be between 1 and the run's {config.rounds} rounds, got {args.round}")
    clients = json.dumps(clients_for_round(layout, config, args.round))
    if args.output is not None:
        write_text(args.output, clients)
    print(clients)
    return 0


if __name__ == "__main__":
    sys.exit(main())
