"""Command line: ``python -m publisher --volume V --run-id R --round K|--last-round [--min-accuracy X]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.cli import ArgumentParser, user_errors
from common.history import final_round
from common.layout import RunLayout, model_version_dir
from publisher.publish import AccuracyTooLow, publish


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m publisher",
        description="Publish a run's global model as the next version in <volume>/models/mnist/ for the web demo.",
    )
    parser.add_argument("--volume", type=Path, required=True, help="the shared volume (local directory or NFS mount)")
    parser.add_argument("--run-id", required=True, help="the run's directory name under runs/")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--round", type=int, help="the round whose global model to publish")
    which.add_argument("--last-round", action="store_true", help="the run's final round (run.json)")
    parser.add_argument("--min-accuracy", type=float, help="refuse (exit 1) if the round's test accuracy is below this")
    return parser


@user_errors("publisher")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    layout = RunLayout(args.volume, args.run_id)
    if args.last_round:
        args.round = final_round(layout)
    try:
        version, is_new = publish(layout, args.round, args.min_accuracy)
    except AccuracyTooLow as error:
        print(f"publisher: FAILED: {error}", file=sys.stderr)
        return 1
    state = "published" if is_new else "already published"
    print(f"run {layout.run_id} round {args.round}: {state} as version {version} in {model_version_dir(args.volume, version)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
