"""Command line: ``python -m trainer.init --volume V --run-id R --workers N --rounds K ... [--start-model PATH]``.

The one step that takes a run's settings: it saves them as ``run.json`` (every other step reads them there),
writes the seeded initial model and deals MNIST into one shard per worker.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aggregator.privacy import last_round_within_budget
from common.atomic import write_text
from common.cli import ArgumentParser, user_errors
from common.layout import RunLayout, data_path
from common.rounds import stop_run
from common.runconfig import add_config_arguments, config_from_arguments
from splitter.split import write_shards
from trainer.initial import initialize_run


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m trainer.init",
        description="Save a run's configuration, its shared initial model and its shards.",
    )
    parser.add_argument("--volume", type=Path, required=True, help="the shared volume (local directory or NFS mount)")
    parser.add_argument("--run-id", required=True, help="the run's directory name under runs/")
    parser.add_argument("--data", type=Path, help="MNIST npz to shard (default: <volume>/data/mnist.npz)")
    parser.add_argument("--trainers", type=int, default=1,
                        help="trainer processes the run may use (with --trainers-file); default 1")
    parser.add_argument("--trainers-file", type=Path,
                        help="write here how many trainers the run uses: --trainers, at most the clients per round "
                        "(Argo reads it as the number of trainer pods)")
    add_config_arguments(parser)
    return parser


def start_run(layout: RunLayout, config, data: Path) -> Path:
    """run.json, the initial model and the shards; idempotent (a finished part is checked, not redone)."""
    if not layout.manifest_path.is_file() and not Path(data).is_file():
        raise ValueError(f"--data {data}: file not found")
    path = initialize_run(layout, config)
    write_shards(layout, data, config.workers, config.split, config.alpha, config.seed)
    return path


def where_to_report(argv: list[str] | None) -> RunLayout | None:
    """The run that --volume and --run-id name, if they do, whatever else is wrong with the flags."""
    locator = argparse.ArgumentParser(add_help=False)
    locator.add_argument("--volume", type=Path)
    locator.add_argument("--run-id")
    try:
        known = locator.parse_known_args(argv)[0]
        return RunLayout(known.volume, known.run_id) if known.volume and known.run_id else None
    except (ValueError, SystemExit):
        return None


@user_errors("trainer.init")
def main(argv: list[str] | None = None) -> int:
    run = where_to_report(argv)
    started_before = run is not None and run.config_path.is_file()  # never stop a run another init started
    try:
        args = build_parser().parse_args(argv)
        layout = RunLayout(args.volume, args.run_id)
        config = config_from_arguments(args)
        last_round_within_budget(config)  # a budget that round 1 already exceeds is refused before anything is written
        if args.trainers < 1:
            raise ValueError(f"--trainers must be at least 1, got {args.trainers}")
        path = start_run(layout, config, args.data or data_path(args.volume))
        if args.trainers_file is not None:
            write_text(args.trainers_file, str(min(args.trainers, config.clients_each_round)))
    except (ValueError, OSError, SystemExit) as error:
        # Whoever waits for this run's files (its coordinator and trainers) is told it will not start, so they
        # exit now instead of at their deadline; --help (exit 0) is no failure.
        if run is not None and not started_before and not (isinstance(error, SystemExit) and not error.code):
            stop_run(run, "init: bad flags (its log says which)" if isinstance(error, SystemExit) else f"init: {error}")
        raise
    print(f"run {layout.run_id}: initial model at {path}, {config.workers} shards in {layout.shards_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
