"""Command line: ``python -m trainer.init --volume V --run-id R --workers N --rounds K ... [--start-model PATH]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aggregator.privacy import last_round_within_budget
from common.cli import ArgumentParser, user_errors
from common.layout import RunLayout
from common.runconfig import add_config_arguments, config_from_arguments
from trainer.initial import initialize_run


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m trainer.init", description="Save a run's configuration and its shared initial model."
    )
    parser.add_argument("--volume", type=Path, required=True, help="the shared volume (local directory or NFS mount)")
    parser.add_argument("--run-id", required=True, help="the run's directory name under runs/")
    add_config_arguments(parser)
    return parser


@user_errors("trainer.init")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    layout = RunLayout(args.volume, args.run_id)
    config = config_from_arguments(args)
    last_round_within_budget(config)  # a budget that round 1 already exceeds is refused before anything is written
    path = initialize_run(layout, config)
    print(f"run {layout.run_id}: initial model at {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
