"""Command line: ``python -m splitter --volume V --run-id R --workers N --split iid|dirichlet|pathological``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.cli import ArgumentParser, user_errors
from common.layout import RunLayout, data_path
from common.runconfig import SPLIT_STRATEGIES, RunConfig
from splitter.split import write_shards


def build_parser() -> argparse.ArgumentParser:
    defaults = RunConfig()
    parser = ArgumentParser(
        prog="python -m splitter", description="Shard the 60k MNIST training images into one .npz per worker."
    )
    parser.add_argument("--volume", type=Path, required=True, help="the shared volume (local directory or NFS mount)")
    parser.add_argument("--run-id", required=True, help="the run's directory name under runs/")
    parser.add_argument("--workers", type=int, required=True, help="number of shards, one per trainer")
    parser.add_argument("--split", choices=SPLIT_STRATEGIES, default=defaults.split, help="iid (shuffled), dirichlet (label skew) or pathological (two label-sorted shards per worker)")
    parser.add_argument("--alpha", type=float, default=defaults.alpha, help="Dirichlet concentration; smaller is more skewed")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="makes the split reproducible")
    parser.add_argument("--data", type=Path, help="MNIST npz (default: <volume>/data/mnist.npz)")
    return parser


@user_errors("splitter")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    layout = RunLayout(args.volume, args.run_id)
    manifest = write_shards(
        layout, args.data or data_path(args.volume), args.workers, args.split, args.alpha, args.seed
    )
    sizes = [shard["num_examples"] for shard in manifest["shards"]]
    print(f"{manifest['split']} split into {len(sizes)} shards of {sizes} examples in {layout.shards_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
