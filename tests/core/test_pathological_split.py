"""The pathological non-IID split of McMahan et al. 2017: label-sorted shards, two per worker."""

import json

import numpy as np
import pytest

from common.data import load_shard
from common.layout import RunLayout
from common.runconfig import RunConfig, save_config
from splitter.__main__ import main
from splitter.strategies import pathological_split


def test_the_papers_setting_gives_two_shards_of_300_per_client():
    # Prepare: MNIST's 60,000 training labels in the paper's shape (uneven classes do not matter here).
    labels = np.random.default_rng(0).integers(0, 10, size=60_000)
    # Execute: 100 clients, so 200 shards of 300 examples.
    shards = pathological_split(labels, 100, seed=0)
    # Assert: 600 examples each, every example used once, and at most two label-sorted runs per client.
    assert [len(shard) for shard in shards] == [600] * 100
    np.testing.assert_array_equal(np.sort(np.concatenate(shards)), np.arange(60_000))
    classes_per_client = [len(np.unique(labels[shard])) for shard in shards]
    # A shard of 300 sorted labels spans one class, or two where it straddles a class boundary.
    assert max(classes_per_client) <= 4 and np.median(classes_per_client) <= 2


def test_equal_classes_give_each_worker_two_labels_at_most():
    labels = np.repeat(np.arange(10), 60)
    shards = pathological_split(labels, 10, seed=3)
    for shard in shards:
        histogram = np.bincount(labels[shard], minlength=10)
        assert len(shard) == 60 and np.count_nonzero(histogram) <= 2
        assert set(histogram[histogram > 0]) <= {30, 60}  # whole shards of 30 from one class each


def test_the_split_is_seeded():
    labels = np.repeat(np.arange(10), 60)
    first, again, other = (pathological_split(labels, 10, seed=seed) for seed in (1, 1, 2))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_sizes_differ_by_at_most_one_when_they_cannot_be_equal():
    labels = np.repeat(np.arange(10), 7)  # 70 examples, 6 shards for 3 workers
    shards = pathological_split(labels, 3, seed=0)
    sizes = [len(shard) for shard in shards]
    assert sum(sizes) == 70 and max(sizes) - min(sizes) <= 2


@pytest.mark.parametrize("workers", [151, 300, 301])
def test_too_many_workers_for_two_shards_each_is_one_line(tiny_mnist, capsys, workers):
    volume = tiny_mnist.parent.parent  # 300 training examples: at most 150 workers
    save_config(RunLayout(volume, "p").config_path, RunConfig(workers=workers, split="pathological"))
    code = main(["--volume", str(volume), "--run-id", "p"])
    error = capsys.readouterr().err
    assert code == 2
    assert f"pathological split cannot give {workers} workers 2 shards each" in error
    assert "at most 150 workers" in error and error.count("\n") == 1
    assert not RunLayout(volume, "p").manifest_path.exists()


def test_cli_writes_shards_with_their_label_histograms(tiny_mnist):
    volume = tiny_mnist.parent.parent
    layout = RunLayout(volume, "p")
    save_config(layout.config_path, RunConfig(workers=5, split="pathological", seed=4))
    assert main(["--volume", str(volume), "--run-id", "p"]) == 0
    manifest = json.loads(layout.manifest_path.read_text())
    assert manifest["split"] == "pathological" and manifest["workers"] == 5
    for worker, entry in enumerate(manifest["shards"]):
        _, labels = load_shard(layout.shard_path(worker))
        assert entry["num_examples"] == len(labels) == 60
        assert entry["label_histogram"] == np.bincount(labels, minlength=10).tolist()
        assert np.count_nonzero(entry["label_histogram"]) <= 2  # 10 shards of 30 over 10 classes of 30
