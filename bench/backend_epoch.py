"""Seconds per local epoch of one real client under this process's Keras backend, on its GPU when it sees one.

    KERAS_BACKEND=jax python -m bench.backend_epoch [--workers 3] [--epochs 5] [--batch-size 64] [--output FILE]
    KERAS_BACKEND=jax JAX_PLATFORMS=cpu python -m bench.backend_epoch ...     # the same on the CPU

In a temporary volume: the run's initial model and IID shards, then worker 0's shard trained for
--epochs epochs with the trainer's own loop, each epoch timed (the first includes tracing and
compiling). Then the whole of round 1 on this backend: every worker through the trainer, FedAvg, and
the accuracy test. Prints one JSON object (also written to --output).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common.backend import backend_name, configure_backend, device_names
from common.layout import RunLayout

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_ID = "backend-epoch"


def time_epochs(layout: RunLayout, epochs: int, batch_size: int, seed: int) -> list[float]:
    """Wall seconds of each of ``epochs`` local epochs of worker 0, from round 0's model."""
    from common.data import load_shard, to_model_input
    from common.model import learning_rate_for_round
    from trainer.train import ClientTrainer, client_seed, train_epochs

    trainer = ClientTrainer()
    trainer.prepare(layout.global_model_path(0), learning_rate_for_round(1), client_seed(seed, 1, 0))
    images, labels = load_shard(layout.shard_path(0))
    epoch_ends = [time.perf_counter()]
    # train_on_batch returns host floats, so each epoch's end is after its last step really ran.
    train_epochs(trainer.model, to_model_input(images), labels, epochs, batch_size, shuffle_seed=seed,
                 on_epoch_end=lambda epoch, logs: epoch_ends.append(time.perf_counter()))
    return [end - start for start, end in zip(epoch_ends, epoch_ends[1:])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3, help="shards (worker 0's is timed)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs to time (2 or more: the first compiles)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data", type=Path, default=REPO_ROOT / "volume" / "data" / "mnist.npz")
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2")
    configure_backend()

    from aggregator.__main__ import main as aggregator_main
    from evaluator.__main__ import main as evaluator_main
    from trainer.init import main as init_main
    from trainer.train import ClientTrainer

    with tempfile.TemporaryDirectory() as volume:
        layout = RunLayout(Path(volume), RUN_ID)
        run = ["--volume", volume, "--run-id", RUN_ID]
        settings = ["--seed", str(args.seed), "--workers", str(args.workers), "--rounds", "1",
                    "--batch-size", str(args.batch_size)]
        data = ["--data", str(args.data)]
        if init_main(run + settings + data):  # run.json, the initial model and the shards
            return 1
        epoch_seconds = time_epochs(layout, args.epochs, args.batch_size, args.seed)

        started = time.perf_counter()
        trainer = ClientTrainer()
        examples = [trainer.train(layout, 1, worker, 1, args.batch_size, args.seed)["num_examples"]
                    for worker in range(args.workers)]
        if aggregator_main(run + ["--round", "1"]):  # the run's workers from run.json
            return 1
        metrics_path = Path(volume) / "metrics.json"
        if evaluator_main(run + ["--round", "1", "--output", str(metrics_path)] + data):
            return 1
        round_seconds = time.perf_counter() - started
        accuracy = json.loads(metrics_path.read_text())["accuracy"]

    result = {
        "backend": backend_name(),
        "devices": device_names(),
        "batch_size": args.batch_size,
        "workers": args.workers,
        "examples_worker_0": examples[0],
        "epoch_seconds": [round(seconds, 3) for seconds in epoch_seconds],
        "first_epoch_seconds": round(epoch_seconds[0], 3),
        "steady_epoch_seconds_median": round(statistics.median(epoch_seconds[1:]), 3),
        "round_1_seconds": round(round_seconds, 2),
        "round_1_accuracy": accuracy,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
