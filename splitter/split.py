"""Shard the MNIST training set into one file per worker, plus a manifest written last."""

from __future__ import annotations

from pathlib import Path

from common.atomic import read_json, write_json
from common.data import load_mnist, save_shard
from common.layout import RunLayout
from common.runconfig import SPLIT_STRATEGIES
from splitter.strategies import dirichlet_split, iid_split, label_histogram, pathological_split


def split_indices(labels, workers: int, split: str, alpha: float, seed: int) -> list:
    """Indices of each worker's shard for the chosen strategy."""
    if split == "iid":
        return iid_split(len(labels), workers, seed)
    if split == "dirichlet":
        return dirichlet_split(labels, workers, alpha, seed)
    if split == "pathological":
        return pathological_split(labels, workers, seed)
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
