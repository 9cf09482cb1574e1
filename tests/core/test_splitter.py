"""Split strategies (sizes, determinism, skew, coverage) and the splitter's command line."""

import json

import numpy as np
import pytest

from common.atomic import write_json
from common.data import load_shard
from common.layout import RunLayout
from common.runconfig import RunConfig, save_config
from splitter.__main__ import main
from splitter.strategies import dirichlet_split, iid_split
from trainer.init import main as init_main


def configure(volume, run_id="r", **settings) -> RunLayout:
    """The run's run.json (as trainer.init saves it): the splitter takes its split from there."""
    layout = RunLayout(volume, run_id)
    save_config(layout.config_path, RunConfig(**settings))
    return layout


def split(volume, run_id="r", *flags) -> int:
    return main(["--volume", str(volume), "--run-id", run_id, *flags])


@pytest.mark.parametrize("num_examples, workers", [(10, 1), (10, 3), (60000, 7), (5, 5)])
def test_iid_sizes_differ_by_at_most_one_and_cover_every_example_once(num_examples, workers):
    shards = iid_split(num_examples, workers, seed=0)
    sizes = [len(shard) for shard in shards]
    assert max(sizes) - min(sizes) <= 1
    np.testing.assert_array_equal(np.sort(np.concatenate(shards)), np.arange(num_examples))


def test_iid_is_deterministic_for_a_seed_and_shuffled():
    first, again, other = iid_split(100, 4, seed=3), iid_split(100, 4, seed=3), iid_split(100, 4, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
    assert not np.array_equal(first[0], np.arange(25))  # not simply the first quarter


def test_dirichlet_covers_every_example_once_and_is_deterministic():
    labels = np.repeat(np.arange(10), 100)
    shards = dirichlet_split(labels, 4, alpha=0.5, seed=1)
    np.testing.assert_array_equal(np.sort(np.concatenate(shards)), np.arange(len(labels)))
    again = dirichlet_split(labels, 4, alpha=0.5, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(shards, again))


def test_small_alpha_skews_labels_more_than_large_alpha():
    labels = np.repeat(np.arange(10), 600)

    def mean_label_share_of_top_class(alpha):
        shards = dirichlet_split(labels, 5, alpha=alpha, seed=0)
        return np.mean([np.bincount(labels[s], minlength=10).max() / len(s) for s in shards])

    assert mean_label_share_of_top_class(0.1) > 0.4 > mean_label_share_of_top_class(100.0)


def test_dirichlet_never_leaves_a_worker_empty():
    labels = np.repeat(np.arange(10), 3)
    for seed in range(20):
        shards = dirichlet_split(labels, 25, alpha=0.01, seed=seed)
        assert min(len(shard) for shard in shards) >= 1
        assert sum(len(shard) for shard in shards) == len(labels)


@pytest.mark.parametrize(
    "workers, alpha, message",
    [(0, 0.5, "at least 1"), (-2, 0.5, "at least 1"), (301, 0.5, "cannot split 300"), (3, 0.0, "alpha"), (3, -1.0, "alpha")],
)
def test_cli_refuses_bad_arguments_with_one_line(tiny_mnist, tmp_path, capsys, workers, alpha, message):
    volume = tiny_mnist.parent.parent
    # The split's settings reach the splitter through run.json; one written by hand may hold anything.
    layout = RunLayout(volume, "r")
    write_json(layout.config_path, {**RunConfig().to_dict(), "workers": workers, "split": "dirichlet", "alpha": alpha})
    code = split(volume)
    error = capsys.readouterr().err
    assert code == 2
    assert message in error and error.count("\n") == 1 and "Traceback" not in error
    assert not RunLayout(volume, "r").manifest_path.exists()


@pytest.mark.parametrize("content", [None, b"not a zip file", b""])
def test_cli_refuses_an_unreadable_source(tmp_path, capsys, content):
    source = tmp_path / "mnist.npz"
    if content is not None:
        source.write_bytes(content)
    configure(tmp_path, workers=2)
    code = split(tmp_path, "r", "--data", str(source))
    assert code == 2
    assert "mnist.npz" in capsys.readouterr().err


def test_cli_writes_shards_and_manifest(tiny_mnist):
    volume = tiny_mnist.parent.parent
    layout = configure(volume, workers=3, split="dirichlet", alpha=0.3, seed=5)
    assert split(volume) == 0
    manifest = json.loads(layout.manifest_path.read_text())
    assert manifest["split"] == "dirichlet" and manifest["seed"] == 5 and manifest["workers"] == 3
    total = 0
    for worker, entry in enumerate(manifest["shards"]):
        images, labels = load_shard(layout.shard_path(worker))
        assert images.dtype == np.uint8 and images.shape[1:] == (28, 28)
        assert entry["num_examples"] == len(labels)
        assert entry["label_histogram"] == np.bincount(labels, minlength=10).tolist()
        total += len(labels)
    assert total == 300


def test_cli_refuses_to_overwrite_a_different_split_of_the_same_run(tiny_mnist, capsys):
    volume = tiny_mnist.parent.parent
    layout = configure(volume, workers=3)
    assert split(volume) == 0
    before = RunLayout(volume, "r").shard_path(0).read_bytes()
    layout.config_path.unlink()  # run.json replaced behind the run's back (save_config refuses a new shape)
    configure(volume, workers=4)
    assert split(volume) == 2
    assert "different split" in capsys.readouterr().err
    assert RunLayout(volume, "r").shard_path(0).read_bytes() == before
    assert not RunLayout(volume, "r").shard_path(3).exists()


@pytest.mark.parametrize(
    "flags, message",
    [(["--workers", "0"], "workers must be a whole number of at least 1"), (["--workers", "-2"], "at least 1"),
     (["--split", "dirichlet", "--alpha", "0"], "alpha must be greater than 0"), (["--alpha", "-1"], "alpha")],
)
def test_init_refuses_a_bad_split_with_one_line(tiny_mnist, capsys, flags, message):
    # trainer.init is the one command that takes the split's settings: it refuses them before writing anything.
    volume = tiny_mnist.parent.parent
    assert init_main(["--volume", str(volume), "--run-id", "r", *flags]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1 and "Traceback" not in error
    layout = RunLayout(volume, "r")
    assert not layout.config_path.exists() and not layout.manifest_path.exists()


def test_cli_refuses_a_run_without_run_json(tiny_mnist, capsys):
    volume = tiny_mnist.parent.parent
    assert split(volume) == 2
    error = capsys.readouterr().err
    assert "run.json: no such run configuration" in error and error.count("\n") == 1
    assert not RunLayout(volume, "r").manifest_path.exists()


@pytest.mark.parametrize("flags", [["--workers", "3"], ["--split", "iid"], ["--alpha", "0.5"], ["--seed", "1"]])
def test_cli_takes_no_split_settings(tiny_mnist, flags):
    configure(tiny_mnist.parent.parent, workers=3)
    with pytest.raises(SystemExit) as exit_info:
        split(tiny_mnist.parent.parent, "r", *flags)
    assert exit_info.value.code == 2
