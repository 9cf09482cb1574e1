"""Command line: ``python -m splitter --volume V --run-id R [--data MNIST.npz]``: the split run.json describes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.cli import ArgumentParser, user_errors
from common.layout import RunLayout, data_path
from common.runconfig import load_config
from splitter.split import write_shards


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m splitter", description="Shard the 60k MNIST training images into one .npz per worker."
    )
    parser.add_argument("--volume", type=Path, required=True, help="the shared volume (local directory or NFS mount)")
    parser.add_argument("--run-id", required=True, help="the run's directory name under runs/")
    parser.add_argument("--data", type=Path, help="MNIST npz (default: <volume>/data/mnist.npz)")
    return parser


@user_errors("splitter")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    layout = RunLayout(args.volume, args.run_id)
    if not layout.config_path.is_file():
        raise ValueError(f"{layout.config_path}: no such run configuration; run `python -m trainer.init` first")
    config = load_config(layout.config_path)
    manifest = write_shards(
        layout, args.data or data_path(args.volume), config.workers, config.split, config.alpha, config.seed
    )
    sizes = [shard["num_examples"] for shard in manifest["shards"]]
    print(f"{manifest['split']} split into {len(sizes)} shards of {sizes} examples in {layout.shards_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
