"""Command line: ``python -m splitter --volume V --run-id R --workers N --split iid|dirichlet``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.atomic import read_json, write_json
from common.cli import user_errors
from common.data import load_mnist, save_shard
from common.layout import RunLayout, data_path
from common.runconfig import SPLIT_STRATEGIES
from splitter.strategies import dirichlet_split, iid_split, label_histogram


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m splitter", description="Shard the 60k MNIST training images into one .npz per worker."
    )
    parser.add_argument("--volume", type=Path, required=True, help="the shared volume (local directory or NFS mount)")
    parser.add_argument("--run-id", required=True, help="the run's directory name under runs/")
    parser.add_argument("--workers", type=int, required=True, help="number of shards, one per trainer")
    parser.add_argument("--split", choices=SPLIT_STRATEGIES, default="iid", help="iid (shuffled) or dirichlet (label skew)")
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration; smaller is more skewed")
    parser.add_argument("--seed", type=int, default=0, help="makes the split reproducible")
    parser.add_argument("--data", type=Path, help="MNIST npz (default: <volume>/data/mnist.npz)")
    return parser


def split_indices(labels, workers: int, split: str, alpha: float, seed: int) -> list:
    """Indices of each worker's shard for the chosen strategy."""
    if split == "iid":
        return iid_split(len(labels), workers, seed)
    if split == "dirichlet":
        return dirichlet_split(labels, workers, alpha, seed)
    raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLIT_STRATEGIES)}")


def write_shards(layout: RunLayout, data: Path, workers: int, split: str, alpha: float, seed: int) -> dict:
    """Write every shard, then the manifest last: a manifest means all shards are in place."""
    if layout.manifest_path.exists():
        # A finished split is never rewritten: trainers of this run may be reading the shards.
        manifest = read_json(layout.manifest_path)
        requested = {"workers": workers, "split": split, "alpha": alpha, "seed": seed}
        if {key: manifest.get(key) for key in requested} != requested:
            raise ValueError(f"{layout.manifest_path} holds a different split {manifest}; use another --run-id")
        return manifest
    mnist = load_mnist(data)
    shards = split_indices(mnist.y_train, workers, split, alpha, seed)
    for worker, indices in enumerate(shards):
        save_shard(layout.shard_path(worker), mnist.x_train[indices], mnist.y_train[indices])
    manifest = {
        "workers": workers,
        "split": split,
        "alpha": alpha,
        "seed": seed,
        "source": str(data),
        "shards": [
            {
                "worker": worker,
                "file": layout.shard_path(worker).name,
                "num_examples": int(len(indices)),
                "label_histogram": label_histogram(mnist.y_train[indices]),
            }
            for worker, indices in enumerate(shards)
        ],
    }
    write_json(layout.manifest_path, manifest)
    return manifest


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
