"""Why our model: FedAvg test accuracy per round of ``common.model`` against the keras-io MNIST convnet.

    .venv/bin/python -m bench.model_choice [--rounds 5] [--workers 3]

Both models go through the pipeline's algorithm in one process (same IID shards, same shared seeded start,
one epoch per worker per round, the per-round learning-rate decay, ``aggregator.fedavg`` weighted by shard
size), alternating model by model within each round so a slow moment of the machine hits both alike.
The keras-io convnet is only a baseline here: everything the pipeline runs imports ``common.model``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]


def keras_io_convnet():
    """keras-io ``examples/vision/mnist_convnet.py``: the usual starting point (and close to the original's CNN)."""
    import keras
    from keras import layers

    from common.model import INPUT_SHAPE, NUM_CLASSES

    return keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE),
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(NUM_CLASSES, activation="softmax"),
        ],
        name="keras_io_convnet",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT / "volume" / "data" / "mnist.npz")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"model_choice: error: {args.data}: MNIST not found; fetch it with: python -m dataset --out {args.data}",
              file=sys.stderr)
        return 2

    import keras

    # Recompiling each round (a fresh optimizer, as the trainers have) retraces predict; TF warns about it.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    from aggregator.fedavg import fedavg
    from common.data import load_mnist, to_model_input
    from common.model import build_model, compile_model, learning_rate_for_round
    from evaluator.metrics import classification_metrics
    from splitter.strategies import iid_split
    from trainer.train import client_seed

    mnist = load_mnist(args.data)
    shards = [
        (to_model_input(mnist.x_train[indices]), mnist.y_train[indices])
        for indices in iid_split(len(mnist.y_train), args.workers, args.seed)
    ]
    test_images = to_model_input(mnist.x_test)
    models = {"common.model": build_model(seed=args.seed), "keras-io convnet": keras_io_convnet()}
    global_weights = {name: model.get_weights() for name, model in models.items()}
    seconds = {name: 0.0 for name in models}
    print(f"{'round':>5}  " + "  ".join(f"{name:>18}" for name in models), flush=True)
    for round_number in range(1, args.rounds + 1):
        accuracies = []
        for name, model in models.items():
            started = time.perf_counter()
            client_weights = []
            for worker, (images, labels) in enumerate(shards):
                keras.utils.set_random_seed(client_seed(args.seed, round_number, worker))
                model.set_weights(global_weights[name])
                compile_model(model, learning_rate_for_round(round_number))
                model.fit(images, labels, batch_size=args.batch_size, epochs=1, verbose=0)
                client_weights.append(model.get_weights())
            global_weights[name] = fedavg(client_weights, [len(labels) for _, labels in shards])
            seconds[name] += time.perf_counter() - started
            model.set_weights(global_weights[name])
            probabilities = model.predict_on_batch(test_images)
            accuracies.append(classification_metrics(probabilities, mnist.y_test)["accuracy"])
        print(f"{round_number:>5}  " + "  ".join(f"{accuracy:>18.4f}" for accuracy in accuracies), flush=True)
    for name, model in models.items():
        print(f"{name}: {model.count_params():,} parameters, {seconds[name]:.0f} s of training for "
              f"{args.rounds} rounds x {args.workers} workers")
    first, second = models
    print(f"training time ratio {first} / {second}: {seconds[first] / seconds[second]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
